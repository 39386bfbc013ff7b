//! BLE scanning through BlueZ (feature `bluez`): hands every BTHome service data value
//! (UUID 0xFCD2) that BlueZ reports to a channel, with the sender's MAC, RSSI and the
//! receive time. Parsing and decryption are up to the receiver ([`crate::bthome`]).
//!
//! **Scanning mode.** bluer exposes BlueZ's advertisement monitor API (passive scanning),
//! but BlueZ only offers it with experimental features enabled (`bluetoothd -E`) and it needs
//! OR-patterns per AD type; to work with a stock bluetoothd this uses *active discovery*
//! with a discovery filter: LE transport and `DuplicateData = true` (no UUID filter, see
//! [`scan`]; the 0xFCD2 service data is picked out here), so
//! BlueZ emits a `ServiceData` property change for every advert, not only when the value
//! changes (repeated adverts carry the same packet id and are de-duplicated later by
//! [`crate::Reading::frame_id`]). Active scanning sends scan requests; BTHome devices that
//! only advertise are unaffected.
//!
//! **Untested against hardware**: this machine has neither a Bluetooth adapter nor
//! bluetoothd. The code is written against bluer 0.17's API and only checked to compile
//! (CI builds it with `--features bluez`); the parser behind it is what the tests cover.

use std::collections::HashMap;

use bluer::{
    AdapterEvent, Address, DeviceEvent, DeviceProperty, DiscoveryFilter, DiscoveryTransport, Uuid,
    UuidExt,
};
use futures_util::{Stream, StreamExt, stream::SelectAll};
use tokio::sync::mpsc;

use crate::bthome::SERVICE_UUID;

/// One BTHome service data value as BlueZ reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BleAdvert {
    /// Sender's MAC address, as printed (most significant byte first).
    pub mac: [u8; 6],
    /// RSSI BlueZ last reported for the device, dBm.
    pub rssi: Option<i16>,
    /// The service data value for UUID 0xFCD2 (device info byte first, no UUID).
    pub data: Vec<u8>,
    /// Receive time, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// Why scanning stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A BlueZ / D-Bus call failed (no bluetoothd, no adapter, permission denied, ...).
    #[error("BlueZ: {0}")]
    Bluez(#[from] bluer::Error),
    /// The receiving end of the channel was dropped.
    #[error("advert channel closed")]
    ChannelClosed,
}

/// The full 128-bit form of the BTHome UUID 0xFCD2.
pub fn bthome_uuid() -> Uuid {
    Uuid::from_u16(SERVICE_UUID)
}

use crate::reading::now_ms;

/// Scan on the default adapter until the channel closes or BlueZ fails, sending every
/// BTHome service data value to `tx`.
pub async fn scan(tx: mpsc::Sender<BleAdvert>) -> Result<(), ScanError> {
    let session = bluer::Session::new().await?;
    let adapter = session.default_adapter().await?;
    adapter.set_powered(true).await?;
    // No UUID in the filter: BlueZ matches filter UUIDs against the advertised service UUID
    // lists, and BTHome devices usually send only service data (AD type 0x16) without a
    // UUID list, so filtering there could hide them. Service data is filtered below instead.
    let filter = DiscoveryFilter {
        transport: DiscoveryTransport::Le,
        duplicate_data: true,
        ..DiscoveryFilter::default()
    };
    adapter.set_discovery_filter(filter).await?;
    tracing::info!(
        adapter = adapter.name(),
        "BLE discovery started (LE, DuplicateData)"
    );
    let mut discover = adapter.discover_devices().await?;
    // Per-device property-change streams, tagged with the device address.
    type Changes = std::pin::Pin<Box<dyn Stream<Item = (Address, DeviceEvent)> + Send>>;
    let mut changes: SelectAll<Changes> = SelectAll::new();
    let mut rssi: HashMap<Address, i16> = HashMap::new();
    let uuid = bthome_uuid();

    loop {
        tokio::select! {
            ev = discover.next() => {
                let Some(ev) = ev else { return Ok(()) };
                match ev {
                    AdapterEvent::DeviceAdded(addr) => {
                        let device = adapter.device(addr)?;
                        // The first advert arrives as the device's initial properties.
                        let r = device.rssi().await.ok().flatten();
                        if let Some(r) = r {
                            rssi.insert(addr, r);
                        }
                        if let Ok(Some(sd)) = device.service_data().await
                            && let Some(data) = sd.get(&uuid)
                        {
                            send(&tx, addr, r, data.clone()).await?;
                        }
                        match device.events().await {
                            Ok(events) => changes.push(Box::pin(events.map(move |e| (addr, e)))),
                            Err(e) => tracing::warn!(%addr, "no property events: {e}"),
                        }
                    }
                    AdapterEvent::DeviceRemoved(addr) => {
                        rssi.remove(&addr);
                    }
                    AdapterEvent::PropertyChanged(_) => {}
                }
            }
            Some((addr, DeviceEvent::PropertyChanged(prop))) = changes.next(), if !changes.is_empty() => {
                match prop {
                    DeviceProperty::Rssi(r) => {
                        rssi.insert(addr, r);
                    }
                    DeviceProperty::ServiceData(sd) => {
                        if let Some(data) = sd.get(&uuid) {
                            send(&tx, addr, rssi.get(&addr).copied(), data.clone()).await?;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn send(
    tx: &mpsc::Sender<BleAdvert>,
    addr: Address,
    rssi: Option<i16>,
    data: Vec<u8>,
) -> Result<(), ScanError> {
    let advert = BleAdvert {
        mac: addr.0,
        rssi,
        data,
        time_ms: now_ms(),
    };
    tx.send(advert).await.map_err(|_| ScanError::ChannelClosed)
}
