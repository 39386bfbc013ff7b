//! The Semtech UDP packet forwarder protocol ("GWMP"), protocol version 2, as specified by
//! Lora-net/packet_forwarder `PROTOCOL.TXT` (revision v1.3, which introduced TX_ACK and
//! protocol version 2).
//!
//! Every datagram starts with the same 4-byte header (PROTOCOL.TXT §3.2, §3.3, §5.2–§5.5):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | protocol version = 2 |
//! | 1–2 | random token |
//! | 3 | identifier: PUSH_DATA 0x00, PUSH_ACK 0x01, PULL_DATA 0x02, PULL_RESP 0x03, PULL_ACK 0x04, TX_ACK 0x05 |
//! | 4–11 | gateway EUI (PUSH_DATA, PULL_DATA, TX_ACK only) |
//! | rest | JSON object (PUSH_DATA §4, PULL_RESP §6, TX_ACK §6 optional) |
//!
//! [`Packet::parse`] is the typed view of a datagram and [`Packet::emit`] its inverse. The
//! token is carried as the two raw bytes' big-endian value; the protocol treats it as opaque and
//! an acknowledgement echoes the same two bytes, so byte order never matters on the wire.
//!
//! Leniency (documented choices, not in PROTOCOL.TXT):
//! - unknown JSON fields (e.g. the v2 `rsig` array, `brd`, `aesk`, `lsnr` on FSK) are ignored;
//! - trailing NUL bytes and ASCII whitespace after the JSON object are ignored (some forwarders
//!   send a C string terminator);
//! - `data` is accepted with or without base64 padding (§4 says "padded", §6 "padding optional")
//!   and with non-zero unused bits in the last symbol (as in §6's own example); it is always
//!   emitted padded and canonical.
//! - a malformed JSON body still yields the header ([`ParseError::Json`] carries the token,
//!   identifier and EUI) so that the server can acknowledge a PUSH_DATA it received (§3.3:
//!   "acknowledge immediately all the PUSH_DATA packets received") while dropping its content.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The protocol version this module speaks (PROTOCOL.TXT v1.3, byte 0 of every datagram).
pub const PROTOCOL_VERSION: u8 = 2;

/// Length of the common header: version, token, identifier (PROTOCOL.TXT §3.2).
pub const HEADER_LEN: usize = 4;

/// Length of the header plus the gateway EUI (PUSH_DATA, PULL_DATA, TX_ACK).
pub const HEADER_EUI_LEN: usize = 12;

/// A gateway's 64-bit unique identifier ("MAC address" in PROTOCOL.TXT), as sent on the wire.
pub type Eui = [u8; 8];

/// The identifier byte (byte 3) of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identifier {
    /// 0x00, gateway → server: received RF packets and/or status (§3.2).
    PushData,
    /// 0x01, server → gateway: acknowledges a PUSH_DATA (§3.3).
    PushAck,
    /// 0x02, gateway → server: keep-alive that opens the downlink route (§5.2).
    PullData,
    /// 0x03, server → gateway: a packet to transmit (§5.4).
    PullResp,
    /// 0x04, server → gateway: acknowledges a PULL_DATA (§5.3).
    PullAck,
    /// 0x05, gateway → server: outcome of a PULL_RESP (§5.5).
    TxAck,
}

impl Identifier {
    /// The wire value.
    pub fn byte(self) -> u8 {
        match self {
            Identifier::PushData => 0x00,
            Identifier::PushAck => 0x01,
            Identifier::PullData => 0x02,
            Identifier::PullResp => 0x03,
            Identifier::PullAck => 0x04,
            Identifier::TxAck => 0x05,
        }
    }

    /// The identifier for a wire value, if it is one.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x00 => Identifier::PushData,
            0x01 => Identifier::PushAck,
            0x02 => Identifier::PullData,
            0x03 => Identifier::PullResp,
            0x04 => Identifier::PullAck,
            0x05 => Identifier::TxAck,
            _ => return None,
        })
    }

    /// Whether bytes 4–11 carry the gateway EUI (§3.2, §5.2, §5.5).
    pub fn has_eui(self) -> bool {
        matches!(
            self,
            Identifier::PushData | Identifier::PullData | Identifier::TxAck
        )
    }
}

/// Why a datagram is not a valid GWMP v2 packet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than its fixed header.
    #[error("datagram of {len} bytes is shorter than the {need}-byte header")]
    TooShort {
        /// The datagram's length.
        len: usize,
        /// The header length its identifier requires.
        need: usize,
    },
    /// Byte 0 is not protocol version 2 (version 1 forwarders predate TX_ACK).
    #[error("unsupported protocol version {0} (expected 2)")]
    Version(u8),
    /// Byte 3 is not one of the six identifiers.
    #[error("unknown identifier 0x{0:02x}")]
    UnknownIdentifier(u8),
    /// An ACK or PULL_DATA carries bytes after its fixed header.
    #[error("{identifier:?} has {extra} unexpected trailing bytes")]
    Trailing {
        /// The packet type.
        identifier: Identifier,
        /// How many bytes follow the header.
        extra: usize,
    },
    /// The header is valid but the JSON body is not (or is missing where required). The header
    /// fields are kept so the receiver can still acknowledge a PUSH_DATA.
    #[error("{identifier:?} (token {token:#06x}) has a malformed JSON body: {message}")]
    Json {
        /// The packet type.
        identifier: Identifier,
        /// The token.
        token: u16,
        /// The gateway EUI, for the types that carry one.
        gateway_eui: Option<Eui>,
        /// serde_json's description of the problem.
        message: String,
    },
}

/// Why a packet could not be emitted.
#[derive(Debug, thiserror::Error)]
#[error("cannot serialise the JSON body: {0}")]
pub struct EmitError(#[from] serde_json::Error);

/// A GWMP v2 datagram (PROTOCOL.TXT §3–§6).
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// PUSH_DATA (§3.2): received packets and/or gateway status.
    PushData {
        /// Random token, echoed by the PUSH_ACK.
        token: u16,
        /// The forwarder's EUI.
        gateway_eui: Eui,
        /// The JSON body (§4).
        payload: PushDataPayload,
    },
    /// PUSH_ACK (§3.3).
    PushAck {
        /// The acknowledged PUSH_DATA's token.
        token: u16,
    },
    /// PULL_DATA (§5.2).
    PullData {
        /// Random token, echoed by the PULL_ACK.
        token: u16,
        /// The forwarder's EUI.
        gateway_eui: Eui,
    },
    /// PULL_RESP (§5.4): a packet the forwarder must transmit.
    PullResp {
        /// Token (random, echoed by the TX_ACK; v1 forwarders used 0).
        token: u16,
        /// The JSON body (§6).
        payload: PullRespPayload,
    },
    /// PULL_ACK (§5.3).
    PullAck {
        /// The acknowledged PULL_DATA's token.
        token: u16,
    },
    /// TX_ACK (§5.5): whether the forwarder accepted a PULL_RESP.
    TxAck {
        /// The PULL_RESP's token.
        token: u16,
        /// The forwarder's EUI.
        gateway_eui: Eui,
        /// The optional JSON body (§6); absent means "no error".
        payload: Option<TxAckPayload>,
    },
}

impl Packet {
    /// The packet's identifier.
    pub fn identifier(&self) -> Identifier {
        match self {
            Packet::PushData { .. } => Identifier::PushData,
            Packet::PushAck { .. } => Identifier::PushAck,
            Packet::PullData { .. } => Identifier::PullData,
            Packet::PullResp { .. } => Identifier::PullResp,
            Packet::PullAck { .. } => Identifier::PullAck,
            Packet::TxAck { .. } => Identifier::TxAck,
        }
    }

    /// The packet's token.
    pub fn token(&self) -> u16 {
        match self {
            Packet::PushData { token, .. }
            | Packet::PushAck { token }
            | Packet::PullData { token, .. }
            | Packet::PullResp { token, .. }
            | Packet::PullAck { token }
            | Packet::TxAck { token, .. } => *token,
        }
    }

    /// Parses one datagram. Never panics, whatever the input.
    pub fn parse(buf: &[u8]) -> Result<Packet, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort {
                len: buf.len(),
                need: HEADER_LEN,
            });
        }
        if buf[0] != PROTOCOL_VERSION {
            return Err(ParseError::Version(buf[0]));
        }
        let token = u16::from_be_bytes([buf[1], buf[2]]);
        let identifier =
            Identifier::from_byte(buf[3]).ok_or(ParseError::UnknownIdentifier(buf[3]))?;
        let (gateway_eui, body) = if identifier.has_eui() {
            let Some(eui) = buf.get(HEADER_LEN..HEADER_EUI_LEN) else {
                return Err(ParseError::TooShort {
                    len: buf.len(),
                    need: HEADER_EUI_LEN,
                });
            };
            let mut e = [0u8; 8];
            e.copy_from_slice(eui);
            (Some(e), &buf[HEADER_EUI_LEN..])
        } else {
            (None, &buf[HEADER_LEN..])
        };
        let json_err = |message: String| ParseError::Json {
            identifier,
            token,
            gateway_eui,
            message,
        };
        let eui = gateway_eui.unwrap_or_default();
        match identifier {
            Identifier::PushAck | Identifier::PullAck | Identifier::PullData => {
                if !body.is_empty() {
                    return Err(ParseError::Trailing {
                        identifier,
                        extra: body.len(),
                    });
                }
                Ok(match identifier {
                    Identifier::PushAck => Packet::PushAck { token },
                    Identifier::PullAck => Packet::PullAck { token },
                    _ => Packet::PullData {
                        token,
                        gateway_eui: eui,
                    },
                })
            }
            Identifier::PushData => {
                let payload =
                    serde_json::from_slice(trim_json(body)).map_err(|e| json_err(e.to_string()))?;
                Ok(Packet::PushData {
                    token,
                    gateway_eui: eui,
                    payload,
                })
            }
            Identifier::PullResp => {
                let payload =
                    serde_json::from_slice(trim_json(body)).map_err(|e| json_err(e.to_string()))?;
                Ok(Packet::PullResp { token, payload })
            }
            Identifier::TxAck => {
                let body = trim_json(body);
                let payload = if body.is_empty() {
                    None
                } else {
                    Some(serde_json::from_slice(body).map_err(|e| json_err(e.to_string()))?)
                };
                Ok(Packet::TxAck {
                    token,
                    gateway_eui: eui,
                    payload,
                })
            }
        }
    }

    /// The datagram's bytes.
    pub fn emit(&self) -> Result<Vec<u8>, EmitError> {
        let mut out = Vec::with_capacity(64);
        out.push(PROTOCOL_VERSION);
        out.extend_from_slice(&self.token().to_be_bytes());
        out.push(self.identifier().byte());
        match self {
            Packet::PushData {
                gateway_eui,
                payload,
                ..
            } => {
                out.extend_from_slice(gateway_eui);
                serde_json::to_writer(&mut out, payload)?;
            }
            Packet::PullData { gateway_eui, .. } => out.extend_from_slice(gateway_eui),
            Packet::PullResp { payload, .. } => serde_json::to_writer(&mut out, payload)?,
            Packet::TxAck {
                gateway_eui,
                payload,
                ..
            } => {
                out.extend_from_slice(gateway_eui);
                if let Some(p) = payload {
                    serde_json::to_writer(&mut out, p)?;
                }
            }
            Packet::PushAck { .. } | Packet::PullAck { .. } => {}
        }
        Ok(out)
    }
}

/// The body with trailing NULs and whitespace (and leading whitespace) removed.
fn trim_json(body: &[u8]) -> &[u8] {
    let end = body
        .iter()
        .rposition(|b| !matches!(b, 0 | b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    let body = &body[..end];
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    &body[start..]
}

/// The PUSH_DATA JSON root object (§4): received packets and/or a status report. Both are
/// optional ("It is possible for a packet to contain no "rxpk" array but a "stat" object").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushDataPayload {
    /// Received RF packets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rxpk: Vec<RxPk>,
    /// Gateway status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<Stat>,
}

/// Modulation identifier (`modu`, §4 and §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Modulation {
    /// `"LORA"`.
    #[serde(rename = "LORA")]
    Lora,
    /// `"FSK"`.
    #[serde(rename = "FSK")]
    Fsk,
}

/// Data rate (`datr`, §4 and §6): a string such as `"SF7BW125"` for LoRa, a number of bits per
/// second for FSK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataRate {
    /// LoRa data rate identifier, e.g. `"SF12BW500"`.
    Lora(String),
    /// FSK bit rate, bits per second.
    Fsk(u32),
}

impl std::fmt::Display for DataRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataRate::Lora(s) => f.write_str(s),
            DataRate::Fsk(bps) => write!(f, "FSK{bps}"),
        }
    }
}

/// One received RF packet and its metadata (§4, the `rxpk` array's objects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RxPk {
    /// UTC time of reception, ISO 8601 compact format (only with GPS or NTP time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// GPS time of reception, milliseconds since 06.Jan.1980 (v2 forwarders with GPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmms: Option<u64>,
    /// Concentrator internal timestamp of the "RX finished" event, µs (32-bit, wraps).
    pub tmst: u32,
    /// Centre frequency, MHz.
    pub freq: f64,
    /// Concentrator IF channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chan: Option<u32>,
    /// Concentrator RF chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfch: Option<u32>,
    /// CRC status: 1 = OK, -1 = fail, 0 = no CRC.
    pub stat: i8,
    /// Modulation.
    pub modu: Modulation,
    /// Data rate.
    pub datr: DataRate,
    /// LoRa coding rate, e.g. `"4/5"` (absent for FSK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codr: Option<String>,
    /// RSSI, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i32>,
    /// LoRa SNR, dB (absent for FSK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsnr: Option<f32>,
    /// Payload size in bytes, as the forwarder reports it.
    pub size: u32,
    /// The RF payload (base64 `data` on the wire).
    #[serde(with = "b64")]
    pub data: Vec<u8>,
}

impl RxPk {
    /// Whether the PHY CRC checked out (`stat == 1`).
    pub fn crc_ok(&self) -> bool {
        self.stat == 1
    }

    /// The normalised radio metadata of this packet as heard by forwarder `gateway_eui`
    /// (`freq` MHz → Hz, FSK data rates as `"FSK<bps>"`).
    pub fn radio_meta(&self, gateway_eui: Eui) -> crate::RadioMeta {
        let hz = self.freq * 1e6;
        crate::RadioMeta {
            rssi_dbm: self
                .rssi
                .map(|r| r.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16),
            snr_db: self.lsnr,
            // Float-to-int `as` saturates (NaN → 0); negative frequencies are nonsense.
            frequency_hz: (hz.is_finite() && hz >= 0.0).then(|| hz.round() as u64),
            data_rate: Some(self.datr.to_string()),
            gateway_eui: Some(gateway_eui),
        }
    }
}

/// Gateway status report (§4, the `stat` object). Every field is optional here: forwarders
/// without GPS omit the position, and the server should not drop a status for a missing counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Gateway system time, "expanded" ISO 8601, e.g. `"2014-01-12 08:59:28 GMT"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// GPS latitude, degrees (N positive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lati: Option<f64>,
    /// GPS longitude, degrees (E positive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long: Option<f64>,
    /// GPS altitude, metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alti: Option<i32>,
    /// Radio packets received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxnb: Option<u32>,
    /// Radio packets received with a valid PHY CRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxok: Option<u32>,
    /// Radio packets forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxfw: Option<u32>,
    /// Percentage of upstream datagrams that were acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ackr: Option<f64>,
    /// Downlink datagrams received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwnb: Option<u32>,
    /// Packets emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txnb: Option<u32>,
}

/// The PULL_RESP JSON root object (§6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRespPayload {
    /// The packet to transmit.
    pub txpk: TxPk,
}

/// A packet to transmit and how (§6, the `txpk` object). "Most fields are optional": the
/// forwarder uses defaults for omitted ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxPk {
    /// Send immediately (ignores `tmst` and `time`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imme: bool,
    /// Send when the concentrator's counter reaches this value, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmst: Option<u32>,
    /// Send at this GPS time, ms since 06.Jan.1980 (v2 forwarders with GPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmms: Option<u64>,
    /// Send at this UTC time (GPS required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Centre frequency, MHz.
    pub freq: f64,
    /// RF chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfch: Option<u32>,
    /// Output power, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub powe: Option<i32>,
    /// Modulation.
    pub modu: Modulation,
    /// Data rate.
    pub datr: DataRate,
    /// LoRa coding rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codr: Option<String>,
    /// FSK frequency deviation, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdev: Option<u32>,
    /// LoRa polarisation inversion (true for LoRaWAN downlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipol: Option<bool>,
    /// Preamble size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prea: Option<u32>,
    /// Payload size, bytes.
    pub size: u32,
    /// The payload (base64 `data`).
    #[serde(with = "b64")]
    pub data: Vec<u8>,
    /// Disable the physical-layer CRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ncrc: Option<bool>,
}

impl TxPk {
    /// An immediate LoRa transmission of `data` at `freq_mhz`, data rate `datr` (e.g.
    /// `"SF9BW125"`), coding rate 4/5, inverted polarity (a LoRaWAN downlink), `powe` dBm.
    pub fn lora_immediate(freq_mhz: f64, datr: &str, powe: i32, data: Vec<u8>) -> TxPk {
        TxPk {
            imme: true,
            tmst: None,
            tmms: None,
            time: None,
            freq: freq_mhz,
            rfch: Some(0),
            powe: Some(powe),
            modu: Modulation::Lora,
            datr: DataRate::Lora(datr.to_string()),
            codr: Some("4/5".to_string()),
            fdev: None,
            ipol: Some(true),
            prea: None,
            size: u32::try_from(data.len()).unwrap_or(u32::MAX),
            data,
            ncrc: None,
        }
    }
}

/// The TX_ACK JSON root object (§6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxAckPayload {
    /// The outcome.
    pub txpk_ack: TxPkAck,
}

/// The outcome of a PULL_RESP (§6, the `txpk_ack` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxPkAck {
    /// Success or the reason for the rejection; absent means NONE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TxError>,
    /// A warning with which the packet was nevertheless scheduled (lora_pkt_fwd 2.x/4.x sends
    /// `"warn":"TX_POWER"` when it clamps the power).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn: Option<TxError>,
}

/// The `error` values of a TX_ACK (§6 table, plus FULL and EMPTY, which the lora_pkt_fwd JIT
/// queue reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxError {
    /// Packet has been programmed for downlink.
    None,
    /// Too late to program this packet.
    TooLate,
    /// Timestamp too far in the future.
    TooEarly,
    /// The forwarder's downlink queue is full.
    Full,
    /// The downlink queue is empty (internal JIT error).
    Empty,
    /// Another packet is already programmed in that timeframe.
    CollisionPacket,
    /// A beacon is planned in that timeframe.
    CollisionBeacon,
    /// Frequency not supported by the TX RF chain.
    TxFreq,
    /// Power not supported.
    TxPower,
    /// GPS unlocked: GPS timestamp unusable.
    GpsUnlocked,
    /// Any value this module does not know.
    #[serde(other)]
    Unknown,
}

impl TxAckPayload {
    /// The effective error: NONE when the body or the `error` field is absent (§5.5).
    pub fn error(&self) -> TxError {
        self.txpk_ack.error.unwrap_or(TxError::None)
    }
}

/// base64 (standard alphabet, padding optional on input, emitted padded) for `data` fields.
mod b64 {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use serde::{Deserialize, Deserializer, Serializer};

    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            // PROTOCOL.TXT §6's own example ends in a symbol with non-zero unused bits.
            .with_decode_allow_trailing_bits(true),
    );

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::Engine::decode(&LENIENT, s.as_bytes()).map_err(serde::de::Error::custom)
    }

    use base64::Engine as _;
}

/// base64-encodes like the `data` field (exposed for tests and the simulator).
pub fn encode_data(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}
