//! Flow identities: how the router tells flows apart.

use std::fmt;
use std::net::SocketAddr;

use mef_transport::wire::Packet;

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
    /// ([`Packet::new_checked`]), otherwise a non-MEF flow. Never panics on any payload.
    pub fn classify(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Self {
        match Packet::new_checked(payload) {
            Ok(p) => Self::Mef {
                src,
                dst,
                conn_id: p.conn_id(),
            },
            Err(_) => Self::Other { src, dst },
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
