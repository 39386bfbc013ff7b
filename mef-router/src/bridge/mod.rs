//! The split bridge: TCP splitting between routers (a performance-enhancing proxy, RFC 3135
//! §2.3 "split connections"), joining the LAN-side [`TcpSplitter`] to MEF transport streams on
//! the WAN.
//!
//! [`SplitEvent::Accepted`]: crate::split::SplitEvent::Accepted
//! [`SplitHeader`]: crate::split::SplitHeader
//!
//! ```text
//!   LAN client ─TCP─▶ SplitBridge (ingress router) ══ MEF connection (one per peer) ══▶ SplitBridge (egress router) ─TCP─▶ LAN server
//!                     Accepted{client,server}         stream: SplitHeader, bytes…        connect(client, server)
//! ```
//!
//! One [`SplitBridge`] per router, sans-IO like its two halves: no sockets, threads or clock;
//! every input takes `now`.
//!
//! * **Ingress** (RFC 3135 §2.3): a LAN client's TCP connection is terminated by the splitter;
//!   on [`SplitEvent::Accepted`] the bridge picks the peer router whose LAN prefix holds the
//!   server (longest prefix match), reuses that peer's MEF connection (or opens one, Noise IK
//!   with the peer's configured static key), opens a stream, writes the [`SplitHeader`] and
//!   relays bytes both ways. A server with no peer gets a RST ([`RefuseReason::NoRoute`]).
//! * **Egress**: MEF connections are accepted only from configured peer keys
//!   ([`mef_transport::Connection::remote_static`]); each new stream's [`SplitHeader`] is read,
//!   checked (the client must be in that peer's prefixes, the server in
//!   [`BridgeConfig::local_prefixes`] and not behind a peer) and the TCP connection is
//!   re-originated from the original client address ([`TcpSplitter::connect`]).
//! * **Back-pressure** both ways: the [`Relay`] buffers are bounded, writes to a stream stop at
//!   [`BridgeConfig::max_unsent`] not-yet-sent bytes, TCP windows close when the relay stops
//!   reading, and the MEF stream's flow control closes when the far relay stops reading.
//! * **Close semantics** (RFC 3135 §4.1): a TCP FIN becomes the stream's FIN and vice versa; a
//!   TCP RST becomes a reset message on the connection's control stream (see [`stream`]) and an
//!   abort (RST) of the far TCP half; a MEF connection that fails resets every TCP connection it
//!   carried, on both routers.
//!
//! # Driving it (the daemon loop)
//!
//! Inputs: [`handle_lan_packet`](SplitBridge::handle_lan_packet) (IPv4 TCP packets from the TUN
//! whose destination is behind a peer — and, on the egress router, the LAN servers' replies to
//! those remote clients, which have the same property),
//! [`handle_wan_datagram`](SplitBridge::handle_wan_datagram) (UDP payloads from the WAN socket)
//! and [`handle_timeout`](SplitBridge::handle_timeout). After each input drain, in this order,
//! [`poll_lan_packet`](SplitBridge::poll_lan_packet) (write to the TUN),
//! [`poll_wan_transmit`](SplitBridge::poll_wan_transmit) (hand to the WAN egress shaper),
//! [`poll_event`](SplitBridge::poll_event) (logs, metrics), then sleep until
//! [`poll_timeout`](SplitBridge::poll_timeout). `poll_wan_transmit` also refills streams that
//! were waiting for the pacer, so it may release more LAN packets (window updates): loop until
//! both are empty.

pub mod error;
pub mod prefix;
pub mod stream;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};

use mef_transport::{CloseReason, ConnectionHandle, Endpoint, EndpointStats, StreamId};

use crate::split::{ConnId, Relay, RelayConfig, SplitConfig, SplitStats, TcpSplitter};
pub use error::{BridgeError, PrefixError, StreamError};
pub use prefix::Ipv4Prefix;
use stream::{CONTROL_MAGIC, MefStream, decode_control, encode_reset};

/// Application close code sent to a MEF client whose static key is not a configured peer.
pub const CLOSE_UNKNOWN_PEER: u64 = 0x5101;
/// Application close code sent when the peer broke the control-stream format.
pub const CLOSE_BAD_CONTROL: u64 = 0x5102;
/// Largest header prefix read from a new stream before giving up (a [`SplitHeader`]'s length
/// byte caps it at 255).
const MAX_HEADER: usize = 255;

/// A peer router: where it is on the WAN, how it authenticates, and which LAN prefixes are
/// behind it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static x25519 public key (Noise IK responder key when we connect; the only key
    /// accepted from it when it connects).
    pub public_key: [u8; 32],
    /// The peer's WAN UDP address.
    pub wan_addr: SocketAddr,
    /// LAN prefixes behind the peer: connections to servers there are split towards it, and
    /// connections it asks us to re-originate must come from clients there.
    pub prefixes: Vec<Ipv4Prefix>,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key: String = self.public_key[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        f.debug_struct("PeerConfig")
            .field("public_key", &format_args!("{key}…"))
            .field("wan_addr", &self.wan_addr)
            .field("prefixes", &self.prefixes)
            .finish()
    }
}

/// Configuration of a [`SplitBridge`].
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The LAN-side TCP splitter (buffers, connection limit, ISN seed, ...).
    pub split: SplitConfig,
    /// The WAN-side MEF transport (windows, timeouts, demand).
    pub transport: mef_transport::Config,
    /// Relay buffers per direction per connection.
    pub relay: RelayConfig,
    /// The peer routers.
    pub peers: Vec<PeerConfig>,
    /// Servers this router re-originates connections to; empty allows any server that is not
    /// behind a peer.
    pub local_prefixes: Vec<Ipv4Prefix>,
    /// Most bytes written to one stream but not yet sent even once
    /// ([`mef_transport::Connection::stream_unsent`]); the relay stops there (default 256 KiB).
    pub max_unsent: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            split: SplitConfig::default(),
            transport: mef_transport::Config::default(),
            relay: RelayConfig::default(),
            peers: Vec::new(),
            local_prefixes: Vec::new(),
            max_unsent: 256 * 1024,
        }
    }
}

/// Identifies one split connection (flow) within a [`SplitBridge`]. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow#{}", self.0)
    }
}

/// Which half of a split connection this router holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The client is on our LAN: we terminated its TCP and carry it to a peer.
    Ingress,
    /// The server is on our LAN: a peer asked us to re-originate the TCP connection.
    Egress,
}

/// Why a split connection ended with a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The LAN end point reset it (or it timed out, or the server refused it).
    LanReset,
    /// The peer router reset the stream (its LAN end point reset).
    PeerReset,
    /// The MEF stream failed (read or write error).
    StreamFailed,
    /// The MEF connection carrying it closed (handshake timeout, idle timeout, peer closed).
    ConnectionClosed,
}

/// Why a split connection was refused before any byte was relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Ingress: no peer router has a prefix holding the server.
    NoRoute,
    /// Egress: the client is not behind the peer that sent it, or the server is not ours.
    NotAllowed,
    /// Egress: the stream did not start with a valid [`SplitHeader`](crate::split::SplitHeader).
    BadHeader,
    /// The splitter refused (connection limit, address in use) or the MEF connection could not
    /// be created or opened no stream.
    Unavailable,
}

/// Something the daemon may log or count; polled with [`SplitBridge::poll_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum BridgeEvent {
    /// A MEF connection to or from peer `peer` (index in [`BridgeConfig::peers`]) is up.
    PeerConnected {
        /// Peer index.
        peer: usize,
        /// The connection.
        conn: ConnectionHandle,
    },
    /// A MEF connection of peer `peer` ended; its split connections were reset.
    PeerDisconnected {
        /// Peer index.
        peer: usize,
        /// The connection.
        conn: ConnectionHandle,
        /// Why it ended.
        reason: CloseReason,
    },
    /// A MEF client authenticated with a static key that is not a configured peer; closed.
    PeerRefused {
        /// Its WAN address.
        addr: SocketAddr,
    },
    /// A split connection started relaying.
    FlowOpened {
        /// The flow.
        flow: FlowId,
        /// Our half.
        direction: Direction,
        /// Peer index.
        peer: usize,
        /// Original client.
        client: SocketAddrV4,
        /// Original server.
        server: SocketAddrV4,
    },
    /// A split connection finished cleanly (FIN relayed both ways).
    FlowClosed {
        /// The flow.
        flow: FlowId,
        /// Original client.
        client: SocketAddrV4,
        /// Original server.
        server: SocketAddrV4,
    },
    /// A split connection was reset.
    FlowReset {
        /// The flow.
        flow: FlowId,
        /// Original client.
        client: SocketAddrV4,
        /// Original server.
        server: SocketAddrV4,
        /// Why.
        reason: ResetReason,
    },
    /// A connection was refused (TCP reset on ingress, stream reset on egress).
    FlowRefused {
        /// Original client (unspecified when the header was unreadable).
        client: SocketAddrV4,
        /// Original server (unspecified when the header was unreadable).
        server: SocketAddrV4,
        /// Why.
        reason: RefuseReason,
    },
}

/// Counters of a [`SplitBridge`], for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// The LAN splitter's counters.
    pub split: SplitStats,
    /// The WAN endpoint's counters.
    pub endpoint: EndpointStats,
    /// Split connections opened as ingress (client on our LAN).
    pub flows_ingress: u64,
    /// Split connections opened as egress (re-originated to our LAN).
    pub flows_egress: u64,
    /// Split connections relaying now.
    pub flows_active: u64,
    /// Split connections that finished cleanly.
    pub flows_closed: u64,
    /// Split connections that ended with a reset.
    pub flows_reset: u64,
    /// Ingress connections reset because no peer serves the server's prefix.
    pub no_route: u64,
    /// Connections refused for another [`RefuseReason`].
    pub refused: u64,
    /// MEF connections refused because the client's key is not a peer's.
    pub peers_refused: u64,
    /// Stream resets sent to peers.
    pub resets_sent: u64,
    /// Stream resets received from peers.
    pub resets_received: u64,
    /// Live MEF connections to or from peers.
    pub connections: u64,
    /// Transport counters of every MEF connection (sent, lost, retransmitted).
    pub transport: mef_transport::TransportTotals,
}

type Key = (ConnectionHandle, StreamId);

#[derive(Debug)]
struct Flow {
    tcp: ConnId,
    direction: Direction,
    peer: usize,
    client: SocketAddrV4,
    server: SocketAddrV4,
    conn: ConnectionHandle,
    /// `None` while the MEF connection is still handshaking (no stream credit yet).
    stream: Option<StreamId>,
    relay: Relay,
    /// Egress: the re-originated TCP connection is established (pumping earlier would turn an
    /// early stream FIN into an abort).
    ready: bool,
}

#[derive(Debug, Default)]
struct ConnState {
    peer: usize,
    established: bool,
    /// No new flows (stream ids exhausted); closed when its last flow ends.
    retiring: bool,
    streams_opened: u64,
    flows: usize,
    ctrl_tx: Option<StreamId>,
    ctrl_out: Vec<u8>,
    ctrl_in: BTreeMap<StreamId, Vec<u8>>,
}

/// TCP splitting between routers over MEF transport (RFC 3135 split-connection PEP). See the
/// [module documentation](self) for the data path and the polling order.
pub struct SplitBridge {
    config: BridgeConfig,
    splitter: TcpSplitter,
    endpoint: Endpoint,
    flows: BTreeMap<FlowId, Flow>,
    by_tcp: BTreeMap<ConnId, FlowId>,
    by_stream: BTreeMap<Key, FlowId>,
    /// New incoming streams whose header is not complete yet.
    pending: BTreeMap<Key, Vec<u8>>,
    /// Reset streams: read and drop until their end (returns flow-control credit).
    discard: BTreeSet<Key>,
    conns: BTreeMap<ConnectionHandle, ConnState>,
    /// Closed connections to release once drained.
    zombies: BTreeSet<ConnectionHandle>,
    peer_conn: Vec<Option<ConnectionHandle>>,
    /// Flows whose stream writes stopped at `max_unsent`.
    blocked: BTreeSet<FlowId>,
    events: VecDeque<BridgeEvent>,
    /// Retired connections to close on the next drive (which has `now`).
    to_close: Vec<ConnectionHandle>,
    next_flow: u64,
    stats: BridgeStats,
    scratch: Vec<u8>,
}

impl fmt::Debug for SplitBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitBridge")
            .field("flows", &self.flows.len())
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

mod engine;
