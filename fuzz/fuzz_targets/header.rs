//! The MEF header parser never panics, and whatever it accepts re-emits identically; stamping
//! never changes the AEAD associated data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mef_transport::wire::{Header, Packet, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Header::decode(data) else { return };
    let mut buf = [0u8; HEADER_LEN];
    h.emit(&mut buf);
    assert_eq!(&buf[..], &data[..HEADER_LEN]);
    assert_eq!(Header::decode(&buf), Ok(h));

    let mut owned = data.to_vec();
    let Ok(mut p) = Packet::new_checked(&mut owned[..]) else { return };
    let ad = p.associated_data();
    let before = p.stamp_kbps();
    let kbps = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    p.stamp(kbps);
    assert!(p.stamp_kbps() <= before);
    assert_eq!(p.associated_data(), ad);
    let _ = p.payload().len();
});
