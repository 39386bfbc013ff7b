//! Errors of the split bridge ([`super::SplitBridge`]), each with the reason it happened.

use std::net::SocketAddr;

use mef_transport::{ReadError, WriteError};

use crate::split::SplitError;

/// Why a [`SplitBridge`](super::SplitBridge) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The LAN-side splitter configuration was rejected.
    #[error("splitter configuration: {0}")]
    Split(#[from] SplitError),
    /// Two peers share a static public key (a key names exactly one router).
    #[error("peer {index} repeats the static public key of an earlier peer")]
    DuplicatePeerKey {
        /// Index of the second peer in [`BridgeConfig::peers`](super::BridgeConfig::peers).
        index: usize,
    },
    /// A peer's public key equals this router's own key.
    #[error("peer {index} has this router's own public key")]
    OwnKey {
        /// Index of the peer.
        index: usize,
    },
    /// A peer without any LAN prefix could never be chosen for a connection.
    #[error("peer {index} ({wan_addr}) has no LAN prefix")]
    NoPrefix {
        /// Index of the peer.
        index: usize,
        /// Its WAN address.
        wan_addr: SocketAddr,
    },
    /// `max_unsent` must allow at least one full packet per stream.
    #[error("max_unsent must be at least 2048 bytes, got {0}")]
    MaxUnsent(u64),
}

/// Why a MEF stream used by a relay failed ([`split::ByteStream::Error`](crate::split::ByteStream)
/// of the bridge's stream view). The relay then aborts the TCP half with a RST.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The MEF connection carrying the stream is gone (closed and released).
    #[error("MEF connection is gone")]
    ConnectionGone,
    /// Reading the stream failed (connection closed before the stream finished, unknown stream).
    #[error("stream read: {0}")]
    Read(#[from] ReadError),
    /// Writing or finishing the stream failed (connection closed, stream already finished).
    #[error("stream write: {0}")]
    Write(#[from] WriteError),
}

/// Why a prefix string such as `"10.1.0.0/16"` did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No `/` between address and length.
    #[error("missing '/len' in prefix {0:?}")]
    MissingLength(String),
    /// The address part is not an IPv4 address.
    #[error("bad IPv4 address in prefix {0:?}")]
    BadAddress(String),
    /// The length is not a number from 0 to 32.
    #[error("prefix length must be 0..=32 in {0:?}")]
    BadLength(String),
    /// Bits are set beyond the prefix length (e.g. `10.0.0.1/8`).
    #[error("host bits set in prefix {0:?}")]
    HostBits(String),
}
