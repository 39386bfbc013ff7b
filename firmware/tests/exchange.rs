//! Block exchange tests: a deterministic in-memory network (virtual clock, per-peer latency)
//! where a [`Session`] fetches real UnixFS images from [`Server`]s, some of them misbehaving.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::time::{Duration, Instant};

use cid::Cid;
use firmware::exchange::message::{MAX_BLOCK_DATA, MAX_CID_LEN};
use firmware::exchange::{
    Block, FailReason, Message, PeerId, PenaltyReason, Presence, PresenceKind, Server,
    ServerConfig, Session, SessionConfig, SessionEvent, WantEntry, WantKind,
};
use firmware::unixfs::{
    BlockSink, Importer, ImporterConfig, LeafFormat, MemoryBlocks, RAW_CODEC, cid_v1,
    export_to_vec, import,
};
use proptest::prelude::*;

mod common;
use common::pattern;

/// Imports with raw leaves of `chunk_size` bytes and at most `max_links` links per node.
fn import_small(data: &[u8], chunk_size: usize, max_links: usize) -> (Cid, MemoryBlocks) {
    let cfg = ImporterConfig {
        chunk_size,
        max_links,
        leaves: LeafFormat::Raw,
    };
    let mut imp = Importer::with_config(MemoryBlocks::default(), cfg);
    imp.write(data).expect("write");
    imp.finish().expect("finish")
}

fn import_image(data: &[u8]) -> (Cid, MemoryBlocks) {
    import(data, MemoryBlocks::default()).expect("import")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    Honest,
    /// Flips a byte of every block it sends.
    Corrupt,
    /// Replies to every message with bytes that are not a message.
    Garbage,
}

struct Node {
    server: Server<MemoryBlocks>,
    latency: Duration,
    behaviour: Behaviour,
    /// Blocks this node delivered to the client.
    delivered: usize,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    Server(PeerId),
    Client(PeerId),
}

/// A message in flight: (arrival offset, sequence number, destination, bytes).
type Delivery = (Duration, u64, Dest, Vec<u8>);

struct Net {
    start: Instant,
    now: Instant,
    seq: u64,
    session: Session,
    nodes: BTreeMap<PeerId, Node>,
    queue: BinaryHeap<Reverse<Delivery>>,
    store: MemoryBlocks,
    events: Vec<SessionEvent>,
    want_blocks: Vec<(PeerId, Cid)>,
    max_pending: usize,
}

impl Net {
    fn new(session: Session, peers: Vec<(Duration, Behaviour, MemoryBlocks)>) -> Self {
        let start = Instant::now();
        let mut net = Net {
            start,
            now: start,
            seq: 0,
            session,
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            store: MemoryBlocks::default(),
            events: Vec::new(),
            want_blocks: Vec::new(),
            max_pending: 0,
        };
        for (i, (latency, behaviour, blocks)) in peers.into_iter().enumerate() {
            let id = PeerId(i as u64 + 1);
            net.nodes.insert(
                id,
                Node {
                    server: Server::new(blocks, ServerConfig::default()),
                    latency,
                    behaviour,
                    delivered: 0,
                },
            );
            net.session.add_peer(start, id);
        }
        net
    }

    fn send(&mut self, at: Duration, dest: Dest, bytes: Vec<u8>) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, dest, bytes)));
    }

    /// Drains the session; returns true once it finished.
    fn drain_session(&mut self, stop_after_blocks: Option<usize>) -> bool {
        let offset = self.now - self.start;
        while let Some((peer, bytes)) = self.session.poll_transmit() {
            let msg = Message::decode(&bytes).expect("session sends valid messages");
            for e in &msg.wantlist {
                if e.kind == WantKind::Block {
                    self.want_blocks.push((peer, e.cid));
                }
            }
            if let Some(node) = self.nodes.get(&peer) {
                let at = offset + node.latency;
                self.send(at, Dest::Server(peer), bytes);
            }
        }
        self.max_pending = self.max_pending.max(self.session.progress().pending);
        let mut finished = false;
        while let Some(ev) = self.session.poll_event() {
            match &ev {
                SessionEvent::BlockVerified { cid, data } => {
                    self.store.put_block(cid, data).expect("store");
                }
                SessionEvent::PeerDisconnected { peer } => {
                    self.nodes.remove(peer);
                }
                SessionEvent::Complete | SessionEvent::Failed { .. } => finished = true,
                SessionEvent::PeerPenalised { .. } => {}
            }
            self.events.push(ev);
        }
        let verified = self
            .events
            .iter()
            .filter(|e| matches!(e, SessionEvent::BlockVerified { .. }))
            .count();
        finished || stop_after_blocks.is_some_and(|n| verified >= n)
    }

    /// Runs until the session finishes, stalls, or `stop_after_blocks` blocks were verified.
    fn run(&mut self, stop_after_blocks: Option<usize>) {
        for _ in 0..1_000_000 {
            if self.drain_session(stop_after_blocks) {
                return;
            }
            let next_msg = self.queue.peek().map(|Reverse((at, ..))| self.start + *at);
            let next_timeout = self.session.poll_timeout();
            match (next_msg, next_timeout) {
                (None, None) => return,
                (Some(m), t) if t.is_none_or(|t| m <= t) => {
                    let Some(Reverse((_, _, dest, bytes))) = self.queue.pop() else {
                        return;
                    };
                    self.now = self.now.max(m);
                    self.deliver(dest, bytes);
                }
                (_, Some(t)) => {
                    self.now = self.now.max(t);
                    self.session.handle_timeout(self.now);
                }
                (Some(_), None) => unreachable!(),
            }
        }
        panic!("event loop did not settle");
    }

    fn deliver(&mut self, dest: Dest, bytes: Vec<u8>) {
        let offset = self.now - self.start;
        match dest {
            Dest::Client(peer) => self.session.handle_message(self.now, peer, &bytes),
            Dest::Server(peer) => {
                let Some(node) = self.nodes.get_mut(&peer) else {
                    return;
                };
                node.server
                    .handle_message(PeerId(0), &bytes)
                    .expect("valid want message");
                let mut replies = Vec::new();
                while let Some((_, reply)) = node.server.poll_transmit() {
                    let mut msg = Message::decode(&reply).expect("server sends valid messages");
                    node.delivered += msg.blocks.len();
                    let out = match node.behaviour {
                        Behaviour::Honest => reply,
                        Behaviour::Corrupt => {
                            for b in &mut msg.blocks {
                                match b.data.first_mut() {
                                    Some(x) => *x ^= 0xff,
                                    None => b.data.push(1),
                                }
                            }
                            msg.encode().expect("encode")
                        }
                        Behaviour::Garbage => pattern(reply.len().min(64), reply.len() as u64),
                    };
                    replies.push(out);
                }
                let at = offset + node.latency;
                for r in replies {
                    self.send(at, Dest::Client(peer), r);
                }
            }
        }
    }

    fn completed(&self) -> bool {
        self.events.contains(&SessionEvent::Complete)
    }

    fn penalties(&self, peer: PeerId) -> Vec<&PenaltyReason> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SessionEvent::PeerPenalised { peer: p, reason } if *p == peer => Some(reason),
                _ => None,
            })
            .collect()
    }

    fn disconnected(&self, peer: PeerId) -> bool {
        self.events
            .contains(&SessionEvent::PeerDisconnected { peer })
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn fetches_3mib_image_from_three_peers() {
    let data = pattern(3 << 20, 1);
    let (root, blocks) = import_image(&data);
    let peers = (0..3)
        .map(|i| (ms(10 + 10 * i), Behaviour::Honest, blocks.clone()))
        .collect();
    let mut net = Net::new(Session::new(root, SessionConfig::default()), peers);
    net.run(None);
    assert!(
        net.completed(),
        "events: {:?}",
        net.events.iter().rev().take(3).collect::<Vec<_>>()
    );
    assert_eq!(export_to_vec(&net.store, &root).expect("export"), data);
    let p = net.session.progress();
    assert_eq!(p.blocks_fetched as usize, blocks.blocks.len());
    assert_eq!(
        p.bytes_fetched,
        blocks.blocks.values().map(|b| b.len() as u64).sum::<u64>()
    );
    assert_eq!(p.rerequests, 0);
    // Work was spread: more than one peer delivered blocks.
    assert!(net.nodes.values().filter(|n| n.delivered > 0).count() >= 2);
    // Every block was requested exactly once.
    let unique: HashSet<Cid> = net.want_blocks.iter().map(|(_, c)| *c).collect();
    assert_eq!(unique.len(), net.want_blocks.len());
}

#[test]
fn deep_dag_keeps_frontier_bounded() {
    // 4 KiB chunks, 4 links per node: 256 leaves, a tree of depth 4.
    let data = pattern(1 << 20, 2);
    let (root, blocks) = import_small(&data, 4096, 4);
    let peers = (0..3)
        .map(|i| (ms(5 + i), Behaviour::Honest, blocks.clone()))
        .collect();
    let mut net = Net::new(Session::new(root, SessionConfig::default()), peers);
    net.run(None);
    assert!(net.completed());
    assert_eq!(export_to_vec(&net.store, &root).expect("export"), data);
    // Depth-first: pending CIDs stay within (wants in flight + depth) × fan-out = (3 peers × 8
    // window + 5 levels) × 4 links, whatever the image size, well below the 341 blocks.
    assert!(
        net.max_pending <= (3 * 8 + 5) * 4,
        "max pending {}",
        net.max_pending
    );
}

#[test]
fn lying_peer_is_penalised_and_image_still_fetched() {
    // 16 KiB chunks: 192 leaves, so the liar keeps being offered work until disconnected.
    let data = pattern(3 << 20, 3);
    let (root, blocks) = import_small(&data, 16 << 10, 16);
    // The liar is the fastest, so it is offered work first.
    let peers = vec![
        (ms(2), Behaviour::Corrupt, blocks.clone()),
        (ms(20), Behaviour::Honest, blocks.clone()),
        (ms(30), Behaviour::Honest, blocks.clone()),
    ];
    let cfg = SessionConfig {
        max_faults: 2,
        ..SessionConfig::default()
    };
    let mut net = Net::new(Session::new(root, cfg), peers);
    net.run(None);
    assert!(net.completed());
    assert_eq!(export_to_vec(&net.store, &root).expect("export"), data);
    let liar = PeerId(1);
    let corrupt = net
        .penalties(liar)
        .iter()
        .filter(|r| matches!(r, PenaltyReason::CorruptBlock(_)))
        .count();
    assert!(corrupt >= 1);
    assert!(net.disconnected(liar));
    assert!(net.session.progress().rerequests >= 1);
    assert!(net.penalties(PeerId(2)).is_empty() && net.penalties(PeerId(3)).is_empty());
}

#[test]
fn slow_peer_wants_are_rerequested_from_fast_peers() {
    let data = pattern(3 << 20, 4);
    let (root, blocks) = import_image(&data);
    let peers = vec![
        (ms(5_000), Behaviour::Honest, blocks.clone()),
        (ms(10), Behaviour::Honest, blocks.clone()),
        (ms(15), Behaviour::Honest, blocks.clone()),
    ];
    let cfg = SessionConfig {
        want_timeout: ms(300),
        initial_latency: ms(50),
        ..SessionConfig::default()
    };
    let mut net = Net::new(Session::new(root, cfg), peers);
    net.run(None);
    assert!(net.completed());
    assert_eq!(export_to_vec(&net.store, &root).expect("export"), data);
    let slow = PeerId(1);
    assert!(
        net.penalties(slow)
            .iter()
            .any(|r| matches!(r, PenaltyReason::Timeout(_)))
    );
    assert!(net.session.progress().rerequests >= 1);
    // Finished long before the slow peer could have answered anything.
    assert!(
        net.now - net.start < ms(5_000),
        "took {:?}",
        net.now - net.start
    );
    // Everything it was asked was asked again of someone else.
    for (peer, cid) in net.want_blocks.iter().filter(|(p, _)| *p == slow) {
        assert!(net.want_blocks.iter().any(|(p, c)| p != peer && c == cid));
    }
}

#[test]
fn fast_peer_gets_most_wants() {
    let data = pattern(3 << 20, 5);
    let (root, blocks) = import_image(&data);
    let peers = vec![
        (ms(100), Behaviour::Honest, blocks.clone()),
        (ms(5), Behaviour::Honest, blocks.clone()),
    ];
    let cfg = SessionConfig {
        provider_window: 2,
        ..SessionConfig::default()
    };
    let mut net = Net::new(Session::new(root, cfg), peers);
    net.run(None);
    assert!(net.completed());
    let fast = net
        .want_blocks
        .iter()
        .filter(|(p, _)| *p == PeerId(2))
        .count();
    let slow = net
        .want_blocks
        .iter()
        .filter(|(p, _)| *p == PeerId(1))
        .count();
    assert!(fast > slow, "fast {fast} slow {slow}");
}

#[test]
fn interrupted_fetch_resumes_without_rerequesting_held_blocks() {
    let data = pattern(3 << 20, 6);
    let (root, blocks) = import_image(&data);
    let mk_peers = || {
        (0..3)
            .map(|i| (ms(10 + i), Behaviour::Honest, blocks.clone()))
            .collect()
    };
    let mut first = Net::new(Session::new(root, SessionConfig::default()), mk_peers());
    first.run(Some(5));
    assert!(!first.completed());
    let held = first.store.clone();
    assert!(held.blocks.len() >= 5 && held.blocks.len() < blocks.blocks.len());

    let session = Session::resume(root, SessionConfig::default(), Box::new(held.clone()));
    let mut second = Net::new(session, mk_peers());
    second.run(None);
    assert!(second.completed());
    for (_, cid) in &second.want_blocks {
        assert!(
            !held.blocks.contains_key(cid),
            "held block {cid} requested again"
        );
    }
    assert_eq!(
        second.session.progress().blocks_held as usize,
        held.blocks.len()
    );
    let mut all = held;
    for (cid, data) in &second.store.blocks {
        all.put_block(cid, data).expect("put");
    }
    assert_eq!(all.blocks.len(), blocks.blocks.len());
    assert_eq!(export_to_vec(&all, &root).expect("export"), data);
}

#[test]
fn garbage_peer_is_counted_and_disconnected() {
    let data = pattern(3 << 20, 7);
    let (root, blocks) = import_image(&data);
    let peers = vec![
        (ms(1), Behaviour::Garbage, blocks.clone()),
        (ms(20), Behaviour::Honest, blocks.clone()),
    ];
    let cfg = SessionConfig {
        max_faults: 3,
        want_timeout: ms(500),
        ..SessionConfig::default()
    };
    let mut net = Net::new(Session::new(root, cfg), peers);
    net.run(None);
    assert!(net.completed());
    assert_eq!(export_to_vec(&net.store, &root).expect("export"), data);
    let garbage = net
        .penalties(PeerId(1))
        .iter()
        .filter(|r| matches!(r, PenaltyReason::Garbage(_)))
        .count();
    assert!((1..=3).contains(&garbage), "{garbage}");
    assert!(net.disconnected(PeerId(1)));
}

#[test]
fn block_nobody_has_fails_the_session() {
    let data = pattern(1 << 20, 8);
    let (root, _) = import_image(&data);
    let peers = (0..2)
        .map(|i| (ms(10 + i), Behaviour::Honest, MemoryBlocks::default()))
        .collect();
    let mut net = Net::new(Session::new(root, SessionConfig::default()), peers);
    net.run(None);
    assert_eq!(
        net.events.last(),
        Some(&SessionEvent::Failed {
            reason: FailReason::Unavailable(root)
        })
    );
}

#[test]
fn single_raw_block_root() {
    let data = b"tiny firmware".to_vec();
    let cid = cid_v1(RAW_CODEC, &data);
    let mut blocks = MemoryBlocks::default();
    blocks.put_block(&cid, &data).expect("put");
    let mut net = Net::new(
        Session::new(cid, SessionConfig::default()),
        vec![(ms(3), Behaviour::Honest, blocks)],
    );
    net.run(None);
    assert!(net.completed());
    assert_eq!(net.store.blocks.get(&cid), Some(&data));
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

fn want(cid: Cid, kind: WantKind, send_dont_have: bool) -> WantEntry {
    WantEntry {
        cid,
        kind,
        priority: 1,
        send_dont_have,
    }
}

fn wants(entries: Vec<WantEntry>) -> Vec<u8> {
    Message {
        wantlist: entries,
        ..Message::default()
    }
    .encode()
    .expect("encode")
}

#[test]
fn server_answers_have_dont_have_and_block() {
    let data = b"block".to_vec();
    let cid = cid_v1(RAW_CODEC, &data);
    let missing = cid_v1(RAW_CODEC, b"missing");
    let mut blocks = MemoryBlocks::default();
    blocks.put_block(&cid, &data).expect("put");
    let mut server = Server::new(blocks, ServerConfig::default());
    let peer = PeerId(7);
    server
        .handle_message(
            peer,
            &wants(vec![
                want(cid, WantKind::Have, false),
                want(missing, WantKind::Have, true),
                want(missing, WantKind::Block, false),
            ]),
        )
        .expect("valid");
    let (to, bytes) = server.poll_transmit().expect("reply");
    assert_eq!(to, peer);
    let msg = Message::decode(&bytes).expect("decode");
    assert_eq!(
        msg.presences,
        vec![
            Presence {
                cid,
                kind: PresenceKind::Have
            },
            Presence {
                cid: missing,
                kind: PresenceKind::DontHave
            }
        ]
    );
    assert!(server.poll_transmit().is_none());

    server
        .handle_message(peer, &wants(vec![want(cid, WantKind::Block, false)]))
        .expect("ok");
    let msg = Message::decode(&server.poll_transmit().expect("reply").1).expect("decode");
    assert_eq!(msg.blocks, vec![Block { cid, data }]);
}

#[test]
fn server_honours_cancel_and_bounds_queues() {
    let mut blocks = MemoryBlocks::default();
    let cids: Vec<Cid> = (0..10u8)
        .map(|i| {
            let d = vec![i; 10];
            let c = cid_v1(RAW_CODEC, &d);
            blocks.put_block(&c, &d).expect("put");
            c
        })
        .collect();
    let cfg = ServerConfig {
        max_queue: 4,
        ..ServerConfig::default()
    };
    let mut server = Server::new(blocks, cfg);
    let peer = PeerId(1);
    let entries = cids
        .iter()
        .map(|c| want(*c, WantKind::Block, true))
        .collect();
    server.handle_message(peer, &wants(entries)).expect("ok");
    assert_eq!(server.queued(peer), 4);
    server
        .handle_message(peer, &wants(vec![want(cids[0], WantKind::Cancel, false)]))
        .expect("ok");
    assert_eq!(server.queued(peer), 3);
    let mut got = Vec::new();
    while let Some((_, bytes)) = server.poll_transmit() {
        got.extend(
            Message::decode(&bytes)
                .expect("decode")
                .blocks
                .into_iter()
                .map(|b| b.cid),
        );
    }
    assert_eq!(got, cids[1..4].to_vec());
    assert!(server.handle_message(peer, b"not a message").is_err());
}

// ---------------------------------------------------------------------------------------------
// Message codec
// ---------------------------------------------------------------------------------------------

#[test]
fn message_rejects_bad_input() {
    let cid = cid_v1(RAW_CODEC, b"x");
    let good = Message {
        full: true,
        wantlist: vec![want(cid, WantKind::Block, true)],
        presences: vec![Presence {
            cid,
            kind: PresenceKind::DontHave,
        }],
        blocks: vec![Block {
            cid,
            data: b"x".to_vec(),
        }],
    };
    let bytes = good.encode().expect("encode");
    assert_eq!(Message::decode(&bytes).expect("decode"), good);
    for cut in 0..bytes.len() {
        assert!(Message::decode(&bytes[..cut]).is_err());
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(Message::decode(&trailing).is_err());
    let mut flags = bytes.clone();
    flags[3] = 0x80;
    assert!(Message::decode(&flags).is_err());
    let big = Message {
        blocks: vec![Block {
            cid,
            data: vec![0; MAX_BLOCK_DATA + 1],
        }],
        ..Message::default()
    };
    assert!(big.encode().is_err());
    // A block length over the limit is rejected before reading the data.
    let mut hdr = Message {
        blocks: vec![Block { cid, data: vec![] }],
        ..Message::default()
    }
    .encode()
    .expect("encode");
    let n = hdr.len();
    hdr[n - 4..].copy_from_slice(&((MAX_BLOCK_DATA as u32) + 1).to_be_bytes());
    assert!(Message::decode(&hdr).is_err());
}

fn arb_cid() -> impl Strategy<Value = Cid> {
    (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..16)).prop_map(|(raw, d)| {
        cid_v1(
            if raw {
                RAW_CODEC
            } else {
                firmware::unixfs::DAG_PB_CODEC
            },
            &d,
        )
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let kind = prop_oneof![
        Just(WantKind::Have),
        Just(WantKind::Block),
        Just(WantKind::Cancel)
    ];
    let entry = (arb_cid(), kind, any::<i32>(), any::<bool>()).prop_map(
        |(cid, kind, priority, send_dont_have)| WantEntry {
            cid,
            kind,
            priority,
            send_dont_have,
        },
    );
    let pres = (arb_cid(), any::<bool>()).prop_map(|(cid, h)| Presence {
        cid,
        kind: if h {
            PresenceKind::Have
        } else {
            PresenceKind::DontHave
        },
    });
    let block = (arb_cid(), proptest::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(cid, data)| Block { cid, data });
    (
        any::<bool>(),
        proptest::collection::vec(entry, 0..8),
        proptest::collection::vec(pres, 0..8),
        proptest::collection::vec(block, 0..4),
    )
        .prop_map(|(full, wantlist, presences, blocks)| Message {
            full,
            wantlist,
            presences,
            blocks,
        })
}

proptest! {
    #[test]
    fn message_round_trips(msg in arb_message()) {
        let bytes = msg.encode().expect("encode");
        prop_assert_eq!(bytes.len(), msg.encoded_len());
        prop_assert_eq!(Message::decode(&bytes).expect("decode"), msg);
    }

    #[test]
    fn message_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = Message::decode(&bytes) {
            prop_assert_eq!(m.encode().expect("re-encode"), bytes);
        }
    }

    #[test]
    fn mutated_message_never_panics(msg in arb_message(), idx in any::<usize>(), val in any::<u8>()) {
        let mut bytes = msg.encode().expect("encode");
        let i = idx % bytes.len();
        bytes[i] = val;
        if let Ok(m) = Message::decode(&bytes) {
            prop_assert_eq!(m.encode().expect("re-encode"), bytes);
        }
    }

    #[test]
    fn session_survives_arbitrary_messages(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let root = cid_v1(RAW_CODEC, b"root");
        let mut s = Session::new(root, SessionConfig::default());
        let now = Instant::now();
        s.add_peer(now, PeerId(1));
        s.handle_message(now, PeerId(1), &bytes);
        while s.poll_event().is_some() {}
        prop_assert!(MAX_CID_LEN >= 36);
    }
}

#[test]
fn identical_chunks_are_fetched_once() {
    // 2 MiB of 0xff padding (8 identical 256 KiB leaves) after 1 MiB of data.
    let mut data = pattern(1 << 20, 9);
    data.extend(std::iter::repeat_n(0xffu8, 2 << 20));
    let (root, blocks) = import_image(&data);
    assert_eq!(
        blocks.blocks.len(),
        1 + 4 + 1,
        "root, 4 data leaves, 1 padding leaf"
    );
    let mut net = Net::new(
        Session::new(root, SessionConfig::default()),
        vec![(ms(5), Behaviour::Honest, blocks)],
    );
    net.run(None);
    assert!(net.completed());
    assert_eq!(export_to_vec(&net.store, &root).expect("export"), data);
    let mut asked: Vec<Cid> = net.want_blocks.iter().map(|(_, c)| *c).collect();
    let n = asked.len();
    asked.sort_by_key(|c| c.to_bytes());
    asked.dedup();
    assert_eq!(n, asked.len(), "a block was asked for twice");
    assert_eq!(n, 6);
}

#[test]
fn identical_chunks_under_later_nodes_are_not_fetched_again() {
    // 4 KiB chunks, 4 links per node: 8 data leaves, then 56 leaves of padding. The padding
    // leaf (and the dag-pb node of four padding leaves) is linked again under nodes fetched
    // after it arrived.
    let mut data = pattern(8 * 4096, 12);
    data.extend(std::iter::repeat_n(0xffu8, 56 * 4096));
    let (root, blocks) = import_small(&data, 4096, 4);
    // One want at a time, depth first: the padding node under the first subtree has arrived
    // before the all-padding subtrees that link it again are read.
    let one_at_a_time = SessionConfig {
        window: 1,
        provider_window: 1,
        ..SessionConfig::default()
    };
    let mut net = Net::new(
        Session::new(root, one_at_a_time),
        vec![(ms(5), Behaviour::Honest, blocks.clone())],
    );
    net.run(None);
    assert!(net.completed());
    assert_eq!(export_to_vec(&net.store, &root).expect("export"), data);
    let asked: Vec<Cid> = net.want_blocks.iter().map(|(_, c)| *c).collect();
    let mut unique = asked.clone();
    unique.sort_by_key(|c| c.to_bytes());
    unique.dedup();
    assert_eq!(asked.len(), unique.len(), "a block was asked for twice");
    assert_eq!(
        asked.len(),
        blocks.blocks.len(),
        "every distinct block once"
    );
    assert!(net.session.progress().duplicate_links > 0);
}
