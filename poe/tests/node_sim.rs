//! Deterministic runs of `poe::node`: 7 level-1 and 4 level-2 members with RSA-2048 keys over
//! in-memory links with seeded per-link latency, driven by a discrete-event loop on a virtual
//! clock (no sleeping, no threads; the same seed replays the same run). Broadcasts are
//! delivered directly to every other member.
//!
//! What they show: 10 heights become final with identical chains on every node (safety), with
//! the messages per block and the finality latency in link RTTs printed; a double vote and two
//! blocks signed by one clerk for one round give `Evidence`, while blocks under a copied ticket
//! and double-block evidence the clerk did not sign are rejected and counted; a clerk that
//! withholds its block makes the height spin and finalize at a later round; forged tickets,
//! seals and votes are rejected and counted; a node cut off for several heights catches up with
//! `GetBlocks` to the identical chain, and a forged final block above its tip (including one
//! whose clerk signature was replaced) is rejected, counted and not fetched for.
#![cfg(feature = "std")]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use poe::devnet::{DevNode, Devnet};
use poe::members::ChangeError;
use poe::node::{Node, NodeConfig, NodeError, NodeEvent, Output, TxReject};
use poe::wire::{
    Block, Encode, Evidence, Hash, Level, Message, NodeId, Phase, Seal, Transaction, TxBody,
};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

mod common;
use common::Clock;

use common::members::{N1, N2};

/// The devnet these simulations share (a ticket qualifies in round 0 and seals pass).
fn devnet() -> &'static Devnet {
    static NET: OnceLock<Devnet> = OnceLock::new();
    common::members::devnet(&NET, 0x90e1)
}

fn config() -> NodeConfig {
    common::members::config()
}

fn make_node(i: usize, now: Instant) -> Node {
    common::members::make_node(devnet(), i, now, config())
}

/// A membership change a node reported: (height, joined, left).
type Change = (u64, Vec<NodeId>, Vec<NodeId>);

/// Approvals of a membership change: (approver, signature).
type Approvals = Vec<(NodeId, [u8; 64])>;

enum Ev {
    Deliver {
        to: usize,
        from: usize,
        msg: Box<Message>,
    },
    Timer {
        node: usize,
    },
}

struct Net {
    clock: Clock<Ev>,
    nodes: Vec<Node>,
    index: BTreeMap<NodeId, usize>,
    timer_at: Vec<Option<u64>>,
    /// One-way latency per directed link, ns.
    latency: Vec<Vec<u64>>,
    /// Extra random delay per message, up to this many ns (0: fixed per-link latency).
    jitter: u64,
    rng: ChaCha8Rng,
    /// Drop `Block` broadcasts of this node while the chain is below `mute_until`.
    mute: Option<(usize, u64)>,
    /// A node cut off: everything it sends and everything sent to it is dropped.
    offline: Option<usize>,
    broadcasts: u64,
    unicasts: u64,
    deliveries: u64,
    /// Per node: (height, block_id, round, virtual ns).
    finals: Vec<Vec<(u64, Hash, u32, u64)>>,
    evidence: Vec<Vec<Evidence>>,
    /// Membership changes each node reported: (height, joined, left).
    changes: Vec<Vec<Change>>,
}

impl Net {
    fn new(seed: u64) -> Self {
        Self::with_observers(seed, &[])
    }

    /// The devnet's members, then one node per entry of `observers` (keys that are not in the
    /// genesis membership: they follow the chain until a join makes them members).
    fn with_observers(seed: u64, observers: &[DevNode]) -> Self {
        let epoch = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = N1 + N2 + observers.len();
        let latency = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| 10_000_000 + rng.next_u64() % 20_000_000)
                    .collect()
            })
            .collect();
        let d = devnet();
        let mut nodes: Vec<Node> = (0..N1 + N2).map(|i| make_node(i, epoch)).collect();
        for o in observers {
            nodes.push(
                Node::new(
                    epoch,
                    o.sig.clone(),
                    o.vrf.clone(),
                    d.members.clone(),
                    d.params,
                    d.genesis,
                    config(),
                )
                .expect("observer node"),
            );
        }
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
        let mut net = Self {
            clock: Clock::new(epoch),
            nodes,
            index,
            timer_at: vec![None; n],
            latency,
            mute: None,
            offline: None,
            jitter: 0,
            rng,
            broadcasts: 0,
            unicasts: 0,
            deliveries: 0,
            finals: vec![Vec::new(); n],
            evidence: vec![Vec::new(); n],
            changes: vec![Vec::new(); n],
        };
        for i in 0..n {
            net.flush(i);
        }
        net
    }

    fn mean_rtt_ms(&self) -> f64 {
        let n = self.latency.len();
        let mut sum = 0u64;
        let mut count = 0u64;
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    sum += self.latency[a][b] + self.latency[b][a];
                    count += 1;
                }
            }
        }
        sum as f64 / count as f64 / 1e6
    }

    fn jitter(&mut self) -> u64 {
        if self.jitter == 0 {
            0
        } else {
            self.rng.next_u64() % self.jitter
        }
    }

    fn flush(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].poll_output() {
            if self.offline == Some(i) {
                continue;
            }
            match out {
                Output::Broadcast(msg) | Output::Committee(msg) => {
                    if let (Some((m, until)), Message::Block(_)) = (self.mute, &msg)
                        && m == i
                        && self.nodes[i].tip().height < until
                    {
                        continue;
                    }
                    self.broadcasts += 1;
                    for to in 0..self.nodes.len() {
                        if to != i && self.offline != Some(to) {
                            let t = self.clock.now() + self.latency[i][to] + self.jitter();
                            self.clock.schedule(
                                t,
                                Ev::Deliver {
                                    to,
                                    from: i,
                                    msg: Box::new(msg.clone()),
                                },
                            );
                        }
                    }
                }
                Output::Send(id, msg) => {
                    self.unicasts += 1;
                    if let Some(&to) = self.index.get(&id)
                        && self.offline != Some(to)
                    {
                        let t = self.clock.now() + self.latency[i][to] + self.jitter();
                        self.clock.schedule(
                            t,
                            Ev::Deliver {
                                to,
                                from: i,
                                msg: Box::new(msg),
                            },
                        );
                    }
                }
            }
        }
        while let Some(ev) = self.nodes[i].poll_event() {
            match ev {
                NodeEvent::Finalized {
                    height,
                    block_id,
                    round,
                    ..
                } => self.finals[i].push((height, block_id, round, self.clock.now())),
                NodeEvent::Evidence(e) => self.evidence[i].push(e),
                NodeEvent::MembersChanged {
                    height,
                    joined,
                    left,
                } => self.changes[i].push((height, joined, left)),
                NodeEvent::Spin { .. } | NodeEvent::BlocksWanted { .. } => {}
            }
        }
        if let Some(t) = self.nodes[i].poll_timeout() {
            let ns = self.clock.ns(t);
            if self.timer_at[i] != Some(ns) {
                self.timer_at[i] = Some(ns);
                self.clock.schedule(ns, Ev::Timer { node: i });
            }
        }
    }

    /// Runs until every node (but an offline one) has `height` final blocks or `limit_ns`
    /// passes.
    fn run_until(&mut self, height: u64, limit_ns: u64) {
        loop {
            let done = self
                .nodes
                .iter()
                .enumerate()
                .all(|(i, n)| self.offline == Some(i) || n.tip().height >= height);
            if done {
                break;
            }
            let Some((t, ev)) = self.clock.next_until(limit_ns) else {
                break;
            };
            let now = self.clock.at(t);
            match ev {
                Ev::Deliver { to, from, msg } => {
                    self.deliveries += 1;
                    let from_id = self.nodes[from].id();
                    self.nodes[to].handle_message(now, from_id, *msg);
                    self.flush(to);
                }
                Ev::Timer { node } if self.timer_at[node] == Some(t) => {
                    self.timer_at[node] = None;
                    self.nodes[node].handle_timeout(now);
                    self.flush(node);
                }
                Ev::Timer { .. } => {}
            }
        }
    }

    fn assert_same_chains(&self, height: u64) {
        let reference: Vec<(u64, Hash)> = self.finals[0].iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(reference.len() as u64, height);
        for (i, f) in self.finals.iter().enumerate() {
            let chain: Vec<(u64, Hash)> = f.iter().map(|f| (f.0, f.1)).collect();
            assert_eq!(chain, reference, "node {i} diverged");
            let blocks: Vec<Hash> = self.nodes[i]
                .finalized()
                .map(|b| b.header.block_id())
                .collect();
            assert_eq!(
                blocks,
                reference.iter().map(|r| r.1).collect::<Vec<_>>(),
                "node {i} stored chain"
            );
        }
    }
}

#[test]
fn ten_heights_final_and_identical_everywhere() {
    let mut net = Net::new(7);
    // A few transactions from level-2 gateways, submitted at node 0.
    let d = devnet();
    for (j, g) in d.level2.iter().enumerate() {
        let tx = g.transaction(j as u64, TxBody::SensorBatch(Vec::new()));
        let now = net.clock.at(0);
        net.nodes[0].submit_tx(now, tx).expect("admitted");
        net.flush(0);
    }
    net.run_until(10, 60_000_000_000);
    for n in &net.nodes {
        assert_eq!(
            n.tip().height,
            10,
            "node {:?} did not reach height 10",
            n.id()
        );
    }
    net.assert_same_chains(10);
    // The submitted transactions were included exactly once.
    let included: usize = net.nodes[3].finalized().map(|b| b.txs.len()).sum();
    assert_eq!(included, N2);
    for n in &net.nodes {
        assert_eq!(n.stats().mempool_txs, 0);
        let r = n.stats().rejects;
        assert_eq!(
            (r.ticket, r.seal, r.vote, r.certificate, r.block, r.evidence),
            (0, 0, 0, 0, 0, 0)
        );
    }
    // Finality latency at node 0: from the previous final block to this one.
    let f = &net.finals[0];
    let mut prev = 0u64;
    let mut total = 0u64;
    let mut spins = 0u32;
    for x in f {
        total += x.3 - prev;
        prev = x.3;
        spins += x.2;
    }
    let blocks = f.len() as f64;
    let rtt = net.mean_rtt_ms();
    let latency_ms = total as f64 / blocks / 1e6;
    let window = config().candidacy_window.as_secs_f64() * 1e3;
    println!(
        "node_sim: {N1}+{N2} members, 10 blocks, {spins} spin rounds in all; per block: {:.1} \
         broadcasts, {:.1} unicasts, {:.1} link deliveries; finality {:.1} ms = {:.1} RTT \
         (mean RTT {:.1} ms; {:.1} RTT after the {window} ms candidacy window)",
        net.broadcasts as f64 / blocks,
        net.unicasts as f64 / blocks,
        net.deliveries as f64 / blocks,
        latency_ms,
        latency_ms / rtt,
        rtt,
        (latency_ms - window) / rtt,
    );
    assert!(net.evidence.iter().all(|e| e.is_empty()));
    // A committed transaction cannot be replayed.
    let replay = d.level2[0].transaction(0, TxBody::SensorBatch(Vec::new()));
    let now = net.clock.at(net.clock.now());
    assert_eq!(
        net.nodes[1].submit_tx(now, replay),
        Err(NodeError::Tx(TxReject::OldNonce))
    );
}

/// A header of height 1 on `ticket` over `txs`, signed by `signer` (the ticket's holder, or
/// someone else to forge).
fn header_on(
    ticket: &poe::wire::Ticket,
    txs: &[poe::wire::Transaction],
    time_ms: u64,
    signer: &poe::devnet::DevNode,
) -> poe::wire::BlockHeader {
    let d = devnet();
    let leaves: Vec<Vec<u8>> = txs.iter().map(|t| t.to_bytes()).collect();
    let mut h = poe::wire::BlockHeader {
        height: 1,
        prev_hash: d.genesis.block_id,
        tx_root: poe::merkle::root(&leaves),
        tx_count: txs.len() as u32,
        members_root: d.members.root(),
        time_ms,
        ticket: ticket.clone(),
        clerk_sig: [0; 64],
        seal: None,
        commit: None,
    };
    signer.sign_header(&mut h);
    h
}

fn evidence_events(node: &mut Node) -> Vec<Evidence> {
    std::iter::from_fn(|| node.poll_event())
        .filter_map(|e| match e {
            NodeEvent::Evidence(e) => Some(e),
            _ => None,
        })
        .collect()
}

#[test]
fn two_blocks_signed_by_one_clerk_give_evidence() {
    let d = devnet();
    let first = d.best_ticket(&d.genesis).expect("ticket");
    let clerk = d.level1_node(&first.node).expect("clerk");
    let now = Instant::now();
    let observer = d
        .level1
        .iter()
        .position(|n| n.id() != first.node)
        .expect("observer");
    let mut node = make_node(observer, now);
    let tx = d.level2[1].transaction(5, TxBody::SensorBatch(Vec::new()));
    let a = Block {
        header: header_on(&first, &[], 1, clerk),
        txs: Vec::new(),
    };
    let b = Block {
        header: header_on(&first, std::slice::from_ref(&tx), 1, clerk),
        txs: vec![tx.clone()],
    };
    node.handle_message(now, first.node, Message::Block(a.clone()));
    assert_eq!(evidence_events(&mut node), vec![]);
    node.handle_message(now, first.node, Message::Block(b.clone()));
    let real = Evidence::DoubleBlock(a.header.clone(), b.header.clone());
    assert_eq!(evidence_events(&mut node), vec![real.clone()]);
    assert!(
        std::iter::from_fn(|| node.poll_output())
            .any(|o| o == Output::Broadcast(Message::Evidence(real.clone())))
    );
    assert_eq!(node.stats().rejects.block, 0);

    // A block whose body does not match its (clerk-signed) header is rejected and counted (a
    // block whose header is already known keeps its first, valid body).
    let mut bad = b.clone();
    bad.header.time_ms = 2;
    clerk.sign_header(&mut bad.header);
    bad.txs.clear();
    node.handle_message(now, first.node, Message::Block(bad));
    assert_eq!(node.stats().rejects.block, 1);

    // Another node accepts the real evidence once.
    let mut other = make_node((observer + 1) % N1, now);
    let _ = evidence_events(&mut other);
    other.handle_message(now, node.id(), Message::Evidence(real.clone()));
    assert_eq!(evidence_events(&mut other), vec![real.clone()]);
    other.handle_message(now, node.id(), Message::Evidence(real));
    assert_eq!(evidence_events(&mut other), vec![]);
    assert_eq!(other.stats().rejects.evidence, 0);
}

#[test]
fn blocks_under_a_copied_ticket_and_forged_double_block_evidence_are_rejected() {
    let d = devnet();
    let first = d.best_ticket(&d.genesis).expect("ticket");
    let clerk = d.level1_node(&first.node).expect("clerk");
    let now = Instant::now();
    let observer = d
        .level1
        .iter()
        .position(|n| n.id() != first.node)
        .expect("observer");
    let thief = &d.level1[observer];
    let mut node = make_node((observer + 1) % N1, now);
    let _ = evidence_events(&mut node);
    let tx = d.level2[1].transaction(5, TxBody::SensorBatch(Vec::new()));
    let genuine = header_on(&first, &[], 1, clerk);

    // Someone who heard the ticket builds a block under it: signed with their own key, with
    // the genuine block's signature, or with none. Each is rejected and counted, and none
    // gives evidence against the clerk.
    let stolen = header_on(&first, std::slice::from_ref(&tx), 1, thief);
    let mut copied_sig = stolen.clone();
    copied_sig.clerk_sig = genuine.clerk_sig;
    let mut unsigned = stolen.clone();
    unsigned.clerk_sig = [0; 64];
    for (i, h) in [stolen.clone(), copied_sig, unsigned]
        .into_iter()
        .enumerate()
    {
        let block = Block {
            header: h,
            txs: vec![tx.clone()],
        };
        node.handle_message(now, thief.id(), Message::Block(block));
        assert_eq!(node.stats().rejects.block, i as u64 + 1);
    }
    assert_eq!(node.stats().blocks, 0, "no candidate kept");
    // The genuine block is still accepted, and the forgeries after it frame nobody.
    node.handle_message(
        now,
        first.node,
        Message::Block(Block {
            header: genuine.clone(),
            txs: Vec::new(),
        }),
    );
    assert_eq!(node.stats().blocks, 1);
    let stolen_block = Block {
        header: stolen.clone(),
        txs: vec![tx.clone()],
    };
    node.handle_message(now, thief.id(), Message::Block(stolen_block));
    assert_eq!(node.stats().rejects.block, 4);
    assert_eq!(evidence_events(&mut node), vec![]);

    // Forged evidence: the second header is not signed by the clerk (signed by another member,
    // carrying the first header's signature, or the first header's signature bit-flipped).
    let mut flipped = header_on(&first, std::slice::from_ref(&tx), 1, clerk);
    flipped.clerk_sig[3] ^= 1;
    let mut reused = stolen.clone();
    reused.clerk_sig = genuine.clerk_sig;
    let second = header_on(&first, std::slice::from_ref(&tx), 1, clerk);
    let mut other_round = first.clone();
    other_round.round += 1;
    let later = header_on(&other_round, &[], 1, clerk);
    let forged = [
        Evidence::DoubleBlock(genuine.clone(), stolen.clone()),
        Evidence::DoubleBlock(stolen.clone(), genuine.clone()),
        Evidence::DoubleBlock(genuine.clone(), reused),
        Evidence::DoubleBlock(genuine.clone(), flipped),
        // The same block twice, and two blocks of different rounds: no equivocation.
        Evidence::DoubleBlock(genuine.clone(), genuine.clone()),
        Evidence::DoubleBlock(genuine.clone(), later),
    ];
    for (i, e) in forged.into_iter().enumerate() {
        node.handle_message(now, thief.id(), Message::Evidence(e));
        assert_eq!(node.stats().rejects.evidence, i as u64 + 1, "forgery {i}");
    }
    assert_eq!(evidence_events(&mut node), vec![]);
    // Real evidence (two blocks the clerk signed) is still accepted.
    let real = Evidence::DoubleBlock(genuine, second);
    node.handle_message(now, thief.id(), Message::Evidence(real.clone()));
    assert_eq!(evidence_events(&mut node), vec![real]);
    assert_eq!(node.stats().rejects.evidence, 6);
}

#[test]
fn mempool_is_bounded_and_admits_only_valid_transactions() {
    let d = devnet();
    let now = Instant::now();
    let dn = &d.level1[0];
    let mut node = Node::new(
        now,
        dn.sig.clone(),
        dn.vrf.clone(),
        d.members.clone(),
        d.params,
        d.genesis,
        NodeConfig {
            mempool_max_txs: 2,
            ..config()
        },
    )
    .expect("node");
    let g = &d.level2[0];
    for nonce in 0..3 {
        let tx = g.transaction(nonce, TxBody::SensorBatch(Vec::new()));
        node.submit_tx(now, tx).expect("admitted");
    }
    let s = node.stats();
    assert_eq!((s.mempool_txs, s.mempool_evicted), (2, 1));
    // Same nonce again, a bad signature, and a non-member sender.
    let dup = g.transaction(2, TxBody::SensorBatch(Vec::new()));
    assert!(node.submit_tx(now, dup).is_err());
    let mut forged = g.transaction(9, TxBody::SensorBatch(Vec::new()));
    forged.signature[5] ^= 1;
    assert_eq!(
        node.submit_tx(now, forged),
        Err(NodeError::Tx(TxReject::BadSignature))
    );
    let stranger = poe::sig::SigningKey::from_bytes(&[42; 32]);
    let mut tx = poe::wire::Transaction {
        sender: stranger.node_id(),
        nonce: 0,
        body: TxBody::SensorBatch(Vec::new()),
        signature: [0; 64],
    };
    tx.signature = stranger.sign(&[], &[&tx.signing_bytes()]);
    node.handle_message(now, tx.sender, Message::Tx(tx));
    assert_eq!(node.stats().rejects.tx, 1);
    assert_eq!(node.stats().mempool_txs, 2);
}

#[test]
fn identical_chains_across_seeds_with_jitter() {
    for seed in 100..104 {
        let mut net = Net::new(seed);
        net.jitter = 40_000_000;
        net.run_until(5, 60_000_000_000);
        net.assert_same_chains(5);
    }
}

#[test]
fn withheld_block_spins_to_a_later_round() {
    let d = devnet();
    let first = d.best_ticket(&d.genesis).expect("ticket");
    let mut net = Net::new(11);
    let clerk = net.index[&first.node];
    net.mute = Some((clerk, 1));
    net.run_until(3, 60_000_000_000);
    net.assert_same_chains(3);
    let (h, _, round, _) = net.finals[0][0];
    assert_eq!(h, 1);
    assert!(
        round > first.round,
        "height 1 final at round {round}, the muted clerk's round was {}",
        first.round
    );
    // Without the mute the same run finalizes height 1 in the muted clerk's round.
    let mut honest = Net::new(11);
    honest.run_until(1, 60_000_000_000);
    assert_eq!(honest.finals[0][0].2, first.round);
}

#[test]
fn double_vote_gives_evidence() {
    let d = devnet();
    let now = Instant::now();
    let mut node = make_node(0, now);
    let voter = &d.level1[1];
    let a = voter.vote(Phase::Prepare, 1, 0, &[1; 32]);
    let b = voter.vote(Phase::Prepare, 1, 0, &[2; 32]);
    node.handle_message(now, voter.id(), Message::Vote(a.clone()));
    while node.poll_event().is_some() {}
    while node.poll_output().is_some() {}
    node.handle_message(now, voter.id(), Message::Vote(b.clone()));
    let mut events = Vec::new();
    while let Some(e) = node.poll_event() {
        events.push(e);
    }
    assert_eq!(
        events,
        vec![NodeEvent::Evidence(Evidence::DoubleVote(
            a.clone(),
            b.clone()
        ))]
    );
    let mut outs = Vec::new();
    while let Some(o) = node.poll_output() {
        outs.push(o);
    }
    assert!(
        outs.contains(&Output::Broadcast(Message::Evidence(Evidence::DoubleVote(
            a.clone(),
            b.clone()
        ))))
    );
    // Another node accepts the evidence; forged evidence (same block twice) is rejected.
    let mut other = make_node(2, now);
    other.handle_message(
        now,
        node.id(),
        Message::Evidence(Evidence::DoubleVote(a.clone(), b)),
    );
    let got: Vec<NodeEvent> = std::iter::from_fn(|| other.poll_event()).collect();
    assert_eq!(got.len(), 1);
    other.handle_message(
        now,
        node.id(),
        Message::Evidence(Evidence::DoubleVote(a.clone(), a)),
    );
    assert_eq!(other.stats().rejects.evidence, 1);
}

#[test]
fn forged_tickets_seals_and_votes_are_rejected_and_counted() {
    let d = devnet();
    let first = d.best_ticket(&d.genesis).expect("ticket");
    let clerk_i = d
        .level1
        .iter()
        .position(|n| n.id() == first.node)
        .expect("clerk");
    let t0 = Instant::now();
    let mut clerk = make_node(clerk_i, t0);
    let other = (clerk_i + 1) % N1;

    // Forged ticket: a valid ticket with one proof byte flipped.
    let alpha = poe::lottery::ticket_alpha(1, &d.genesis.block_id, 0);
    let proof = d.level1[other].vrf.prove(&alpha).expect("prove");
    let mut forged = poe::wire::Ticket {
        node: d.level1[other].id(),
        height: 1,
        prev_hash: d.genesis.block_id,
        round: 0,
        proof,
    };
    forged.proof[10] ^= 1;
    clerk.handle_message(t0, forged.node, Message::Ticket(forged));
    assert_eq!(clerk.stats().rejects.ticket, 1);

    // Forged vote: bad signature.
    let mut v = d.level1[other].vote(Phase::Prepare, 1, 0, &[9; 32]);
    v.signature[0] ^= 1;
    clerk.handle_message(t0, v.voter, Message::Vote(v));
    assert_eq!(clerk.stats().rejects.vote, 1);
    // A vote by a level-2 member (not a voter).
    let v2 = d.level2[0].vote(Phase::Prepare, 1, 0, &[9; 32]);
    clerk.handle_message(t0, v2.voter, Message::Vote(v2));
    assert_eq!(clerk.stats().rejects.vote, 2);

    // Let the clerk build its block (with this seed a ticket qualifies in round 0).
    assert_eq!(first.round, 0);
    {
        let t1 = t0 + config().candidacy_window;
        clerk.handle_timeout(t1);
        let block = std::iter::from_fn(|| clerk.poll_output())
            .find_map(|o| match o {
                Output::Broadcast(Message::Block(b)) => Some(b),
                _ => None,
            })
            .expect("clerk built a block");
        let id = block.header.block_id();
        // Forged seal: a level-2 member's proof over another block.
        let wrong = d.level2[0]
            .vrf
            .prove(&poe::lottery::seal_alpha(&[7; 32]))
            .expect("prove");
        let seal = Seal {
            node: d.level2[0].id(),
            proof: wrong,
        };
        clerk.handle_message(t1, seal.node, Message::Seal { block_id: id, seal });
        assert_eq!(clerk.stats().rejects.seal, 1);
        assert!(
            clerk.poll_output().is_none(),
            "no sealed block from a forged seal"
        );
        // A genuine seal makes the clerk broadcast the sealed block.
        if let Ok(seal) = d.seal(&id) {
            clerk.handle_message(t1, seal.node, Message::Seal { block_id: id, seal });
            let sealed = std::iter::from_fn(|| clerk.poll_output()).any(
                |o| matches!(o, Output::Committee(Message::Block(b)) if b.header.seal.is_some()),
            );
            assert!(sealed);
        }
    }
}

/// A sealed block of height 1 on `ticket` (empty), with the best passing seal.
fn sealed_block(ticket: &poe::wire::Ticket) -> Block {
    let d = devnet();
    let clerk = d.level1_node(&ticket.node).expect("the ticket's holder");
    let mut header = header_on(ticket, &[], 1, clerk);
    header.seal = Some(
        d.seal(&header.block_id())
            .expect("a seal passes with this seed"),
    );
    Block {
        header,
        txs: Vec::new(),
    }
}

/// The votes a node sent: (to, phase, round, block).
fn sent_votes(node: &mut Node) -> Vec<(NodeId, Phase, u32, Hash)> {
    std::iter::from_fn(|| node.poll_output())
        .filter_map(|o| match o {
            Output::Send(to, Message::Vote(v)) => Some((to, v.phase, v.round, v.block_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn locked_node_votes_only_for_its_block_until_a_higher_certificate() {
    let d = devnet();
    let t_a = d.best_ticket_from(&d.genesis, 0).expect("ticket");
    let a = sealed_block(&t_a);
    let t_b = d
        .best_ticket_from(&d.genesis, t_a.round + 1)
        .expect("ticket");
    let b = sealed_block(&t_b);
    let (id_a, id_b) = (a.header.block_id(), b.header.block_id());
    let i = d
        .level1
        .iter()
        .position(|n| n.id() != t_a.node && n.id() != t_b.node)
        .expect("a voter that is neither clerk");
    let t0 = Instant::now();
    let mut node = make_node(i, t0);
    let mut fresh = make_node(i, t0);
    let _ = sent_votes(&mut node);
    let _ = sent_votes(&mut fresh);

    node.handle_message(t0, t_a.node, Message::Block(a));
    assert_eq!(
        sent_votes(&mut node),
        vec![(t_a.node, Phase::Prepare, t_a.round, id_a)]
    );
    let cert_a = d
        .certificate(Phase::Prepare, 1, t_a.round, &id_a)
        .expect("cert");
    node.handle_message(t0, t_a.node, Message::Certificate(cert_a));
    assert_eq!(
        sent_votes(&mut node),
        vec![(t_a.node, Phase::Commit, t_a.round, id_a)]
    );

    // Round A ends without a final block; the locked node sees block B of a later round.
    let t1 = t0 + config().round_timeout;
    node.handle_timeout(t1);
    let _ = sent_votes(&mut node);
    node.handle_message(t1, t_b.node, Message::Block(b.clone()));
    assert_eq!(
        sent_votes(&mut node),
        vec![],
        "locked on A: no PREPARE for B"
    );
    // A node without the lock votes for B.
    fresh.handle_message(t1, t_b.node, Message::Block(b));
    assert_eq!(
        sent_votes(&mut fresh),
        vec![(t_b.node, Phase::Prepare, t_b.round, id_b)]
    );
    // A prepare certificate of the later round moves the lock: B is now the locked block, so
    // PREPARE (not sent yet in that round) and COMMIT for B.
    let cert_b = d
        .certificate(Phase::Prepare, 1, t_b.round, &id_b)
        .expect("cert");
    node.handle_message(t1, t_b.node, Message::Certificate(cert_b));
    assert_eq!(
        sent_votes(&mut node),
        vec![
            (t_b.node, Phase::Prepare, t_b.round, id_b),
            (t_b.node, Phase::Commit, t_b.round, id_b)
        ]
    );
    // An older certificate does not move it back.
    let old = d
        .certificate(Phase::Prepare, 1, t_a.round, &id_a)
        .expect("cert");
    node.handle_message(t1, t_a.node, Message::Certificate(old));
    assert_eq!(sent_votes(&mut node), vec![]);
}

#[test]
fn disconnected_node_catches_up_to_the_identical_chain() {
    // A level-1 node and a level-2 node miss heights 1..=4 entirely.
    for lost in [5, N1 + 1] {
        let mut net_lost = Net::new(21 + lost as u64);
        net_lost.offline = Some(lost);
        net_lost.run_until(4, 60_000_000_000);
        assert_eq!(net_lost.nodes[lost].tip().height, 0);
        assert!(net_lost.nodes[0].tip().height >= 4);
        net_lost.offline = None;
        let target = net_lost.nodes[0].tip().height + 3;
        let limit = net_lost.clock.now() + 60_000_000_000;
        net_lost.run_until(target, limit);
        let n = &net_lost.nodes[lost];
        assert!(n.tip().height >= target, "node {lost} caught up");
        // The same blocks, in order, on every node up to `target`.
        let reference: Vec<(u64, Hash)> = net_lost.finals[0][..target as usize]
            .iter()
            .map(|f| (f.0, f.1))
            .collect();
        for (i, f) in net_lost.finals.iter().enumerate() {
            let chain: Vec<(u64, Hash)> = f[..target as usize].iter().map(|f| (f.0, f.1)).collect();
            assert_eq!(chain, reference, "node {i} diverged");
            let stored: Vec<Hash> = net_lost.nodes[i]
                .finalized()
                .take(target as usize)
                .map(|b| b.header.block_id())
                .collect();
            assert_eq!(stored, reference.iter().map(|r| r.1).collect::<Vec<_>>());
        }
        let r = net_lost.nodes[lost].stats().rejects;
        assert_eq!((r.block, r.certificate), (0, 0));
    }
}

#[test]
fn final_blocks_above_the_tip_are_fetched_and_forged_ones_rejected() {
    let d = devnet();
    let chain = d.chain(&d.genesis, 4, 1).expect("chain");
    let t0 = Instant::now();
    let mut node = make_node(N1, t0);
    let peer = d.level1[0].id();

    // A forged "final" block 3: a commit certificate for another block.
    let mut forged = chain[2].clone();
    forged.header.time_ms += 1;
    node.handle_message(t0, peer, Message::Block(forged.clone()));
    assert_eq!(node.stats().rejects.block, 1);
    assert_eq!(node.tip().height, 0);
    assert!(!node.is_catching_up());
    assert!(
        node.poll_output().is_none(),
        "no request for a forged block"
    );
    // A certificate with a flipped signature.
    let mut bad_sig = chain[2].clone();
    if let Some(c) = bad_sig.header.commit.as_mut() {
        c.votes[0].1[0] ^= 1;
    }
    node.handle_message(t0, peer, Message::Block(bad_sig));
    assert_eq!(node.stats().rejects.block, 2);
    // A genuine header with a body that does not match it is not kept.
    let mut bad_body = chain[2].clone();
    bad_body.txs.clear();
    node.handle_message(t0, peer, Message::Block(bad_body));
    assert_eq!(node.stats().rejects.block, 3);
    // A genuine block whose clerk signature was replaced: its certificate still verifies (it
    // covers `block_id`, not the signature), the signature does not.
    let mut bad_clerk = chain[2].clone();
    bad_clerk.header.clerk_sig[0] ^= 1;
    node.handle_message(t0, peer, Message::Block(bad_clerk));
    assert_eq!(node.stats().rejects.block, 4);
    assert!(node.poll_output().is_none());

    // The genuine block 3: kept, and heights 1..=2 asked of its sender.
    node.handle_message(t0, peer, Message::Block(chain[2].clone()));
    assert!(node.is_catching_up());
    let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert_eq!(
        outs,
        vec![Output::Send(peer, Message::GetBlocks { from: 1, count: 2 })]
    );
    // Asked once while the request is outstanding.
    node.handle_message(t0, peer, Message::Block(chain[2].clone()));
    assert!(node.poll_output().is_none());
    // A forged block 1 in the answer is rejected; the genuine ones are appended with block 3.
    let mut bad1 = chain[0].clone();
    bad1.txs.clear();
    node.handle_message(t0, peer, Message::Block(bad1));
    assert_eq!(node.tip().height, 0);
    assert_eq!(node.stats().rejects.block, 5);
    // A block 1 whose clerk signature was replaced is rejected by `verify::header`.
    let mut bad_sig1 = chain[0].clone();
    bad_sig1.header.clerk_sig = chain[1].header.clerk_sig;
    node.handle_message(t0, peer, Message::Block(bad_sig1));
    assert_eq!(node.tip().height, 0);
    assert_eq!(node.stats().rejects.block, 6);
    for b in &chain[..2] {
        node.handle_message(t0, peer, Message::Block(b.clone()));
    }
    assert_eq!(node.tip().height, 3);
    assert_eq!(node.tip().block_id, chain[2].header.block_id());
    assert!(!node.is_catching_up());

    // Answering: a bounded range from the blocks held.
    let asker = d.level1[1].id();
    let _ = std::iter::from_fn(|| node.poll_output()).count();
    node.handle_message(t0, asker, Message::GetBlocks { from: 2, count: 64 });
    let sent: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert_eq!(
        sent,
        vec![
            Output::Send(asker, Message::Block(chain[1].clone())),
            Output::Send(asker, Message::Block(chain[2].clone())),
        ]
    );
    node.handle_message(t0, asker, Message::GetBlocks { from: 0, count: 1 });
    node.handle_message(t0, asker, Message::GetBlocks { from: 9, count: 3 });
    node.handle_message(
        t0,
        asker,
        Message::GetBlocks {
            from: u64::MAX,
            count: u32::MAX,
        },
    );
    assert!(node.poll_output().is_none());
}

/// A membership transaction from `sender` changing `node` (join with `member`, leave with
/// `None`), approved by `approvals`.
fn membership_tx(
    sender: &DevNode,
    nonce: u64,
    node: NodeId,
    member: Option<poe::wire::Member>,
    approvals: Approvals,
) -> Transaction {
    sender.transaction(
        nonce,
        TxBody::Membership {
            node,
            member,
            approvals,
        },
    )
}

#[test]
fn approved_join_and_leave_change_the_membership_everywhere() {
    let d = devnet();
    let mut rng = ChaCha8Rng::seed_from_u64(0x101);
    let newbie = DevNode::generate(&mut rng, Level::Two, 2048).expect("keys");
    let mut net = Net::with_observers(17, std::slice::from_ref(&newbie));
    let observer = N1 + N2;
    assert_eq!(net.nodes[observer].level(), None, "not a member yet");
    let leaving = &d.level1[N1 - 1];
    let sender = &d.level2[0];
    let now = net.clock.at(0);

    // Refused at admission: too few approvals, approvals of another change, one approval
    // by a level-2 member, approvers out of order, and a record that is not the node's.
    let mut approvals = d.approvals(&newbie.id(), Some(&newbie.member));
    let quorum = d.members.quorum();
    assert_eq!(approvals.len(), quorum);
    let refused: Vec<(Approvals, NodeId, ChangeError)> = vec![
        (
            approvals[..quorum - 1].to_vec(),
            newbie.id(),
            ChangeError::NoQuorum {
                approvals: quorum - 1,
                quorum,
            },
        ),
        (
            d.approvals(&leaving.id(), None),
            newbie.id(),
            ChangeError::BadApproval(d.approvals(&leaving.id(), None)[0].0),
        ),
        (
            {
                let mut a = approvals.clone();
                a.reverse();
                a
            },
            newbie.id(),
            ChangeError::UnorderedApprovals,
        ),
        (
            approvals.clone(),
            leaving.id(),
            ChangeError::IdMismatch(leaving.id()),
        ),
    ];
    for (i, (a, node, why)) in refused.into_iter().enumerate() {
        let tx = membership_tx(sender, 100 + i as u64, node, Some(newbie.member.clone()), a);
        assert_eq!(
            net.nodes[0].submit_tx(now, tx),
            Err(NodeError::Tx(TxReject::Membership(why)))
        );
    }
    let l2 = &d.level2[1];
    let mut with_l2 = approvals.clone();
    with_l2[0] = (l2.id(), [0; 64]);
    with_l2.sort_by_key(|(id, _)| *id);
    let tx = membership_tx(
        sender,
        110,
        newbie.id(),
        Some(newbie.member.clone()),
        with_l2,
    );
    assert_eq!(
        net.nodes[0].submit_tx(now, tx),
        Err(NodeError::Tx(TxReject::Membership(
            ChangeError::NotApprover(l2.id())
        )))
    );

    // The approved join of a new level-2 member and leave of a level-1 member.
    let join = membership_tx(
        sender,
        0,
        newbie.id(),
        Some(newbie.member.clone()),
        approvals.clone(),
    );
    let leave = membership_tx(
        sender,
        1,
        leaving.id(),
        None,
        d.approvals(&leaving.id(), None),
    );
    let expected = d
        .members
        .successor([&join, &leave])
        .expect("approved changes");
    net.nodes[0]
        .submit_tx(now, join.clone())
        .expect("join admitted");
    net.nodes[0]
        .submit_tx(now, leave.clone())
        .expect("leave admitted");
    net.flush(0);
    net.run_until(5, 120_000_000_000);
    net.assert_same_chains(5);

    // One block held both changes; every node (the observer too) applied them there.
    let at = net.nodes[0]
        .finalized()
        .find(|b| b.txs.contains(&join))
        .map(|b| b.header.height)
        .expect("the join is in a final block");
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(
            net.changes[i],
            vec![(at, vec![newbie.id()], vec![leaving.id()])],
            "node {i}"
        );
        assert_eq!(n.tip().members_root, expected.root(), "node {i}");
        assert_eq!(
            n.final_block(at).map(|b| b.header.members_root),
            Some(expected.root())
        );
    }
    assert_eq!(
        net.nodes[observer].level(),
        Some(Level::Two),
        "the observer joined"
    );
    assert_eq!(net.nodes[N1 - 1].level(), None, "the leaver left");
    // After the change, the leaver is neither a clerk nor a voter.
    for b in net.nodes[0].finalized().filter(|b| b.header.height > at) {
        assert_ne!(b.header.ticket.node, leaving.id());
        let c = b.header.commit.as_ref().expect("final");
        assert!(c.votes.iter().all(|(v, _)| *v != leaving.id()));
    }
    // A node restarted from the final chain (as from its store) has the changed set.
    let resumed = Node::resume(
        net.clock.at(net.clock.now()),
        newbie.sig.clone(),
        newbie.vrf.clone(),
        d.members.clone(),
        d.params,
        d.genesis,
        config(),
        net.nodes[0].finalized().cloned(),
    )
    .expect("resume across the change");
    assert_eq!(resumed.members().root(), expected.root());
    assert_eq!(resumed.level(), Some(Level::Two));
    // Replays: the join again (fresh nonce, same approvals: the node is a member now), the
    // leave again (not a member), and a change approved under the old root (bad approvals).
    let now = net.clock.at(net.clock.now());
    let rejoin = membership_tx(
        sender,
        50,
        newbie.id(),
        Some(newbie.member.clone()),
        approvals.clone(),
    );
    assert_eq!(
        net.nodes[1].submit_tx(now, rejoin),
        Err(NodeError::Tx(TxReject::Membership(
            ChangeError::AlreadyMember(newbie.id())
        )))
    );
    let releave = membership_tx(
        sender,
        51,
        leaving.id(),
        None,
        d.approvals(&leaving.id(), None),
    );
    assert_eq!(
        net.nodes[1].submit_tx(now, releave),
        Err(NodeError::Tx(TxReject::Membership(ChangeError::NotMember(
            leaving.id()
        ))))
    );
    let other = &d.level1[0];
    approvals = d.approvals(&other.id(), None);
    let stale = membership_tx(sender, 52, other.id(), None, approvals);
    assert!(matches!(
        net.nodes[1].submit_tx(now, stale),
        Err(NodeError::Tx(TxReject::Membership(
            ChangeError::BadApproval(_)
        )))
    ));
}

#[test]
fn a_block_whose_members_root_is_not_the_membership_after_it_gets_no_vote() {
    let d = devnet();
    let mut net = Net::new(5);
    let now = net.clock.at(0);
    // A clerk's block with a genuine ticket and signature but a members_root that claims a
    // change the block does not hold.
    let ticket = d.best_ticket(&d.genesis).expect("ticket");
    let clerk = d.level1_node(&ticket.node).expect("clerk");
    let mut header = header_on(&ticket, &[], 1, clerk);
    header.members_root[0] ^= 1;
    clerk.sign_header(&mut header);
    let id = header.block_id();
    header.seal = Some(d.seal(&id).expect("seal"));
    let voter = (0..N1)
        .find(|i| net.nodes[*i].id() != ticket.node)
        .expect("a voter");
    let before = net.nodes[voter].stats().rejects.block;
    net.nodes[voter].handle_message(
        now,
        ticket.node,
        Message::Block(Block {
            header,
            txs: Vec::new(),
        }),
    );
    assert_eq!(net.nodes[voter].stats().rejects.block, before + 1);
    assert!(
        sent_votes(&mut net.nodes[voter])
            .iter()
            .all(|(_, _, _, b)| *b != id),
        "no vote for the block"
    );
}
