//! BTHome v2 parser, encryption and normalisation tests (issue 6), against the examples of
//! bthome.io/format and bthome.io/encryption.

use gateway::Source;
use gateway::bthome::{
    Data, Decryptor, Error, Kind, OBJECTS, encode_bytes, encode_raw, encrypt, lookup, parse,
    to_readings,
};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Plain v2 device info byte (0x40) followed by the given objects.
fn plain(objects: &str) -> Vec<u8> {
    let mut v = vec![0x40];
    v.extend(hex(objects));
    v
}

const SPEC_KEY: [u8; 16] = [
    0x23, 0x1d, 0x39, 0xc1, 0xd7, 0xcc, 0x1a, 0xb1, 0xae, 0xe2, 0x24, 0xcd, 0x09, 0x6d, 0xb9, 0x32,
];
const SPEC_MAC: [u8; 6] = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];
/// bthome.io/encryption example: service data after the UUID for 02CA09 03BF13, counter
/// 00112233 (AD element `12 16 D2FC 41A47266C95F730011223378237214`; MIC also checked with Python
/// `cryptography`'s AESCCM).
const SPEC_ENCRYPTED: &str = "41 a47266c95f73 00112233 78237214";

#[test]
fn spec_format_example_temperature_humidity() {
    // bthome.io/format: 0A16D2FC4002C40903BF13 → service data after UUID 40 02C409 03BF13.
    let adv = parse(&hex("4002C40903BF13")).expect("parse");
    assert_eq!(adv.version, 2);
    assert!(!adv.encrypted && !adv.trigger_based);
    assert_eq!(adv.unknown, None);
    assert_eq!(adv.values.len(), 2);
    assert_eq!(adv.values[0].name, "temperature");
    assert_eq!(adv.values[0].unit, "°C");
    assert!(close(adv.values[0].number().expect("num"), 25.00));
    assert_eq!(adv.values[1].name, "humidity");
    assert!(close(adv.values[1].number().expect("num"), 50.55));
}

#[test]
fn spec_object_examples() {
    // (object bytes, expected value, unit) from the bthome.io/format tables.
    let cases: &[(&str, f64, &str)] = &[
        ("0161", 97.0, "%"),
        ("02CA09", 25.06, "°C"),
        ("03BF13", 50.55, "%"),
        ("04138A01", 1008.83, "hPa"),
        ("05138A14", 13460.67, "lux"),
        ("065E1F", 80.30, "kg"),
        ("073E1D", 74.86, "lb"),
        ("08CA06", 17.38, "°C"),
        ("0960", 96.0, ""),
        ("0A138A14", 1346.067, "kWh"),
        ("0B021B00", 69.14, "W"),
        ("0C020C", 3.074, "V"),
        ("0D120C", 3090.0, "µg/m³"),
        ("0E021C", 7170.0, "µg/m³"),
        ("12E204", 1250.0, "ppm"),
        ("14020C", 30.74, "%"),
        ("2E23", 35.0, "%"),
        ("2F23", 35.0, "%"),
        ("3D0960", 24585.0, ""),
        ("3E2A2C0960", 1611213866.0, ""),
        ("3F020C", 307.4, "°"),
        ("400C00", 12.0, "mm"),
        ("414E00", 7.8, "m"),
        ("424E3400", 13.390, "s"),
        ("434E34", 13.390, "A"),
        ("4B138A14", 1346.067, "m³"),
        ("4C41018A01", 25821.505, "m³"),
        ("4D12138A14", 344593.170, "kWh"),
        ("50 5D396164", 1684093277.0, "s"),
        ("57EA", -22.0, "°C"),
        ("5823", 12.25, "°C"),
        ("3A01", 1.0, ""),
        ("3C0103", -3.0, ""),
        ("3C0203", 3.0, ""),
        ("F00100", 1.0, ""),
        ("3A80", 128.0, ""),
        ("3C0000", 0.0, ""),
        ("3C020A", 10.0, ""),
        ("133301", 307.0, "µg/m³"),
        ("444E34", 133.90, "m/s"),
        ("451101", 27.3, "°C"),
        ("4632", 5.0, ""),
        ("478756", 2215.1, "L"),
        ("48DC87", 34780.0, "mL"),
        ("49DC87", 34.780, "m³/h"),
        ("4A020C", 307.4, "V"),
        ("4E87562A01", 19551.879, "L"),
        ("4F87562A01", 19551.879, "L"),
        ("518756", 22.151, "m/s²"),
        ("528756", 22.151, "°/s"),
        ("5587562A01", 19551.879, "L"),
        ("56E803", 1000.0, "µS/cm"),
        ("58EA", -7.7, "°C"),
        ("59EA", -22.0, ""),
        ("5AEAEA", -5398.0, ""),
        ("5BEA0234EA", -365690134.0, ""),
        ("5C02FBFFFF", -12.78, "W"),
        ("5D02EA", -5.63, "A"),
        ("5E9F8C", 359.99, "°"),
        ("1501", 1.0, ""),
        ("2D00", 0.0, ""),
    ];
    for (obj, want, unit) in cases {
        let adv = parse(&plain(obj)).unwrap_or_else(|e| panic!("{obj}: {e}"));
        assert_eq!(adv.values.len(), 1, "{obj}");
        let v = &adv.values[0];
        let got = v.number().unwrap_or_else(|| panic!("{obj}: not a number"));
        assert!(close(got, *want), "{obj}: got {got}, want {want}");
        assert_eq!(v.unit, *unit, "{obj}");
    }
}

#[test]
fn text_raw_and_firmware_objects() {
    let adv = parse(&plain(
        "530C48656C6C6F20576F726C6421 540C48656C6C6F20576F726C6421 F100010204 F2000106",
    ))
    .expect("parse");
    assert_eq!(adv.values[0].value, Data::Text("Hello World!".into()));
    assert_eq!(adv.values[1].value, Data::Raw(b"Hello World!".to_vec()));
    assert_eq!(adv.values[2].value, Data::Text("4.2.1.0".into()));
    assert_eq!(adv.values[3].value, Data::Text("6.1.0".into()));
}

#[test]
fn object_table_is_sorted_unique_and_covers_the_spec() {
    assert!(
        OBJECTS.windows(2).all(|w| w[0].id < w[1].id),
        "table sorted by id, no duplicates"
    );
    // Sensor data / binary sensors 0x00..=0x2F, events 0x3A and 0x3C, 0x3D..=0x64, 0xF0..=0xF2.
    let mut want: Vec<u8> = (0x00..=0x2F).collect();
    want.extend([0x3A, 0x3C]);
    want.extend(0x3D..=0x64);
    want.extend(0xF0..=0xF2);
    let have: Vec<u8> = OBJECTS.iter().map(|o| o.id).collect();
    assert_eq!(have, want);
    for o in OBJECTS {
        assert!(o.len <= 4, "0x{:02x} length", o.id);
        assert!(o.factor > 0.0);
        assert_eq!(lookup(o.id), Some(o));
    }
}

/// Every row of the table: encode a raw integer (the largest positive one that fits, and a
/// negative one for signed rows), parse, and compare with raw × factor.
#[test]
fn every_scaling_factor_in_the_table() {
    for o in OBJECTS
        .iter()
        .filter(|o| matches!(o.kind, Kind::Number | Kind::Binary | Kind::Button))
    {
        let bits = 8 * u32::from(o.len);
        let mut raws = vec![
            1i64,
            if o.signed {
                (1i64 << (bits - 1)) - 1
            } else {
                (1i64 << bits) - 1
            },
        ];
        if o.signed {
            raws.push(-1);
            raws.push(-(1i64 << (bits - 1)));
        }
        for raw in raws {
            let bytes = encode_raw(o.id, raw).expect("encodable");
            assert_eq!(bytes.len(), 1 + usize::from(o.len));
            let mut data = vec![0x40];
            data.extend(&bytes);
            let adv = parse(&data).unwrap_or_else(|e| panic!("0x{:02x}: {e}", o.id));
            let got = adv.values[0].number().expect("number");
            let want = raw as f64 * o.factor;
            assert!(
                close(got, want),
                "0x{:02x} {}: raw {raw}: got {got}, want {want}",
                o.id,
                o.name
            );
            assert_eq!(adv.values[0].unit, o.unit);
        }
    }
}

#[test]
fn signed_negatives() {
    let adv = parse(&plain(
        "02 18FC  08 38F9  3F FEFF  45 F6FF  5A 0CFF  5B FEFFFFFF  5C 9CFFFFFF  5D 18FC",
    ))
    .expect("parse");
    let got: Vec<f64> = adv
        .values
        .iter()
        .map(|v| v.number().expect("num"))
        .collect();
    let want = [-10.00, -17.36, -0.2, -1.0, -244.0, -2.0, -1.00, -1.0];
    for (g, w) in got.iter().zip(want) {
        assert!(close(*g, w), "got {g}, want {w}");
    }
}

#[test]
fn multiple_objects_packet_id_and_out_of_order() {
    // Packet id, battery, humidity before temperature (out of order is accepted), door.
    let adv = parse(&plain("0009 0161 03BF13 02CA09 1A01")).expect("parse");
    assert_eq!(adv.packet_id, Some(9));
    let names: Vec<&str> = adv.values.iter().map(|v| v.name).collect();
    assert_eq!(
        names,
        ["packet_id", "battery", "humidity", "temperature", "door"]
    );
    let readings = to_readings(&adv, SPEC_MAC, 1_700_000_000_000, Some(-70));
    assert_eq!(readings.len(), 4, "packet id is not a reading");
    for r in &readings {
        assert_eq!(r.source, Source::Ble);
        assert_eq!(r.device, gateway::DeviceId::from_mac(SPEC_MAC));
        assert_eq!(r.frame_id, Some(9));
        assert_eq!(r.radio.rssi_dbm, Some(-70));
        assert_eq!(r.time_ms, 1_700_000_000_000);
    }
    assert_eq!(readings[2].quantity, "temperature");
    assert_eq!(readings[2].unit, "°C");
    assert!(close(readings[2].value, 25.06));
}

#[test]
fn repeated_quantities_get_a_postfix() {
    // Two temperatures (0x02 and 0x45 share the name) and two batteries.
    let adv = parse(&plain("0161 0162 02CA09 451101")).expect("parse");
    let q: Vec<String> = to_readings(&adv, SPEC_MAC, 0, None)
        .into_iter()
        .map(|r| r.quantity)
        .collect();
    assert_eq!(q, ["battery", "battery_2", "temperature", "temperature_2"]);
    // Text and raw objects are not readings; no packet id means no frame id.
    let adv = parse(&plain("0161 53026869 540101")).expect("parse");
    let r = to_readings(&adv, SPEC_MAC, 0, None);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].frame_id, None);
}

#[test]
fn trigger_based_flag() {
    let adv = parse(&hex("44 3A04")).expect("parse");
    assert!(adv.trigger_based);
    assert_eq!(
        gateway::bthome::button_event_name(adv.values[0].number().expect("num") as u8),
        Some("long_press")
    );
}

#[test]
fn unknown_object_id_is_reported_not_fatal() {
    let adv = parse(&plain("02CA09 03BF13 7F 0102 0161")).expect("parse");
    assert_eq!(adv.unknown, Some(0x7F));
    assert_eq!(
        adv.values.len(),
        2,
        "values before the unknown id are kept, nothing after"
    );
}

#[test]
fn truncated_objects_name_the_object() {
    assert_eq!(
        parse(&plain("02CA09 03BF")),
        Err(Error::Truncated {
            id: 0x03,
            name: "humidity",
            need: 2,
            have: 1
        })
    );
    assert_eq!(
        parse(&plain("3E2A2C")),
        Err(Error::Truncated {
            id: 0x3E,
            name: "count",
            need: 4,
            have: 2
        })
    );
    assert!(matches!(
        parse(&plain("53")),
        Err(Error::Truncated { id: 0x53, .. })
    ));
    assert!(matches!(
        parse(&plain("5405AABB")),
        Err(Error::Truncated {
            id: 0x54,
            name: "raw",
            ..
        })
    ));
    assert_eq!(parse(&[]), Err(Error::Empty));
}

#[test]
fn wrong_version_rejected() {
    // Version 1 (0x20) and 3 (0x60); version 2 without objects is fine.
    assert_eq!(parse(&hex("2002CA09")), Err(Error::UnsupportedVersion(1)));
    assert_eq!(parse(&hex("6002CA09")), Err(Error::UnsupportedVersion(3)));
    assert_eq!(parse(&hex("40")).map(|a| a.values.len()), Ok(0));
    let mut d = Decryptor::new(SPEC_MAC, &SPEC_KEY);
    assert_eq!(
        d.decrypt(&hex("21 a47266c95f73 00112233 78237214")),
        Err(Error::UnsupportedVersion(1))
    );
}

#[test]
fn spec_encryption_vector() {
    let counter = u32::from_le_bytes([0x00, 0x11, 0x22, 0x33]);
    let enc = encrypt(&SPEC_KEY, SPEC_MAC, false, counter, &hex("02CA0903BF13")).expect("encrypt");
    assert_eq!(enc, hex(SPEC_ENCRYPTED));
    assert_eq!(parse(&enc), Err(Error::Encrypted));
    let mut d = Decryptor::new(SPEC_MAC, &SPEC_KEY);
    let adv = d.decrypt(&enc).expect("decrypt");
    assert!(adv.encrypted);
    assert!(close(adv.values[0].number().expect("num"), 25.06));
    assert!(close(adv.values[1].number().expect("num"), 50.55));
    assert_eq!(d.last_counter(), Some(counter));
}

#[test]
fn wrong_key_rejected() {
    let mut key = SPEC_KEY;
    key[0] ^= 1;
    let mut d = Decryptor::new(SPEC_MAC, &key);
    assert_eq!(d.decrypt(&hex(SPEC_ENCRYPTED)), Err(Error::Mic));
    assert_eq!(
        d.last_counter(),
        None,
        "a failed MIC does not advance the counter"
    );
    // Wrong MAC (nonce) is also a MIC failure.
    let mut d = Decryptor::new([0; 6], &SPEC_KEY);
    assert_eq!(d.decrypt(&hex(SPEC_ENCRYPTED)), Err(Error::Mic));
}

#[test]
fn replayed_and_old_counters_rejected() {
    let mut d = Decryptor::new(SPEC_MAC, &SPEC_KEY);
    let a = encrypt(&SPEC_KEY, SPEC_MAC, false, 100, &hex("0161")).expect("encrypt");
    let old = encrypt(&SPEC_KEY, SPEC_MAC, false, 99, &hex("0162")).expect("encrypt");
    let b = encrypt(&SPEC_KEY, SPEC_MAC, false, 101, &hex("0163")).expect("encrypt");
    assert!(d.decrypt(&a).is_ok());
    assert_eq!(
        d.decrypt(&a),
        Err(Error::Replay {
            counter: 100,
            last: 100
        })
    );
    assert_eq!(
        d.decrypt(&old),
        Err(Error::Replay {
            counter: 99,
            last: 100
        })
    );
    assert!(d.decrypt(&b).is_ok());
    let mut resumed = Decryptor::with_last_counter(SPEC_MAC, &SPEC_KEY, 101);
    assert_eq!(
        resumed.decrypt(&b),
        Err(Error::Replay {
            counter: 101,
            last: 101
        })
    );
}

#[test]
fn tampered_ciphertext_rejected() {
    let good = hex(SPEC_ENCRYPTED);
    for i in 1..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let mut d = Decryptor::new(SPEC_MAC, &SPEC_KEY);
        assert_eq!(d.decrypt(&bad), Err(Error::Mic), "byte {i} flipped");
    }
    // Flipping the trigger flag changes the nonce: MIC failure, too.
    let mut bad = good.clone();
    bad[0] |= 0x04;
    assert_eq!(
        Decryptor::new(SPEC_MAC, &SPEC_KEY).decrypt(&bad),
        Err(Error::Mic)
    );
}

#[test]
fn encrypted_framing_errors() {
    let mut d = Decryptor::new(SPEC_MAC, &SPEC_KEY);
    assert_eq!(
        d.decrypt(&hex("41 00112233 b7ced8")),
        Err(Error::EncryptedTooShort(8))
    );
    assert_eq!(d.decrypt(&plain("0161")), Err(Error::NotEncrypted));
    assert_eq!(d.decrypt(&[]), Err(Error::Empty));
    // No objects at all: valid, empty.
    let e = encrypt(&SPEC_KEY, SPEC_MAC, true, 5, &[]).expect("encrypt");
    let adv = d.decrypt(&e).expect("decrypt");
    assert!(adv.values.is_empty() && adv.trigger_based);
}

#[test]
fn encode_helpers() {
    assert_eq!(encode_raw(0x02, 2506), Some(hex("02CA09")));
    assert_eq!(
        gateway::bthome::encode_value(0x03, 50.55),
        Some(hex("03BF13"))
    );
    assert_eq!(encode_bytes(0x53, b"hi"), Some(hex("53026869")));
    assert_eq!(encode_raw(0x7F, 1), None);
    assert_eq!(encode_raw(0x53, 1), None);
}

proptest! {
    #[test]
    fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse(&data);
        let _ = Decryptor::new(SPEC_MAC, &SPEC_KEY).decrypt(&data);
    }

    #[test]
    fn parser_never_panics_on_v2(body in proptest::collection::vec(any::<u8>(), 0..64), trigger in any::<bool>()) {
        let mut data = vec![if trigger { 0x44 } else { 0x40 }];
        data.extend(body);
        let _ = parse(&data);
    }

    #[test]
    fn encrypt_decrypt_round_trip(
        key in any::<[u8; 16]>(),
        mac in any::<[u8; 6]>(),
        counter in 1u32..,
        trigger in any::<bool>(),
        temp in any::<i16>(),
        hum in any::<u16>(),
    ) {
        let mut plain = encode_raw(0x02, i64::from(temp)).expect("temp");
        plain.extend(encode_raw(0x03, i64::from(hum)).expect("hum"));
        let enc = encrypt(&key, mac, trigger, counter, &plain).expect("encrypt");
        prop_assert_eq!(enc.len(), plain.len() + 9);
        let mut d = Decryptor::with_last_counter(mac, &key, counter - 1);
        let adv = d.decrypt(&enc).expect("decrypt");
        prop_assert_eq!(adv.trigger_based, trigger);
        prop_assert!(close(adv.values[0].number().expect("num"), f64::from(temp) * 0.01));
        prop_assert!(close(adv.values[1].number().expect("num"), f64::from(hum) * 0.01));
        prop_assert_eq!(d.decrypt(&enc), Err(Error::Replay { counter, last: counter }));
    }

    #[test]
    fn encrypted_and_plain_parse_agree(objects in proptest::collection::vec(any::<u8>(), 0..48)) {
        let mut framed = vec![0x40];
        framed.extend(&objects);
        let enc = encrypt(&SPEC_KEY, SPEC_MAC, false, 1, &objects).expect("encrypt");
        let plain = parse(&framed).map(|a| (a.values, a.unknown, a.packet_id));
        let dec = Decryptor::new(SPEC_MAC, &SPEC_KEY).decrypt(&enc).map(|a| (a.values, a.unknown, a.packet_id));
        prop_assert_eq!(plain, dec);
    }
}
