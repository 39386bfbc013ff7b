//! A reusable `sim-netem` harness for [`Mesh`] (feature `sim`): an [`Endpoint`] wrapper with a
//! simulated NAT filter, and [`run_mesh_sim`], the N-node mesh scenario the tests and
//! `mef bench mesh` use.
//!
//! **NAT model.** A node with a [`Nat`] drops inbound datagrams unless the source is in
//! [`Nat::allow`] (its designated routers, or pairs the harness "opened"), or the source is a
//! *public* node this node has sent to before (an address-restricted mapping, RFC 4787
//! §5: endpoint-independent mapping with address-dependent filtering towards public hosts).
//! Two NATed nodes cannot reach each other (as behind symmetric NATs) until the harness opens
//! the pair, simulating a mapping that starts to work midway.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sim_netem::{Datagram, Endpoint, EndpointId, LinkConfig, Sim};

use super::{Mesh, MeshConfig, MeshEvent, Path};
use crate::channel::ChannelEvent;
use crate::hashname::{Hashname, Identity};
use crate::link::Acceptor;

/// The UDP port every simulated node listens on.
pub const PORT: u16 = 4500;

/// A simulated NAT's inbound filter.
#[derive(Debug, Clone, Default)]
pub struct Nat {
    /// Sources always admitted.
    pub allow: BTreeSet<IpAddr>,
    /// Public sources, admitted once this node has sent to them.
    pub public: BTreeSet<IpAddr>,
    /// Destinations this node has sent to.
    pub contacted: BTreeSet<IpAddr>,
}

impl Nat {
    /// Whether a datagram from `src` passes.
    pub fn admits(&self, src: IpAddr) -> bool {
        self.allow.contains(&src) || (self.public.contains(&src) && self.contacted.contains(&src))
    }
}

/// A [`Mesh`] as a `sim-netem` endpoint, recording events and received channel bytes.
#[derive(Debug)]
pub struct MeshEndpoint {
    /// The node.
    pub mesh: Mesh,
    /// Inbound filter, if behind a simulated NAT.
    pub nat: Option<Nat>,
    /// Every event with its time.
    pub events: Vec<(Instant, MeshEvent)>,
    /// Channel bytes received, per peer (all channels concatenated in arrival order).
    pub received: BTreeMap<Hashname, Vec<u8>>,
    /// Peers to greet (open a reliable "greet" channel and send `greeting`) on first link up.
    pub greet: BTreeSet<Hashname>,
    /// The greeting bytes.
    pub greeting: Vec<u8>,
    /// Datagrams dropped by the NAT filter.
    pub filtered: u64,
}

impl MeshEndpoint {
    /// Wraps a node.
    pub fn new(mesh: Mesh) -> Self {
        MeshEndpoint {
            mesh,
            nat: None,
            events: Vec::new(),
            received: BTreeMap::new(),
            greet: BTreeSet::new(),
            greeting: b"hello".to_vec(),
            filtered: 0,
        }
    }

    fn drain(&mut self, now: Instant) {
        while let Some(e) = self.mesh.poll_event() {
            match &e {
                MeshEvent::LinkUp { peer, .. } if self.greet.remove(peer) => {
                    if let Ok(ch) = self.mesh.open_channel(*peer, "greet", true) {
                        let _ = self.mesh.send(*peer, ch, &self.greeting);
                    }
                }
                MeshEvent::Channel {
                    peer,
                    event: ChannelEvent::Data { bytes, .. },
                } => {
                    self.received
                        .entry(*peer)
                        .or_default()
                        .extend_from_slice(bytes);
                }
                _ => {}
            }
            self.events.push((now, e));
        }
    }

    /// Whether a `LinkUp` for `peer` was seen.
    pub fn saw_up(&self, peer: Hashname) -> bool {
        self.events
            .iter()
            .any(|(_, e)| matches!(e, MeshEvent::LinkUp { peer: p, .. } if *p == peer))
    }
}

impl Endpoint for MeshEndpoint {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        if self.nat.as_ref().is_some_and(|n| !n.admits(dgram.src.ip())) {
            self.filtered += 1;
            return;
        }
        self.mesh.handle_datagram(now, dgram.src, &dgram.payload);
        self.drain(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.mesh.handle_timeout(now);
        self.drain(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        self.drain(now);
        let (dst, payload) = self.mesh.poll_transmit(now)?;
        if let Some(n) = self.nat.as_mut() {
            n.contacted.insert(dst.ip());
        }
        self.drain(now);
        Some(Datagram {
            src: SocketAddr::from(([0, 0, 0, 0], 0)),
            dst,
            payload,
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.mesh.poll_timeout()
    }
}

/// A deterministic identity for node `i` of a run with `seed`.
pub fn identity(seed: u64, i: usize) -> Identity {
    let mut h = Sha256::new();
    h.update(b"mesh-sim identity");
    h.update(seed.to_le_bytes());
    h.update((i as u64).to_le_bytes());
    Identity::from_bytes(h.finalize().into())
}

/// The simulated address of node `i`.
pub fn node_ip(i: usize) -> Ipv4Addr {
    let i = i as u32 + 1;
    Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

/// Parameters of [`run_mesh_sim`].
#[derive(Debug, Clone)]
pub struct MeshSimConfig {
    /// Nodes in the mesh.
    pub nodes: usize,
    /// Fraction of nodes behind a NAT (unreachable directly).
    pub unreachable_fraction: f64,
    /// Routers (reachable seed nodes) per node.
    pub routers_per_node: usize,
    /// Simulation seed.
    pub seed: u64,
    /// When the harness opens direct paths between NATed nodes.
    pub open_at: Duration,
    /// When the run ends.
    pub end_at: Duration,
    /// Each node's access link (to a central router).
    pub access: LinkConfig,
    /// Every node's mesh configuration.
    pub mesh: MeshConfig,
}

impl Default for MeshSimConfig {
    fn default() -> Self {
        MeshSimConfig {
            nodes: 50,
            unreachable_fraction: 0.4,
            routers_per_node: 2,
            seed: 1,
            open_at: Duration::from_secs(30),
            end_at: Duration::from_secs(90),
            access: LinkConfig::new(100_000_000, Duration::from_millis(5)),
            mesh: MeshConfig::default(),
        }
    }
}

/// Figures of one [`run_mesh_sim`] run.
#[derive(Debug, Clone, Default)]
pub struct MeshSimReport {
    /// Nodes.
    pub nodes: usize,
    /// Nodes behind a NAT.
    pub unreachable: usize,
    /// Node pairs.
    pub pairs: usize,
    /// Pairs whose initiator saw the link up and whose responder got the greeting.
    pub pairs_connected: usize,
    /// `pairs_connected / pairs`.
    pub pairs_connected_fraction: f64,
    /// Pairs whose link first came up relayed.
    pub pairs_relayed: usize,
    /// Pairs relayed when the harness opened direct paths.
    pub relayed_at_open: usize,
    /// Of those, pairs direct at both ends at the end.
    pub upgraded_after_open: usize,
    /// `upgraded_after_open / relayed_at_open` (1.0 if none were relayed).
    pub direct_upgrade_fraction: f64,
    /// Pairs relayed at first that went direct before the harness opened anything (hole
    /// punching towards public nodes).
    pub upgraded_before_open: usize,
    /// Median seconds from `connect` to a relayed link up.
    pub relay_connect_median_s: f64,
    /// Mean of the same.
    pub relay_connect_mean_s: f64,
    /// Maximum of the same.
    pub relay_connect_max_s: f64,
    /// Packets relayed, over all nodes.
    pub relayed_packets: u64,
    /// Relay refusals (table full / disabled), over all nodes.
    pub relay_refused: u64,
    /// Probes sent, over all nodes.
    pub probes_sent: u64,
    /// Datagrams dropped by simulated NATs.
    pub nat_filtered: u64,
}

fn pick(seed: u64, i: usize, k: usize, n: usize) -> usize {
    let mut h = Sha256::new();
    h.update(b"mesh-sim router");
    h.update(seed.to_le_bytes());
    h.update((i as u64).to_le_bytes());
    h.update((k as u64).to_le_bytes());
    let d = h.finalize();
    let v = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (v % n.max(1) as u64) as usize
}

fn path_at(sim: &Sim, ep: EndpointId, peer: Hashname) -> Option<Path> {
    let e = sim.endpoint::<MeshEndpoint>(ep)?;
    let info = e.mesh.peer_info(peer)?;
    (info.state == super::PeerState::Up)
        .then_some(info.path)
        .flatten()
}

/// Runs the N-node mesh: reachable nodes `0..n_r`, NATed ones after; every node knows every
/// other's key (as after discovery), the addresses of reachable nodes and the routers of NATed
/// ones (telehash "peer" path hints); it connects to its routers and to every higher-numbered
/// node at t = 0 and greets each peer it connected to. At `open_at` the harness opens direct
/// paths between all NATed nodes. Returns the figures.
pub fn run_mesh_sim(cfg: &MeshSimConfig) -> MeshSimReport {
    let n = cfg.nodes;
    let n_unreach = ((n as f64) * cfg.unreachable_fraction).round() as usize;
    let n_reach = n - n_unreach.min(n);
    let mut sim = Sim::new(cfg.seed);
    let core = sim.add_router("core");
    let start = sim.now();
    let ids: Vec<Identity> = (0..n).map(|i| identity(cfg.seed, i)).collect();
    let hns: Vec<Hashname> = ids.iter().map(Identity::hashname).collect();
    let addr = |i: usize| SocketAddr::new(IpAddr::V4(node_ip(i)), PORT);
    let routers: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut r = Vec::new();
            for k in 0..cfg.routers_per_node * 4 {
                let c = pick(cfg.seed, i, k, n_reach);
                if c != i && !r.contains(&c) && r.len() < cfg.routers_per_node {
                    r.push(c);
                }
            }
            r
        })
        .collect();
    let public: BTreeSet<IpAddr> = (0..n_reach).map(|i| IpAddr::V4(node_ip(i))).collect();
    let mut eps = Vec::with_capacity(n);
    for i in 0..n {
        let host = sim.add_host(node_ip(i));
        sim.add_duplex_droptail(host, core, cfg.access.clone());
        let mut mesh = Mesh::new(
            start,
            // Deterministic wall clock: every run gives the same timestamps.
            crate::link::Tai64N::default(),
            ids[i].clone(),
            cfg.mesh.clone(),
            Acceptor::allow_all(),
        );
        for j in 0..n {
            if j == i {
                continue;
            }
            let addrs: Vec<SocketAddr> = if j < n_reach {
                vec![addr(j)]
            } else {
                Vec::new()
            };
            let _ = mesh.add_peer(hns[j], ids[j].public_key(), &addrs);
        }
        for j in n_reach..n {
            for &r in &routers[j] {
                let _ = mesh.add_router_hint(hns[j], hns[r]);
            }
        }
        let mut ep = MeshEndpoint::new(mesh);
        ep.greeting = format!("greet {i}").into_bytes();
        if i >= n_reach {
            ep.nat = Some(Nat {
                allow: routers[i].iter().map(|&r| IpAddr::V4(node_ip(r))).collect(),
                public: public.clone(),
                contacted: BTreeSet::new(),
            });
        }
        for &r in &routers[i] {
            let _ = ep.mesh.connect(start, hns[r]);
        }
        for hn in &hns[i + 1..] {
            ep.greet.insert(*hn);
            let _ = ep.mesh.connect(start, *hn);
        }
        eps.push(sim.attach(host, PORT, Box::new(ep)));
    }
    sim.build_routes();
    for &ep in &eps {
        sim.wake(ep);
    }
    sim.run_until(cfg.open_at);
    // Snapshot and open NATed pairs.
    let mut relayed_at_open = Vec::new();
    let mut upgraded_before_open = 0;
    let mut pairs_relayed = 0;
    let mut relay_times = Vec::new();
    for i in 0..n {
        let Some(e) = sim.endpoint::<MeshEndpoint>(eps[i]) else {
            continue;
        };
        for (t, ev) in &e.events {
            if let MeshEvent::LinkUp {
                peer,
                path: Path::Relayed(_),
            } = ev
                && let Some(j) = hns.iter().position(|h| h == peer)
                && j > i
            {
                pairs_relayed += 1;
                relay_times.push(t.saturating_duration_since(start).as_secs_f64());
                if matches!(path_at(&sim, eps[i], *peer), Some(Path::Direct(_))) {
                    upgraded_before_open += 1;
                }
            }
        }
        for j in i + 1..n {
            let relayed = |a: usize, b: usize| {
                matches!(path_at(&sim, eps[a], hns[b]), Some(Path::Relayed(_)))
            };
            if relayed(i, j) || relayed(j, i) {
                relayed_at_open.push((i, j));
            }
        }
    }
    for &ep in &eps[n_reach..] {
        if let Some(e) = sim.endpoint_mut::<MeshEndpoint>(ep)
            && let Some(nat) = e.nat.as_mut()
        {
            for j in n_reach..n {
                nat.allow.insert(IpAddr::V4(node_ip(j)));
            }
        }
    }
    sim.run_until(cfg.end_at);
    let mut report = MeshSimReport {
        nodes: n,
        unreachable: n - n_reach,
        pairs: n * n.saturating_sub(1) / 2,
        pairs_relayed,
        relayed_at_open: relayed_at_open.len(),
        upgraded_before_open,
        ..MeshSimReport::default()
    };
    for i in 0..n {
        for j in i + 1..n {
            let up = sim
                .endpoint::<MeshEndpoint>(eps[i])
                .is_some_and(|e| e.saw_up(hns[j]));
            let want = format!("greet {i}").into_bytes();
            let greeted = sim
                .endpoint::<MeshEndpoint>(eps[j])
                .and_then(|e| e.received.get(&hns[i]))
                .is_some_and(|b| b.windows(want.len()).any(|w| w == want.as_slice()));
            if up && greeted {
                report.pairs_connected += 1;
            }
        }
    }
    for &(i, j) in &relayed_at_open {
        let direct =
            |a: usize, b: usize| matches!(path_at(&sim, eps[a], hns[b]), Some(Path::Direct(_)));
        if direct(i, j) && direct(j, i) {
            report.upgraded_after_open += 1;
        }
    }
    for &ep in &eps {
        if let Some(e) = sim.endpoint::<MeshEndpoint>(ep) {
            let s = e.mesh.stats();
            report.relayed_packets += s.relayed_packets;
            report.relay_refused += s.relay_refused;
            report.probes_sent += s.probes_sent;
            report.nat_filtered += e.filtered;
        }
    }
    report.pairs_connected_fraction = report.pairs_connected as f64 / report.pairs.max(1) as f64;
    report.direct_upgrade_fraction = if relayed_at_open.is_empty() {
        1.0
    } else {
        report.upgraded_after_open as f64 / relayed_at_open.len() as f64
    };
    relay_times.sort_by(f64::total_cmp);
    if !relay_times.is_empty() {
        report.relay_connect_median_s = relay_times[relay_times.len() / 2];
        report.relay_connect_mean_s = relay_times.iter().sum::<f64>() / relay_times.len() as f64;
        report.relay_connect_max_s = relay_times[relay_times.len() - 1];
    }
    report
}
