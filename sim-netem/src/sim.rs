//! The simulator: virtual clock, event queue, nodes, routing and endpoint driving.

use std::any::Any;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use thiserror::Error;

use crate::endpoint::{Datagram, Endpoint};
use crate::link::{ConfigError, Link, LinkConfig, LinkStats};
use crate::qdisc::{DropTail, Packet, Qdisc};

/// A node (host or router) of a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

/// A unidirectional link of a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(u32);

/// An endpoint attached to a host of a [`Sim`]. Ids are never reused after a detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(u32);

macro_rules! id_index {
    ($t:ty) => {
        impl $t {
            /// The id at position `i` in creation order (saturating; an id past the end is
            /// simply unknown to the simulation).
            pub fn from_index(i: usize) -> Self {
                Self(id32(i))
            }

            /// Position of this id in creation order, starting at 0.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}#{}", stringify!($t), self.0)
            }
        }
    };
}
id_index!(NodeId);
id_index!(LinkId);
id_index!(EndpointId);

fn id32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Why a topology or attach operation failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SimError {
    /// Another host already has this address.
    #[error("address {0} already belongs to a host")]
    DuplicateAddress(Ipv4Addr),
    /// The node id does not exist.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// The link id does not exist.
    #[error("unknown link {0}")]
    UnknownLink(LinkId),
    /// The operation needs a host but the node is a router.
    #[error("node {0} is not a host")]
    NotAHost(NodeId),
    /// An endpoint is already bound to this address.
    #[error("port {0} already in use")]
    PortInUse(SocketAddr),
    /// No ephemeral port is free on the host.
    #[error("no free ephemeral port on {0}")]
    NoFreePort(Ipv4Addr),
    /// A route override names a link that does not leave the node.
    #[error("link {link} does not leave node {node}")]
    LinkNotFromNode {
        /// The node whose route was set.
        node: NodeId,
        /// The link given.
        link: LinkId,
    },
    /// The link configuration is invalid.
    #[error("invalid link configuration: {0}")]
    Config(#[from] ConfigError),
    /// A topology builder was given a router index it does not have.
    #[error("no router with index {0}")]
    NoSuchRouter(usize),
    /// A requested round-trip time is below the topology's fixed propagation delays.
    #[error("RTT {rtt:?} is below the minimum {min:?} of this topology")]
    RttTooSmall {
        /// The requested RTT.
        rtt: Duration,
        /// The smallest RTT the topology can give.
        min: Duration,
    },
}

/// Simulation-wide counters (per-link counters are in [`LinkStats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams emitted by endpoints (plus [`Sim::inject`]ed ones).
    pub sent: u64,
    /// Datagrams handed to an endpoint.
    pub delivered: u64,
    /// Datagrams that reached their host but no endpoint was bound to the port.
    pub undeliverable: u64,
    /// Datagrams dropped because a node had no route to the destination.
    pub no_route: u64,
    /// Events processed.
    pub events: u64,
    /// `handle_timeout` calls made.
    pub timeouts: u64,
}

/// Limit on `handle_timeout` calls for one endpoint at one instant before the simulator
/// declares it spinning.
const SPIN_LIMIT: u32 = 1_000_000;
/// Limit on datagrams one endpoint may emit from a single drain of `poll_transmit`.
const TRANSMIT_LIMIT: u64 = 10_000_000;
const EPHEMERAL_START: u16 = 49152;

enum NodeKind {
    Host {
        addr: Ipv4Addr,
        ports: HashMap<u16, EndpointId>,
        next_ephemeral: u16,
    },
    Router,
}

struct Node {
    name: String,
    kind: NodeKind,
    out_links: Vec<LinkId>,
    in_links: Vec<LinkId>,
}

struct EpSlot {
    host: NodeId,
    addr: SocketAddr,
    ep: Box<dyn Endpoint>,
    /// The endpoint's current deadline (ns since the epoch, never before the time it was read).
    timer_at: Option<u64>,
    /// The earliest valid timer event in the queue: (time, generation).
    pending: Option<(u64, u64)>,
    generation: u64,
    spin_at: u64,
    spin_count: u32,
}

enum EventKind {
    TxDone(LinkId),
    Arrive {
        node: NodeId,
        link: Option<LinkId>,
        slot: u32,
    },
    Timer {
        ep: EndpointId,
        generation: u64,
    },
}

struct Event {
    at: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed so the `BinaryHeap` pops the earliest event, ties in scheduling order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A deterministic discrete-event network simulation.
///
/// Build a topology with [`add_host`](Self::add_host), [`add_router`](Self::add_router) and
/// [`add_link`](Self::add_link) (or the builders in [`topology`](crate::topology)), attach
/// endpoints with [`attach`](Self::attach), then advance the virtual clock with
/// [`run_until`](Self::run_until) / [`run_for`](Self::run_for). Between runs the caller may
/// inspect and modify endpoints ([`endpoint`](Self::endpoint),
/// [`with_endpoint`](Self::with_endpoint)), queues ([`qdisc`](Self::qdisc)), link
/// configurations and statistics, attach or detach endpoints.
pub struct Sim {
    seed: u64,
    epoch: Instant,
    now_ns: u64,
    seq: u64,
    events: BinaryHeap<Event>,
    nodes: Vec<Node>,
    links: Vec<Link>,
    endpoints: Vec<Option<EpSlot>>,
    /// Packets travelling on a link's propagation delay.
    flight: Vec<Option<Packet>>,
    free_flight: Vec<u32>,
    hosts: Vec<NodeId>,
    host_index: HashMap<Ipv4Addr, usize>,
    /// `routes[node][host_index]`: the link towards that host.
    routes: Vec<Vec<Option<LinkId>>>,
    overrides: HashMap<(NodeId, Ipv4Addr), LinkId>,
    routes_dirty: bool,
    next_packet_id: u64,
    stats: SimStats,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("elapsed", &self.elapsed())
            .field("nodes", &self.nodes.len())
            .field("links", &self.links.len())
            .field("endpoints", &self.endpoints.iter().flatten().count())
            .field("pending_events", &self.events.len())
            .finish()
    }
}

impl Sim {
    /// An empty simulation at virtual time zero whose randomness all derives from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            epoch: Instant::now(),
            now_ns: 0,
            seq: 0,
            events: BinaryHeap::new(),
            nodes: Vec::new(),
            links: Vec::new(),
            endpoints: Vec::new(),
            flight: Vec::new(),
            free_flight: Vec::new(),
            hosts: Vec::new(),
            host_index: HashMap::new(),
            routes: Vec::new(),
            overrides: HashMap::new(),
            routes_dirty: true,
            next_packet_id: 0,
            stats: SimStats::default(),
        }
    }

    // ---- time -------------------------------------------------------------------------------

    /// The seed given to [`new`](Self::new).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The `Instant` of virtual time zero (captured once, at construction).
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.now_ns)
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now_ns)
    }

    /// The `Instant` of virtual time `t` since the start.
    pub fn instant_at(&self, t: Duration) -> Instant {
        self.epoch + t
    }

    /// Virtual time since the start of an `Instant` (zero if before the start).
    pub fn since_start(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.epoch)
    }

    /// A random generator for callers (e.g. an endpoint's own randomness), derived from the
    /// simulation seed and `stream` and independent of every link's generator.
    pub fn rng_for(&self, stream: u64) -> ChaCha8Rng {
        derive_rng(self.seed, b"user", stream)
    }

    fn push(&mut self, at: u64, kind: EventKind) {
        self.seq += 1;
        self.events.push(Event {
            at,
            seq: self.seq,
            kind,
        });
    }

    // ---- topology ---------------------------------------------------------------------------

    /// Adds a host with one IPv4 address.
    ///
    /// # Panics
    /// If another host has the address; see [`try_add_host`](Self::try_add_host).
    pub fn add_host(&mut self, addr: Ipv4Addr) -> NodeId {
        match self.try_add_host(addr) {
            Ok(id) => id,
            Err(e) => panic!("Sim::add_host: {e}"),
        }
    }

    /// Adds a host with one IPv4 address, failing if the address is taken.
    pub fn try_add_host(&mut self, addr: Ipv4Addr) -> Result<NodeId, SimError> {
        if self.host_index.contains_key(&addr) {
            return Err(SimError::DuplicateAddress(addr));
        }
        let id = self.push_node(
            addr.to_string(),
            NodeKind::Host {
                addr,
                ports: HashMap::new(),
                next_ephemeral: EPHEMERAL_START,
            },
        );
        self.host_index.insert(addr, self.hosts.len());
        self.hosts.push(id);
        Ok(id)
    }

    /// Adds a router: it forwards every packet along the route to its destination host.
    pub fn add_router(&mut self, name: impl Into<String>) -> NodeId {
        self.push_node(name.into(), NodeKind::Router)
    }

    fn push_node(&mut self, name: String, kind: NodeKind) -> NodeId {
        let id = NodeId(id32(self.nodes.len()));
        self.nodes.push(Node {
            name,
            kind,
            out_links: Vec::new(),
            in_links: Vec::new(),
        });
        self.routes_dirty = true;
        id
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The name of a node (a host's is its address).
    pub fn node_name(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(node.index()).map(|n| n.name.as_str())
    }

    /// The address of a host, `None` for routers and unknown ids.
    pub fn host_addr(&self, node: NodeId) -> Option<Ipv4Addr> {
        match self.nodes.get(node.index())?.kind {
            NodeKind::Host { addr, .. } => Some(addr),
            NodeKind::Router => None,
        }
    }

    /// The host owning an address.
    pub fn host_by_addr(&self, addr: Ipv4Addr) -> Option<NodeId> {
        self.host_index.get(&addr).map(|&i| self.hosts[i])
    }

    /// Adds a unidirectional link from `from` to `to` whose egress queue is `qdisc`.
    ///
    /// # Panics
    /// On an unknown node or invalid configuration; see [`try_add_link`](Self::try_add_link).
    pub fn add_link(
        &mut self,
        from: NodeId,
        to: NodeId,
        cfg: LinkConfig,
        qdisc: Box<dyn Qdisc>,
    ) -> LinkId {
        match self.try_add_link(from, to, cfg, qdisc) {
            Ok(id) => id,
            Err(e) => panic!("Sim::add_link: {e}"),
        }
    }

    /// Adds a unidirectional link, failing on an unknown node or invalid configuration.
    pub fn try_add_link(
        &mut self,
        from: NodeId,
        to: NodeId,
        cfg: LinkConfig,
        qdisc: Box<dyn Qdisc>,
    ) -> Result<LinkId, SimError> {
        for n in [from, to] {
            if n.index() >= self.nodes.len() {
                return Err(SimError::UnknownNode(n));
            }
        }
        cfg.validate()?;
        let id = LinkId(id32(self.links.len()));
        let rng = derive_rng(self.seed, b"link", id.0.into());
        self.links.push(Link::new(from, to, cfg, qdisc, rng));
        self.nodes[from.index()].out_links.push(id);
        self.nodes[to.index()].in_links.push(id);
        self.routes_dirty = true;
        Ok(id)
    }

    /// Adds a link with a [`DropTail`] queue of `cfg.queue_limit_bytes`.
    pub fn add_link_droptail(&mut self, from: NodeId, to: NodeId, cfg: LinkConfig) -> LinkId {
        let q = Box::new(DropTail::new(cfg.queue_limit_bytes));
        self.add_link(from, to, cfg, q)
    }

    /// Adds a link each way with the same configuration; returns `(a→b, b→a)`.
    pub fn add_duplex(
        &mut self,
        a: NodeId,
        b: NodeId,
        cfg: LinkConfig,
        qdisc_ab: Box<dyn Qdisc>,
        qdisc_ba: Box<dyn Qdisc>,
    ) -> (LinkId, LinkId) {
        let ab = self.add_link(a, b, cfg.clone(), qdisc_ab);
        let ba = self.add_link(b, a, cfg, qdisc_ba);
        (ab, ba)
    }

    /// Adds a drop-tail link each way with the same configuration; returns `(a→b, b→a)`.
    pub fn add_duplex_droptail(
        &mut self,
        a: NodeId,
        b: NodeId,
        cfg: LinkConfig,
    ) -> (LinkId, LinkId) {
        let ab = self.add_link_droptail(a, b, cfg.clone());
        let ba = self.add_link_droptail(b, a, cfg);
        (ab, ba)
    }

    /// Number of links.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// The `(from, to)` nodes of a link.
    pub fn link_ends(&self, link: LinkId) -> Option<(NodeId, NodeId)> {
        self.links.get(link.index()).map(|l| (l.from, l.to))
    }

    /// The links leaving a node, in creation order.
    pub fn out_links(&self, node: NodeId) -> &[LinkId] {
        self.nodes
            .get(node.index())
            .map_or(&[], |n| n.out_links.as_slice())
    }

    /// A link's configuration.
    pub fn link_config(&self, link: LinkId) -> Option<&LinkConfig> {
        self.links.get(link.index()).map(|l| &l.cfg)
    }

    /// Replaces a link's configuration; it applies from the next packet serialised (the
    /// packet on the wire keeps its transmission time). The queue is not resized.
    pub fn set_link_config(&mut self, link: LinkId, cfg: LinkConfig) -> Result<(), SimError> {
        cfg.validate()?;
        let l = self
            .links
            .get_mut(link.index())
            .ok_or(SimError::UnknownLink(link))?;
        l.cfg = cfg;
        Ok(())
    }

    /// A link's statistics.
    pub fn link_stats(&self, link: LinkId) -> Option<&LinkStats> {
        self.links.get(link.index()).map(|l| &l.stats)
    }

    /// A link's queue backlog now: `(bytes, packets)`, excluding the packet on the wire.
    pub fn backlog(&self, link: LinkId) -> Option<(usize, usize)> {
        self.links
            .get(link.index())
            .map(|l| (l.qdisc.backlog_bytes(), l.qdisc.backlog_packets()))
    }

    /// The queue discipline of a link as its concrete type.
    pub fn qdisc<T: Qdisc>(&self, link: LinkId) -> Option<&T> {
        let q: &dyn Any = &*self.links.get(link.index())?.qdisc;
        q.downcast_ref()
    }

    /// The queue discipline of a link as its concrete type, mutably.
    pub fn qdisc_mut<T: Qdisc>(&mut self, link: LinkId) -> Option<&mut T> {
        let q: &mut dyn Any = &mut *self.links.get_mut(link.index())?.qdisc;
        q.downcast_mut()
    }

    /// Simulation-wide counters.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Resets every link's statistics and the simulation-wide counters (to exclude a
    /// warm-up period). Endpoints keep their own state.
    pub fn reset_stats(&mut self) {
        self.links.iter_mut().for_each(Link::reset_stats);
        self.stats = SimStats::default();
    }

    // ---- routing ----------------------------------------------------------------------------

    /// Computes shortest-path (hop count) routes from every node to every host now. Routing
    /// is otherwise computed lazily before the first packet after a topology change.
    ///
    /// Ties are broken deterministically (the neighbour discovered first in a breadth-first
    /// search from the destination over links in creation order). Hosts never forward.
    pub fn build_routes(&mut self) {
        let n = self.nodes.len();
        let mut routes = vec![vec![None; self.hosts.len()]; n];
        let mut seen = vec![false; n];
        let mut queue = VecDeque::new();
        for (h, &dst) in self.hosts.iter().enumerate() {
            seen.iter_mut().for_each(|s| *s = false);
            seen[dst.index()] = true;
            queue.push_back(dst);
            while let Some(u) = queue.pop_front() {
                let node = &self.nodes[u.index()];
                if u != dst && matches!(node.kind, NodeKind::Host { .. }) {
                    continue;
                }
                for &l in &node.in_links {
                    let v = self.links[l.index()].from;
                    if !seen[v.index()] {
                        seen[v.index()] = true;
                        routes[v.index()][h] = Some(l);
                        queue.push_back(v);
                    }
                }
            }
        }
        self.routes = routes;
        self.routes_dirty = false;
    }

    /// Forces `node` to send packets for host address `dst` over `link` (which must leave
    /// `node`), overriding the shortest path. Survives later topology changes.
    pub fn set_route(&mut self, node: NodeId, dst: Ipv4Addr, link: LinkId) -> Result<(), SimError> {
        let l = self
            .links
            .get(link.index())
            .ok_or(SimError::UnknownLink(link))?;
        if l.from != node {
            return Err(SimError::LinkNotFromNode { node, link });
        }
        self.overrides.insert((node, dst), link);
        Ok(())
    }

    /// Removes a route override set by [`set_route`](Self::set_route).
    pub fn clear_route(&mut self, node: NodeId, dst: Ipv4Addr) {
        self.overrides.remove(&(node, dst));
    }

    /// The link `node` uses towards host address `dst`, if any.
    pub fn route(&mut self, node: NodeId, dst: Ipv4Addr) -> Option<LinkId> {
        if !self.overrides.is_empty()
            && let Some(&l) = self.overrides.get(&(node, dst))
        {
            return Some(l);
        }
        if self.routes_dirty {
            self.build_routes();
        }
        let h = *self.host_index.get(&dst)?;
        self.routes.get(node.index())?.get(h).copied().flatten()
    }

    /// The links a packet from `from` to host address `dst` crosses (stops at a routing loop
    /// or a node without a route).
    pub fn path(&mut self, from: NodeId, dst: Ipv4Addr) -> Vec<LinkId> {
        let mut path = Vec::new();
        let mut node = from;
        while self.host_addr(node) != Some(dst) && path.len() <= self.links.len() {
            let Some(l) = self.route(node, dst) else {
                break;
            };
            path.push(l);
            node = self.links[l.index()].to;
        }
        path
    }

    // ---- endpoints --------------------------------------------------------------------------

    /// Binds an endpoint to `host:port` (port 0 picks a free ephemeral port) and polls it
    /// immediately at the current time.
    ///
    /// # Panics
    /// If the node is not a host or the port is taken; see [`try_attach`](Self::try_attach).
    pub fn attach(&mut self, host: NodeId, port: u16, ep: Box<dyn Endpoint>) -> EndpointId {
        match self.try_attach(host, port, ep) {
            Ok(id) => id,
            Err(e) => panic!("Sim::attach: {e}"),
        }
    }

    /// Binds an endpoint to `host:port`, failing if the node is not a host or the port taken.
    pub fn try_attach(
        &mut self,
        host: NodeId,
        port: u16,
        ep: Box<dyn Endpoint>,
    ) -> Result<EndpointId, SimError> {
        let id = EndpointId(id32(self.endpoints.len()));
        let node = self
            .nodes
            .get_mut(host.index())
            .ok_or(SimError::UnknownNode(host))?;
        let NodeKind::Host {
            addr,
            ports,
            next_ephemeral,
        } = &mut node.kind
        else {
            return Err(SimError::NotAHost(host));
        };
        let port = if port == 0 {
            let free = (*next_ephemeral..=u16::MAX)
                .chain(EPHEMERAL_START..*next_ephemeral)
                .find(|p| !ports.contains_key(p))
                .ok_or(SimError::NoFreePort(*addr))?;
            *next_ephemeral = free.checked_add(1).unwrap_or(EPHEMERAL_START);
            free
        } else {
            port
        };
        let sock = SocketAddr::V4(SocketAddrV4::new(*addr, port));
        if ports.contains_key(&port) {
            return Err(SimError::PortInUse(sock));
        }
        ports.insert(port, id);
        self.endpoints.push(Some(EpSlot {
            host,
            addr: sock,
            ep,
            timer_at: None,
            pending: None,
            generation: 0,
            spin_at: 0,
            spin_count: 0,
        }));
        self.drive(id);
        Ok(id)
    }

    /// Unbinds an endpoint and returns it; its timers are cancelled and datagrams for its
    /// address become undeliverable.
    pub fn detach(&mut self, id: EndpointId) -> Option<Box<dyn Endpoint>> {
        let slot = self.endpoints.get_mut(id.index())?.take()?;
        if let Some(Node {
            kind: NodeKind::Host { ports, .. },
            ..
        }) = self.nodes.get_mut(slot.host.index())
        {
            ports.remove(&slot.addr.port());
        }
        Some(slot.ep)
    }

    /// The address an endpoint is bound to.
    pub fn endpoint_addr(&self, id: EndpointId) -> Option<SocketAddr> {
        Some(self.slot(id)?.addr)
    }

    /// The host an endpoint is attached to.
    pub fn endpoint_host(&self, id: EndpointId) -> Option<NodeId> {
        Some(self.slot(id)?.host)
    }

    /// An endpoint as its concrete type.
    pub fn endpoint<T: Endpoint>(&self, id: EndpointId) -> Option<&T> {
        let ep: &dyn Any = &*self.slot(id)?.ep;
        ep.downcast_ref()
    }

    /// An endpoint as its concrete type, mutably. Changes that create work (data to send, a
    /// new deadline) take effect after [`wake`](Self::wake); prefer
    /// [`with_endpoint`](Self::with_endpoint), which does both.
    pub fn endpoint_mut<T: Endpoint>(&mut self, id: EndpointId) -> Option<&mut T> {
        let ep: &mut dyn Any = &mut *self.endpoints.get_mut(id.index())?.as_mut()?.ep;
        ep.downcast_mut()
    }

    /// An endpoint as a trait object.
    pub fn endpoint_dyn(&self, id: EndpointId) -> Option<&dyn Endpoint> {
        Some(&*self.slot(id)?.ep)
    }

    /// Runs `f` on an endpoint of concrete type `T` at the current time, then polls it
    /// (transmits and timer). `None` if the id is unknown or the type differs.
    pub fn with_endpoint<T: Endpoint, R>(
        &mut self,
        id: EndpointId,
        f: impl FnOnce(&mut T, Instant) -> R,
    ) -> Option<R> {
        let now = self.now();
        let r = f(self.endpoint_mut::<T>(id)?, now);
        self.drive(id);
        Some(r)
    }

    /// Polls an endpoint now (drains `poll_transmit`, re-arms its timer), e.g. after changing
    /// it through [`endpoint_mut`](Self::endpoint_mut).
    pub fn wake(&mut self, id: EndpointId) {
        self.drive(id);
    }

    /// Ids of attached endpoints, in attach order.
    pub fn endpoint_ids(&self) -> impl Iterator<Item = EndpointId> + '_ {
        self.endpoints
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| EndpointId(id32(i)))
    }

    fn slot(&self, id: EndpointId) -> Option<&EpSlot> {
        self.endpoints.get(id.index())?.as_ref()
    }

    /// Sends a datagram into the network at `node` now, as if `node` had emitted it.
    pub fn inject(&mut self, node: NodeId, dgram: Datagram) {
        self.stats.sent += 1;
        let pkt = self.new_packet(dgram);
        self.forward(node, pkt);
    }

    fn new_packet(&mut self, dgram: Datagram) -> Packet {
        let id = self.next_packet_id;
        self.next_packet_id += 1;
        Packet {
            dgram,
            id,
            enqueued_at: self.now(),
        }
    }

    /// Drains an endpoint's transmits and re-arms its timer.
    fn drive(&mut self, id: EndpointId) {
        let now = self.now();
        let mut sent = 0u64;
        loop {
            let Some(slot) = self.endpoints.get_mut(id.index()).and_then(Option::as_mut) else {
                return;
            };
            let Some(mut d) = slot.ep.poll_transmit(now) else {
                break;
            };
            if d.src.ip().is_unspecified() {
                d.src.set_ip(slot.addr.ip());
            }
            if d.src.port() == 0 {
                d.src.set_port(slot.addr.port());
            }
            let host = slot.host;
            sent += 1;
            assert!(
                sent < TRANSMIT_LIMIT,
                "sim-netem: endpoint {id} at {} returned more than {TRANSMIT_LIMIT} datagrams \
                 from poll_transmit at t={:?} without the clock advancing",
                slot.addr,
                Duration::from_nanos(self.now_ns)
            );
            self.stats.sent += 1;
            let pkt = self.new_packet(d);
            self.forward(host, pkt);
        }
        let now_ns = self.now_ns;
        let epoch = self.epoch;
        let Some(slot) = self.endpoints.get_mut(id.index()).and_then(Option::as_mut) else {
            return;
        };
        let deadline = slot.ep.poll_timeout().map(|t| {
            let ns = u64::try_from(t.saturating_duration_since(epoch).as_nanos());
            ns.unwrap_or(u64::MAX).max(now_ns)
        });
        slot.timer_at = deadline;
        if let Some(t) = deadline
            && slot.pending.is_none_or(|(p, _)| t < p)
        {
            slot.generation += 1;
            let generation = slot.generation;
            slot.pending = Some((t, generation));
            self.push(t, EventKind::Timer { ep: id, generation });
        }
    }

    // ---- packet movement --------------------------------------------------------------------

    /// A packet is at `node` (emitted there or arrived): deliver it locally or send it on.
    fn forward(&mut self, node: NodeId, pkt: Packet) {
        let IpAddr::V4(dst) = pkt.dgram.dst.ip() else {
            self.stats.no_route += 1;
            return;
        };
        if let Some(NodeKind::Host { addr, .. }) = self.nodes.get(node.index()).map(|n| &n.kind)
            && *addr == dst
        {
            // Loopback: deliver through the event queue so endpoints are never re-entered.
            let slot = self.park(pkt);
            self.push(
                self.now_ns,
                EventKind::Arrive {
                    node,
                    link: None,
                    slot,
                },
            );
            return;
        }
        let Some(link) = self.route(node, dst) else {
            self.stats.no_route += 1;
            return;
        };
        let now = self.now();
        if let Some(end) = self.links[link.index()].offer(self.now_ns, now, pkt) {
            self.push(end, EventKind::TxDone(link));
        }
    }

    fn park(&mut self, pkt: Packet) -> u32 {
        if let Some(i) = self.free_flight.pop() {
            self.flight[i as usize] = Some(pkt);
            i
        } else {
            self.flight.push(Some(pkt));
            id32(self.flight.len() - 1)
        }
    }

    fn unpark(&mut self, slot: u32) -> Option<Packet> {
        let pkt = self.flight.get_mut(slot as usize)?.take();
        self.free_flight.push(slot);
        pkt
    }

    fn arrive(&mut self, node: NodeId, link: Option<LinkId>, pkt: Packet) {
        if let Some(l) = link.and_then(|l| self.links.get_mut(l.index())) {
            l.stats.delivered_packets += 1;
            l.stats.delivered_bytes += pkt.wire_len() as u64;
        }
        let Some(n) = self.nodes.get(node.index()) else {
            return;
        };
        match &n.kind {
            NodeKind::Router => self.forward(node, pkt),
            NodeKind::Host { addr, ports, .. } => {
                if pkt.dgram.dst.ip() != IpAddr::V4(*addr) {
                    // Hosts do not forward.
                    self.stats.no_route += 1;
                    return;
                }
                let Some(&id) = ports.get(&pkt.dgram.dst.port()) else {
                    self.stats.undeliverable += 1;
                    return;
                };
                let now = self.now();
                let Some(slot) = self.endpoints.get_mut(id.index()).and_then(Option::as_mut) else {
                    self.stats.undeliverable += 1;
                    return;
                };
                self.stats.delivered += 1;
                slot.ep.handle_datagram(now, pkt.dgram);
                self.drive(id);
            }
        }
    }

    fn fire_timer(&mut self, id: EndpointId, generation: u64) {
        let now_ns = self.now_ns;
        let now = self.now();
        let Some(slot) = self.endpoints.get_mut(id.index()).and_then(Option::as_mut) else {
            return;
        };
        if slot.pending != Some((now_ns, generation)) {
            return; // superseded by an earlier timer
        }
        slot.pending = None;
        match slot.timer_at {
            Some(t) if t <= now_ns => {
                if slot.spin_at == now_ns {
                    slot.spin_count += 1;
                    assert!(
                        slot.spin_count <= SPIN_LIMIT,
                        "sim-netem: endpoint {id} at {} spins: handle_timeout called {SPIN_LIMIT} \
                         times at t={:?} and poll_timeout() still returns a deadline <= now",
                        slot.addr,
                        Duration::from_nanos(now_ns)
                    );
                } else {
                    slot.spin_at = now_ns;
                    slot.spin_count = 1;
                }
                self.stats.timeouts += 1;
                slot.ep.handle_timeout(now);
                self.drive(id);
            }
            Some(t) => {
                // The deadline moved later since this event was queued.
                slot.generation += 1;
                let generation = slot.generation;
                slot.pending = Some((t, generation));
                self.push(t, EventKind::Timer { ep: id, generation });
            }
            None => {}
        }
    }

    // ---- running ----------------------------------------------------------------------------

    /// Processes the next event, if any, advancing the clock to it. Returns its time.
    pub fn step(&mut self) -> Option<Duration> {
        let ev = self.events.pop()?;
        self.now_ns = self.now_ns.max(ev.at);
        self.stats.events += 1;
        match ev.kind {
            EventKind::TxDone(link) => {
                let now = self.now();
                let Some(l) = self.links.get_mut(link.index()) else {
                    return Some(self.elapsed());
                };
                let to = l.to;
                let (deliveries, next) = l.finish_tx(self.now_ns, now);
                if let Some(end) = next {
                    self.push(end, EventKind::TxDone(link));
                }
                for d in deliveries.into_iter().flatten() {
                    let slot = self.park(d.pkt);
                    self.push(
                        d.at_ns,
                        EventKind::Arrive {
                            node: to,
                            link: Some(link),
                            slot,
                        },
                    );
                }
            }
            EventKind::Arrive { node, link, slot } => {
                if let Some(pkt) = self.unpark(slot) {
                    self.arrive(node, link, pkt);
                }
            }
            EventKind::Timer { ep, generation } => self.fire_timer(ep, generation),
        }
        Some(self.elapsed())
    }

    /// Time of the next pending event (timers included, even superseded ones).
    pub fn next_event_time(&self) -> Option<Duration> {
        self.events.peek().map(|e| Duration::from_nanos(e.at))
    }

    /// Processes every event up to and including virtual time `t` (since the start), then
    /// sets the clock to `t`. Does nothing if `t` is in the past.
    pub fn run_until(&mut self, t: Duration) {
        let limit = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
        while self.events.peek().is_some_and(|e| e.at <= limit) {
            self.step();
        }
        self.now_ns = self.now_ns.max(limit);
    }

    /// Runs for `d` of virtual time from now.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.elapsed().saturating_add(d));
    }

    /// Runs until `done(self)` is true (checked after every event) or virtual time `limit`,
    /// whichever is first. Returns whether `done` became true.
    pub fn run_until_condition(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> bool {
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        if done(self) {
            return true;
        }
        while self.events.peek().is_some_and(|e| e.at <= limit_ns) {
            self.step();
            if done(self) {
                return true;
            }
        }
        self.now_ns = self.now_ns.max(limit_ns);
        false
    }
}

/// A generator derived from the simulation seed, a domain tag and an index.
fn derive_rng(seed: u64, tag: &[u8; 4], index: u64) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&index.to_le_bytes());
    s[16..20].copy_from_slice(tag);
    s[20..].copy_from_slice(b"sim-netem\0\0\0");
    ChaCha8Rng::from_seed(s)
}
