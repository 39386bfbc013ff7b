//! Shared helpers of the store tests.
#![allow(dead_code)]

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use gateway::store::{Limits, Store};
use gateway::{DeviceId, RadioMeta, Reading, Source};

/// A directory under the target's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("gw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("queue.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test gateway key.
pub fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

pub fn open(path: &std::path::Path, limits: Limits) -> Store {
    Store::open(path, limits, key()).expect("open store")
}

/// A BLE reading of device `dev` with BTHome packet id `frame`.
pub fn ble(dev: u8, frame: Option<u32>, time_ms: u64, value: f64) -> Reading {
    Reading {
        source: Source::Ble,
        device: DeviceId::from_mac([0xA4, 0xC1, 0x38, 0, 0, dev]),
        time_ms,
        quantity: "temperature".into(),
        value,
        unit: "°C".into(),
        frame_id: frame,
        radio: RadioMeta {
            rssi_dbm: Some(-60),
            ..RadioMeta::default()
        },
    }
}

/// A LoRa reading with FCnt `fcnt`, heard by forwarder `gw`.
pub fn lora(dev: u8, fcnt: u32, time_ms: u64, quantity: &str, gw: u8) -> Reading {
    Reading {
        source: Source::Lora,
        device: DeviceId([0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0, 0, dev]),
        time_ms,
        quantity: quantity.into(),
        value: f64::from(fcnt) / 10.0,
        unit: "%".into(),
        frame_id: Some(fcnt),
        radio: RadioMeta {
            rssi_dbm: Some(-110),
            snr_db: Some(-7.5),
            frequency_hz: Some(868_100_000),
            data_rate: Some("SF7BW125".into()),
            gateway_eui: Some([gw; 8]),
        },
    }
}
