//! The BTHome v2 parser (gateway::bthome) never panics on arbitrary service data, nor does a
//! `Decryptor`; any object bytes encrypted with `encrypt` decrypt to exactly what the plain
//! parser makes of the same bytes, and the same advert twice is a replay.
#![no_main]

use gateway::bthome::{Decryptor, Error, encrypt, parse};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 16] = *b"fuzz-bthome-key!";
const MAC: [u8; 6] = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];

fuzz_target!(|data: &[u8]| {
    // Raw service data, as a radio would deliver it.
    let plain = parse(data);
    if let Ok(adv) = &plain {
        assert_eq!(adv.version, 2);
        assert!(!adv.encrypted);
        let readings = gateway::bthome::to_readings(adv, MAC, 0, None);
        assert!(readings.len() <= adv.values.len());
    }
    let mut d = Decryptor::new(MAC, &KEY);
    let _ = d.decrypt(data);

    // The same bytes as the objects of a plain and of an encrypted advert.
    let mut framed = vec![0x40];
    framed.extend_from_slice(data);
    let plain = parse(&framed);
    let Ok(enc) = encrypt(&KEY, MAC, false, 7, data) else { return };
    let mut d = Decryptor::new(MAC, &KEY);
    let dec = d.decrypt(&enc);
    match (&plain, &dec) {
        (Ok(p), Ok(e)) => {
            assert_eq!(p.values, e.values);
            assert_eq!(p.unknown, e.unknown);
            assert_eq!(p.packet_id, e.packet_id);
            assert!(e.encrypted);
        }
        (Err(p), Err(e)) => assert_eq!(p, e),
        _ => panic!("plain {plain:?} vs decrypted {dec:?}"),
    }
    // The MIC verified, so the counter advanced even if the objects did not parse.
    assert_eq!(d.decrypt(&enc), Err(Error::Replay { counter: 7, last: 7 }));
});
