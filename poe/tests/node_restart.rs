//! `poe::node` with the SQLite `poe::store`: 7 level-1 and 4 level-2 members with RSA-2048 keys
//! over in-memory links with seeded per-link latency (a discrete-event loop on a virtual clock,
//! as in `node_sim.rs`), each member with its own store file written by the driver on every
//! `NodeEvent::Finalized` and read to answer `NodeEvent::BlocksWanted`.
//!
//! What they show: a member dropped (crash) after some final heights and restarted from its
//! file with `Node::resume` resumes at its stored tip, catches up and follows the others to the
//! identical chain (a level-1 and a level-2 member); a node holding only 4 blocks in memory
//! answers a `GetBlocks` for height 1 through `BlocksWanted` and its store, and a member cut
//! off for 8 heights catches up through such nodes; a stored chain with a tampered header,
//! body or certificate, a gap, or a block id that is not its header's is refused with a typed
//! error; the per-peer `GetBlocks` limit and the bounded peer table hold and are counted.
#![cfg(feature = "std")]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use poe::devnet::Devnet;
use poe::node::{
    Node, NodeConfig, NodeError, NodeEvent, Output, PersistError, Reject, ResumeError, TxReject,
};
use poe::store::Store;
use poe::verify::VerifyError;
use poe::wire::{Block, Hash, Message, NodeId, TxBody};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

mod common;
use common::{Clock, TempDir};

use common::members::{N1, N2};

fn devnet() -> &'static Devnet {
    static NET: OnceLock<Devnet> = OnceLock::new();
    common::members::devnet(&NET, 0x5e57)
}

fn config(keep_blocks: usize) -> NodeConfig {
    NodeConfig {
        keep_blocks,
        ..common::members::config()
    }
}

fn dev_node(i: usize) -> &'static poe::devnet::DevNode {
    common::members::dev_node(devnet(), i)
}

fn make_node(i: usize, now: Instant, config: NodeConfig) -> Node {
    common::members::make_node(devnet(), i, now, config)
}

fn resume(
    i: usize,
    now: Instant,
    config: NodeConfig,
    chain: Vec<Block>,
) -> Result<Node, ResumeError> {
    let d = devnet();
    let dn = dev_node(i);
    Node::resume(
        now,
        dn.sig.clone(),
        dn.vrf.clone(),
        d.members.clone(),
        d.params,
        d.genesis,
        config,
        chain,
    )
}

/// Every final block in `store` from height 1.
fn stored_chain(store: &Store) -> Vec<Block> {
    let tip = store.tip().expect("tip").map_or(0, |t| t.0);
    store.final_blocks(1, tip).expect("final blocks")
}

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
    /// `None` while crashed.
    nodes: Vec<Option<Node>>,
    stores: Vec<Option<Store>>,
    config: NodeConfig,
    ids: Vec<NodeId>,
    index: BTreeMap<NodeId, usize>,
    timer_at: Vec<Option<u64>>,
    /// One-way latency per directed link, ns.
    latency: Vec<Vec<u64>>,
    /// A node cut off (running, but everything it sends and is sent is dropped).
    offline: Option<usize>,
    /// Blocks sent from a store in answer to `BlocksWanted`, per node.
    from_store: Vec<u64>,
    _dir: TempDir,
}

impl Net {
    fn new(name: &str, seed: u64, config: NodeConfig) -> Self {
        let epoch = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = N1 + N2;
        let latency = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| 10_000_000 + rng.next_u64() % 20_000_000)
                    .collect()
            })
            .collect();
        let dir = TempDir::new("node_restart", name);
        let stores = (0..n)
            .map(|i| Some(Store::open(dir.0.join(format!("node{i}.db"))).expect("store")))
            .collect();
        let nodes: Vec<Option<Node>> = (0..n).map(|i| Some(make_node(i, epoch, config))).collect();
        let ids: Vec<NodeId> = (0..n).map(|i| dev_node(i).id()).collect();
        let index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut net = Self {
            clock: Clock::new(epoch),
            nodes,
            stores,
            config,
            ids,
            index,
            timer_at: vec![None; n],
            latency,
            offline: None,
            from_store: vec![0; n],
            _dir: dir,
        };
        for i in 0..n {
            net.flush(i);
        }
        net
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("running")
    }

    fn height(&self, i: usize) -> u64 {
        self.node(i).tip().height
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Message) {
        if self.offline == Some(to) || self.offline == Some(from) || self.nodes[to].is_none() {
            return;
        }
        let t = self.clock.now() + self.latency[from][to];
        self.clock.schedule(
            t,
            Ev::Deliver {
                to,
                from,
                msg: Box::new(msg),
            },
        );
    }

    /// The driver: transmits outputs, persists final blocks, answers `BlocksWanted` from the
    /// store, arms the timer.
    fn flush(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
        let events: Vec<NodeEvent> = std::iter::from_fn(|| node.poll_event()).collect();
        let timeout = node.poll_timeout();
        for out in outs {
            match out {
                Output::Broadcast(msg) | Output::Committee(msg) => {
                    for to in 0..self.nodes.len() {
                        if to != i {
                            self.deliver(i, to, msg.clone());
                        }
                    }
                }
                Output::Send(id, msg) => {
                    if let Some(&to) = self.index.get(&id) {
                        self.deliver(i, to, msg);
                    }
                }
            }
        }
        for ev in events {
            let store = self.stores[i].as_mut().expect("store of a running node");
            match ev {
                NodeEvent::Finalized { height, block, .. } => {
                    assert_eq!(block.header.height, height);
                    store.append_final(&block).expect("persist final block");
                }
                NodeEvent::BlocksWanted { peer, from, count } => {
                    let blocks = store
                        .final_blocks(from, u64::from(count))
                        .expect("read final blocks");
                    assert_eq!(blocks.len() as u64, u64::from(count), "the store has them");
                    let to = self.index[&peer];
                    for b in blocks {
                        self.from_store[i] += 1;
                        self.deliver(i, to, Message::Block(b));
                    }
                }
                NodeEvent::Evidence(e) => panic!("no equivocation expected: {e:?}"),
                NodeEvent::Spin { .. } | NodeEvent::MembersChanged { .. } => {}
            }
        }
        if let Some(t) = timeout {
            let ns = self.clock.ns(t);
            if self.timer_at[i] != Some(ns) {
                self.timer_at[i] = Some(ns);
                self.clock.schedule(ns, Ev::Timer { node: i });
            }
        }
    }

    /// Runs until every running node (but an offline one) has `height` final blocks or
    /// `limit_ns` passes.
    fn run_until(&mut self, height: u64, limit_ns: u64) {
        loop {
            let done = self.nodes.iter().enumerate().all(|(i, n)| {
                self.offline == Some(i) || n.as_ref().is_none_or(|n| n.tip().height >= height)
            });
            if done {
                break;
            }
            let Some((t, ev)) = self.clock.next_until(limit_ns) else {
                break;
            };
            let now = self.clock.at(t);
            match ev {
                Ev::Deliver { to, from, msg } => {
                    let from_id = self.ids[from];
                    if let Some(n) = self.nodes[to].as_mut() {
                        n.handle_message(now, from_id, *msg);
                        self.flush(to);
                    }
                }
                Ev::Timer { node } if self.timer_at[node] == Some(t) => {
                    self.timer_at[node] = None;
                    if let Some(n) = self.nodes[node].as_mut() {
                        n.handle_timeout(now);
                        self.flush(node);
                    }
                }
                Ev::Timer { .. } => {}
            }
        }
    }

    /// Drops node `i` and closes its store (what survives is the file).
    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.stores[i] = None;
        self.timer_at[i] = None;
    }

    /// Reopens node `i`'s store and resumes it from its final chain; returns the chain read.
    fn restart(&mut self, i: usize) -> Vec<Block> {
        let store = Store::open(self._dir.0.join(format!("node{i}.db"))).expect("reopen");
        let chain = stored_chain(&store);
        let now = self.clock.at(self.clock.now());
        let node = resume(i, now, self.config, chain.clone()).expect("resume");
        self.nodes[i] = Some(node);
        self.stores[i] = Some(store);
        self.flush(i);
        chain
    }

    /// Every store holds the same final blocks at heights `1..=height`.
    fn assert_same_stored_chains(&self, height: u64) -> Vec<Hash> {
        let ids = |s: &Store| -> Vec<Hash> {
            s.final_blocks(1, height)
                .expect("read")
                .iter()
                .map(|b| b.header.block_id())
                .collect()
        };
        let reference = ids(self.stores[0].as_ref().expect("store"));
        assert_eq!(reference.len() as u64, height);
        for (i, s) in self.stores.iter().enumerate() {
            assert_eq!(
                ids(s.as_ref().expect("store")),
                reference,
                "store {i} diverged"
            );
        }
        reference
    }
}

#[test]
fn crashed_member_resumes_from_its_store_and_follows_to_the_identical_chain() {
    // A level-1 member and a level-2 member.
    for lost in [2, N1 + 2] {
        let mut net = Net::new(&format!("crash{lost}"), 40 + lost as u64, config(1_024));
        net.run_until(3, 60_000_000_000);
        let at_crash = *net.node(lost).tip();
        assert!(at_crash.height >= 3);
        net.crash(lost);
        // The others go on without it.
        let later = at_crash.height + 3;
        let limit = net.clock.now() + 60_000_000_000;
        net.run_until(later, limit);
        assert!(net.height(0) >= later);

        let chain = net.restart(lost);
        let n = net.node(lost);
        assert_eq!(chain.len() as u64, at_crash.height);
        assert_eq!(*n.tip(), at_crash, "resumed at the stored tip");
        assert_eq!(n.finalized().count(), chain.len());
        assert!(n.final_block(1).is_some_and(|b| *b == chain[0]));

        let target = net.height(0) + 3;
        let limit = net.clock.now() + 60_000_000_000;
        net.run_until(target, limit);
        assert!(
            net.height(lost) >= target,
            "member {lost} caught up and follows"
        );
        let ids = net.assert_same_stored_chains(target);
        let held: Vec<Hash> = net
            .node(lost)
            .finalized()
            .take(target as usize)
            .map(|b| b.header.block_id())
            .collect();
        assert_eq!(held, ids);
        let r = net.node(lost).stats().rejects;
        assert_eq!((r.block, r.certificate, r.rate_limited), (0, 0, 0));
    }
}

#[test]
fn node_with_four_blocks_in_memory_answers_height_one_from_its_store() {
    let d = devnet();
    let chain = d.chain(&d.genesis, 8, 1).expect("chain");
    let dir = TempDir::new("node_restart", "keep4");
    let mut store = Store::open(dir.db()).expect("store");
    let t0 = Instant::now();
    let mut node = make_node(N1, t0, config(4));
    let peer = d.level1[0].id();
    for b in &chain {
        node.handle_message(t0, peer, Message::Block(b.clone()));
        while let Some(ev) = node.poll_event() {
            if let NodeEvent::Finalized { block, .. } = ev {
                store.append_final(&block).expect("persist");
            }
        }
    }
    assert_eq!(node.tip().height, 8);
    let held: Vec<u64> = node.finalized().map(|b| b.header.height).collect();
    assert_eq!(held, vec![5, 6, 7, 8]);
    assert!(node.final_block(4).is_none());
    let _ = std::iter::from_fn(|| node.poll_output()).count();

    // Height 1 is below memory: the driver is asked.
    let asker = d.level1[1].id();
    node.handle_message(t0, asker, Message::GetBlocks { from: 1, count: 1 });
    assert!(node.poll_output().is_none());
    let ev: Vec<NodeEvent> = std::iter::from_fn(|| node.poll_event()).collect();
    assert_eq!(
        ev,
        vec![NodeEvent::BlocksWanted {
            peer: asker,
            from: 1,
            count: 1
        }]
    );
    assert_eq!(store.final_blocks(1, 1).expect("read"), chain[..1].to_vec());

    // A range across the boundary: 3..=4 from the store, 5..=6 from memory.
    node.handle_message(t0, asker, Message::GetBlocks { from: 3, count: 4 });
    let ev: Vec<NodeEvent> = std::iter::from_fn(|| node.poll_event()).collect();
    assert_eq!(
        ev,
        vec![NodeEvent::BlocksWanted {
            peer: asker,
            from: 3,
            count: 2
        }]
    );
    let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert_eq!(
        outs,
        vec![
            Output::Send(asker, Message::Block(chain[4].clone())),
            Output::Send(asker, Message::Block(chain[5].clone())),
        ]
    );
    // Genesis (height 0) and heights above the tip are not asked for.
    node.handle_message(t0, asker, Message::GetBlocks { from: 0, count: 2 });
    let ev: Vec<NodeEvent> = std::iter::from_fn(|| node.poll_event()).collect();
    assert_eq!(
        ev,
        vec![NodeEvent::BlocksWanted {
            peer: asker,
            from: 1,
            count: 1
        }]
    );
    node.handle_message(t0, asker, Message::GetBlocks { from: 9, count: 5 });
    assert!(node.poll_event().is_none() && node.poll_output().is_none());

    // A node that missed everything appends what the store gives back.
    let mut fresh = make_node(3, t0, config(4));
    for b in store.final_blocks(1, 8).expect("read") {
        fresh.handle_message(t0, node.id(), Message::Block(b));
    }
    assert_eq!(*fresh.tip(), *node.tip());
    assert_eq!(fresh.stats().rejects.block, 0);
}

#[test]
fn member_cut_off_for_eight_heights_catches_up_through_stores() {
    // Every member holds 4 final blocks in memory.
    let lost = 4;
    let mut net = Net::new("keep4net", 77, config(4));
    net.offline = Some(lost);
    net.run_until(8, 60_000_000_000);
    assert_eq!(net.height(lost), 0);
    net.offline = None;
    let target = net.height(0) + 3;
    let limit = net.clock.now() + 60_000_000_000;
    net.run_until(target, limit);
    assert!(net.height(lost) >= target, "caught up");
    net.assert_same_stored_chains(target);
    assert!(
        net.from_store.iter().sum::<u64>() >= 4,
        "heights below memory were served from stores: {:?}",
        net.from_store
    );
    assert!(net.node(lost).stats().finalized_blocks <= 4);
    let r = net.node(lost).stats().rejects;
    assert_eq!((r.block, r.certificate), (0, 0));
}

#[test]
fn tampered_stored_chains_are_refused_with_typed_errors() {
    let d = devnet();
    let chain = d.chain(&d.genesis, 6, 1).expect("chain");
    let dir = TempDir::new("node_restart", "tamper");
    let t0 = Instant::now();
    let stored = |name: &str, blocks: &[Block]| -> Vec<Block> {
        let mut s = Store::open(dir.0.join(format!("{name}.db"))).expect("store");
        for b in blocks {
            s.append_final(b).expect("append");
        }
        stored_chain(&s)
    };

    // The genuine chain resumes at its tip, with its nonce floors.
    let good = stored("good", &chain);
    assert_eq!(good, chain);
    let mut node = resume(0, t0, config(4), good).expect("resume");
    assert_eq!(node.tip().block_id, chain[5].header.block_id());
    assert_eq!(node.finalized().count(), 4);
    // `chain` gives level-2 member 0 the nonces 0..=5.
    let sender = &d.level2[0];
    assert_eq!(
        node.submit_tx(t0, sender.transaction(5, TxBody::SensorBatch(Vec::new()))),
        Err(NodeError::Tx(TxReject::OldNonce))
    );
    node.submit_tx(t0, sender.transaction(6, TxBody::SensorBatch(Vec::new())))
        .expect("next nonce admitted");

    // A changed header (time) of block 3: its seal no longer verifies (every stored header is
    // first checked at `Depth::Chained`, which does not look at the clerk signature).
    let mut blocks = chain.clone();
    blocks[2].header.time_ms += 1;
    let err = resume(0, t0, config(4), stored("header", &blocks)).expect_err("refused");
    assert!(
        matches!(
            err,
            ResumeError::Header {
                height: 3,
                source: VerifyError::BadProof(_)
            }
        ),
        "{err:?}"
    );

    // Another transaction in block 2's body.
    let mut blocks = chain.clone();
    blocks[1].txs = vec![d.level2[1].transaction(0, TxBody::SensorBatch(Vec::new()))];
    let err = resume(0, t0, config(4), stored("body", &blocks)).expect_err("refused");
    assert_eq!(
        err,
        ResumeError::Body {
            height: 2,
            source: Reject::BadBody
        }
    );

    // A forged vote in the tip's commit certificate (checked: the tip is held in memory).
    let mut blocks = chain.clone();
    if let Some(c) = blocks[5].header.commit.as_mut() {
        c.votes[0].1[3] ^= 1;
    }
    let err = resume(0, t0, config(4), stored("cert", &blocks)).expect_err("refused");
    assert!(
        matches!(
            err,
            ResumeError::Header {
                height: 6,
                source: VerifyError::BadVote(_)
            }
        ),
        "{err:?}"
    );

    // A gap: block 4 missing.
    let mut blocks = chain.clone();
    blocks.remove(3);
    let err = resume(0, t0, config(4), blocks).expect_err("refused");
    assert!(
        matches!(
            err,
            ResumeError::Header {
                height: 5,
                source: VerifyError::BadLink { .. }
            }
        ),
        "{err:?}"
    );

    // A store row whose block id is not its header's.
    let mut s = Store::open(dir.0.join("id.db")).expect("store");
    let b = &chain[0];
    let txs: Vec<([u8; 32], Vec<u8>)> = b
        .txs
        .iter()
        .map(|t| (t.id(), poe::wire::Encode::to_bytes(t)))
        .collect();
    s.put_block(
        1,
        &[7; 32],
        &poe::wire::Encode::to_bytes(&b.header),
        &txs,
        true,
    )
    .expect("put");
    assert!(matches!(
        s.final_blocks(1, 1),
        Err(PersistError::IdMismatch { height: 1 })
    ));
}

#[test]
fn get_blocks_answers_are_limited_per_peer_and_the_peer_table_is_bounded() {
    let d = devnet();
    let chain = d.chain(&d.genesis, 2, 0).expect("chain");
    let t0 = Instant::now();
    let cfg = NodeConfig {
        get_blocks_per_peer: 3,
        cache_limit: 4,
        ..config(1_024)
    };
    let mut node = make_node(N1 + 1, t0, cfg);
    for b in &chain {
        node.handle_message(t0, d.level1[0].id(), Message::Block(b.clone()));
    }
    assert_eq!(node.tip().height, 2);
    let _ = std::iter::from_fn(|| node.poll_output()).count();
    let blocks_sent = |node: &mut Node| {
        std::iter::from_fn(|| node.poll_output())
            .filter(|o| matches!(o, Output::Send(_, Message::Block(_))))
            .count()
    };

    // One peer asking 10 times in one window gets 3 answers; 7 are dropped and counted.
    let asker = d.level1[1].id();
    for _ in 0..10 {
        node.handle_message(t0, asker, Message::GetBlocks { from: 1, count: 1 });
    }
    assert_eq!(blocks_sent(&mut node), 3);
    assert_eq!(node.stats().rejects.rate_limited, 7);
    // Another peer is not affected.
    let other = d.level1[2].id();
    node.handle_message(t0, other, Message::GetBlocks { from: 1, count: 2 });
    assert_eq!(blocks_sent(&mut node), 2);
    // After a round timeout the first peer is answered again.
    let t1 = t0 + cfg.round_timeout;
    node.handle_message(t1, asker, Message::GetBlocks { from: 2, count: 1 });
    assert_eq!(blocks_sent(&mut node), 1);
    assert_eq!(node.stats().rejects.rate_limited, 7);
    node.handle_message(t1, other, Message::GetBlocks { from: 2, count: 1 });
    assert_eq!(blocks_sent(&mut node), 1);

    // The peer table holds `cache_limit` peers: a fifth new peer within the window is refused.
    let peers: Vec<NodeId> = (3..7).map(|i| d.level1[i].id()).collect();
    for p in &peers[..2] {
        node.handle_message(t1, *p, Message::GetBlocks { from: 1, count: 1 });
    }
    assert_eq!(node.stats().get_blocks_peers, 4);
    assert_eq!(blocks_sent(&mut node), 2);
    node.handle_message(t1, peers[2], Message::GetBlocks { from: 1, count: 1 });
    assert_eq!(blocks_sent(&mut node), 0);
    assert_eq!(node.stats().rejects.rate_limited, 8);
    assert_eq!(node.stats().get_blocks_peers, 4);
    // Once the windows expire, their peers make room.
    let t2 = t1 + cfg.round_timeout;
    node.handle_message(t2, peers[2], Message::GetBlocks { from: 1, count: 1 });
    assert_eq!(blocks_sent(&mut node), 1);
    assert!(node.stats().get_blocks_peers <= 4);
}
