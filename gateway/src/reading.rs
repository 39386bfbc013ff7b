//! The one normalised record every radio's frames become (issue 6, "Readings").

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Which radio a reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Source {
    /// A BLE advertisement (BTHome v2).
    Ble,
    /// A LoRa uplink through a Semtech UDP packet forwarder.
    Lora,
}

/// A device identifier: a BLE MAC address (6 bytes, zero-padded on the left) or a LoRaWAN
/// DevEUI / DevAddr (8 bytes, DevAddr zero-padded on the left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId(pub [u8; 8]);

impl DeviceId {
    /// A BLE MAC address (as printed, most significant byte first).
    pub fn from_mac(mac: [u8; 6]) -> Self {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&mac);
        DeviceId(b)
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What the radio said about the frame (all optional: each radio knows different things).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RadioMeta {
    /// Received signal strength, dBm.
    pub rssi_dbm: Option<i16>,
    /// LoRa signal-to-noise ratio, dB.
    pub snr_db: Option<f32>,
    /// Centre frequency, Hz.
    pub frequency_hz: Option<u64>,
    /// LoRa data rate as the forwarder reports it (e.g. `"SF7BW125"`).
    pub data_rate: Option<String>,
    /// EUI of the LoRa gateway (packet forwarder) that heard the frame.
    pub gateway_eui: Option<[u8; 8]>,
}

/// One measured value of one sensor, whatever the radio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The radio.
    pub source: Source,
    /// The sensor.
    pub device: DeviceId,
    /// When the gateway received it, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What was measured (`"temperature"`, `"humidity"`, ...; the decoder's table name).
    pub quantity: String,
    /// The value, scaled to `unit`.
    pub value: f64,
    /// The unit (`"°C"`, `"%"`, `"hPa"`, ...; empty for counts and flags).
    pub unit: String,
    /// The frame's identity for de-duplication within a device: BTHome packet id or LoRaWAN
    /// FCnt, if the frame has one.
    pub frame_id: Option<u32>,
    /// Radio metadata.
    pub radio: RadioMeta,
}

/// Milliseconds since the Unix epoch (0 before it): the time a frame was received, as
/// [`Reading::time_ms`] records it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
