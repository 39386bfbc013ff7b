//! Payloads of the Noise handshake messages (carried encrypted inside Noise IK messages 1 and 2).
//!
//! ```text
//! version u8 (= 1) | connection id u64 BE | demand kbit/s | max data | max stream data |
//! max streams | idle timeout ms | max ack delay µs | max UDP payload | [initial stamp]
//! ```
//! Everything after the connection id is a QUIC varint. `initial stamp` is present only in the
//! server's message 2: 0 if the client's Initial arrived unstamped, otherwise the stamp in kbit/s
//! plus one (the rate routers allocated the client→server direction, learnt after 1 RTT).

use super::varint::{Reader, Writer};

/// Payload version.
pub const VERSION: u8 = 1;
/// Upper bound on an encoded payload.
pub const MAX_LEN: usize = 1 + 8 + 8 * 9;

/// Why a handshake payload is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// Too short.
    #[error("handshake payload truncated")]
    Truncated,
    /// Unknown payload version.
    #[error("unknown handshake payload version {0}")]
    Version(u8),
    /// A value out of range.
    #[error("handshake parameter out of range: {0}")]
    OutOfRange(&'static str),
}

/// Transport parameters each side announces during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportParams {
    /// The connection id the sender wants packets addressed to.
    pub cid: u64,
    /// The sender's demand, kbit/s (`u32::MAX` = unlimited): authenticated, so it bounds every
    /// stamp the peer will believe for this direction.
    pub demand_kbps: u32,
    /// Initial connection-level flow-control limit granted to the peer.
    pub max_data: u64,
    /// Initial per-stream flow-control limit granted to the peer.
    pub max_stream_data: u64,
    /// Streams the peer may open.
    pub max_streams: u64,
    /// Idle timeout, ms.
    pub idle_timeout_ms: u64,
    /// Max ACK delay, µs.
    pub max_ack_delay_us: u64,
    /// Largest UDP payload the sender accepts.
    pub max_udp_payload: u64,
    /// Server only: the stamp it observed on the client's Initial (`None` = unstamped).
    pub initial_stamp_kbps: Option<u32>,
}

impl TransportParams {
    /// Encodes into `buf`; returns the length. `with_stamp` is set for the server's message.
    pub fn emit(&self, buf: &mut [u8], with_stamp: bool) -> Result<usize, ParamsError> {
        let mut w = Writer::new(buf);
        let t = |_| ParamsError::Truncated;
        w.u8(VERSION).map_err(t)?;
        w.bytes(&self.cid.to_be_bytes()).map_err(t)?;
        for v in [
            u64::from(self.demand_kbps),
            self.max_data,
            self.max_stream_data,
            self.max_streams,
            self.idle_timeout_ms,
            self.max_ack_delay_us,
            self.max_udp_payload,
        ] {
            w.varint(v).map_err(|_| ParamsError::OutOfRange("varint"))?;
        }
        if with_stamp {
            w.varint(self.initial_stamp_kbps.map_or(0, |s| u64::from(s) + 1))
                .map_err(t)?;
        }
        Ok(w.position())
    }

    /// Decodes; `with_stamp` is set when reading the server's message.
    pub fn parse(buf: &[u8], with_stamp: bool) -> Result<Self, ParamsError> {
        let mut r = Reader::new(buf);
        let t = |_| ParamsError::Truncated;
        let v = r.u8().map_err(t)?;
        if v != VERSION {
            return Err(ParamsError::Version(v));
        }
        let mut cid = [0u8; 8];
        cid.copy_from_slice(r.bytes(8).map_err(t)?);
        let demand = r.varint().map_err(t)?;
        let demand_kbps = u32::try_from(demand).map_err(|_| ParamsError::OutOfRange("demand"))?;
        let max_data = r.varint().map_err(t)?;
        let max_stream_data = r.varint().map_err(t)?;
        let max_streams = r.varint().map_err(t)?;
        let idle_timeout_ms = r.varint().map_err(t)?;
        let max_ack_delay_us = r.varint().map_err(t)?;
        if max_ack_delay_us >= 1 << 24 {
            return Err(ParamsError::OutOfRange("max_ack_delay"));
        }
        let max_udp_payload = r.varint().map_err(t)?;
        if max_udp_payload < super::super::config::MIN_UDP_PAYLOAD as u64 {
            return Err(ParamsError::OutOfRange("max_udp_payload"));
        }
        let initial_stamp_kbps = if with_stamp {
            let s = r.varint().map_err(t)?;
            s.checked_sub(1)
                .map(|s| u32::try_from(s).unwrap_or(u32::MAX))
        } else {
            None
        };
        Ok(Self {
            cid: u64::from_be_bytes(cid),
            demand_kbps,
            max_data,
            max_stream_data,
            max_streams,
            idle_timeout_ms,
            max_ack_delay_us,
            max_udp_payload,
            initial_stamp_kbps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(cid: u64, demand: u32, a in 0u64..1 << 62, b in 0u64..1 << 62,
                      c in 0u64..1 << 62, d in 0u64..1 << 62, e in 0u64..1 << 24,
                      f in 1200u64..1 << 62, stamp: Option<u32>, with_stamp: bool) {
            let p = TransportParams {
                cid, demand_kbps: demand, max_data: a, max_stream_data: b, max_streams: c,
                idle_timeout_ms: d, max_ack_delay_us: e, max_udp_payload: f,
                initial_stamp_kbps: if with_stamp { stamp } else { None },
            };
            let mut buf = [0u8; MAX_LEN];
            let n = p.emit(&mut buf, with_stamp).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(TransportParams::parse(&buf[..n], with_stamp), Ok(p));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80), s: bool) {
            let _ = TransportParams::parse(&bytes, s);
        }
    }
}
