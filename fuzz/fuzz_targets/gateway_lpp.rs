//! `gateway::lpp::decode` never panics and whatever it accepts re-encodes byte-identically with
//! `lpp::Encoder`; LoRaWAN parsing and `lpp::to_readings` never panic on any PHYPayload (the
//! first bytes' DevAddr is configured as a plaintext device, so LPP decoding is reached).
#![no_main]

use gateway::lora::lorawan;
use gateway::lora::semtech::{DataRate, Modulation, RxPk};
use gateway::lpp::{self, Encoder, LoraDevices};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = lpp::decode(data) {
        let mut e = Encoder::new();
        for v in &values {
            e.add(v.channel, v.kind, &v.values).expect("decoded values re-encode");
        }
        assert_eq!(e.as_bytes(), data);
    }
    let _ = lorawan::parse(data);
    let dev_addr = match data.get(1..5) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    };
    let rxpk = RxPk {
        time: None,
        tmms: None,
        tmst: 0,
        freq: 868.1,
        chan: None,
        rfch: None,
        stat: 1,
        modu: Modulation::Lora,
        datr: DataRate::Lora("SF7BW125".into()),
        codr: None,
        rssi: Some(-100),
        lsnr: Some(-3.5),
        size: data.len() as u32,
        data: data.to_vec(),
    };
    for devices in [LoraDevices::new().with_plaintext(dev_addr), LoraDevices::new().with_app_skey(dev_addr, [0x2b; 16])] {
        let out = lpp::to_readings(data, &rxpk, [1; 8], 0, &devices);
        // A payload that was not (entirely) decoded is always kept raw and byte-identical.
        if let Some(raw) = &out.raw {
            assert_eq!(raw.phy_payload, data);
        }
    }
});
