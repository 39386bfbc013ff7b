//! BTHome v2 (<https://bthome.io/format>): BLE service data with the 16-bit UUID 0xFCD2.
//!
//! The input to [`parse`] is the service data *value* for UUID 0xFCD2 (what BlueZ reports in
//! a device's `ServiceData` map), i.e. without the AD length/type bytes and without the UUID:
//!
//! ```text
//! device information (1 byte) | object id | value | object id | value | ...
//! ```
//!
//! * Device information (bthome.io/format "BTHome Device Information"): bit 0 encryption
//!   flag, bit 2 trigger-based flag, bits 5–7 version (must be 2; anything else is
//!   [`Error::UnsupportedVersion`]); the other bits are reserved and ignored.
//! * Objects: see [`objects::OBJECTS`]. The spec says "Object ids have to be applied in
//!   numerical order (from low to high)": a rule for *senders*, so that older receivers
//!   can decode the objects before a newer id. It does not tell receivers to reject other
//!   orders, so this parser accepts any order; it also accepts repeated ids ("Multiple
//!   measurements of the same type", see [`to_readings`] for their names).
//! * **Unknown object ids**: the length of an unknown object is unknown, so nothing after it
//!   can be decoded. As the spec prescribes ("A BTHome receiver will stop parsing object ids
//!   as soon as it finds an object id that isn't supported"), parsing stops there and
//!   [`Advertisement::unknown`] carries the id; the values decoded before it are returned.
//!   This is not an error, so a sensor with a newer firmware than this table still yields
//!   its first readings.
//! * A truncated object (fewer bytes than the table says) is [`Error::Truncated`], naming it.
//! * Encrypted adverts (bit 0 set) need the device's bind key: see [`encryption::Decryptor`];
//!   [`parse`] returns [`Error::Encrypted`] for them.

pub mod encryption;
pub mod objects;

pub use encryption::{Decryptor, encrypt};
pub use objects::{Kind, OBJECTS, ObjectSpec, button_event_name, lookup};

use crate::reading::{DeviceId, RadioMeta, Reading, Source};

/// The BTHome 16-bit service UUID (bthome.io/format "Service data").
pub const SERVICE_UUID: u16 = 0xFCD2;

/// The only BTHome version this parser accepts.
pub const VERSION: u8 = 2;

/// Device information bit 0: the payload is encrypted (bthome.io/format).
pub const FLAG_ENCRYPTED: u8 = 0x01;
/// Device information bit 2: the device sends at irregular intervals, on events.
pub const FLAG_TRIGGER_BASED: u8 = 0x04;

/// Why a BTHome advert was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The service data is empty (no device information byte).
    #[error("empty BTHome service data: no device information byte")]
    Empty,
    /// The version bits (5–7) of the device information byte are not 2.
    #[error("unsupported BTHome version {0} (only version 2 is supported)")]
    UnsupportedVersion(u8),
    /// An object has fewer bytes than the object table requires.
    #[error("object 0x{id:02x} ({name}) truncated: needs {need} bytes, {have} left")]
    Truncated {
        /// Object id.
        id: u8,
        /// Its table name.
        name: &'static str,
        /// Bytes the value needs.
        need: usize,
        /// Bytes left in the advert.
        have: usize,
    },
    /// The advert is encrypted; decrypt it with the device's bind key ([`Decryptor`]).
    #[error("BTHome advert is encrypted; a bind key is needed")]
    Encrypted,
    /// A device configured with a bind key sent a plain advert (possibly spoofed).
    #[error("expected an encrypted BTHome advert from a device with a bind key, got a plain one")]
    NotEncrypted,
    /// The encrypted advert is shorter than device info + counter + MIC.
    #[error("encrypted BTHome advert too short: {0} bytes, needs at least 9")]
    EncryptedTooShort(usize),
    /// The AES-CCM message integrity check failed: wrong bind key or tampered advert.
    #[error("BTHome MIC check failed: wrong bind key or tampered advert")]
    Mic,
    /// The counter did not increase: an old or replayed advert.
    #[error("BTHome replay: counter {counter} is not above the last accepted {last}")]
    Replay {
        /// Counter of the rejected advert.
        counter: u32,
        /// Last counter accepted from this device.
        last: u32,
    },
    /// [`encrypt`] was given more plaintext than AES-CCM (13-byte nonce) allows.
    #[error("plaintext of {0} bytes too long to encrypt (AES-CCM limit 65535)")]
    PlaintextTooLong(usize),
}

/// The value of one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A scaled number (measurements, binary sensors as 0/1, event codes, dimmer steps).
    Number(f64),
    /// Text (0x53, lossy UTF-8) or a firmware version (`"4.2.1.0"`).
    Text(String),
    /// Raw bytes (0x54).
    Raw(Vec<u8>),
}

/// One decoded object.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// Object id.
    pub id: u8,
    /// Its table name.
    pub name: &'static str,
    /// The decoded value.
    pub value: Data,
    /// Unit of `value` (empty for counts, flags, events, text).
    pub unit: &'static str,
}

impl Value {
    /// The value as a number, if it is one.
    pub fn number(&self) -> Option<f64> {
        match self.value {
            Data::Number(v) => Some(v),
            _ => None,
        }
    }
}

/// A parsed BTHome v2 advert.
#[derive(Debug, Clone, PartialEq)]
pub struct Advertisement {
    /// BTHome version (always 2 once parsed).
    pub version: u8,
    /// Whether the advert was encrypted (then it was decrypted by a [`Decryptor`]).
    pub encrypted: bool,
    /// Whether the device sends on events rather than at regular intervals.
    pub trigger_based: bool,
    /// The packet id (object 0x00), if present: identical ids mean a repeated advert.
    pub packet_id: Option<u8>,
    /// The decoded objects, in advert order (the packet id included).
    pub values: Vec<Value>,
    /// The first object id not in the table, where parsing stopped (see the module docs).
    pub unknown: Option<u8>,
}

/// Split a device information byte into (encrypted, trigger_based, version).
pub fn device_info(byte: u8) -> (bool, bool, u8) {
    (
        byte & FLAG_ENCRYPTED != 0,
        byte & FLAG_TRIGGER_BASED != 0,
        byte >> 5,
    )
}

/// The device information byte for a version-2 advert.
pub fn device_info_byte(encrypted: bool, trigger_based: bool) -> u8 {
    (VERSION << 5) | u8::from(encrypted) | (u8::from(trigger_based) << 2)
}

/// Parse a plain (unencrypted) BTHome v2 service data value (without the UUID).
pub fn parse(data: &[u8]) -> Result<Advertisement, Error> {
    let (&info, objects) = data.split_first().ok_or(Error::Empty)?;
    let (encrypted, _, version) = device_info(info);
    if version != VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    if encrypted {
        return Err(Error::Encrypted);
    }
    parse_objects(info, objects)
}

/// Decode the objects after the device information byte `info` (already checked).
pub(crate) fn parse_objects(info: u8, mut rest: &[u8]) -> Result<Advertisement, Error> {
    let (encrypted, trigger_based, version) = device_info(info);
    let mut adv = Advertisement {
        version,
        encrypted,
        trigger_based,
        packet_id: None,
        values: Vec::new(),
        unknown: None,
    };
    while let Some((&id, after)) = rest.split_first() {
        let Some(spec) = lookup(id) else {
            adv.unknown = Some(id);
            break;
        };
        let truncated = |need: usize, have: usize| Error::Truncated {
            id,
            name: spec.name,
            need,
            have,
        };
        // Length-prefixed objects (bthome.io/format "Misc data": text 0x53, raw 0x54): the
        // first byte is the length of what follows.
        let (body, next) = if spec.len == 0 {
            let (&n, after) = after.split_first().ok_or_else(|| truncated(1, 0))?;
            let n = usize::from(n);
            if after.len() < n {
                return Err(truncated(n + 1, after.len() + 1));
            }
            after.split_at(n)
        } else {
            let n = usize::from(spec.len);
            if after.len() < n {
                return Err(truncated(n, after.len()));
            }
            after.split_at(n)
        };
        let value = decode(spec, body);
        if id == objects::PACKET_ID && adv.packet_id.is_none() {
            adv.packet_id = body.first().copied();
        }
        adv.values.push(Value {
            id,
            name: spec.name,
            value,
            unit: spec.unit,
        });
        rest = next;
    }
    Ok(adv)
}

/// Decode one value whose `body` has exactly the table's length.
fn decode(spec: &ObjectSpec, body: &[u8]) -> Data {
    match spec.kind {
        Kind::Number | Kind::Binary | Kind::Button => {
            Data::Number(raw_int(body, spec.signed) as f64 * spec.factor)
        }
        Kind::Dimmer => {
            let steps = f64::from(body.get(1).copied().unwrap_or(0));
            Data::Number(match body.first() {
                Some(1) => -steps,
                Some(2) => steps,
                _ => 0.0,
            })
        }
        Kind::Text => Data::Text(String::from_utf8_lossy(body).into_owned()),
        Kind::Raw => Data::Raw(body.to_vec()),
        Kind::Firmware => {
            let parts: Vec<String> = body.iter().rev().map(|b| b.to_string()).collect();
            Data::Text(parts.join("."))
        }
    }
}

/// A little-endian integer of 1–4 bytes (sign-extended if `signed`).
fn raw_int(body: &[u8], signed: bool) -> i64 {
    let mut v: u64 = 0;
    for (i, b) in body.iter().enumerate().take(8) {
        v |= u64::from(*b) << (8 * i);
    }
    let bits = 8 * body.len().min(8) as u32;
    if signed && bits > 0 && bits < 64 {
        let shift = 64 - bits;
        ((v << shift) as i64) >> shift
    } else {
        v as i64
    }
}

/// Encode one object (id then value bytes) from its raw integer, for simulators and tests.
/// `None` for ids not in the table and for length-prefixed objects (use [`encode_bytes`]).
pub fn encode_raw(id: u8, raw: i64) -> Option<Vec<u8>> {
    let spec = lookup(id)?;
    if spec.len == 0 {
        return None;
    }
    let mut out = vec![id];
    out.extend_from_slice(&raw.to_le_bytes()[..usize::from(spec.len)]);
    Some(out)
}

/// Encode a length-prefixed object (text 0x53 or raw 0x54); `None` if longer than 255 bytes.
pub fn encode_bytes(id: u8, bytes: &[u8]) -> Option<Vec<u8>> {
    let n = u8::try_from(bytes.len()).ok()?;
    let mut out = vec![id, n];
    out.extend_from_slice(bytes);
    Some(out)
}

/// Encode one numeric object from its scaled value (rounded to the table's resolution).
pub fn encode_value(id: u8, value: f64) -> Option<Vec<u8>> {
    let spec = lookup(id)?;
    encode_raw(id, (value / spec.factor).round() as i64)
}

/// Normalise an advert into [`Reading`]s: one per numeric object, the packet id excepted
/// (it becomes [`Reading::frame_id`]); text and raw objects have no numeric value and are
/// not readings. `mac` as printed (most significant byte first).
///
/// Quantity names: the table name; a second, third, ... object with the same name in one
/// advert gets `_2`, `_3`, ... appended, as bthome.io/format ("Multiple measurements of the
/// same type") describes, so senders must keep their order stable.
pub fn to_readings(
    adv: &Advertisement,
    mac: [u8; 6],
    time_ms: u64,
    rssi: Option<i16>,
) -> Vec<Reading> {
    let device = DeviceId::from_mac(mac);
    let mut seen: Vec<(&'static str, u32)> = Vec::new();
    adv.values
        .iter()
        .filter(|v| v.id != objects::PACKET_ID)
        .filter_map(|v| {
            let value = v.number()?;
            let n = match seen.iter_mut().find(|(name, _)| *name == v.name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    seen.push((v.name, 1));
                    1
                }
            };
            let quantity = if n == 1 {
                v.name.to_string()
            } else {
                format!("{}_{n}", v.name)
            };
            Some(Reading {
                source: Source::Ble,
                device,
                time_ms,
                quantity,
                value,
                unit: v.unit.to_string(),
                frame_id: adv.packet_id.map(u32::from),
                radio: RadioMeta {
                    rssi_dbm: rssi,
                    ..RadioMeta::default()
                },
            })
        })
        .collect()
}
