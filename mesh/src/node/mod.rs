//! The sans-IO mesh node: many [`Link`]s, each with a [`Channels`] mux, introductions and
//! bounded relaying through routers, and direct-path upgrade (telehash v3's "peer"/"connect"
//! model, <https://telehash.github.io/v3/channels/peer/>, made concrete).
//!
//! # Design note
//!
//! **Demultiplexing.** [`Mesh::handle_datagram`] parses the link packet header
//! ([`crate::packet`]). Transport packets, handshake responses, cookie replies and rekey
//! initiations (whose receiver field is a routing hint) go to the link owning that receiver
//! index through a `HashMap<u32, Hashname>` routing table; first initiations and XX final
//! messages go to the [`Acceptor`] (an XX final message for an index the acceptor no longer
//! has pending but a link owns is a retransmission and goes to that link). Two links drawing the same random index (a 2⁻³² event per pair) cannot both
//! be routed: the later one is not routed, the collision is counted in
//! [`MeshStats::index_collisions`] and that link times out. Anything unparseable, unroutable
//! or failing authentication is dropped and counted.
//!
//! **Link plaintext.** Every decrypted link datagram starts with one byte:
//! `0` = a [`Channels`] datagram for the application's channels, `1` = a mesh control message.
//! The mesh's own messages use this reserved kind byte rather than a reliable channel: what
//! they carry (handshake messages and relayed transport packets) is already retransmitted end
//! to end by the inner link and channels, and a reliable outer channel would add
//! head-of-line blocking and TCP-over-TCP style double retransmission.
//!
//! **Control messages** (all hashnames are the 32 raw bytes; [`control`] parses them):
//!
//! ```text
//!  PEER      1 | to[32] | link packet...            sender → router (telehash "peer")
//!  CONNECT   2 | from[32] | addr | link packet...   router → target (telehash "connect")
//!  KEY_REQ   3 | hashname[32]                        "what is this hashname's static key?"
//!  KEY_REPLY 4 | hashname[32] | 0 | or 1 key[32]     asker checks hash(key) == hashname
//!  REFUSED   5 | to[32] | reason u8 (1 no route, 2 relay table full, 3 relaying disabled)
//!  addr:  0 (none) | 4 ipv4[4] port u16 LE | 6 ipv6[16] port u16 LE
//! ```
//!
//! **Introduction.** A wants B, has no address for B (only router hints, telehash's "peer"
//! path type; see [`Mesh::add_router_hint`]), or its direct handshake got no answer within
//! [`MeshConfig::direct_timeout`]. A picks a router R it has a direct, up link with (hinted
//! routers first, then any; routers that answered `REFUSED` are skipped) and sends its Noise
//! IK initiation for B inside `PEER{to: B}`. If A lacks B's static key, it first asks its
//! routers with `KEY_REQ` and checks the `KEY_REPLY` hashes to B. R, linked directly with B,
//! forwards `CONNECT{from: A, addr R sees A at, packet}`; B's [`Acceptor`] answers, and the
//! reply travels back the same way. R only ever moves opaque link packets between its own
//! links: it holds no A–B session and cannot decrypt them (the A–B keys exist only in the
//! `Link`s at A and B).
//!
//! **Relaying.** Until a direct path works, every A–B link packet (handshake, data,
//! keepalive) goes through R the same way. R's relay table ([`route::RelayLimits`]) holds at
//! most `max_sessions` relayed pairs (unordered {A, B}; new pairs beyond are answered with
//! `REFUSED(full)` and counted) and gives each pair a token bucket in packets/s and bytes/s;
//! excess packets are dropped silently and counted. Idle pairs expire. Relays only use routers
//! reached directly (no relay chains), and a relayed `CONNECT` may not itself contain
//! `PEER`/`CONNECT` (no nesting).
//!
//! **Direct-path upgrade.** Both ends learn each other's candidate addresses from the
//! `CONNECT` messages (the address R observes). While a link is relayed, each end sends a
//! probe — an authenticated empty transport packet of the A–B link, i.e. a keepalive — to
//! every candidate address every [`MeshConfig::probe_interval`] for
//! [`MeshConfig::probe_fast_rounds`] rounds, then every [`MeshConfig::probe_slow_interval`].
//! When an authenticated *transport* packet of the link arrives directly from an address, the
//! path switches to `Direct(address)` and [`MeshEvent::PathChanged`] is emitted (the same
//! rule makes the link follow a peer whose address changes, like WireGuard's roaming).
//!
//! **Duplicate links.** Simultaneous initiations are resolved by hashname: an inbound
//! initiation from P while our own initiation to P is still connecting is dropped if our
//! hashname is smaller, otherwise it replaces ours. An inbound initiation while a link exists
//! is kept as one of at most two *spare* links and replaces the main link only once confirmed
//! (a peer restart). Replayed initiations are rejected by the acceptor's timestamp table
//! (WireGuard paper §5.1; the timestamps of rekeys our links accept are fed back to it); for a
//! key evicted from that bounded table a replay only yields a spare that never confirms and
//! expires.
//!
//! **Router failure.** When a router's link goes down, links relayed through it move to another
//! router (their packets are opaque to routers, so the end-to-end link and its channels
//! survive) and [`MeshEvent::PathChanged`] is emitted.
//!
//! **Bounds.** Peers table ([`MeshConfig::max_peers`]: when full, an idle peer that only ever
//! linked to us is evicted, otherwise inbound links from unknown peers are refused), four
//! addresses / candidates / router hints per peer, two spare links per peer, the acceptor's
//! pending table and rate limits, the relay table. Waiting connections give up after
//! [`MeshConfig::connect_give_up`]. Work per datagram does not grow with the peers table: only
//! peers touched since the last call are polled. The transmit and event queues are drained by
//! the driver and not bounded here.
//!
//! **Not (yet) here:** rerouting after a router failure is not covered by a test (with one
//! `LinkConfig` for all links, a relayed link and its router's link time out together);
//! relay chains and multi-hop routing (telehash leaves routing to the
//! application too); falling back from a broken direct path to a relay once upgraded (the
//! link goes down after `dead_after` and must be reconnected); probes are not paced per
//! address or authenticated against reflection beyond the link's own AEAD; channels of a link
//! replaced by a spare are lost with it.

pub mod control;
mod peers;
pub mod route;
#[cfg(feature = "sim")]
pub mod sim;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::channel::{self, ChannelError, ChannelEvent, ChannelId, Channels, ConfigError, Side};
use crate::hashname::{Hashname, Identity};
use crate::link::{
    AcceptPolicy, Accepted, Acceptor, AcceptorConfig, AcceptorStats, DownReason, Link, LinkConfig,
    LinkEvent,
};
use crate::packet::{HandshakeKind, Packet};
use wg_guard::{Tai64N, WallClock};

pub use control::{Control, ControlError, RefuseReason};
pub use peers::{Path, PeerInfo, PeerState};
pub use route::RelayLimits;

use peers::{LinkSlot, MAX_SPARES, Peer, push_bounded};
use route::RelayTable;

/// First plaintext byte of a link datagram carrying a [`Channels`] datagram.
pub const KIND_CHANNELS: u8 = 0;
/// First plaintext byte of a link datagram carrying a mesh [`Control`] message.
pub const KIND_CONTROL: u8 = 1;

/// Configuration of a [`Mesh`].
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Timers of every link.
    pub link: LinkConfig,
    /// Limits of every link's channel mux.
    pub channels: channel::Config,
    /// Limits of the inbound handshake acceptor (its `link` field is replaced by `link`).
    pub acceptor: AcceptorConfig,
    /// Limits on relaying for others.
    pub relay: RelayLimits,
    /// Most peers known.
    pub max_peers: usize,
    /// A direct handshake without answer falls back to a relay after this long.
    pub direct_timeout: Duration,
    /// Probe interval while relayed (first rounds).
    pub probe_interval: Duration,
    /// Probe rounds at `probe_interval` before slowing down.
    pub probe_fast_rounds: u32,
    /// Probe interval while relayed after the fast rounds.
    pub probe_slow_interval: Duration,
    /// Retry interval of a connection waiting for a key or a router.
    pub connect_retry: Duration,
    /// A connection waiting for a key or a router gives up after this long.
    pub connect_give_up: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            link: LinkConfig::default(),
            channels: channel::Config::default(),
            acceptor: AcceptorConfig::default(),
            relay: RelayLimits::default(),
            max_peers: 4096,
            direct_timeout: Duration::from_secs(3),
            probe_interval: Duration::from_secs(1),
            probe_fast_rounds: 10,
            probe_slow_interval: Duration::from_secs(10),
            connect_retry: Duration::from_secs(1),
            connect_give_up: Duration::from_secs(30),
        }
    }
}

/// Why a peer's link went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshDownReason {
    /// The link itself went down.
    Link(DownReason),
    /// A newer confirmed link from the same peer replaced it (peer restart).
    Replaced,
    /// No key or router was found within [`MeshConfig::connect_give_up`].
    Unreachable,
}

/// What a [`Mesh`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// A link to `peer` is up.
    LinkUp {
        /// The peer.
        peer: Hashname,
        /// Its path.
        path: Path,
    },
    /// The link's path changed (relayed → direct, or a new direct address).
    PathChanged {
        /// The peer.
        peer: Hashname,
        /// The new path.
        path: Path,
    },
    /// The link to `peer` is gone (or never came up).
    LinkDown {
        /// The peer.
        peer: Hashname,
        /// Why.
        reason: MeshDownReason,
    },
    /// A channel event on the link to `peer`.
    Channel {
        /// The peer.
        peer: Hashname,
        /// The event.
        event: ChannelEvent,
    },
}

/// Errors of the application-facing calls.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MeshError {
    /// The hashname is not in the peers table.
    #[error("unknown peer {0}")]
    UnknownPeer(Hashname),
    /// The static key does not hash to the hashname.
    #[error("static key does not match hashname {0}")]
    KeyMismatch(Hashname),
    /// That is this node's own hashname.
    #[error("cannot add self as a peer")]
    SelfPeer,
    /// The peers table is full.
    #[error("peers table full")]
    PeersFull,
    /// No address, router or key to reach the peer now.
    #[error("no route to {0}")]
    NoRoute(Hashname),
    /// No link to the peer.
    #[error("not connected to {0}")]
    NotConnected(Hashname),
    /// A channel call failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The channel configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Counters of a [`Mesh`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Peers known.
    pub peers: usize,
    /// Links up.
    pub links_up: usize,
    /// Links up over a relay.
    pub links_relayed: usize,
    /// Relayed pairs held in the relay table.
    pub relay_sessions: usize,
    /// Packets relayed for others.
    pub relayed_packets: u64,
    /// Bytes (link packets) relayed for others.
    pub relayed_bytes: u64,
    /// Relay requests refused (table full or disabled).
    pub relay_refused: u64,
    /// Relay requests refused for lack of a direct link to the target.
    pub relay_no_route: u64,
    /// Relayed packets dropped by a pair's rate limit.
    pub relay_rate_dropped: u64,
    /// `REFUSED` messages received.
    pub refusals_received: u64,
    /// Unparseable datagrams or plaintexts.
    pub garbage: u64,
    /// Packets for no routed session index.
    pub unknown_index: u64,
    /// Relayed packets whose link peer was not the claimed sender.
    pub misrouted: u64,
    /// Packets a link dropped (authentication, replay, state).
    pub link_drops: u64,
    /// Inbound handshakes the acceptor refused.
    pub handshakes_refused: u64,
    /// Malformed or disallowed control messages.
    pub control_errors: u64,
    /// Channel datagrams the mux rejected.
    pub channel_errors: u64,
    /// `KEY_REPLY` keys that did not hash to their hashname.
    pub bad_keys: u64,
    /// Inbound links refused because the peers table was full.
    pub peers_full: u64,
    /// Idle peers evicted (learned from inbound links only) to make room.
    pub peers_evicted: u64,
    /// Relayed links moved to another router when theirs went down.
    pub reroutes: u64,
    /// Session index collisions.
    pub index_collisions: u64,
    /// Direct probes sent.
    pub probes_sent: u64,
    /// Relayed links switched to a direct path.
    pub path_upgrades: u64,
    /// Direct handshakes that fell back to a relay.
    pub direct_fallbacks: u64,
    /// The acceptor's counters.
    pub acceptor: AcceptorStats,
}

/// How a link packet arrived.
#[derive(Debug, Clone, Copy)]
enum Via {
    Direct(SocketAddr),
    Relayed {
        relay: Hashname,
        from: Hashname,
        observed: Option<SocketAddr>,
    },
}

impl Via {
    fn path(self) -> Path {
        match self {
            Via::Direct(a) => Path::Direct(a),
            Via::Relayed { relay, .. } => Path::Relayed(relay),
        }
    }
}

/// Which link of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Main,
    Spare(usize),
}

fn slot_of(p: &mut Peer, which: Which) -> Option<&mut LinkSlot> {
    match which {
        Which::Main => p.link.as_mut(),
        Which::Spare(i) => p.spares.get_mut(i),
    }
}

fn addr_token(a: SocketAddr) -> u64 {
    // FNV-1a over the address text: an opaque rate-limit key, not a security boundary.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in a.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn hashname_token(h: Hashname) -> u64 {
    let b = h.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// A sans-IO mesh node (see the [module docs](self)).
///
/// Feed it datagrams with [`handle_datagram`](Self::handle_datagram) and the clock with
/// [`handle_timeout`](Self::handle_timeout); drain [`poll_transmit`](Self::poll_transmit) and
/// [`poll_event`](Self::poll_event) after each call, and wake it at
/// [`poll_timeout`](Self::poll_timeout).
pub struct Mesh {
    identity: Identity,
    hashname: Hashname,
    cfg: MeshConfig,
    acceptor: Acceptor,
    peers: BTreeMap<Hashname, Peer>,
    routes: HashMap<u32, Hashname>,
    relays: RelayTable,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<MeshEvent>,
    stats: MeshStats,
    /// Peers whose links or muxes may have output or events to move (see `pump`).
    dirty: BTreeSet<Hashname>,
    /// Wall clock for the TAI64N timestamps of our IK initiations (WireGuard paper §5.1).
    clock: WallClock,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("hashname", &self.hashname)
            .field("peers", &self.peers.len())
            .field("relays", &self.relays.len())
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// A node with this identity; `policy` decides which authenticated peers may link to us.
    /// `wall` is the wall-clock time at `now` (the driver passes [`Tai64N::now`], a simulation
    /// a fixed value): our IK initiations carry TAI64N timestamps derived from it (WireGuard
    /// paper §5.1), so it must not go backwards across restarts of this identity.
    pub fn new(
        now: Instant,
        wall: Tai64N,
        identity: Identity,
        cfg: MeshConfig,
        policy: AcceptPolicy,
    ) -> Self {
        let acc_cfg = AcceptorConfig {
            link: cfg.link.clone(),
            ..cfg.acceptor.clone()
        };
        let acceptor = Acceptor::new(now, wall, &identity, acc_cfg, policy);
        Mesh {
            hashname: identity.hashname(),
            identity,
            cfg,
            acceptor,
            peers: BTreeMap::new(),
            routes: HashMap::new(),
            relays: RelayTable::default(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stats: MeshStats::default(),
            dirty: BTreeSet::new(),
            clock: WallClock::new(now, wall),
        }
    }

    /// This node's hashname.
    pub fn hashname(&self) -> Hashname {
        self.hashname
    }

    /// The configuration.
    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    fn peer_entry(&mut self, peer: Hashname) -> Result<&mut Peer, MeshError> {
        if peer == self.hashname {
            return Err(MeshError::SelfPeer);
        }
        if !self.peers.contains_key(&peer) && !self.make_room() {
            return Err(MeshError::PeersFull);
        }
        let p = self.peers.entry(peer).or_insert_with(|| Peer::new(None));
        p.pinned = true;
        Ok(p)
    }

    /// Adds or updates a peer (from configured seeds or discovery): its static key, which must
    /// hash to `peer`, and addresses it may be reached at directly (at most four kept).
    pub fn add_peer(
        &mut self,
        peer: Hashname,
        static_key: [u8; 32],
        addrs: &[SocketAddr],
    ) -> Result<(), MeshError> {
        if Hashname::of_x25519(&static_key) != peer {
            return Err(MeshError::KeyMismatch(peer));
        }
        let p = self.peer_entry(peer)?;
        p.key = Some(static_key);
        for a in addrs {
            push_bounded(&mut p.addrs, *a);
        }
        Ok(())
    }

    /// Adds a peer known only by hashname; its key is asked from routers on [`connect`](Self::connect).
    pub fn add_peer_hashname(&mut self, peer: Hashname) -> Result<(), MeshError> {
        self.peer_entry(peer).map(|_| ())
    }

    /// Records that `peer` is reachable through `router` (telehash v3 path type "peer",
    /// <https://telehash.github.io/v3/channels/path/>). Both must be known peers.
    pub fn add_router_hint(&mut self, peer: Hashname, router: Hashname) -> Result<(), MeshError> {
        if !self.peers.contains_key(&router) {
            return Err(MeshError::UnknownPeer(router));
        }
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(MeshError::UnknownPeer(peer))?;
        if router != peer {
            push_bounded(&mut p.routers, router);
        }
        Ok(())
    }

    /// Starts connecting to `peer`: directly if an address is known (falling back to a relay
    /// after [`MeshConfig::direct_timeout`]), otherwise by introduction through a router.
    /// Returns at once; [`MeshEvent::LinkUp`] or [`MeshEvent::LinkDown`] follows.
    pub fn connect(&mut self, now: Instant, peer: Hashname) -> Result<(), MeshError> {
        let any_router = self.any_router();
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(MeshError::UnknownPeer(peer))?;
        if p.link.is_some() {
            return Ok(());
        }
        if p.addrs.is_empty() && p.routers.is_empty() && !any_router {
            return Err(MeshError::NoRoute(peer));
        }
        p.want = Some(now);
        p.refused_by.clear();
        p.retry_at = None;
        self.try_start(now, peer, 0);
        Ok(())
    }

    /// Whether a new peer fits, evicting an idle peer that only ever linked to us (not added
    /// by the application) if the table is full.
    fn make_room(&mut self) -> bool {
        if self.peers.len() < self.cfg.max_peers {
            return true;
        }
        let idle = self
            .peers
            .iter()
            .find(|(_, p)| !p.pinned && p.link.is_none() && p.spares.is_empty() && p.want.is_none())
            .map(|(h, _)| *h);
        match idle {
            Some(h) => {
                self.peers.remove(&h);
                self.stats.peers_evicted += 1;
                true
            }
            None => false,
        }
    }

    /// Forgets a peer and closes its links (no event is reported for them).
    pub fn remove_peer(&mut self, peer: Hashname) -> Result<(), MeshError> {
        self.peers
            .remove(&peer)
            .ok_or(MeshError::UnknownPeer(peer))?;
        for p in self.peers.values_mut() {
            p.routers.retain(|r| *r != peer);
        }
        self.routes.retain(|_, h| *h != peer);
        self.dirty.remove(&peer);
        Ok(())
    }

    fn any_router(&self) -> bool {
        self.peers.values().any(Peer::is_direct_up)
    }

    /// Opens a channel to a peer (the link may still be connecting; data waits for it).
    pub fn open_channel(
        &mut self,
        peer: Hashname,
        kind: &str,
        reliable: bool,
    ) -> Result<ChannelId, MeshError> {
        Ok(self.main_slot(peer)?.chans.open(kind, reliable)?)
    }

    /// Writes to a channel.
    pub fn send(&mut self, peer: Hashname, ch: ChannelId, data: &[u8]) -> Result<(), MeshError> {
        Ok(self.main_slot(peer)?.chans.send(ch, data)?)
    }

    /// Reads up to `max` bytes from a channel (with `data_events` off).
    pub fn recv(
        &mut self,
        peer: Hashname,
        ch: ChannelId,
        max: usize,
    ) -> Result<Vec<u8>, MeshError> {
        Ok(self.main_slot(peer)?.chans.recv(ch, max)?)
    }

    /// Closes a channel with a code ([`channel::codes`]) and reason.
    pub fn close_channel(
        &mut self,
        peer: Hashname,
        ch: ChannelId,
        code: u32,
        reason: &str,
    ) -> Result<(), MeshError> {
        Ok(self.main_slot(peer)?.chans.close(ch, code, reason)?)
    }

    /// Closes the link to a peer (a [`MeshEvent::LinkDown`] follows).
    pub fn disconnect(&mut self, peer: Hashname) -> Result<(), MeshError> {
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(MeshError::UnknownPeer(peer))?;
        p.want = None;
        if let Some(s) = p.link.as_mut() {
            s.link.close();
        }
        self.dirty.insert(peer);
        Ok(())
    }

    fn main_slot(&mut self, peer: Hashname) -> Result<&mut LinkSlot, MeshError> {
        self.dirty.insert(peer);
        self.peers
            .get_mut(&peer)
            .ok_or(MeshError::UnknownPeer(peer))?
            .link
            .as_mut()
            .ok_or(MeshError::NotConnected(peer))
    }

    /// Counters of one channel on the link to `peer` (retransmissions, RTO expiries, ...).
    pub fn channel_stats(&self, peer: Hashname, ch: ChannelId) -> Option<channel::ChannelStats> {
        self.peers
            .get(&peer)?
            .link
            .as_ref()?
            .chans
            .channel_stats(ch)
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> MeshStats {
        let mut s = self.stats.clone();
        s.peers = self.peers.len();
        s.links_up = self
            .peers
            .values()
            .filter(|p| p.link.as_ref().is_some_and(|l| l.up))
            .count();
        s.links_relayed = self
            .peers
            .values()
            .filter(|p| matches!(&p.link, Some(l) if l.up && matches!(l.path, Path::Relayed(_))))
            .count();
        s.relay_sessions = self.relays.len();
        s.acceptor = self.acceptor.stats().clone();
        s
    }

    /// Every known peer with its state and path.
    pub fn peers(&self) -> impl Iterator<Item = (Hashname, PeerInfo)> + '_ {
        self.peers.iter().map(|(h, p)| (*h, p.info()))
    }

    /// One peer's state and path.
    pub fn peer_info(&self, peer: Hashname) -> Option<PeerInfo> {
        self.peers.get(&peer).map(Peer::info)
    }

    /// Handles one received UDP datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.handle_link_packet(now, bytes, Via::Direct(from));
        self.pump(now);
    }

    /// The next datagram to send, with its destination.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.transmit.is_empty() {
            self.pump(now);
        }
        self.transmit.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MeshEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.acceptor.poll_timeout();
        for p in self.peers.values() {
            if p.want.is_some() && p.link.is_none() {
                t = min_opt(t, p.retry_at);
            }
            for s in p.link.iter().chain(p.spares.iter()) {
                t = min_opt(t, s.link.poll_timeout());
                if s.up {
                    t = min_opt(t, s.chans.poll_timeout());
                    t = min_opt(t, s.next_probe);
                } else {
                    t = min_opt(t, s.fallback_at);
                }
            }
        }
        t
    }

    /// Advances timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.acceptor.handle_timeout(now);
        self.relays.expire(now, &self.cfg.relay);
        let hns: Vec<Hashname> = self.peers.keys().copied().collect();
        for hn in hns {
            self.timeout_peer(now, hn);
        }
        self.pump(now);
    }

    fn timeout_peer(&mut self, now: Instant, hn: Hashname) {
        let give_up = self.cfg.connect_give_up;
        let Some(p) = self.peers.get_mut(&hn) else {
            return;
        };
        if p.link.is_some() || !p.spares.is_empty() {
            self.dirty.insert(hn);
        }
        for s in p.link.iter_mut().chain(p.spares.iter_mut()) {
            s.link.handle_timeout(now);
            if s.up {
                s.chans.handle_timeout(now);
            }
        }
        // A waiting connection: retry or give up.
        if p.link.is_none()
            && let Some(since) = p.want
            && p.retry_at.is_some_and(|t| t <= now)
        {
            if now.saturating_duration_since(since) >= give_up {
                p.want = None;
                p.retry_at = None;
                self.events.push_back(MeshEvent::LinkDown {
                    peer: hn,
                    reason: MeshDownReason::Unreachable,
                });
            } else {
                p.retry_at = None;
                self.try_start(now, hn, 0);
            }
            return;
        }
        let Some(s) = p.link.as_mut() else {
            return;
        };
        // A direct handshake without answer: fall back to a relay.
        if !s.up && s.fallback_at.is_some_and(|t| t <= now) {
            s.fallback_at = Some(now + self.cfg.direct_timeout);
            if let Some(router) = self.choose_relay(hn)
                && let Some(p) = self.peers.get_mut(&hn)
                && let Some(key) = p.key
            {
                if let Some(old) = p.link.take()
                    && let Path::Direct(a) = old.path
                {
                    push_bounded(&mut p.candidates, a);
                }
                self.stats.direct_fallbacks += 1;
                self.refresh_routes(hn);
                self.start_link(now, hn, key, Path::Relayed(router));
            }
            return;
        }
        // Direct probes while relayed.
        if s.up && matches!(s.path, Path::Relayed(_)) && s.next_probe.is_some_and(|t| t <= now) {
            let mut targets: Vec<SocketAddr> = p.candidates.clone();
            for a in &p.addrs {
                if !targets.contains(a) {
                    targets.push(*a);
                }
            }
            for a in targets {
                if let Ok(pkt) = s.link.send(now, &[]) {
                    self.stats.probes_sent += 1;
                    self.transmit.push_back((a, pkt));
                }
            }
            s.probe_rounds += 1;
            let every = if s.probe_rounds < self.cfg.probe_fast_rounds {
                self.cfg.probe_interval
            } else {
                self.cfg.probe_slow_interval
            };
            s.next_probe = Some(now + every);
        }
    }

    /// Starts the wanted connection to `hn` if a key and a path are available; otherwise asks
    /// for the key or connects to a hinted router, and schedules a retry.
    fn try_start(&mut self, now: Instant, hn: Hashname, depth: u8) {
        let retry = now + self.cfg.connect_retry;
        let Some(p) = self.peers.get(&hn) else {
            return;
        };
        if p.link.is_some() || p.want.is_none() {
            return;
        }
        let routers = p.routers.clone();
        let Some(key) = p.key else {
            let mut asked = false;
            let targets: Vec<Hashname> = match routers.iter().any(|r| self.is_router(*r)) {
                true => routers
                    .iter()
                    .copied()
                    .filter(|r| self.is_router(*r))
                    .collect(),
                false => self
                    .peers
                    .iter()
                    .filter(|(_, q)| q.is_direct_up())
                    .map(|(h, _)| *h)
                    .collect(),
            };
            for r in targets {
                asked |= self.send_control(now, r, &Control::KeyRequest { hashname: hn });
            }
            if !asked {
                self.connect_routers(now, &routers, depth);
            }
            if let Some(p) = self.peers.get_mut(&hn) {
                p.retry_at = Some(retry);
            }
            return;
        };
        let path = match p.addrs.first() {
            Some(a) => Some(Path::Direct(*a)),
            None => self.choose_relay(hn).map(Path::Relayed),
        };
        match path {
            Some(path) => {
                self.start_link(now, hn, key, path);
            }
            None => {
                self.connect_routers(now, &routers, depth);
                if let Some(p) = self.peers.get_mut(&hn) {
                    p.retry_at = Some(retry);
                }
            }
        }
    }

    fn is_router(&self, r: Hashname) -> bool {
        self.peers.get(&r).is_some_and(Peer::is_direct_up)
    }

    fn start_link(&mut self, now: Instant, hn: Hashname, key: [u8; 32], path: Path) -> bool {
        let wall = self.clock.next(now);
        let Ok((link, first)) =
            Link::connect(now, wall, &self.identity, key, self.cfg.link.clone())
        else {
            return false;
        };
        let Ok(chans) = Channels::new(Side::Initiator, self.cfg.channels.clone()) else {
            return false;
        };
        let fallback_at = matches!(path, Path::Direct(_)).then(|| now + self.cfg.direct_timeout);
        let Some(p) = self.peers.get_mut(&hn) else {
            return false;
        };
        p.link = Some(LinkSlot {
            link,
            chans,
            path,
            up: false,
            initiator: true,
            fallback_at,
            next_probe: None,
            probe_rounds: 0,
        });
        p.retry_at = None;
        self.dirty.insert(hn);
        self.refresh_routes(hn);
        self.send_packet(now, hn, path, first);
        true
    }

    /// Sends a link packet of the link with `to` along `path`.
    fn send_packet(&mut self, now: Instant, to: Hashname, path: Path, packet: Vec<u8>) {
        match path {
            Path::Direct(a) => self.transmit.push_back((a, packet)),
            Path::Relayed(r) => {
                self.send_control(
                    now,
                    r,
                    &Control::Peer {
                        to,
                        packet: &packet,
                    },
                );
            }
        }
    }

    /// Sends a raw packet back the way `via` came.
    fn send_via(&mut self, now: Instant, via: Via, packet: Vec<u8>) {
        match via {
            Via::Direct(a) => self.transmit.push_back((a, packet)),
            Via::Relayed { relay, from, .. } => {
                self.send_control(
                    now,
                    relay,
                    &Control::Peer {
                        to: from,
                        packet: &packet,
                    },
                );
            }
        }
    }

    /// Sends a control message on the (direct) link with `to`.
    fn send_control(&mut self, now: Instant, to: Hashname, msg: &Control<'_>) -> bool {
        let Some(slot) = self.peers.get_mut(&to).and_then(|p| p.link.as_mut()) else {
            return false;
        };
        let Path::Direct(addr) = slot.path else {
            return false;
        };
        self.dirty.insert(to);
        let mut plain = Vec::with_capacity(64);
        plain.push(KIND_CONTROL);
        msg.emit(&mut plain);
        match slot.link.send(now, &plain) {
            Ok(pkt) => {
                self.transmit.push_back((addr, pkt));
                true
            }
            Err(_) => false,
        }
    }

    /// Re-syncs the routing table with the indices of `hn`'s links.
    fn refresh_routes(&mut self, hn: Hashname) {
        let Some(p) = self.peers.get_mut(&hn) else {
            return;
        };
        let mut wanted: Vec<u32> = Vec::new();
        for s in p.link.iter().chain(p.spares.iter()) {
            wanted.extend(s.link.local_indices());
        }
        for old in &p.routed {
            if !wanted.contains(old) && self.routes.get(old) == Some(&hn) {
                self.routes.remove(old);
            }
        }
        let mut routed = Vec::with_capacity(wanted.len());
        for idx in wanted {
            match self.routes.get(&idx) {
                None => {
                    self.routes.insert(idx, hn);
                    routed.push(idx);
                }
                Some(h) if *h == hn => routed.push(idx),
                Some(_) => {
                    if !p.routed.contains(&idx) {
                        self.stats.index_collisions += 1;
                    }
                }
            }
        }
        p.routed = routed;
    }

    fn handle_link_packet(&mut self, now: Instant, bytes: &[u8], via: Via) {
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(_) => {
                self.stats.garbage += 1;
                return;
            }
        };
        let (index, transport) = match packet {
            Packet::Transport(t) => (t.receiver, true),
            Packet::CookieReply(c) => (c.receiver, false),
            Packet::Handshake(h) => match h.kind {
                HandshakeKind::Response => (h.receiver, false),
                HandshakeKind::Init if h.receiver != 0 && self.routes.contains_key(&h.receiver) => {
                    (h.receiver, false)
                }
                // A retransmitted XX message 3 for a link the acceptor already made.
                HandshakeKind::Final
                    if self.routes.contains_key(&h.receiver)
                        && !self.acceptor.has_pending(h.receiver) =>
                {
                    (h.receiver, false)
                }
                HandshakeKind::Init | HandshakeKind::Final => {
                    self.accept(now, bytes, via);
                    return;
                }
            },
        };
        let Some(&hn) = self.routes.get(&index) else {
            self.stats.unknown_index += 1;
            return;
        };
        if let Via::Relayed { from, .. } = via
            && from != hn
        {
            self.stats.misrouted += 1;
            return;
        }
        let Some(p) = self.peers.get_mut(&hn) else {
            return;
        };
        self.dirty.insert(hn);
        let which = if p.link.as_ref().is_some_and(|s| s.link.owns_index(index)) {
            Which::Main
        } else if let Some(i) = p.spares.iter().position(|s| s.link.owns_index(index)) {
            Which::Spare(i)
        } else {
            self.stats.unknown_index += 1;
            return;
        };
        let Some(slot) = slot_of(p, which) else {
            return;
        };
        let result = slot.link.handle(now, bytes);
        // A rekey initiation a link accepted raises the acceptor's replay table too, so a copy
        // of it replayed with a stale routing hint (which reaches the acceptor) is rejected
        // there as well (WireGuard paper §5.1).
        if !transport
            && let (Some(key), Some(ts)) = (slot.link.peer_static(), slot.link.peer_timestamp())
        {
            self.acceptor.note_timestamp(&key, ts);
        }
        match result {
            Ok(plain) => {
                self.on_authenticated(hn, which, via, transport);
                if let Some(plain) = plain {
                    self.on_plaintext(now, hn, which, &plain, matches!(via, Via::Relayed { .. }));
                }
            }
            Err(_) => self.stats.link_drops += 1,
        }
        self.refresh_routes(hn);
    }

    fn on_authenticated(&mut self, hn: Hashname, which: Which, via: Via, transport: bool) {
        let Some(p) = self.peers.get_mut(&hn) else {
            return;
        };
        if let Via::Relayed {
            observed: Some(a), ..
        } = via
        {
            push_bounded(&mut p.candidates, a);
        }
        let Some(slot) = slot_of(p, which) else {
            return;
        };
        if let Via::Direct(addr) = via
            && transport
            && slot.path != Path::Direct(addr)
        {
            let was = slot.path;
            slot.path = Path::Direct(addr);
            slot.fallback_at = None;
            slot.next_probe = None;
            if slot.up && which == Which::Main {
                if matches!(was, Path::Relayed(_)) {
                    self.stats.path_upgrades += 1;
                }
                self.events.push_back(MeshEvent::PathChanged {
                    peer: hn,
                    path: slot.path,
                });
            }
        }
    }

    fn on_plaintext(
        &mut self,
        now: Instant,
        hn: Hashname,
        which: Which,
        plain: &[u8],
        relayed: bool,
    ) {
        match plain.split_first() {
            Some((&KIND_CHANNELS, rest)) => {
                if let Some(slot) = self.peers.get_mut(&hn).and_then(|p| slot_of(p, which))
                    && slot.chans.handle_datagram(now, rest).is_err()
                {
                    self.stats.channel_errors += 1;
                }
            }
            Some((&KIND_CONTROL, rest)) => self.on_control(now, hn, rest, relayed),
            _ => self.stats.garbage += 1,
        }
    }

    fn on_control(&mut self, now: Instant, from: Hashname, bytes: &[u8], relayed: bool) {
        let msg = match Control::parse(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.stats.control_errors += 1;
                return;
            }
        };
        match msg {
            Control::Peer { .. } | Control::Connect { .. } if relayed => {
                // No relay chains, no nesting.
                self.stats.control_errors += 1;
            }
            Control::Peer { to, packet } => self.relay(now, from, to, packet),
            Control::Connect {
                from: origin,
                observed,
                packet,
            } => {
                if origin == self.hashname || origin == from {
                    self.stats.control_errors += 1;
                    return;
                }
                let via = Via::Relayed {
                    relay: from,
                    from: origin,
                    observed,
                };
                self.handle_link_packet(now, packet, via);
            }
            Control::KeyRequest { hashname } => {
                let key = self.peers.get(&hashname).and_then(|p| p.key);
                self.send_control(now, from, &Control::KeyReply { hashname, key });
            }
            Control::KeyReply { hashname, key } => {
                let Some(key) = key else {
                    return;
                };
                if Hashname::of_x25519(&key) != hashname {
                    self.stats.bad_keys += 1;
                    return;
                }
                if let Some(p) = self.peers.get_mut(&hashname)
                    && p.key.is_none()
                {
                    p.key = Some(key);
                    if p.want.is_some() {
                        self.try_start(now, hashname, 0);
                    }
                }
            }
            Control::Refused { to, .. } => {
                self.stats.refusals_received += 1;
                let Some(p) = self.peers.get_mut(&to) else {
                    return;
                };
                let relayed_by_sender = matches!(
                    &p.link,
                    Some(s) if !s.up && s.initiator && s.path == Path::Relayed(from)
                );
                if !relayed_by_sender {
                    return;
                }
                push_bounded(&mut p.refused_by, from);
                if let Some(router) = self.choose_relay(to)
                    && let Some(p) = self.peers.get_mut(&to)
                    && let Some(key) = p.key
                {
                    p.link = None;
                    self.refresh_routes(to);
                    self.start_link(now, to, key, Path::Relayed(router));
                }
            }
        }
    }

    /// An inbound handshake message for the acceptor.
    fn accept(&mut self, now: Instant, bytes: &[u8], via: Via) {
        let source = match via {
            Via::Direct(a) => addr_token(a),
            Via::Relayed { from, .. } => hashname_token(from),
        };
        match self.acceptor.handle(now, bytes, source) {
            Ok(Accepted::Reply(r) | Accepted::CookieReply(r)) => self.send_via(now, via, r),
            Ok(Accepted::Link { link, reply }) => {
                let Some(key) = link.peer_static() else {
                    return;
                };
                let hn = Hashname::of_x25519(&key);
                if let Via::Relayed { from, .. } = via
                    && from != hn
                {
                    self.stats.misrouted += 1;
                    self.acceptor.discard(&key);
                    return;
                }
                if hn == self.hashname || !self.install_inbound(hn, key, *link, via.path()) {
                    // Not kept: a retransmission of this initiation must not be answered with
                    // the response of a link that does not exist.
                    self.acceptor.discard(&key);
                    return;
                }
                if let Some(r) = reply {
                    self.send_via(now, via, r);
                }
            }
            Err(_) => self.stats.handshakes_refused += 1,
        }
    }

    fn install_inbound(&mut self, hn: Hashname, key: [u8; 32], link: Link, path: Path) -> bool {
        if !self.peers.contains_key(&hn) {
            if !self.make_room() {
                self.stats.peers_full += 1;
                return false;
            }
            self.peers.insert(hn, Peer::new(Some(key)));
        }
        self.dirty.insert(hn);
        let Ok(chans) = Channels::new(Side::Responder, self.cfg.channels.clone()) else {
            return false;
        };
        let slot = LinkSlot {
            link,
            chans,
            path,
            up: false,
            initiator: false,
            fallback_at: None,
            next_probe: None,
            probe_rounds: 0,
        };
        let me = self.hashname;
        let Some(p) = self.peers.get_mut(&hn) else {
            return false;
        };
        if p.key.is_none() {
            p.key = Some(key);
        }
        match &p.link {
            None => p.link = Some(slot),
            Some(m) if m.initiator && !m.up => {
                if me < hn {
                    return false; // our own initiation wins
                }
                p.link = Some(slot);
            }
            Some(_) => {
                if p.spares.len() >= MAX_SPARES {
                    p.spares.remove(0);
                }
                p.spares.push(slot);
            }
        }
        self.refresh_routes(hn);
        true
    }

    /// Moves queued link output and events out of every link and mux.
    ///
    /// Only peers marked dirty (touched by a datagram, an application call, a timer or a
    /// control message sent on their link) are visited, so the cost per datagram does not grow
    /// with the peers table. Moving output can dirty other peers (relayed packets go out on
    /// the router's link); a few rounds settle it, anything left waits for the next call.
    fn pump(&mut self, now: Instant) {
        for _ in 0..4 {
            if self.dirty.is_empty() {
                return;
            }
            let hns = std::mem::take(&mut self.dirty);
            for hn in hns {
                self.pump_spares(now, hn);
                self.pump_main(now, hn);
                self.refresh_routes(hn);
            }
        }
    }

    fn pump_spares(&mut self, now: Instant, hn: Hashname) {
        let mut i = 0;
        loop {
            let Some(p) = self.peers.get_mut(&hn) else {
                return;
            };
            let Some(s) = p.spares.get_mut(i) else {
                return;
            };
            let path = s.path;
            let mut out = Vec::new();
            while let Some(pkt) = s.link.poll_transmit() {
                out.push(pkt);
            }
            let mut confirmed = false;
            while let Some(e) = s.link.poll_event() {
                if matches!(e, LinkEvent::Up { peer } if peer == hn) {
                    confirmed = true;
                }
            }
            let down = s.is_down();
            for pkt in out {
                self.send_packet(now, hn, path, pkt);
            }
            let Some(p) = self.peers.get_mut(&hn) else {
                return;
            };
            if down {
                p.spares.remove(i);
                continue;
            }
            if confirmed {
                let mut s = p.spares.remove(i);
                s.up = true;
                if matches!(s.path, Path::Relayed(_)) {
                    s.next_probe = Some(now);
                }
                let old = p.link.replace(s);
                p.want = None;
                if old.is_some_and(|o| o.up) {
                    self.events.push_back(MeshEvent::LinkDown {
                        peer: hn,
                        reason: MeshDownReason::Replaced,
                    });
                }
                self.events.push_back(MeshEvent::LinkUp { peer: hn, path });
                self.wake_waiting(now);
                continue;
            }
            i += 1;
        }
    }

    fn pump_main(&mut self, now: Instant, hn: Hashname) {
        let Some(p) = self.peers.get_mut(&hn) else {
            return;
        };
        let Some(s) = p.link.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(pkt) = s.link.poll_transmit() {
            out.push(pkt);
        }
        let mut up = false;
        let mut down = None;
        while let Some(e) = s.link.poll_event() {
            match e {
                LinkEvent::Up { peer } if peer == hn && !s.up => up = true,
                LinkEvent::Up { .. } | LinkEvent::Rekeyed => {}
                LinkEvent::Down { reason } => down = Some(reason),
            }
        }
        if up {
            s.up = true;
            s.fallback_at = None;
            if matches!(s.path, Path::Relayed(_)) {
                s.next_probe = Some(now);
            }
            p.want = None;
            p.refused_by.clear();
            self.events.push_back(MeshEvent::LinkUp {
                peer: hn,
                path: s.path,
            });
        }
        if s.up && down.is_none() {
            while let Some(d) = s.chans.poll_transmit(now) {
                let mut plain = Vec::with_capacity(d.len() + 1);
                plain.push(KIND_CHANNELS);
                plain.extend_from_slice(&d);
                if let Ok(pkt) = s.link.send(now, &plain) {
                    out.push(pkt);
                }
            }
            while let Some(event) = s.chans.poll_event() {
                self.events
                    .push_back(MeshEvent::Channel { peer: hn, event });
            }
        }
        let path = s.path;
        for pkt in out {
            self.send_packet(now, hn, path, pkt);
        }
        if let Some(reason) = down
            && let Some(p) = self.peers.get_mut(&hn)
        {
            p.link = None;
            p.want = None;
            self.events.push_back(MeshEvent::LinkDown {
                peer: hn,
                reason: MeshDownReason::Link(reason),
            });
            self.reroute(hn);
        }
        if up {
            self.wake_waiting(now);
        }
    }

    /// A new link may be the router waiting connections need: retry them now.
    fn wake_waiting(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            if p.want.is_some() && p.link.is_none() {
                p.retry_at = Some(now);
            }
        }
    }
}
