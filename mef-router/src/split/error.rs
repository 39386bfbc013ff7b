//! Errors of the TCP splitter ([`SplitError`]), the stream framing ([`FrameError`]) and the
//! relay ([`RelayError`]), each variant with its reason.

use std::net::SocketAddrV4;

use super::ConnId;

/// Why an IPv4 packet handed to [`TcpSplitter::handle_ip_packet`](super::TcpSplitter::handle_ip_packet)
/// was dropped before it reached the TCP stack. Every one is counted in
/// [`SplitStats`](super::SplitStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedReason {
    /// Shorter than a 20-byte IPv4 header, or the header/total length fields do not fit the buffer
    /// (RFC 791 §3.1).
    #[error("truncated or inconsistent IPv4 header")]
    BadIpv4Header,
    /// The version nibble is not 4.
    #[error("IP version {0} is not 4")]
    NotIpv4(u8),
    /// The IPv4 header checksum does not verify (RFC 791 §3.1).
    #[error("bad IPv4 header checksum")]
    BadIpv4Checksum,
    /// A fragment: the splitter does not reassemble (TCP segments from a LAN host fit the MTU,
    /// and the sender's path MTU discovery keeps them whole).
    #[error("IPv4 fragment (not reassembled)")]
    Fragment,
    /// Shorter than a 20-byte TCP header, or the data offset points past the segment (RFC 9293 §3.1).
    #[error("truncated TCP header")]
    BadTcpHeader,
    /// The TCP checksum over the pseudo-header and segment does not verify (RFC 9293 §3.1).
    #[error("bad TCP checksum")]
    BadTcpChecksum,
    /// Source or destination address is not a unicast address, or a port is zero.
    #[error("non-unicast address or zero port")]
    BadAddress,
}

/// Errors of [`TcpSplitter`](super::TcpSplitter) operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The packet was malformed and has been dropped (and counted).
    #[error("malformed packet dropped: {0}")]
    Malformed(#[from] MalformedReason),
    /// The packet is valid IPv4 but does not carry TCP; the splitter only terminates TCP, so the
    /// daemon should forward such traffic itself. Dropped and counted.
    #[error("not a TCP packet (IP protocol {protocol}); the splitter only handles TCP")]
    NotTcp {
        /// The IPv4 protocol number found.
        protocol: u8,
    },
    /// The connection limit ([`SplitConfig::max_connections`](super::SplitConfig::max_connections))
    /// is reached. For an incoming SYN this means it was refused (answered with a RST or dropped,
    /// per [`WhenFull`](super::WhenFull)) and counted.
    #[error("connection limit of {limit} split connections reached")]
    TooManyConnections {
        /// The configured limit.
        limit: usize,
    },
    /// No live connection has this id (never existed, or already reported `Closed`/`Reset`).
    #[error("unknown or finished split connection {0}")]
    UnknownConnection(ConnId),
    /// The operation is not allowed in the connection's current TCP state (for example writing
    /// after [`shutdown`](super::TcpSplitter::shutdown), RFC 9293 §3.10.2).
    #[error("connection {id}: operation not allowed in TCP state {state}")]
    InvalidState {
        /// The connection.
        id: ConnId,
        /// smoltcp's name of the TCP state.
        state: String,
    },
    /// [`connect`](super::TcpSplitter::connect) was given an address smoltcp cannot use
    /// (unspecified or non-unicast address, or port zero).
    #[error("cannot connect {client} -> {server}: unusable address or port")]
    Unaddressable {
        /// Requested local (original client) endpoint.
        client: SocketAddrV4,
        /// Requested remote (server) endpoint.
        server: SocketAddrV4,
    },
    /// A connection with the same (client, server) pair is already open in this splitter.
    #[error("a split connection {client} -> {server} already exists")]
    AlreadyExists {
        /// Client endpoint.
        client: SocketAddrV4,
        /// Server endpoint.
        server: SocketAddrV4,
    },
    /// The configuration is unusable.
    #[error("invalid splitter configuration: {0}")]
    InvalidConfig(&'static str),
}

/// Errors parsing or emitting a [`SplitHeader`](super::SplitHeader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header needs; read more from the stream and retry.
    #[error("split header truncated: need {needed} bytes, have {got}")]
    Truncated {
        /// Bytes needed for the whole header (as far as known).
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The version byte is not one this implementation speaks.
    #[error("unsupported split header version {0}")]
    UnsupportedVersion(u8),
    /// The header length field is smaller than the fixed part of this version.
    #[error("split header length {0} is shorter than the fixed header")]
    BadLength(u8),
    /// An address is unspecified/non-unicast or a port is zero.
    #[error("split header carries an unusable address or port")]
    BadAddress,
    /// The output buffer is too small for [`SplitHeader::emit`](super::SplitHeader::emit).
    #[error("output buffer of {got} bytes is too small for the {needed}-byte split header")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
}

/// Errors of [`Relay::pump`](super::Relay::pump).
#[derive(Debug, thiserror::Error)]
pub enum RelayError<E: std::error::Error + 'static> {
    /// The split (TCP) side failed, for example it was reset or is unknown.
    #[error("split connection: {0}")]
    Split(#[from] SplitError),
    /// The stream side returned an error; the relay has aborted the TCP connection.
    #[error("stream: {0}")]
    Stream(#[source] E),
}
