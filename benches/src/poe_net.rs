//! POE members over `sim-netem`: each member is a [`sim_netem::Endpoint`] that runs the sans-IO
//! consensus node ([`poe::node::Node`]) and carries its broadcasts with the sans-IO gossip core
//! ([`poe::gossip::Gossip`]), on one simulated host per member. The same cores a router or a
//! gateway runs, on a seeded, deterministic network (issue 4, "runs in `sim-netem`").
//!
//! - **Topology**: a star: every member's host has a duplex access link to one core router,
//!   each way `rtt/4` of delay, so any two members are `rtt` apart (50 ms in the benchmark),
//!   with optional random loss on every link.
//! - **Overlay**: level-1 members (routers) are gossip peers of every other level-1 member; each
//!   level-2 member (gateway) peers with [`PoeNetConfig::l2_peers`] random members, at least one
//!   of them level-1. Gossip keeps its mesh of `D` among those peers.
//! - **Datagrams**: one byte of kind, then either a gossip frame ([`KIND_GOSSIP`]) or a POE
//!   message sent directly ([`KIND_DIRECT`]: votes and seals to the clerk, catch-up). A
//!   datagram carries a whole message (the simulator has no MTU; sizes are counted as sent).
//! - **Broadcasts**: [`Output::Broadcast`] is published on one gossip topic, which reaches
//!   every member in a few hops; with [`PoeNetConfig::l1_direct`] (the default) a level-1 member
//!   also sends it straight to every other level-1 member, so consensus among the routers waits
//!   for one one-way delay, not for gossip hops. [`Output::Committee`] messages (tickets, sealed
//!   blocks, prepare certificates) go straight to the level-1 members only (or on a gossip topic
//!   only they subscribe to, without `l1_direct`). Gossip de-duplicates what it carries; a node
//!   ignores a message it already has.
//!
//! Byzantine members are honest nodes whose inputs and outputs pass through a [`Fault`]
//! filter (muting, withholding, forging, double voting, sealing anything); see
//! `tests/poe_net.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use poe::devnet::{DevNode, Devnet};
use poe::gossip::{Gossip, GossipConfig, GossipEvent, PeerId};
use poe::node::{Fanout, Node, NodeConfig, NodeEvent, Output};
use poe::wire::{Block, Decode, Encode, Evidence, Hash, Message, NodeId, Seal};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use sim_netem::{Datagram, Endpoint, EndpointId, LinkConfig, LossModel, Sim};

/// Datagram kind: a gossip frame follows.
pub const KIND_GOSSIP: u8 = 0;
/// Datagram kind: an encoded [`Message`] sent to this member directly follows.
pub const KIND_DIRECT: u8 = 1;
/// Datagram kind: a level-1 member's broadcast sent straight to another level-1 member, which
/// relays it to the level-2 members attached to it (see [`PoeNetConfig::l1_direct`]).
pub const KIND_L1_BROADCAST: u8 = 2;
/// The gossip topic every member subscribes to.
pub const TOPIC: &str = "poe/1";
/// The gossip topic only level-1 members subscribe to ([`Output::Committee`] messages, when
/// they are not sent directly).
pub const COMMITTEE_TOPIC: &str = "poe/1/committee";
/// UDP port of every member.
pub const PORT: u16 = 7000;

/// Number of [`Message`] kinds.
pub const KINDS: usize = 9;
/// Names of the message kinds, by [`kind_index`].
pub const KIND_NAMES: [&str; KINDS] = [
    "ticket",
    "tx",
    "block",
    "seal",
    "vote",
    "certificate",
    "evidence",
    "get_blocks",
    "repropose",
];

/// Index of a message's kind in [`KIND_NAMES`].
pub fn kind_index(m: &Message) -> usize {
    match m {
        Message::Ticket(_) => 0,
        Message::Tx(_) => 1,
        Message::Block(_) => 2,
        Message::Seal { .. } => 3,
        Message::Vote(_) => 4,
        Message::Certificate(_) => 5,
        Message::Evidence(_) => 6,
        Message::GetBlocks { .. } => 7,
        Message::Repropose(_) => 8,
    }
}

/// How one member misbehaves (applied to what its honest node outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Follows the protocol.
    #[default]
    Honest,
    /// Sends nothing at all (crashed, or cut off).
    Silent,
    /// Never broadcasts the blocks it builds as clerk (the seed's withholding clerk); otherwise
    /// honest.
    WithholdBlocks,
    /// Its ticket broadcasts carry a corrupted VRF proof (a forged candidacy).
    ForgeTickets,
    /// Every vote it sends is followed by a second, validly signed vote for another block at
    /// the same height, round and phase (equivocation).
    DoubleVote,
    /// As clerk it adds a transaction with a bad signature to every block it builds (a block
    /// with bad transactions; the header is otherwise well formed, the Merkle root matches and
    /// the clerk re-signs the header, so only the transaction is wrong).
    BadTxBlocks,
    /// Level-2: seals every block it receives, valid or not, whether its seal passes the
    /// threshold or not, and sends the seal to the block's clerk.
    SealAnything,
    /// For every block another clerk builds, broadcasts a second block under the same (copied)
    /// ticket, without transactions, signed with its own key: it can neither get such a block
    /// accepted nor frame the clerk with double-block evidence.
    StealTickets,
}

/// What one member saw, for the benchmark and the tests.
#[derive(Debug, Default, Clone)]
pub struct MemberLog {
    /// `(height, block_id, round, when)` of every block this member finalized.
    pub finals: Vec<(u64, Hash, u32, Instant)>,
    /// `(height, round, when)` of every block this member built as clerk (its first
    /// broadcast of a block without seal).
    pub built: Vec<(u64, u32, Instant)>,
    /// Evidence this member produced or received.
    pub evidence: Vec<Evidence>,
    /// Spins it went through.
    pub spins: u64,
    /// Broadcasts it originated (gossip publications).
    pub broadcasts: u64,
    /// The same per message kind (index: [`kind_index`]).
    pub broadcasts_by_kind: [u64; KINDS],
    /// Committee messages it originated ([`Output::Committee`]: to the level-1 members only).
    pub committee: u64,
    /// The same per message kind.
    pub committee_by_kind: [u64; KINDS],
    /// Direct messages it sent.
    pub unicasts: u64,
    /// Datagrams and payload bytes it sent (gossip frames and direct messages).
    pub datagrams_sent: u64,
    /// Payload bytes it sent.
    pub bytes_sent: u64,
    /// Datagrams it could not decode.
    pub undecodable: u64,
    /// `block_id`s of the blocks it built under another clerk's ticket
    /// ([`Fault::StealTickets`]).
    pub stolen: Vec<Hash>,
}

/// Addresses and ids of every member, shared by all endpoints.
#[derive(Debug)]
pub struct Directory {
    /// Node id per member index.
    pub ids: Vec<NodeId>,
    /// UDP address per member index.
    pub addrs: Vec<SocketAddr>,
    by_id: BTreeMap<NodeId, usize>,
    by_addr: BTreeMap<SocketAddr, usize>,
}

impl Directory {
    fn new(ids: Vec<NodeId>, addrs: Vec<SocketAddr>) -> Self {
        let by_id = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let by_addr = addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        Self {
            ids,
            addrs,
            by_id,
            by_addr,
        }
    }
}

/// One member: a consensus node and its gossip engine, as a simulator endpoint.
pub struct PoeEndpoint {
    index: usize,
    node: Node,
    gossip: Gossip,
    dir: Arc<Directory>,
    out: VecDeque<Datagram>,
    fault: Fault,
    /// This member's own keys, which a faulty member uses outside the protocol.
    keys: Arc<DevNode>,
    /// Level-1 members in the network (indices `0..n1`).
    n1: usize,
    /// Whether level-1 members send their broadcasts to every other level-1 member directly.
    l1_direct: bool,
    /// Level-2 members attached to this level-1 member (their first peer), which it relays
    /// level-1 broadcasts to.
    children: std::sync::Arc<[usize]>,
    /// What it saw.
    pub log: MemberLog,
}

impl std::fmt::Debug for PoeEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoeEndpoint")
            .field("index", &self.index)
            .field("tip", &self.node.tip().height)
            .finish_non_exhaustive()
    }
}

impl PoeEndpoint {
    /// The consensus node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Counters of this member's gossip engine.
    pub fn gossip_stats(&self) -> poe::gossip::GossipStats {
        self.gossip.stats()
    }

    /// Change how this member behaves from now on.
    pub fn set_fault(&mut self, fault: Fault) {
        self.fault = fault;
    }

    /// A local transaction, admitted and broadcast by this member's node.
    pub fn submit_tx(&mut self, now: Instant, tx: poe::wire::Transaction) -> bool {
        let ok = self.node.submit_tx(now, tx).is_ok();
        self.pump(now);
        ok
    }

    fn peer_index(p: PeerId) -> usize {
        let mut b = [0u8; 8];
        b.copy_from_slice(&p.0[..8]);
        u64::from_be_bytes(b) as usize
    }

    fn send(&mut self, to: usize, kind: u8, body: &[u8]) {
        if self.fault == Fault::Silent {
            return;
        }
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(kind);
        payload.extend_from_slice(body);
        self.log.datagrams_sent += 1;
        self.log.bytes_sent += payload.len() as u64;
        self.out.push_back(Datagram {
            src: self.dir.addrs[self.index],
            dst: self.dir.addrs[to],
            payload,
        });
    }

    fn deliver(&mut self, now: Instant, from: usize, bytes: &[u8]) {
        match Message::decode(bytes) {
            Ok(msg) => {
                if self.fault == Fault::SealAnything
                    && let Message::Block(b) = &msg
                    && b.header.seal.is_none()
                    && b.header.commit.is_none()
                {
                    self.seal_anyway(b);
                }
                if self.fault == Fault::StealTickets
                    && let Message::Block(b) = &msg
                    && b.header.seal.is_none()
                    && b.header.commit.is_none()
                    && b.header.ticket.node != self.keys.id()
                {
                    self.steal_ticket(now, b);
                }
                self.node.handle_message(now, self.dir.ids[from], msg)
            }
            Err(_) => self.log.undecodable += 1,
        }
    }

    /// A level-1 broadcast, straight to the level-2 members attached to this one.
    fn relay_to_children(&mut self, bytes: &[u8]) {
        for to in self.children.clone().iter() {
            self.send(*to, KIND_DIRECT, bytes);
        }
    }

    /// [`Fault::StealTickets`]: another block under `b`'s ticket (no transactions, a later
    /// time), signed with this member's key instead of the clerk's, broadcast.
    fn steal_ticket(&mut self, now: Instant, b: &Block) {
        let mut header = b.header.clone();
        header.tx_root = poe::merkle::root::<&[u8]>(&[]);
        header.tx_count = 0;
        header.time_ms = header.time_ms.saturating_add(1);
        self.keys.sign_header(&mut header);
        self.log.stolen.push(header.block_id());
        let msg = Message::Block(Block {
            header,
            txs: Vec::new(),
        });
        self.log.broadcasts += 1;
        self.log.broadcasts_by_kind[kind_index(&msg)] += 1;
        // A duplicate (the same bytes published twice) is not an error.
        let _ = self.gossip.publish(now, TOPIC, &msg.to_bytes());
    }

    /// [`Fault::SealAnything`]: a seal for `b` sent to its clerk, threshold or not.
    fn seal_anyway(&mut self, b: &Block) {
        let id = b.header.block_id();
        let Ok(proof) = self.keys.vrf.prove(&poe::lottery::seal_alpha(&id)) else {
            return;
        };
        let msg = Message::Seal {
            block_id: id,
            seal: Seal {
                node: self.keys.id(),
                proof,
            },
        };
        if let Some(&to) = self.dir.by_id.get(&b.header.ticket.node) {
            self.log.unicasts += 1;
            self.send(to, KIND_DIRECT, &msg.to_bytes());
        }
    }

    /// What a faulty member does to one output of its honest node (`None`: drop it).
    fn corrupt(&self, out: Output) -> Vec<Output> {
        match (self.fault, out) {
            (Fault::ForgeTickets, Output::Committee(Message::Ticket(mut t))) => {
                if let Some(b) = t.proof.last_mut() {
                    *b ^= 0x01;
                }
                vec![Output::Committee(Message::Ticket(t))]
            }
            (Fault::DoubleVote, Output::Send(to, Message::Vote(v))) => {
                let other = poe::hash::sha256_parts(&[b"other", &v.block_id]);
                let second = self.keys.vote(v.phase, v.height, v.round, &other);
                vec![
                    Output::Send(to, Message::Vote(v)),
                    Output::Send(to, Message::Vote(second)),
                ]
            }
            (Fault::BadTxBlocks, Output::Broadcast(Message::Block(mut b)))
                if b.header.seal.is_none()
                    && b.header.commit.is_none()
                    && b.header.ticket.node == self.keys.id() =>
            {
                let mut bad = self.keys.transaction(
                    u64::MAX - b.header.height,
                    poe::wire::TxBody::SensorBatch(Vec::new()),
                );
                bad.signature[0] ^= 0xff;
                b.txs.push(bad);
                let leaves: Vec<Vec<u8>> = b.txs.iter().map(|t| t.to_bytes()).collect();
                b.header.tx_root = poe::merkle::root(&leaves);
                b.header.tx_count = b.txs.len() as u32;
                // Re-signed: the header is the clerk's own, only its transactions are bad.
                self.keys.sign_header(&mut b.header);
                vec![Output::Broadcast(Message::Block(b))]
            }
            (_, out) => vec![out],
        }
    }

    /// Moves everything between the node, the gossip engine and the outgoing queue until
    /// nothing more happens.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(out) = self.node.poll_output() {
                moved = true;
                for out in self.corrupt(out) {
                    match out {
                        Output::Broadcast(msg) => {
                            if let Message::Block(b) = &msg
                                && b.header.seal.is_none()
                                && b.header.commit.is_none()
                                && b.header.ticket.node == self.node.id()
                            {
                                if self.fault == Fault::WithholdBlocks {
                                    continue;
                                }
                                self.log
                                    .built
                                    .push((b.header.height, b.header.ticket.round, now));
                            }
                            if self.fault == Fault::Silent {
                                continue;
                            }
                            self.log.broadcasts += 1;
                            self.log.broadcasts_by_kind[kind_index(&msg)] += 1;
                            let bytes = msg.to_bytes();
                            // Level-1 members reach each other directly (a full mesh of router
                            // tunnels); gossip carries it to everyone, level-2 included.
                            if self.l1_direct && self.index < self.n1 {
                                let me = self.index;
                                for to in (0..self.n1).filter(|&j| j != me) {
                                    self.send(to, KIND_L1_BROADCAST, &bytes);
                                }
                                self.relay_to_children(&bytes);
                            }
                            // A duplicate (the same bytes published twice) is not an error.
                            let _ = self.gossip.publish(now, TOPIC, &bytes);
                        }
                        Output::Committee(msg) => {
                            if self.fault == Fault::Silent {
                                continue;
                            }
                            self.log.committee += 1;
                            self.log.committee_by_kind[kind_index(&msg)] += 1;
                            let bytes = msg.to_bytes();
                            if self.l1_direct {
                                let me = self.index;
                                for to in (0..self.n1).filter(|&j| j != me) {
                                    self.send(to, KIND_DIRECT, &bytes);
                                }
                            } else {
                                let _ = self.gossip.publish(now, COMMITTEE_TOPIC, &bytes);
                            }
                        }
                        Output::Send(id, msg) => {
                            if let Some(&to) = self.dir.by_id.get(&id) {
                                self.log.unicasts += 1;
                                self.send(to, KIND_DIRECT, &msg.to_bytes());
                            }
                        }
                    }
                }
            }
            while let Some(ev) = self.node.poll_event() {
                match ev {
                    NodeEvent::Finalized {
                        height,
                        block_id,
                        round,
                        ..
                    } => self.log.finals.push((height, block_id, round, now)),
                    NodeEvent::Evidence(e) => self.log.evidence.push(e),
                    NodeEvent::Spin { .. } => self.log.spins += 1,
                    // The simulated members have no store: heights below `keep_blocks` (1,024
                    // by default) are not served.
                    NodeEvent::BlocksWanted { .. } => {}
                    // The simulated network's directory is fixed when it is built: a member
                    // that left is still reachable (and its messages are refused by the
                    // nodes), and a joining one must be in it from the start as an observer.
                    NodeEvent::MembersChanged { .. } => {}
                }
            }
            while let Some((peer, bytes)) = self.gossip.poll_transmit() {
                moved = true;
                self.send(Self::peer_index(peer), KIND_GOSSIP, &bytes);
            }
            while let Some(GossipEvent::Message { data, from, .. }) = self.gossip.poll_event() {
                moved = true;
                self.deliver(now, Self::peer_index(from), &data);
            }
            if !moved {
                break;
            }
        }
    }
}

impl Endpoint for PoeEndpoint {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        let Some(&from) = self.dir.by_addr.get(&dgram.src) else {
            self.log.undecodable += 1;
            return;
        };
        match dgram.payload.split_first() {
            Some((&KIND_GOSSIP, frame)) => {
                let peer = PeerId::from_u64(from as u64);
                if self.gossip.handle(now, peer, frame).is_err() {
                    self.log.undecodable += 1;
                }
            }
            Some((&KIND_DIRECT, body)) => self.deliver(now, from, body),
            Some((&KIND_L1_BROADCAST, body)) if from < self.n1 && self.index < self.n1 => {
                let body = body.to_vec();
                self.relay_to_children(&body);
                self.deliver(now, from, &body);
            }
            _ => self.log.undecodable += 1,
        }
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        if self.gossip.poll_timeout().is_none_or(|t| t <= now) {
            self.gossip.handle_timeout(now);
        }
        self.pump(now);
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.node.poll_timeout(), self.gossip.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Shape of a simulated POE network.
#[derive(Debug, Clone)]
pub struct PoeNetConfig {
    /// Round-trip time between any two members.
    pub rtt: Duration,
    /// Rate of every access link, bit/s.
    pub access_bps: u64,
    /// Random loss on every link (each direction), 0..1.
    pub loss: f64,
    /// Gossip peers of each level-2 member.
    pub l2_peers: usize,
    /// Level-1 members also send each broadcast straight to every other level-1 member (routers
    /// between data centres hold a full mesh of tunnels), and each level-1 member relays those
    /// to the level-2 members attached to it (a gateway's first peer is a level-1 member):
    /// two one-way delays to every gateway. Gossip carries everything as well (and alone when
    /// this is off).
    pub l1_direct: bool,
    /// Sites: member `i` sits behind router `i % sites`; the site routers are joined by
    /// zero-delay trunk links, which [`PoeNet::partition`] cuts (1: a single star).
    pub sites: usize,
    /// Consensus node tunables.
    pub node: NodeConfig,
    /// Gossip tunables (the seed is mixed with each member's index).
    pub gossip: GossipConfig,
    /// Simulator seed.
    pub seed: u64,
}

impl PoeNetConfig {
    /// 50 ms RTT, 1 Gbit/s access links, no loss, 8 gossip peers per gateway, candidacy window
    /// of one RTT, a round timeout of 20 RTTs, seals and votes to every level-1 member
    /// ([`Fanout::AllLevel1`]).
    pub fn new(seed: u64) -> Self {
        let rtt = Duration::from_millis(50);
        Self {
            rtt,
            access_bps: 1_000_000_000,
            loss: 0.0,
            l2_peers: 8,
            sites: 1,
            l1_direct: true,
            node: NodeConfig {
                candidacy_window: rtt,
                round_timeout: rtt * 20,
                fanout: Fanout::AllLevel1,
                ..NodeConfig::default()
            },
            gossip: GossipConfig {
                heartbeat_interval: Duration::from_millis(200),
                // A pull waits four RTTs for its announcer before asking the next one.
                iwant_timeout: rtt * 4,
                ..GossipConfig::default()
            },
            seed,
        }
    }
}

/// A running simulated POE network.
pub struct PoeNet {
    /// The simulator.
    pub sim: Sim,
    /// Endpoint id of each member (level-1 first, then level-2, as in the devnet).
    pub members: Vec<EndpointId>,
    /// Members that are level-1.
    pub n1: usize,
    /// Trunk links between site routers (both directions), with their healthy configuration.
    pub trunks: Vec<(sim_netem::LinkId, LinkConfig)>,
    /// The directory.
    pub dir: Arc<Directory>,
}

impl std::fmt::Debug for PoeNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoeNet")
            .field("members", &self.members.len())
            .field("n1", &self.n1)
            .finish_non_exhaustive()
    }
}

fn member_addr(i: usize) -> Ipv4Addr {
    let i = i as u32 + 2;
    Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

impl PoeNet {
    /// Every member of `devnet` on its own host around one core router.
    pub fn new(devnet: &Devnet, cfg: &PoeNetConfig) -> anyhow::Result<Self> {
        let n1 = devnet.level1.len();
        let all: Vec<_> = devnet.level1.iter().chain(&devnet.level2).collect();
        let n = all.len();
        let mut sim = Sim::new(cfg.seed);
        let epoch = sim.epoch();
        let sites = cfg.sites.max(1);
        let routers: Vec<_> = (0..sites)
            .map(|s| sim.add_router(format!("site{s}")))
            .collect();
        let mut trunks = Vec::new();
        let trunk = LinkConfig::new(cfg.access_bps.saturating_mul(10), Duration::ZERO);
        for a in 0..sites {
            for b in 0..sites {
                if a != b {
                    trunks.push((
                        sim.add_link_droptail(routers[a], routers[b], trunk.clone()),
                        trunk.clone(),
                    ));
                }
            }
        }
        let mut link = LinkConfig::new(cfg.access_bps, cfg.rtt / 4);
        if cfg.loss > 0.0 {
            link = link.with_loss(LossModel::Bernoulli(cfg.loss));
        }
        let keys: Vec<Arc<DevNode>> = all.iter().map(|d| Arc::new((*d).clone())).collect();
        let mut hosts = Vec::with_capacity(n);
        for i in 0..n {
            let h = sim.add_host(member_addr(i));
            let r = routers[i % sites];
            sim.add_link_droptail(h, r, link.clone());
            sim.add_link_droptail(r, h, link.clone());
            hosts.push(h);
        }
        sim.build_routes();
        let ids: Vec<NodeId> = all.iter().map(|d| d.id()).collect();
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::new(member_addr(i).into(), PORT))
            .collect();
        let dir = Arc::new(Directory::new(ids, addrs));

        // The overlay: level-1 all-to-all; each level-2 member to `l2_peers` random members,
        // one of them level-1 (symmetric).
        let mut peers: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        for (a, set) in peers.iter_mut().enumerate().take(n1) {
            set.extend((0..n1).filter(|&b| b != a));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x0e_e1);
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        for a in n1..n {
            let l1 = (rng.next_u64() % n1.max(1) as u64) as usize;
            if n1 > 0 {
                children[l1].push(a);
            }
            peers[a].insert(l1);
            peers[l1].insert(a);
            let mut guard = 0;
            while peers[a].len() < cfg.l2_peers && guard < 100 * cfg.l2_peers {
                guard += 1;
                let b = (rng.next_u64() % n as u64) as usize;
                if b != a {
                    peers[a].insert(b);
                    peers[b].insert(a);
                }
            }
        }

        let mut members = Vec::with_capacity(n);
        for (i, d) in all.iter().enumerate() {
            let node = Node::new(
                epoch,
                d.sig.clone(),
                d.vrf.clone(),
                devnet.members.clone(),
                devnet.params,
                devnet.genesis,
                cfg.node,
            )
            .with_context(|| format!("member {i}"))?;
            let mut gcfg = cfg.gossip.clone();
            gcfg.seed = cfg.gossip.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut gossip =
                Gossip::new(gcfg, PeerId::from_u64(i as u64)).context("gossip config")?;
            for &p in &peers[i] {
                gossip.add_peer(PeerId::from_u64(p as u64));
            }
            gossip.subscribe(TOPIC).context("subscribe")?;
            if i < n1 {
                gossip.subscribe(COMMITTEE_TOPIC).context("subscribe")?;
            }
            gossip.handle_timeout(epoch);
            let mut ep = PoeEndpoint {
                index: i,
                node,
                gossip,
                dir: dir.clone(),
                out: VecDeque::new(),
                fault: Fault::Honest,
                keys: keys[i].clone(),
                n1,
                l1_direct: cfg.l1_direct,
                children: children[i].clone().into(),
                log: MemberLog::default(),
            };
            ep.pump(epoch);
            members.push(sim.attach(hosts[i], PORT, Box::new(ep)));
        }
        Ok(Self {
            sim,
            members,
            n1,
            trunks,
            dir,
        })
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &PoeEndpoint {
        self.sim
            .endpoint::<PoeEndpoint>(self.members[i])
            .expect("a PoeEndpoint")
    }

    /// Run `f` on member `i` (the simulator then drains what it sends).
    pub fn with_member<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut PoeEndpoint, Instant) -> R,
    ) -> R {
        self.sim
            .with_endpoint::<PoeEndpoint, R>(self.members[i], f)
            .expect("a PoeEndpoint")
    }

    /// The lowest final height over the members in `among`.
    pub fn min_height(&self, among: impl IntoIterator<Item = usize>) -> u64 {
        among
            .into_iter()
            .map(|i| self.member(i).node().tip().height)
            .min()
            .unwrap_or(0)
    }

    /// Run in steps of `step` until every member in `among` has `height` final blocks or `limit`
    /// of simulated time has passed since now; returns whether the height was reached.
    pub fn run_until_height(
        &mut self,
        among: &[usize],
        height: u64,
        step: Duration,
        limit: Duration,
    ) -> bool {
        let end = self.sim.elapsed() + limit;
        loop {
            if self.min_height(among.iter().copied()) >= height {
                return true;
            }
            if self.sim.elapsed() >= end {
                return false;
            }
            self.sim.run_for(step);
        }
    }

    /// Cut every trunk between sites (`true`: each site can reach only itself) or restore them.
    pub fn partition(&mut self, cut: bool) -> anyhow::Result<()> {
        for (link, healthy) in self.trunks.clone() {
            let cfg = if cut {
                healthy.with_loss(LossModel::Bernoulli(1.0))
            } else {
                healthy
            };
            self.sim.set_link_config(link, cfg)?;
        }
        Ok(())
    }

    /// Safety: for every height, the blocks every member finalized there are identical.
    /// Returns the first disagreement as `(height, member a, member b)`.
    pub fn conflicting_finals(&self) -> Option<(u64, usize, usize)> {
        let mut seen: BTreeMap<u64, (Hash, usize)> = BTreeMap::new();
        for i in 0..self.members.len() {
            for &(h, id, _, _) in &self.member(i).log.finals {
                match seen.get(&h) {
                    Some(&(other, j)) if other != id => return Some((h, j, i)),
                    Some(_) => {}
                    None => {
                        seen.insert(h, (id, i));
                    }
                }
            }
        }
        None
    }
}
