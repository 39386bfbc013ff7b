//! The BTHome v2 object table (bthome.io/format, sections "Sensor data", "Binary sensor data",
//! "Events", "Device information" and "Miscellaneous data").
//!
//! One row per object id: how many bytes follow the id, whether they are a signed integer,
//! the factor the raw integer is multiplied with and the unit of the result. Every multi-byte
//! integer is little-endian (bthome.io/format, "Data format": "little-endian byte order").
//!
//! The table is sorted by id (a test checks it) so that [`lookup`] can binary-search it.

/// How an object's bytes are decoded (beyond plain integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A (signed or unsigned) little-endian integer, multiplied by the factor.
    Number,
    /// A binary sensor (bthome.io/format "Binary sensor data"): one byte, 0 = off, 1 = on.
    Binary,
    /// A button event (0x3A, bthome.io/format "Events"): one byte, the event code
    /// (see [`button_event_name`]).
    Button,
    /// A dimmer event (0x3C, bthome.io/format "Events"): two bytes, event (0 none, 1 rotate
    /// left, 2 rotate right) and the number of steps. Decoded as signed steps: left is
    /// negative, right positive, none zero.
    Dimmer,
    /// UTF-8 text (0x53): a length byte, then that many bytes.
    Text,
    /// Raw bytes (0x54): a length byte, then that many bytes.
    Raw,
    /// A firmware version (0xF1: 4 bytes, 0xF2: 3 bytes), most significant part last;
    /// decoded as text `"major.minor.patch[.build]"`.
    Firmware,
}

/// One row of the BTHome v2 object table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectSpec {
    /// Object id (the byte before the value).
    pub id: u8,
    /// Quantity name (becomes [`crate::Reading::quantity`]).
    pub name: &'static str,
    /// Number of value bytes after the id; 0 for length-prefixed objects ([`Kind::Text`],
    /// [`Kind::Raw`]).
    pub len: u8,
    /// Whether the integer is two's-complement signed.
    pub signed: bool,
    /// Scaling factor: value = raw integer × factor.
    pub factor: f64,
    /// Unit of the scaled value (empty for counts, flags and events).
    pub unit: &'static str,
    /// How the bytes are decoded.
    pub kind: Kind,
}

const fn num(
    id: u8,
    name: &'static str,
    len: u8,
    signed: bool,
    factor: f64,
    unit: &'static str,
) -> ObjectSpec {
    ObjectSpec {
        id,
        name,
        len,
        signed,
        factor,
        unit,
        kind: Kind::Number,
    }
}

const fn bin(id: u8, name: &'static str) -> ObjectSpec {
    ObjectSpec {
        id,
        name,
        len: 1,
        signed: false,
        factor: 1.0,
        unit: "",
        kind: Kind::Binary,
    }
}

const fn other(id: u8, name: &'static str, len: u8, kind: Kind) -> ObjectSpec {
    ObjectSpec {
        id,
        name,
        len,
        signed: false,
        factor: 1.0,
        unit: "",
        kind,
    }
}

/// Object id of the packet id (bthome.io/format, "Misc data": 0x00, uint8), used for
/// de-duplication, not a measurement.
pub const PACKET_ID: u8 = 0x00;

/// The complete BTHome v2 object table, sorted by id.
#[rustfmt::skip]
pub static OBJECTS: &[ObjectSpec] = &[
    // bthome.io/format "Misc data" / "Sensor data" (0x00..=0x14).
    num(0x00, "packet_id", 1, false, 1.0, ""),
    num(0x01, "battery", 1, false, 1.0, "%"),
    num(0x02, "temperature", 2, true, 0.01, "°C"),
    num(0x03, "humidity", 2, false, 0.01, "%"),
    num(0x04, "pressure", 3, false, 0.01, "hPa"),
    num(0x05, "illuminance", 3, false, 0.01, "lux"),
    num(0x06, "mass", 2, false, 0.01, "kg"),
    num(0x07, "mass", 2, false, 0.01, "lb"),
    num(0x08, "dewpoint", 2, true, 0.01, "°C"),
    num(0x09, "count", 1, false, 1.0, ""),
    num(0x0A, "energy", 3, false, 0.001, "kWh"),
    num(0x0B, "power", 3, false, 0.01, "W"),
    num(0x0C, "voltage", 2, false, 0.001, "V"),
    num(0x0D, "pm2.5", 2, false, 1.0, "µg/m³"),
    num(0x0E, "pm10", 2, false, 1.0, "µg/m³"),
    // "Binary sensor data" (uint8, 0 = False / 1 = True).
    bin(0x0F, "generic_boolean"),
    bin(0x10, "power_on"),
    bin(0x11, "opening"),
    num(0x12, "co2", 2, false, 1.0, "ppm"),
    num(0x13, "tvoc", 2, false, 1.0, "µg/m³"),
    num(0x14, "moisture", 2, false, 0.01, "%"),
    bin(0x15, "battery_low"),
    bin(0x16, "battery_charging"),
    bin(0x17, "carbon_monoxide"),
    bin(0x18, "cold"),
    bin(0x19, "connectivity"),
    bin(0x1A, "door"),
    bin(0x1B, "garage_door"),
    bin(0x1C, "gas_detected"),
    bin(0x1D, "heat"),
    bin(0x1E, "light"),
    bin(0x1F, "lock"),
    bin(0x20, "moisture_detected"),
    bin(0x21, "motion"),
    bin(0x22, "moving"),
    bin(0x23, "occupancy"),
    bin(0x24, "plug"),
    bin(0x25, "presence"),
    bin(0x26, "problem"),
    bin(0x27, "running"),
    bin(0x28, "safety"),
    bin(0x29, "smoke"),
    bin(0x2A, "sound"),
    bin(0x2B, "tamper"),
    bin(0x2C, "vibration"),
    bin(0x2D, "window"),
    num(0x2E, "humidity", 1, false, 1.0, "%"),
    num(0x2F, "moisture", 1, false, 1.0, "%"),
    // "Events".
    other(0x3A, "button", 1, Kind::Button),
    other(0x3C, "dimmer", 2, Kind::Dimmer),
    // "Sensor data" continued (0x3D..).
    num(0x3D, "count", 2, false, 1.0, ""),
    num(0x3E, "count", 4, false, 1.0, ""),
    num(0x3F, "rotation", 2, true, 0.1, "°"),
    num(0x40, "distance", 2, false, 1.0, "mm"),
    num(0x41, "distance", 2, false, 0.1, "m"),
    num(0x42, "duration", 3, false, 0.001, "s"),
    num(0x43, "current", 2, false, 0.001, "A"),
    num(0x44, "speed", 2, false, 0.01, "m/s"),
    num(0x45, "temperature", 2, true, 0.1, "°C"),
    num(0x46, "uv_index", 1, false, 0.1, ""),
    num(0x47, "volume", 2, false, 0.1, "L"),
    num(0x48, "volume", 2, false, 1.0, "mL"),
    num(0x49, "volume_flow_rate", 2, false, 0.001, "m³/h"),
    num(0x4A, "voltage", 2, false, 0.1, "V"),
    num(0x4B, "gas", 3, false, 0.001, "m³"),
    num(0x4C, "gas", 4, false, 0.001, "m³"),
    num(0x4D, "energy", 4, false, 0.001, "kWh"),
    num(0x4E, "volume", 4, false, 0.001, "L"),
    num(0x4F, "water", 4, false, 0.001, "L"),
    num(0x50, "timestamp", 4, false, 1.0, "s"),
    num(0x51, "acceleration", 2, false, 0.001, "m/s²"),
    num(0x52, "gyroscope", 2, false, 0.001, "°/s"),
    other(0x53, "text", 0, Kind::Text),
    other(0x54, "raw", 0, Kind::Raw),
    num(0x55, "volume_storage", 4, false, 0.001, "L"),
    num(0x56, "conductivity", 2, false, 1.0, "µS/cm"),
    num(0x57, "temperature", 1, true, 1.0, "°C"),
    num(0x58, "temperature", 1, true, 0.35, "°C"),
    num(0x59, "count", 1, true, 1.0, ""),
    num(0x5A, "count", 2, true, 1.0, ""),
    num(0x5B, "count", 4, true, 1.0, ""),
    num(0x5C, "power", 4, true, 0.01, "W"),
    num(0x5D, "current", 2, true, 0.001, "A"),
    num(0x5E, "direction", 2, false, 0.01, "°"),
    // 0x5F: the reference parser (Bluetooth-Devices/bthome-ble) uses factor 0.1; an older
    // revision of the spec page listed factor 1 (example 5FA00F = 4000 mm). 0.1 is the newer.
    num(0x5F, "precipitation", 2, false, 0.1, "mm"),
    num(0x60, "channel", 1, false, 1.0, ""),
    num(0x61, "rotational_speed", 2, false, 1.0, "rpm"),
    num(0x62, "speed", 4, true, 0.000_001, "m/s"),
    num(0x63, "acceleration", 4, true, 0.000_001, "m/s²"),
    // 0x60..=0x64 are the newest rows; taken from the reference parser
    // (Bluetooth-Devices/bthome-ble, maintained with the spec), the spec revision read for
    // this table ended at 0x5F. 0x64 light level: uint8, no unit.
    num(0x64, "light_level", 1, false, 1.0, ""),
    // "Device information".
    num(0xF0, "device_type_id", 2, false, 1.0, ""),
    other(0xF1, "firmware_version", 4, Kind::Firmware),
    other(0xF2, "firmware_version", 3, Kind::Firmware),
];

/// The table row for `id`, if the spec defines it.
pub fn lookup(id: u8) -> Option<&'static ObjectSpec> {
    OBJECTS
        .binary_search_by_key(&id, |o| o.id)
        .ok()
        .map(|i| &OBJECTS[i])
}

/// The spec's name of a button event code (bthome.io/format "Events", object 0x3A).
/// `0x00` ("None") lets a device with several buttons report an event for a later one only
/// (`3A00 3A01`: nothing on button 1, press on button 2).
pub fn button_event_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x00 => "none",
        0x01 => "press",
        0x02 => "double_press",
        0x03 => "triple_press",
        0x04 => "long_press",
        0x05 => "long_double_press",
        0x06 => "long_triple_press",
        0x80 => "hold_press",
        _ => return None,
    })
}
