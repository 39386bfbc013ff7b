//! Flow identities: how the router tells flows apart.

use std::fmt;
use std::net::SocketAddr;

use mef_transport::wire::Packet;
use mef_transport::wire::header::flags;

/// Flag bits the MEF header defines; a packet with any other bit set is not MEF.
const KNOWN_FLAGS: u8 = flags::CLOSING | flags::STAMPED | flags::APP_LIMITED;

/// Whether a buffer that passed [`Packet::new_checked`] is plausibly a MEF packet and not
/// another protocol whose first bytes happen to match (a QUIC short-header packet starts with
/// `0x4D` one time in 32, and its second byte is `0x10..=0x13` one time in 64). Beyond
/// `new_checked`'s magic, version and type, a MEF sender never sets undefined flag bits and never
/// sends a stamp above its demand (the stamp starts at the demand and routers only lower it,
/// docs/PROTOCOL.md §4.1). Together these cut false positives by another factor of about 64.
/// Misclassified packets must be rare because the router rewrites bytes of MEF packets.
pub fn is_plausible_mef<T: AsRef<[u8]>>(p: &Packet<T>) -> bool {
    p.flags() & !KNOWN_FLAGS == 0 && p.stamp_kbps() <= p.demand_kbps()
}

/// The identity of a flow through one egress link.
///
/// MEF flows are keyed by `(src, dst, connection id)` so several MEF connections between the same
/// two sockets are separate flows (RCP and MEF allocate per connection, seed 003 "MEF 原理":
/// "在最开始就公平分配好各个连接的带宽"). Everything else (quinn-Cubic, quinn-BBR, any UDP) is keyed
/// by its socket pair. The ordering is total and deterministic, so iteration over flows is the same
/// on every run (the simulator must be bit-for-bit reproducible).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowKey {
    /// A MEF connection in one direction.
    Mef {
        /// Source socket address.
        src: SocketAddr,
        /// Destination socket address.
        dst: SocketAddr,
        /// The destination connection id from the MEF header.
        conn_id: u64,
    },
    /// A non-MEF UDP flow (for example a QUIC connection using Cubic or BBR).
    Other {
        /// Source socket address.
        src: SocketAddr,
        /// Destination socket address.
        dst: SocketAddr,
    },
}

impl FlowKey {
    /// Classifies a UDP datagram: a MEF flow if its payload parses as a MEF header
    /// ([`Packet::new_checked`] and [`is_plausible_mef`]), otherwise a non-MEF flow. Never
    /// panics on any payload.
    pub fn classify(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Self {
        match Packet::new_checked(payload) {
            Ok(p) if is_plausible_mef(&p) => Self::Mef {
                src,
                dst,
                conn_id: p.conn_id(),
            },
            _ => Self::Other { src, dst },
        }
    }

    /// Whether this is a MEF flow (stamped and policed) rather than cross traffic.
    pub fn is_mef(&self) -> bool {
        matches!(self, Self::Mef { .. })
    }

    /// Source socket address.
    pub fn src(&self) -> SocketAddr {
        match *self {
            Self::Mef { src, .. } | Self::Other { src, .. } => src,
        }
    }

    /// Destination socket address.
    pub fn dst(&self) -> SocketAddr {
        match *self {
            Self::Mef { dst, .. } | Self::Other { dst, .. } => dst,
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mef { src, dst, conn_id } => write!(f, "mef {src}->{dst} cid={conn_id:016x}"),
            Self::Other { src, dst } => write!(f, "udp {src}->{dst}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mef_transport::wire::{HEADER_LEN, Header, PacketType};

    fn sock(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn mef(flags: u8, demand: u32, stamp: u32) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN + 10];
        Header {
            packet_type: PacketType::Data,
            flags,
            hops: 0,
            conn_id: 77,
            packet_number: 1,
            demand_kbps: demand,
            current_rate_kbps: 1000,
            stamp_kbps: stamp,
            rtt_us: 1000,
        }
        .emit(&mut b);
        b
    }

    #[test]
    fn classifies_mef_and_other() {
        let k = FlowKey::classify(sock(1), sock(2), &mef(flags::APP_LIMITED, 5000, 4000));
        assert_eq!(
            k,
            FlowKey::Mef {
                src: sock(1),
                dst: sock(2),
                conn_id: 77
            }
        );
        assert!(k.is_mef());
        // Not a header at all, an undefined flag bit, a stamp above the demand: not MEF.
        for payload in [vec![0x4d, 0x12], mef(0x40, 5000, 4000), mef(0, 5000, 6000)] {
            let k = FlowKey::classify(sock(1), sock(2), &payload);
            assert_eq!(
                k,
                FlowKey::Other {
                    src: sock(1),
                    dst: sock(2)
                }
            );
        }
    }
}
