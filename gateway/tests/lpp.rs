//! Cayenne LPP decoder/encoder and the LoRaWAN uplink → Reading bridge.

use gateway::lora::lorawan::{self, Frame, MType};
use gateway::lora::semtech::{DataRate, Modulation, RxPk};
use gateway::lpp::{self, EncodeError, Encoder, LoraDevices, LppError, LppKind, RawReason, TYPES};
use gateway::{DeviceId, Source};
use proptest::prelude::*;

/// One vector per standard type: (payload, kind, values). Hex from the Cayenne LPP documentation
/// examples where it has one (temperature, accelerometer, GPS), otherwise computed by hand from
/// the reference size/multiplier/sign table.
fn vectors() -> Vec<(Vec<u8>, LppKind, Vec<f64>)> {
    use LppKind::*;
    vec![
        (vec![1, 0, 0x01], DigitalInput, vec![1.0]),
        (vec![2, 1, 0xff], DigitalOutput, vec![255.0]),
        (vec![3, 2, 0xff, 0x9c], AnalogInput, vec![-1.0]),
        (vec![4, 3, 0x04, 0xd2], AnalogOutput, vec![12.34]),
        (vec![5, 100, 0, 0, 1, 0], GenericSensor, vec![256.0]),
        (vec![6, 101, 0x01, 0x2c], Illuminance, vec![300.0]),
        (vec![7, 102, 1], Presence, vec![1.0]),
        (vec![3, 103, 0x01, 0x10], Temperature, vec![27.2]),
        (vec![8, 104, 0x61], Humidity, vec![48.5]),
        (
            vec![6, 113, 0x04, 0xd2, 0xfb, 0x2e, 0x00, 0x00],
            Accelerometer,
            vec![1.234, -1.234, 0.0],
        ),
        (vec![9, 115, 0x27, 0x7f], Barometer, vec![1011.1]),
        (vec![10, 116, 0x01, 0x2c], Voltage, vec![3.0]),
        (vec![11, 117, 0x03, 0xe8], Current, vec![1.0]),
        (vec![12, 118, 0, 0, 0xc3, 0x50], Frequency, vec![50_000.0]),
        (vec![13, 120, 0x64], Percentage, vec![100.0]),
        (vec![14, 121, 0xff, 0x9c], Altitude, vec![-100.0]),
        (vec![15, 125, 0x01, 0x90], Concentration, vec![400.0]),
        (vec![16, 128, 0x05, 0xdc], Power, vec![1500.0]),
        (vec![17, 130, 0, 0, 0x30, 0x39], Distance, vec![12.345]),
        (vec![18, 131, 0, 0x01, 0xe2, 0x40], Energy, vec![123.456]),
        (vec![19, 132, 0x01, 0x0e], Direction, vec![270.0]),
        (
            vec![20, 133, 0x5f, 0x5e, 0x10, 0x00],
            UnixTime,
            vec![1_600_000_000.0],
        ),
        (
            vec![21, 134, 0x01, 0x2c, 0xfe, 0xd4, 0x00, 0x64],
            Gyrometer,
            vec![3.0, -3.0, 1.0],
        ),
        (
            vec![22, 135, 0xff, 0x80, 0x00],
            Colour,
            vec![255.0, 128.0, 0.0],
        ),
        (
            vec![1, 136, 0x06, 0x76, 0x5f, 0xf2, 0x96, 0x0a, 0x00, 0x03, 0xe8],
            Gps,
            vec![42.3519, -87.9094, 10.0],
        ),
        (vec![23, 142, 1], Switch, vec![1.0]),
    ]
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

#[test]
fn lpp_every_standard_type_decodes() {
    let vs = vectors();
    // Every row of the table is exercised.
    for t in TYPES {
        assert!(
            vs.iter().any(|(_, k, _)| *k == t.kind),
            "no vector for {:?}",
            t.kind
        );
    }
    assert_eq!(TYPES.len(), 26);
    for (bytes, kind, values) in &vs {
        let got = lpp::decode(bytes).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(got.len(), 1, "{kind:?}");
        assert_eq!(got[0].kind, *kind);
        assert_eq!(got[0].channel, bytes[0]);
        assert_eq!(got[0].kind.code(), bytes[1]);
        assert_eq!(got[0].name, kind.name());
        assert!(
            close(&got[0].values, values),
            "{kind:?}: {:?} != {values:?}",
            got[0].values
        );
        // And the encoder produces the same bytes.
        let mut e = Encoder::new();
        e.add(bytes[0], *kind, values)
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(e.as_bytes(), &bytes[..], "{kind:?}");
    }
}

#[test]
fn lpp_units_and_negative_temperature() {
    let v = lpp::decode(&[1, 103, 0xff, 0xd7]).expect("valid");
    assert!(close(&v[0].values, &[-4.1]));
    assert_eq!(v[0].unit, "°C");
    assert_eq!(lpp::decode(&[1, 104, 0x50]).expect("valid")[0].unit, "%");
    assert_eq!(lpp::decode(&[1, 115, 0, 1]).expect("valid")[0].unit, "hPa");
}

#[test]
fn lpp_multiple_channels_in_one_payload() {
    // The TTN documentation's example: temperature on channels 3 and 5.
    let v = lpp::decode(&[0x03, 0x67, 0x01, 0x10, 0x05, 0x67, 0x00, 0xff]).expect("valid");
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].channel, v[1].channel), (3, 5));
    assert!(close(&v[0].values, &[27.2]) && close(&v[1].values, &[25.5]));
    // All vectors concatenated decode to all values in order.
    let all: Vec<u8> = vectors().into_iter().flat_map(|(b, _, _)| b).collect();
    let v = lpp::decode(&all).expect("valid");
    assert_eq!(v.len(), vectors().len());
    for (got, (_, kind, values)) in v.iter().zip(vectors()) {
        assert_eq!(got.kind, kind);
        assert!(close(&got.values, &values));
    }
    assert_eq!(lpp::decode(&[]).expect("empty is valid"), vec![]);
}

#[test]
fn lpp_truncated_payloads_are_typed_errors_with_the_prefix() {
    // Lone channel byte.
    match lpp::decode(&[1]) {
        Err(LppError::Truncated {
            offset: 0,
            type_code: None,
            need: 2,
            have: 1,
            decoded,
        }) => assert!(decoded.is_empty()),
        other => panic!("{other:?}"),
    }
    // A temperature cut short after a good humidity.
    match lpp::decode(&[2, 104, 0x50, 1, 103, 0x01]) {
        Err(LppError::Truncated {
            offset: 3,
            type_code: Some(103),
            need: 4,
            have: 3,
            decoded,
        }) => {
            assert_eq!(decoded.len(), 1);
            assert!(close(&decoded[0].values, &[40.0]));
        }
        other => panic!("{other:?}"),
    }
    // Every strict prefix of every vector fails (or is empty).
    for (bytes, kind, _) in vectors() {
        for n in 1..bytes.len() {
            assert!(
                matches!(lpp::decode(&bytes[..n]), Err(LppError::Truncated { .. })),
                "{kind:?} prefix {n}"
            );
        }
    }
}

#[test]
fn lpp_unknown_type_names_channel_and_type_and_keeps_the_prefix() {
    let err = lpp::decode(&[1, 103, 0x00, 0xff, 7, 200, 1, 2, 3]).expect_err("unknown type");
    match &err {
        LppError::UnknownType {
            channel: 7,
            type_code: 200,
            offset: 4,
            decoded,
        } => {
            assert_eq!(decoded.len(), 1);
            assert_eq!(decoded[0].kind, LppKind::Temperature);
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("200") && msg.contains("channel 7"), "{msg}");
    // The legacy codes of an old reference release are not accepted.
    assert!(matches!(
        lpp::decode(&[1, 143, 0, 1]),
        Err(LppError::UnknownType { type_code: 143, .. })
    ));
}

#[test]
fn lpp_encoder_rejects_out_of_range_and_wrong_arity() {
    let mut e = Encoder::new();
    assert!(matches!(
        e.add_humidity(1, -1.0),
        Err(EncodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        e.add_humidity(1, 128.0),
        Err(EncodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        e.add_temperature(1, 3276.8),
        Err(EncodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        e.add_temperature(1, f64::NAN),
        Err(EncodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        e.add(1, LppKind::Gps, &[1.0]),
        Err(EncodeError::Arity {
            expected: 3,
            got: 1,
            ..
        })
    ));
    assert!(e.as_bytes().is_empty(), "failed adds append nothing");
    e.add_temperature(1, -3276.8).expect("min fits");
    e.add_gps(2, -90.0, 180.0, -838.86).expect("fits");
    e.add_barometer(3, 1013.2).expect("fits");
    let v = lpp::decode(&e.finish()).expect("valid");
    assert!(close(&v[1].values, &[-90.0, 180.0, -838.86]));
}

// --- LoRaWAN -----------------------------------------------------------------------------------

fn rxpk(data: Vec<u8>) -> RxPk {
    RxPk {
        time: None,
        tmms: None,
        tmst: 1,
        freq: 868.1,
        chan: Some(0),
        rfch: Some(0),
        stat: 1,
        modu: Modulation::Lora,
        datr: DataRate::Lora("SF7BW125".into()),
        codr: Some("4/5".into()),
        rssi: Some(-57),
        lsnr: Some(9.5),
        size: data.len() as u32,
        data,
    }
}

/// An unconfirmed data uplink: MHDR 0x40 | DevAddr LE | FCtrl 0 | FCnt LE | FPort | payload | MIC.
fn data_up(dev_addr: u32, fcnt: u16, fport: u8, frm: &[u8]) -> Vec<u8> {
    let mut p = vec![0x40];
    p.extend_from_slice(&dev_addr.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&fcnt.to_le_bytes());
    p.push(fport);
    p.extend_from_slice(frm);
    p.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    p
}

const EUI: [u8; 8] = [0xaa, 0x55, 0x5a, 0, 0, 0, 0, 1];

#[test]
fn lorawan_known_frame_parses_and_decrypts() {
    // lora-packet's README vector: DevAddr 49be7df1, FCnt 2, FPort 1, AppSKey
    // ec925802ae430ca77fd3dd73cb2cc588 → FRMPayload "test".
    let phy = [
        0x40, 0xf1, 0x7d, 0xbe, 0x49, 0x00, 0x02, 0x00, 0x01, 0x95, 0x43, 0x78, 0x76, 0x2b, 0x11,
        0xff, 0x0d,
    ];
    let Ok(Frame::Data(f)) = lorawan::parse(&phy) else {
        panic!("data frame")
    };
    assert_eq!(f.mtype, MType::UnconfirmedDataUp);
    assert_eq!((f.dev_addr, f.fcnt, f.fport), (0x49be_7df1, 2, Some(1)));
    assert_eq!(f.frm_payload, &[0x95, 0x43, 0x78, 0x76]);
    assert_eq!(f.mic, [0x2b, 0x11, 0xff, 0x0d]);
    let key = [
        0xec, 0x92, 0x58, 0x02, 0xae, 0x43, 0x0c, 0xa7, 0x7f, 0xd3, 0xdd, 0x73, 0xcb, 0x2c, 0xc5,
        0x88,
    ];
    assert_eq!(
        lorawan::crypt_frm_payload(&key, true, f.dev_addr, 2, f.frm_payload),
        b"test"
    );
}

#[test]
fn lorawan_plaintext_test_device_yields_readings() {
    let mut e = Encoder::new();
    e.add_temperature(1, 21.5)
        .expect("fits")
        .add_humidity(2, 55.0)
        .expect("fits");
    e.add(3, LppKind::Accelerometer, &[0.5, -0.25, 1.0])
        .expect("fits");
    let phy = data_up(0x2601_1234, 42, 10, e.as_bytes());
    let devices = LoraDevices::new().with_plaintext(0x2601_1234);
    let out = lpp::to_readings(&phy, &rxpk(phy.clone()), EUI, 1_700_000_000_000, &devices);
    assert!(out.raw.is_none(), "{:?}", out.raw);
    let q: Vec<(&str, f64, &str)> = out
        .readings
        .iter()
        .map(|r| (r.quantity.as_str(), r.value, r.unit.as_str()))
        .collect();
    assert_eq!(
        q,
        vec![
            ("temperature_1", 21.5, "°C"),
            ("humidity_2", 55.0, "%"),
            ("accelerometer_3_x", 0.5, "G"),
            ("accelerometer_3_y", -0.25, "G"),
            ("accelerometer_3_z", 1.0, "G"),
        ]
    );
    let r = &out.readings[0];
    assert_eq!(r.source, Source::Lora);
    assert_eq!(r.device, DeviceId([0, 0, 0, 0, 0x26, 0x01, 0x12, 0x34]));
    assert_eq!(r.device.to_string(), "0000000026011234");
    assert_eq!(r.frame_id, Some(42));
    assert_eq!(r.time_ms, 1_700_000_000_000);
    assert_eq!(r.radio.rssi_dbm, Some(-57));
    assert_eq!(r.radio.snr_db, Some(9.5));
    assert_eq!(r.radio.frequency_hz, Some(868_100_000));
    assert_eq!(r.radio.data_rate.as_deref(), Some("SF7BW125"));
    assert_eq!(r.radio.gateway_eui, Some(EUI));
}

#[test]
fn lorawan_app_skey_device_is_decrypted() {
    let key = [7u8; 16];
    let mut e = Encoder::new();
    e.add_gps(1, 52.3676, 4.9041, 2.5).expect("fits");
    let cipher = lorawan::crypt_frm_payload(&key, true, 0x0100_0001, 7, e.as_bytes());
    assert_ne!(cipher, e.as_bytes());
    let phy = data_up(0x0100_0001, 7, 2, &cipher);
    let out = lpp::to_readings(
        &phy,
        &rxpk(phy.clone()),
        EUI,
        5,
        &LoraDevices::new().with_app_skey(0x0100_0001, key),
    );
    assert!(out.raw.is_none());
    assert_eq!(out.readings.len(), 3);
    assert_eq!(out.readings[0].quantity, "gps_1_latitude");
    assert!((out.readings[0].value - 52.3676).abs() < 1e-9);
    assert_eq!(out.readings[2].unit, "m");
}

#[test]
fn lorawan_unreadable_uplinks_pass_through_raw() {
    let frm = [1, 103, 0, 10];
    let phy = data_up(0x1111_1111, 1, 1, &frm);
    // Unknown device: no key.
    let out = lpp::to_readings(&phy, &rxpk(phy.clone()), EUI, 0, &LoraDevices::new());
    assert!(out.readings.is_empty());
    let raw = out.raw.expect("raw");
    assert_eq!(raw.reason, RawReason::NoKey);
    assert_eq!(raw.phy_payload, phy);
    assert_eq!(raw.frame_id, Some(1));
    assert_eq!(raw.device, Some(lpp::dev_addr_id(0x1111_1111)));
    // FPort 0: MAC commands.
    let phy0 = data_up(0x1111_1111, 1, 0, &[2]);
    let devices = LoraDevices::new().with_plaintext(0x1111_1111);
    let out = lpp::to_readings(&phy0, &rxpk(phy0.clone()), EUI, 0, &devices);
    assert_eq!(
        out.raw.expect("raw").reason,
        RawReason::NoApplicationPayload
    );
    // Not LPP after a good value: prefix readings plus the raw frame.
    let phy2 = data_up(0x1111_1111, 2, 1, &[1, 103, 0, 10, 9, 99]);
    let out = lpp::to_readings(&phy2, &rxpk(phy2.clone()), EUI, 0, &devices);
    assert_eq!(out.readings.len(), 1);
    assert!(matches!(
        out.raw.expect("raw").reason,
        RawReason::NotLpp(LppError::UnknownType {
            channel: 9,
            type_code: 99,
            ..
        })
    ));
    // Join request: DevEUI, no data.
    let mut jr = vec![0x00];
    jr.extend_from_slice(&0x70b3_d57e_d000_0001u64.to_le_bytes());
    jr.extend_from_slice(&0x0004_a30b_001c_0530u64.to_le_bytes());
    jr.extend_from_slice(&[0x12, 0x34, 1, 2, 3, 4]);
    let out = lpp::to_readings(&jr, &rxpk(jr.clone()), EUI, 0, &devices);
    let raw = out.raw.expect("raw");
    assert_eq!(raw.reason, RawReason::JoinRequest);
    assert_eq!(
        raw.device,
        Some(DeviceId([0x00, 0x04, 0xa3, 0x0b, 0x00, 0x1c, 0x05, 0x30]))
    );
    // Not LoRaWAN at all.
    let out = lpp::to_readings(b"hello", &rxpk(b"hello".to_vec()), EUI, 0, &devices);
    assert!(matches!(
        out.raw.expect("raw").reason,
        RawReason::NotLorawan(_)
    ));
}

// --- properties ----------------------------------------------------------------------------------

/// A random kind with random in-range wire integers, and the values they mean.
fn arb_value() -> impl Strategy<Value = (u8, LppKind, Vec<f64>)> {
    (
        any::<u8>(),
        0..TYPES.len(),
        proptest::collection::vec(any::<u32>(), 3),
    )
        .prop_map(|(ch, i, raws)| {
            let t = &TYPES[i];
            let values = t
                .fields
                .iter()
                .zip(raws)
                .map(|(f, r)| {
                    let bits = 8 * u32::from(f.bytes);
                    let raw = u64::from(r) & ((1u64 << bits) - 1);
                    let raw = if f.signed && raw & (1 << (bits - 1)) != 0 {
                        raw as i64 - (1i64 << bits)
                    } else {
                        raw as i64
                    };
                    raw as f64 / f.divisor
                })
                .collect();
            (ch, t.kind, values)
        })
}

proptest! {
    #[test]
    fn lpp_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = lpp::decode(&bytes);
    }

    #[test]
    fn lpp_encode_decode_round_trip(items in proptest::collection::vec(arb_value(), 0..12)) {
        let mut e = Encoder::new();
        for (ch, kind, values) in &items {
            e.add(*ch, *kind, values).expect("in range");
        }
        let bytes = e.finish();
        let decoded = lpp::decode(&bytes).expect("valid");
        prop_assert_eq!(decoded.len(), items.len());
        for (d, (ch, kind, values)) in decoded.iter().zip(&items) {
            prop_assert_eq!(d.channel, *ch);
            prop_assert_eq!(d.kind, *kind);
            prop_assert_eq!(&d.values, values);
        }
    }

    #[test]
    fn lorawan_and_to_readings_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), plain in any::<bool>()) {
        let _ = lorawan::parse(&bytes);
        let devices = if plain { LoraDevices::new().with_plaintext(u32::from_le_bytes([
            *bytes.get(1).unwrap_or(&0), *bytes.get(2).unwrap_or(&0), *bytes.get(3).unwrap_or(&0), *bytes.get(4).unwrap_or(&0),
        ])) } else { LoraDevices::new().with_app_skey(0, [1; 16]) };
        let _ = lpp::to_readings(&bytes, &rxpk(bytes.clone()), EUI, 0, &devices);
    }
}
