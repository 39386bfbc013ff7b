//! The sans-IO Semtech UDP server: datagrams and the time in, replies and events out, no sockets
//! (the tokio adapter is [`super::udp`]).
//!
//! Behaviour, with the PROTOCOL.TXT sections it follows:
//! - PUSH_DATA (§3.2) is answered with a PUSH_ACK carrying the same token (§3.3) *before* its
//!   content is processed (§3.1 "process packets *after* ack"). A PUSH_DATA whose header is valid
//!   but whose JSON is malformed is still acknowledged — §3.3 acknowledges "all the PUSH_DATA
//!   packets received" and acknowledgements only serve network quality assessment (§1) — but its
//!   content is dropped and counted against its source address.
//!   The server only *returns* the PUSH_ACK ([`Handled::reply`]); when it is sent is the
//!   caller's choice. The `mef-gateway` daemon holds it until the datagram's readings are
//!   durably stored (see `crate::daemon::ingest`), so an acknowledged PUSH_DATA is never lost;
//!   the plain tokio adapter [`super::udp`] sends it at once. Datagrams with a bad header (wrong
//!   protocol version, unknown identifier, too short) are dropped unanswered and counted.
//! - Each `rxpk` with a good CRC (`stat == 1`) becomes an [`Event::Uplink`]; packets with a failed
//!   or absent CRC are counted and dropped (LoRaWAN uplinks always carry a CRC).
//! - A `stat` object becomes an [`Event::Stat`] and is remembered per forwarder.
//! - PULL_DATA (§5.2) records the source address as the forwarder's downlink route and is
//!   answered with a PULL_ACK (§5.3).
//! - [`SemtechServer::send_downlink`] builds a PULL_RESP (§5.4, §6) to the last PULL_DATA address
//!   ("anytime after first PULL_DATA", §5.1); a TX_ACK (§5.5) becomes an [`Event::TxAck`].
//! - The forwarder table is bounded: a new EUI beyond [`ServerConfig::max_forwarders`] evicts the
//!   forwarder seen least recently. The malformed-datagram counters are bounded the same way.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::semtech::{
    Eui, Identifier, Packet, ParseError, PullRespPayload, RxPk, Stat, TxError, TxPk,
};

/// Server limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Most forwarders tracked at once.
    pub max_forwarders: usize,
    /// Most source addresses with a malformed-datagram counter.
    pub max_malformed_sources: usize,
    /// A forwarder whose last PULL_DATA is older than this (ms) has no usable downlink route
    /// (lora_pkt_fwd's default keep-alive is 10 s; NAT mappings typically last 30 s or more).
    pub pull_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_forwarders: 64,
            max_malformed_sources: 256,
            pull_timeout_ms: 60_000,
        }
    }
}

/// What the server knows about one packet forwarder.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarder {
    /// Its EUI.
    pub eui: Eui,
    /// Where its last PUSH_DATA came from.
    pub push_addr: Option<SocketAddr>,
    /// Where its last PULL_DATA came from: the downlink route.
    pub pull_addr: Option<SocketAddr>,
    /// When it was last heard (any datagram), ms.
    pub last_seen_ms: u64,
    /// When its last PULL_DATA arrived, ms.
    pub last_pull_ms: Option<u64>,
    /// Its last status report.
    pub stat: Option<Stat>,
    /// Uplinks delivered from it.
    pub uplinks: u64,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A received radio packet with a good CRC.
    Uplink {
        /// The forwarder that heard it.
        gateway_eui: Eui,
        /// Its metadata.
        rxpk: RxPk,
        /// The PHYPayload (the decoded `data`).
        payload: Vec<u8>,
    },
    /// A forwarder's status report.
    Stat {
        /// The forwarder.
        gateway_eui: Eui,
        /// The report.
        stat: Stat,
    },
    /// A forwarder's answer to a PULL_RESP.
    TxAck {
        /// The forwarder.
        gateway_eui: Eui,
        /// The PULL_RESP's token.
        token: u16,
        /// Its outcome (NONE when the TX_ACK had no JSON).
        error: TxError,
    },
}

/// What handling one datagram produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Handled {
    /// A reply to send back to the datagram's source (PUSH_ACK or PULL_ACK).
    pub reply: Option<Vec<u8>>,
    /// Events, in order.
    pub events: Vec<Event>,
    /// Why the datagram (or its content) was dropped, if it was.
    pub dropped: Option<ParseError>,
}

/// Why a downlink cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    /// The EUI is not in the forwarder table.
    #[error("unknown forwarder {0:02x?}")]
    UnknownForwarder(Eui),
    /// The forwarder has not sent a PULL_DATA (or not recently): no route to it.
    #[error("forwarder {0:02x?} has no recent PULL_DATA address")]
    NoRoute(Eui),
    /// The PULL_RESP could not be serialised.
    #[error(transparent)]
    Emit(#[from] super::semtech::EmitError),
}

/// Counters over the server's lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handled.
    pub datagrams: u64,
    /// Datagrams (or PUSH_DATA contents) dropped as malformed.
    pub malformed: u64,
    /// rxpk with a failed or absent CRC.
    pub crc_dropped: u64,
    /// Uplink events.
    pub uplinks: u64,
    /// PULL_RESP built.
    pub downlinks: u64,
    /// TX_ACK received.
    pub tx_acks: u64,
    /// Datagrams a server should never receive (PUSH_ACK, PULL_ACK, PULL_RESP).
    pub unexpected: u64,
    /// Malformed datagrams not attributed to a source because the table was full.
    pub malformed_unattributed: u64,
}

/// The sans-IO GWMP v2 server.
#[derive(Debug, Clone)]
pub struct SemtechServer {
    config: ServerConfig,
    forwarders: BTreeMap<Eui, Forwarder>,
    malformed: BTreeMap<SocketAddr, u64>,
    counters: Counters,
    token_state: u32,
}

impl SemtechServer {
    /// A server with no forwarders.
    pub fn new(config: ServerConfig) -> Self {
        SemtechServer {
            config,
            forwarders: BTreeMap::new(),
            malformed: BTreeMap::new(),
            counters: Counters::default(),
            token_state: 0x9e37_79b9,
        }
    }

    /// Handles one datagram from `from`, received at `now_ms`. Never panics.
    pub fn handle_datagram(&mut self, now_ms: u64, from: SocketAddr, datagram: &[u8]) -> Handled {
        self.counters.datagrams += 1;
        let mut out = Handled::default();
        let packet = match Packet::parse(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.count_malformed(from);
                if let ParseError::Json {
                    identifier: Identifier::PushData,
                    token,
                    gateway_eui: Some(eui),
                    ..
                } = &e
                {
                    // §3.3: acknowledge every PUSH_DATA received; the content is dropped.
                    out.reply = emit_ack(Packet::PushAck { token: *token });
                    self.touch(*eui, now_ms).push_addr = Some(from);
                }
                out.dropped = Some(e);
                return out;
            }
        };
        match packet {
            Packet::PushData {
                token,
                gateway_eui,
                payload,
            } => {
                out.reply = emit_ack(Packet::PushAck { token });
                let mut delivered = 0u64;
                for rxpk in payload.rxpk {
                    if !rxpk.crc_ok() {
                        self.counters.crc_dropped += 1;
                        continue;
                    }
                    let payload = rxpk.data.clone();
                    delivered += 1;
                    out.events.push(Event::Uplink {
                        gateway_eui,
                        rxpk,
                        payload,
                    });
                }
                self.counters.uplinks += delivered;
                let fwd = self.touch(gateway_eui, now_ms);
                fwd.push_addr = Some(from);
                fwd.uplinks += delivered;
                if let Some(stat) = payload.stat {
                    fwd.stat = Some(stat.clone());
                    out.events.push(Event::Stat { gateway_eui, stat });
                }
            }
            Packet::PullData { token, gateway_eui } => {
                out.reply = emit_ack(Packet::PullAck { token });
                let fwd = self.touch(gateway_eui, now_ms);
                fwd.pull_addr = Some(from);
                fwd.last_pull_ms = Some(now_ms);
            }
            Packet::TxAck {
                token,
                gateway_eui,
                payload,
            } => {
                self.counters.tx_acks += 1;
                self.touch(gateway_eui, now_ms);
                let error = payload.map_or(TxError::None, |p| p.error());
                out.events.push(Event::TxAck {
                    gateway_eui,
                    token,
                    error,
                });
            }
            Packet::PushAck { .. } | Packet::PullAck { .. } | Packet::PullResp { .. } => {
                self.counters.unexpected += 1;
            }
        }
        out
    }

    /// Builds a PULL_RESP carrying `txpk` for forwarder `eui`: the destination (its last
    /// PULL_DATA address) and the datagram. The token is fresh; the forwarder's TX_ACK will carry
    /// it ([`Event::TxAck`]).
    pub fn send_downlink(
        &mut self,
        now_ms: u64,
        eui: Eui,
        txpk: TxPk,
    ) -> Result<(SocketAddr, Vec<u8>), DownlinkError> {
        let fwd = self
            .forwarders
            .get(&eui)
            .ok_or(DownlinkError::UnknownForwarder(eui))?;
        let route = match (fwd.pull_addr, fwd.last_pull_ms) {
            (Some(addr), Some(t)) if now_ms.saturating_sub(t) <= self.config.pull_timeout_ms => {
                addr
            }
            _ => return Err(DownlinkError::NoRoute(eui)),
        };
        let token = self.next_token();
        let bytes = Packet::PullResp {
            token,
            payload: PullRespPayload { txpk },
        }
        .emit()?;
        self.counters.downlinks += 1;
        Ok((route, bytes))
    }

    /// The forwarder with this EUI.
    pub fn forwarder(&self, eui: &Eui) -> Option<&Forwarder> {
        self.forwarders.get(eui)
    }

    /// All tracked forwarders, by EUI.
    pub fn forwarders(&self) -> impl Iterator<Item = &Forwarder> {
        self.forwarders.values()
    }

    /// Malformed datagrams received from `addr`.
    pub fn malformed_from(&self, addr: &SocketAddr) -> u64 {
        self.malformed.get(addr).copied().unwrap_or(0)
    }

    /// Lifetime counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn count_malformed(&mut self, from: SocketAddr) {
        self.counters.malformed += 1;
        if let Some(n) = self.malformed.get_mut(&from) {
            *n += 1;
        } else if self.malformed.len() < self.config.max_malformed_sources {
            self.malformed.insert(from, 1);
        } else {
            self.counters.malformed_unattributed += 1;
        }
    }

    /// The forwarder entry for `eui` (created, evicting the stalest if the table is full), with
    /// `last_seen_ms` updated.
    fn touch(&mut self, eui: Eui, now_ms: u64) -> &mut Forwarder {
        if !self.forwarders.contains_key(&eui)
            && self.forwarders.len() >= self.config.max_forwarders.max(1)
        {
            let stalest = self
                .forwarders
                .values()
                .min_by_key(|f| f.last_seen_ms)
                .map(|f| f.eui);
            if let Some(old) = stalest {
                self.forwarders.remove(&old);
            }
        }
        let fwd = self.forwarders.entry(eui).or_insert_with(|| Forwarder {
            eui,
            push_addr: None,
            pull_addr: None,
            last_seen_ms: now_ms,
            last_pull_ms: None,
            stat: None,
            uplinks: 0,
        });
        fwd.last_seen_ms = fwd.last_seen_ms.max(now_ms);
        fwd
    }

    /// A PULL_RESP token: xorshift32 (tokens need only differ between consecutive downlinks).
    fn next_token(&mut self) -> u16 {
        let mut x = self.token_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.token_state = x;
        (x >> 8) as u16
    }
}

/// An ACK's bytes (ACKs carry no JSON, so emitting cannot fail; `None` keeps that unpanicking).
fn emit_ack(p: Packet) -> Option<Vec<u8>> {
    p.emit().ok()
}
