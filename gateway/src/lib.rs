//! The IoT edge gateway (issue 6; seed 004: sensors talk to gateways, which bridge them to the
//! chain): BLE sensors advertising BTHome and LoRa concentrators running Semtech's packet
//! forwarder, normalised into one [`Reading`] record, written durably before anything is
//! acknowledged, and forwarded in signed batches to an uplink.

#[cfg(feature = "bluez")]
pub mod ble;
pub mod bthome;
pub mod daemon;
pub mod firmware_cli;
pub mod firmware_net;
pub mod lora;
pub mod lpp;
pub mod reading;
pub mod store;
pub mod uplink;

pub use reading::{DeviceId, RadioMeta, Reading, Source};
