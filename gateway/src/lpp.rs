//! Cayenne Low Power Payload (LPP) v1: decoder, encoder (for tests and the gateway's simulate
//! mode), and the bridge from a LoRa uplink to [`Reading`]s.
//!
//! Format (myDevices Cayenne LPP documentation, "Payload structure"): `[channel u8][type u8]
//! [data]` repeated; data is big-endian, with the size, multiplier and signedness of the type.
//! The type table below was checked against the reference implementation's constants and
//! `getTypeSize`/`getTypeMultiplier`/`getTypeSigned` (ElectronicCats/CayenneLPP `CayenneLPP.h`
//! and `.cpp`, derived from myDevices' mbed Cayenne-LPP and TTN's arduino-device-lib): signed
//! types are analog in/out, temperature, accelerometer, altitude, gyrometer and GPS, everything
//! else is unsigned. Concentration is 125 and colour 135 as in the current reference; an older
//! ElectronicCats release numbered them 143 (`LPP_PPM`) and 144 (`LPP_RGB`) — those codes are not
//! accepted here. The extended types of that library (polyline 240, and the unofficial ones of
//! forks) are not decoded: they are "unknown type" errors.
//!
//! LoRaWAN: the rxpk `data` is a whole PHYPayload whose FRMPayload is encrypted with the device's
//! AppSKey, which a gateway normally does not have. [`to_readings`] therefore decodes LPP only for
//! devices the caller lists in [`LoraDevices`] — as unencrypted test devices (FRMPayload taken as
//! plaintext) or with their AppSKey (decrypted per LoRaWAN 1.0.x §4.3.3.1, see
//! [`crate::lora::lorawan::crypt_frm_payload`]). Everything else is passed through as a
//! [`RawUplink`]. The MIC is not verified (that needs the NwkSKey).

use std::collections::{BTreeMap, BTreeSet};

use crate::lora::lorawan::{self, Frame, FrameError};
use crate::lora::semtech::{Eui, RxPk};
use crate::{DeviceId, RadioMeta, Reading, Source};

/// One fixed-size component of a type's data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    /// Size on the wire, bytes (big-endian).
    pub bytes: u8,
    /// Two's-complement signed.
    pub signed: bool,
    /// The wire integer is `value × divisor` (the reference's "multiplier").
    pub divisor: f64,
    /// Component name (`""` for single-value types, `"x"`, `"latitude"`, ...).
    pub component: &'static str,
    /// Unit of the scaled value.
    pub unit: &'static str,
}

const fn f(bytes: u8, signed: bool, divisor: f64, unit: &'static str) -> Field {
    Field {
        bytes,
        signed,
        divisor,
        component: "",
        unit,
    }
}

const fn c(
    bytes: u8,
    signed: bool,
    divisor: f64,
    component: &'static str,
    unit: &'static str,
) -> Field {
    Field {
        bytes,
        signed,
        divisor,
        component,
        unit,
    }
}

macro_rules! lpp_types {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, [$($field:expr),+ $(,)?]; )+) => {
        /// A Cayenne LPP data type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum LppKind {
            $( $(#[$doc])* $variant, )+
        }

        /// The type table: code, name, fields (reference: `LPP_*`, `LPP_*_SIZE`, `LPP_*_MULT`).
        pub const TYPES: &[TypeInfo] = &[
            $( TypeInfo { kind: LppKind::$variant, code: $code, name: $name, fields: &[$($field),+] }, )+
        ];
    };
}

/// A row of the type table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypeInfo {
    /// The kind.
    pub kind: LppKind,
    /// The type byte.
    pub code: u8,
    /// Name, used as the reading quantity (TTN `decoded_payload` style, e.g. `temperature`).
    pub name: &'static str,
    /// The data's components, in wire order.
    pub fields: &'static [Field],
}

impl TypeInfo {
    /// Data size, bytes.
    pub fn size(&self) -> usize {
        self.fields.iter().map(|f| usize::from(f.bytes)).sum()
    }
}

lpp_types! {
    /// 0: digital input, 1 byte.
    DigitalInput = 0, "digital_input", [f(1, false, 1.0, "")];
    /// 1: digital output, 1 byte.
    DigitalOutput = 1, "digital_output", [f(1, false, 1.0, "")];
    /// 2: analog input, 2 bytes, 0.01 signed.
    AnalogInput = 2, "analog_input", [f(2, true, 100.0, "")];
    /// 3: analog output, 2 bytes, 0.01 signed.
    AnalogOutput = 3, "analog_output", [f(2, true, 100.0, "")];
    /// 100: generic sensor, 4 bytes unsigned.
    GenericSensor = 100, "generic_sensor", [f(4, false, 1.0, "")];
    /// 101: illuminance, 2 bytes, 1 lux unsigned.
    Illuminance = 101, "illuminance", [f(2, false, 1.0, "lx")];
    /// 102: presence, 1 byte.
    Presence = 102, "presence", [f(1, false, 1.0, "")];
    /// 103: temperature, 2 bytes, 0.1 °C signed.
    Temperature = 103, "temperature", [f(2, true, 10.0, "°C")];
    /// 104: relative humidity, 1 byte, 0.5 % unsigned.
    Humidity = 104, "humidity", [f(1, false, 2.0, "%")];
    /// 113: accelerometer, 3 × 2 bytes, 0.001 G signed.
    Accelerometer = 113, "accelerometer", [c(2, true, 1000.0, "x", "G"), c(2, true, 1000.0, "y", "G"), c(2, true, 1000.0, "z", "G")];
    /// 115: barometric pressure, 2 bytes, 0.1 hPa unsigned.
    Barometer = 115, "barometric_pressure", [f(2, false, 10.0, "hPa")];
    /// 116: voltage, 2 bytes, 0.01 V unsigned.
    Voltage = 116, "voltage", [f(2, false, 100.0, "V")];
    /// 117: current, 2 bytes, 0.001 A unsigned.
    Current = 117, "current", [f(2, false, 1000.0, "A")];
    /// 118: frequency, 4 bytes, 1 Hz unsigned.
    Frequency = 118, "frequency", [f(4, false, 1.0, "Hz")];
    /// 120: percentage, 1 byte, 1 % unsigned.
    Percentage = 120, "percentage", [f(1, false, 1.0, "%")];
    /// 121: altitude, 2 bytes, 1 m signed.
    Altitude = 121, "altitude", [f(2, true, 1.0, "m")];
    /// 125: concentration, 2 bytes, 1 ppm unsigned.
    Concentration = 125, "concentration", [f(2, false, 1.0, "ppm")];
    /// 128: power, 2 bytes, 1 W unsigned.
    Power = 128, "power", [f(2, false, 1.0, "W")];
    /// 130: distance, 4 bytes, 0.001 m unsigned.
    Distance = 130, "distance", [f(4, false, 1000.0, "m")];
    /// 131: energy, 4 bytes, 0.001 kWh unsigned.
    Energy = 131, "energy", [f(4, false, 1000.0, "kWh")];
    /// 132: direction, 2 bytes, 1° unsigned.
    Direction = 132, "direction", [f(2, false, 1.0, "°")];
    /// 133: Unix time, 4 bytes unsigned, seconds.
    UnixTime = 133, "unix_time", [f(4, false, 1.0, "s")];
    /// 134: gyrometer, 3 × 2 bytes, 0.01 °/s signed.
    Gyrometer = 134, "gyrometer", [c(2, true, 100.0, "x", "°/s"), c(2, true, 100.0, "y", "°/s"), c(2, true, 100.0, "z", "°/s")];
    /// 135: colour, 3 × 1 byte RGB.
    Colour = 135, "colour", [c(1, false, 1.0, "r", ""), c(1, false, 1.0, "g", ""), c(1, false, 1.0, "b", "")];
    /// 136: GPS, latitude and longitude 3 bytes 0.0001° signed, altitude 3 bytes 0.01 m signed.
    Gps = 136, "gps", [c(3, true, 10000.0, "latitude", "°"), c(3, true, 10000.0, "longitude", "°"), c(3, true, 100.0, "altitude", "m")];
    /// 142: switch, 1 byte, 0/1.
    Switch = 142, "switch", [f(1, false, 1.0, "")];
}

impl LppKind {
    /// The table row of this kind.
    pub fn info(self) -> &'static TypeInfo {
        // TYPES is declared in enum order, so the discriminant indexes it.
        &TYPES[self as usize]
    }

    /// The kind with type byte `code`.
    pub fn from_code(code: u8) -> Option<LppKind> {
        TYPES.iter().find(|t| t.code == code).map(|t| t.kind)
    }

    /// The type byte.
    pub fn code(self) -> u8 {
        self.info().code
    }

    /// The name.
    pub fn name(self) -> &'static str {
        self.info().name
    }
}

/// One decoded channel value.
#[derive(Debug, Clone, PartialEq)]
pub struct LppValue {
    /// The channel byte.
    pub channel: u8,
    /// The type.
    pub kind: LppKind,
    /// The type's name.
    pub name: &'static str,
    /// The scaled values, one per component (3 for accelerometer, gyrometer, colour, GPS).
    pub values: Vec<f64>,
    /// The unit of the first component (GPS altitude is in metres; see [`Field::unit`]).
    pub unit: &'static str,
}

/// Why a payload is not (entirely) valid LPP. Both variants carry what was decoded before the
/// problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LppError {
    /// A type byte not in the table: decoding cannot continue (the size is unknown).
    #[error("unknown LPP type {type_code} on channel {channel} at byte {offset} (after {} values)", decoded.len())]
    UnknownType {
        /// The channel byte.
        channel: u8,
        /// The type byte.
        type_code: u8,
        /// Offset of the channel byte.
        offset: usize,
        /// Values decoded before it.
        decoded: Vec<LppValue>,
    },
    /// The payload ends inside a header or a value.
    #[error("truncated LPP payload at byte {offset}: need {need} bytes, have {have} (after {} values)", decoded.len())]
    Truncated {
        /// Offset of the incomplete entry's channel byte.
        offset: usize,
        /// The type byte, if it was present.
        type_code: Option<u8>,
        /// Bytes the entry needs (header included).
        need: usize,
        /// Bytes left.
        have: usize,
        /// Values decoded before it.
        decoded: Vec<LppValue>,
    },
}

impl LppError {
    /// The values decoded before the error.
    pub fn decoded(&self) -> &[LppValue] {
        match self {
            LppError::UnknownType { decoded, .. } | LppError::Truncated { decoded, .. } => decoded,
        }
    }
}

/// Decodes an LPP payload. An empty payload is valid (no values). Never panics.
pub fn decode(payload: &[u8]) -> Result<Vec<LppValue>, LppError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let rest = &payload[at..];
        let [channel, type_code, ..] = *rest else {
            return Err(LppError::Truncated {
                offset: at,
                type_code: None,
                need: 2,
                have: rest.len(),
                decoded: out,
            });
        };
        let Some(kind) = LppKind::from_code(type_code) else {
            return Err(LppError::UnknownType {
                channel,
                type_code,
                offset: at,
                decoded: out,
            });
        };
        let info = kind.info();
        let need = 2 + info.size();
        let Some(mut data) = rest.get(2..need) else {
            return Err(LppError::Truncated {
                offset: at,
                type_code: Some(type_code),
                need,
                have: rest.len(),
                decoded: out,
            });
        };
        let mut values = Vec::with_capacity(info.fields.len());
        for field in info.fields {
            let (bytes, tail) = data.split_at(usize::from(field.bytes));
            data = tail;
            values.push(read_int(bytes, field.signed) as f64 / field.divisor);
        }
        out.push(LppValue {
            channel,
            kind,
            name: info.name,
            values,
            unit: info.fields[0].unit,
        });
        at += need;
    }
    Ok(out)
}

/// A big-endian integer of 1–4 bytes, sign-extended if `signed`.
fn read_int(bytes: &[u8], signed: bool) -> i64 {
    let raw = bytes.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
    let bits = 8 * bytes.len() as u32;
    if signed && bits > 0 && bits < 64 && raw & (1 << (bits - 1)) != 0 {
        (raw as i64) - (1i64 << bits)
    } else {
        raw as i64
    }
}

/// Why a value cannot be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// Wrong number of values for the type.
    #[error("{kind:?} takes {expected} values, got {got}")]
    Arity {
        /// The type.
        kind: LppKind,
        /// Values it takes.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A value does not fit the type's size and sign after scaling (or is not finite).
    #[error("{value} does not fit {kind:?}")]
    OutOfRange {
        /// The type.
        kind: LppKind,
        /// The value.
        value: f64,
    },
}

/// Builds an LPP payload (the reference's `CayenneLPP::add*`), e.g. for the simulate mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty payload.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// Appends one value of `kind` on `channel`; `values` has one entry per component, scaled as
    /// [`decode`] returns them (rounded to the type's resolution). On error nothing is appended.
    pub fn add(
        &mut self,
        channel: u8,
        kind: LppKind,
        values: &[f64],
    ) -> Result<&mut Self, EncodeError> {
        let info = kind.info();
        if values.len() != info.fields.len() {
            return Err(EncodeError::Arity {
                kind,
                expected: info.fields.len(),
                got: values.len(),
            });
        }
        let mut entry = vec![channel, info.code];
        for (field, &value) in info.fields.iter().zip(values) {
            let raw = (value * field.divisor).round();
            let bits = 8 * i32::from(field.bytes);
            let (lo, hi) = if field.signed {
                (-(2f64.powi(bits - 1)), 2f64.powi(bits - 1) - 1.0)
            } else {
                (0.0, 2f64.powi(bits) - 1.0)
            };
            if !raw.is_finite() || raw < lo || raw > hi {
                return Err(EncodeError::OutOfRange { kind, value });
            }
            let raw = raw as i64;
            entry.extend_from_slice(&raw.to_be_bytes()[8 - usize::from(field.bytes)..]);
        }
        self.buf.extend_from_slice(&entry);
        Ok(self)
    }

    /// Appends a temperature, °C.
    pub fn add_temperature(&mut self, channel: u8, celsius: f64) -> Result<&mut Self, EncodeError> {
        self.add(channel, LppKind::Temperature, &[celsius])
    }

    /// Appends a relative humidity, %.
    pub fn add_humidity(&mut self, channel: u8, percent: f64) -> Result<&mut Self, EncodeError> {
        self.add(channel, LppKind::Humidity, &[percent])
    }

    /// Appends a barometric pressure, hPa.
    pub fn add_barometer(&mut self, channel: u8, hpa: f64) -> Result<&mut Self, EncodeError> {
        self.add(channel, LppKind::Barometer, &[hpa])
    }

    /// Appends a GPS position: degrees, degrees, metres.
    pub fn add_gps(
        &mut self,
        channel: u8,
        lat: f64,
        lon: f64,
        alt_m: f64,
    ) -> Result<&mut Self, EncodeError> {
        self.add(channel, LppKind::Gps, &[lat, lon, alt_m])
    }

    /// The payload so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The payload.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// The LoRaWAN devices whose payloads the gateway may read (keyed by DevAddr).
#[derive(Debug, Clone, Default)]
pub struct LoraDevices {
    plaintext: BTreeSet<u32>,
    app_skeys: BTreeMap<u32, [u8; 16]>,
}

impl LoraDevices {
    /// No devices: every uplink passes through raw.
    pub fn new() -> Self {
        LoraDevices::default()
    }

    /// Treats `dev_addr`'s FRMPayload as plaintext LPP (unencrypted test devices, the simulator).
    pub fn with_plaintext(mut self, dev_addr: u32) -> Self {
        self.plaintext.insert(dev_addr);
        self
    }

    /// Decrypts `dev_addr`'s FRMPayload with its AppSKey (LoRaWAN 1.0.x, §4.3.3.1).
    pub fn with_app_skey(mut self, dev_addr: u32, app_skey: [u8; 16]) -> Self {
        self.app_skeys.insert(dev_addr, app_skey);
        self
    }
}

/// Why an uplink was passed through raw instead of (fully) decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum RawReason {
    /// Not a readable LoRaWAN frame.
    NotLorawan(FrameError),
    /// A join request (names the DevEUI, carries no sensor data).
    JoinRequest,
    /// A data frame from a device without plaintext or key configuration.
    NoKey,
    /// No FPort, or FPort 0 (MAC commands only).
    NoApplicationPayload,
    /// A downlink data frame (a gateway does not normally hear these).
    NotUplink,
    /// The FRMPayload is not (entirely) LPP; readings decoded before the problem were kept.
    NotLpp(LppError),
}

/// An uplink kept as received, because it could not be turned (entirely) into readings.
#[derive(Debug, Clone, PartialEq)]
pub struct RawUplink {
    /// The device: DevAddr (data frames) or DevEUI (join requests), if the frame names one.
    pub device: Option<DeviceId>,
    /// When the gateway received it, ms since the Unix epoch.
    pub time_ms: u64,
    /// FCnt (16 wire bits), for data frames.
    pub frame_id: Option<u32>,
    /// FPort, for data frames with a payload.
    pub fport: Option<u8>,
    /// The whole PHYPayload.
    pub phy_payload: Vec<u8>,
    /// Why it is raw.
    pub reason: RawReason,
    /// Radio metadata.
    pub radio: RadioMeta,
}

/// The result of [`to_readings`]: readings, and the raw uplink when not everything was decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraDecoded {
    /// The readings (possibly a prefix of the payload's values, see [`RawReason::NotLpp`]).
    pub readings: Vec<Reading>,
    /// The uplink as received, when it was not entirely decoded.
    pub raw: Option<RawUplink>,
}

/// The device id of a DevAddr: zero-padded on the left, printed big-endian.
pub fn dev_addr_id(dev_addr: u32) -> DeviceId {
    let mut b = [0u8; 8];
    b[4..].copy_from_slice(&dev_addr.to_be_bytes());
    DeviceId(b)
}

/// Turns decoded values into readings. Quantity names follow TTN's Cayenne decoder
/// (`temperature_3` for channel 3), with the component for multi-value types
/// (`accelerometer_1_x`, `gps_2_latitude`).
pub fn readings(
    values: &[LppValue],
    device: DeviceId,
    time_ms: u64,
    frame_id: Option<u32>,
    radio: &RadioMeta,
) -> Vec<Reading> {
    let mut out = Vec::new();
    for v in values {
        for (field, &value) in v.kind.info().fields.iter().zip(&v.values) {
            let quantity = if field.component.is_empty() {
                format!("{}_{}", v.name, v.channel)
            } else {
                format!("{}_{}_{}", v.name, v.channel, field.component)
            };
            out.push(Reading {
                source: Source::Lora,
                device,
                time_ms,
                quantity,
                value,
                unit: field.unit.to_string(),
                frame_id,
                radio: radio.clone(),
            });
        }
    }
    out
}

/// Decodes one uplink (the PHYPayload of `rxpk`, heard by `gateway_eui` at `time_ms`) into
/// readings where `devices` allows it, otherwise passes it through raw. Never panics.
pub fn to_readings(
    phy: &[u8],
    rxpk: &RxPk,
    gateway_eui: Eui,
    time_ms: u64,
    devices: &LoraDevices,
) -> LoraDecoded {
    let radio = rxpk.radio_meta(gateway_eui);
    let raw = |device, frame_id, fport, reason| RawUplink {
        device,
        time_ms,
        frame_id,
        fport,
        phy_payload: phy.to_vec(),
        reason,
        radio: radio.clone(),
    };
    let frame = match lorawan::parse(phy) {
        Ok(Frame::Data(d)) => d,
        Ok(Frame::JoinRequest(j)) => {
            let device = Some(DeviceId(j.dev_eui.to_be_bytes()));
            return LoraDecoded {
                readings: Vec::new(),
                raw: Some(raw(device, None, None, RawReason::JoinRequest)),
            };
        }
        Err(e) => {
            return LoraDecoded {
                readings: Vec::new(),
                raw: Some(raw(None, None, None, RawReason::NotLorawan(e))),
            };
        }
    };
    let device = dev_addr_id(frame.dev_addr);
    let fcnt = Some(u32::from(frame.fcnt));
    let passthrough = |reason| LoraDecoded {
        readings: Vec::new(),
        raw: Some(raw(Some(device), fcnt, frame.fport, reason)),
    };
    if !frame.is_uplink() {
        return passthrough(RawReason::NotUplink);
    }
    let Some(fport @ 1..) = frame.fport else {
        return passthrough(RawReason::NoApplicationPayload);
    };
    let plaintext = if devices.plaintext.contains(&frame.dev_addr) {
        frame.frm_payload.to_vec()
    } else if let Some(key) = devices.app_skeys.get(&frame.dev_addr) {
        lorawan::crypt_frm_payload(
            key,
            true,
            frame.dev_addr,
            u32::from(frame.fcnt),
            frame.frm_payload,
        )
    } else {
        return passthrough(RawReason::NoKey);
    };
    match decode(&plaintext) {
        Ok(values) => LoraDecoded {
            readings: readings(&values, device, time_ms, fcnt, &radio),
            raw: None,
        },
        Err(e) => LoraDecoded {
            readings: readings(e.decoded(), device, time_ms, fcnt, &radio),
            raw: Some(raw(Some(device), fcnt, Some(fport), RawReason::NotLpp(e))),
        },
    }
}
