//! Exchange [`Engine`] tests: engines joined by in-memory byte streams (the role a mesh
//! reliable channel plays in a device), swarm announcements, the manufacturer's super-seeding
//! budget, framing violations, and an interrupted fetch resumed from the on-disk blockstore.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cid::Cid;
use firmware::blockstore::Blockstore;
use firmware::exchange::frame::MAX_FRAME;
use firmware::exchange::{
    DisconnectReason, Engine, EngineEvent, FrameError, Message, PeerId, PeerKind, PresenceKind,
    ServerConfig, SessionConfig, WantEntry, WantKind,
};
use firmware::unixfs::{BlockSink, BlockSource, DAG_PB_CODEC, MemoryBlocks, export_to_vec, import};

mod common;
use common::pattern;

/// Engines and the streams between them: node `i` knows node `j` as `PeerId(j)`.
struct Net<B: BlockSource + BlockSink> {
    now: Instant,
    nodes: Vec<Engine<B>>,
    links: Vec<(usize, usize)>,
    events: BTreeMap<usize, Vec<EngineEvent>>,
}

impl<B: BlockSource + BlockSink> Net<B> {
    fn new(nodes: Vec<Engine<B>>) -> Self {
        Net {
            now: Instant::now(),
            nodes,
            links: Vec::new(),
            events: BTreeMap::new(),
        }
    }

    /// Joins `a` and `b`; each sees the other as `kind_at_a` / `kind_at_b`.
    fn link(&mut self, a: usize, b: usize, kind_at_a: PeerKind, kind_at_b: PeerKind) {
        let now = self.now;
        self.nodes[a].connect(now, PeerId(b as u64), kind_at_a);
        self.nodes[b].connect(now, PeerId(a as u64), kind_at_b);
        self.links.push((a, b));
    }

    /// Moves bytes until nothing moves; returns the bytes moved.
    fn run(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..100_000 {
            let mut moved = 0;
            for &(a, b) in &self.links.clone() {
                for (from, to) in [(a, b), (b, a)] {
                    let chunk = self.nodes[from]
                        .peek_transmit(PeerId(to as u64), 16 * 1024)
                        .to_vec();
                    if chunk.is_empty() {
                        continue;
                    }
                    self.nodes[from].advance_transmit(PeerId(to as u64), chunk.len());
                    let now = self.now;
                    self.nodes[to].handle_bytes(now, PeerId(from as u64), &chunk);
                    moved += chunk.len();
                }
            }
            for (i, n) in self.nodes.iter_mut().enumerate() {
                while let Some(e) = n.poll_event() {
                    self.events.entry(i).or_default().push(e);
                }
            }
            self.now += Duration::from_millis(1);
            total += moved;
            if moved == 0 {
                return total;
            }
        }
        panic!("did not settle");
    }

    fn completed(&self, i: usize) -> bool {
        self.events
            .get(&i)
            .is_some_and(|v| v.iter().any(|e| matches!(e, EngineEvent::Complete { .. })))
    }
}

fn image(len: usize, seed: u64) -> (Vec<u8>, Cid, MemoryBlocks) {
    let data = pattern(len, seed);
    let (root, blocks) = import(&data[..], MemoryBlocks::default()).expect("import");
    (data, root, blocks)
}

#[test]
fn engine_fetches_over_streams_and_then_serves_what_it_holds() {
    // Node 0 holds the image; node 1 fetches it from 0; node 2 then fetches it from node 1
    // alone (the block store filled by the first fetch serves the second).
    let (data, root, blocks) = image(3 << 20, 1);
    let engines = vec![
        Engine::new(blocks, ServerConfig::default()),
        Engine::new(MemoryBlocks::default(), ServerConfig::default()),
        Engine::new(MemoryBlocks::default(), ServerConfig::default()),
    ];
    let mut net = Net::new(engines);
    net.link(1, 0, PeerKind::Provider, PeerKind::Swarm);
    let now = net.now;
    net.nodes[1]
        .fetch(now, root, SessionConfig::default(), None)
        .expect("fetch");
    net.run();
    assert!(net.completed(1));
    assert_eq!(
        export_to_vec(net.nodes[1].store(), &root).expect("export"),
        data
    );
    net.link(2, 1, PeerKind::Provider, PeerKind::Swarm);
    let now = net.now;
    net.nodes[2]
        .fetch(now, root, SessionConfig::default(), None)
        .expect("fetch");
    net.run();
    assert!(net.completed(2));
    assert_eq!(
        export_to_vec(net.nodes[2].store(), &root).expect("export"),
        data
    );
    let served = net.nodes[1].stats().served;
    assert_eq!(served.blocks as usize, net.nodes[1].store().blocks.len());
    assert!(net.nodes[1].stats().sent > data.len() as u64);
}

#[test]
fn swarm_peer_announces_blocks_as_it_gets_them() {
    // Node 2 has only swarm peer 1, which holds nothing yet: node 2 sends WANT_HAVEs that
    // node 1 keeps; as node 1 fetches from the manufacturer (0), it announces each block and
    // node 2 fetches it from node 1. Node 2 never talks to the manufacturer.
    let (data, root, blocks) = image(2 << 20, 2);
    let n_blocks = blocks.blocks.len();
    let engines = vec![
        Engine::new(blocks, ServerConfig::default()),
        Engine::new(MemoryBlocks::default(), ServerConfig::default()),
        Engine::new(MemoryBlocks::default(), ServerConfig::default()),
    ];
    let mut net = Net::new(engines);
    net.link(2, 1, PeerKind::Swarm, PeerKind::Swarm);
    let now = net.now;
    net.nodes[2]
        .fetch(now, root, SessionConfig::default(), None)
        .expect("fetch");
    net.run();
    // Nothing to get yet: the want-have for the root is kept by node 1.
    assert!(!net.completed(2));
    assert_eq!(net.nodes[2].progress().blocks_fetched, 0);
    net.link(1, 0, PeerKind::Provider, PeerKind::Swarm);
    let now = net.now;
    net.nodes[1]
        .fetch(now, root, SessionConfig::default(), None)
        .expect("fetch");
    net.run();
    assert!(net.completed(1));
    assert!(net.completed(2), "node 2 completed from its swarm peer");
    assert_eq!(
        export_to_vec(net.nodes[2].store(), &root).expect("export"),
        data
    );
    let p = net.nodes[2].progress();
    assert_eq!(p.blocks_from_swarm as usize, n_blocks);
    assert_eq!(p.blocks_from_providers, 0);
    assert!(net.nodes[1].stats().served.haves > 0);
}

#[test]
fn provider_budget_answers_dont_have_for_leaves_but_always_serves_dag_nodes() {
    let (_, root, blocks) = image(1 << 20, 3); // 4 leaves under one dag-pb root
    let leaf = *blocks
        .blocks
        .keys()
        .find(|c| c.codec() != DAG_PB_CODEC)
        .expect("a leaf");
    let server = ServerConfig {
        copies_per_block: Some(1),
        ..ServerConfig::default()
    };
    let mut engine = Engine::new(blocks, server);
    let now = Instant::now();
    let ask = |engine: &mut Engine<MemoryBlocks>, peer: u64, cid: Cid| {
        let p = PeerId(peer);
        engine.connect(now, p, PeerKind::Swarm);
        let msg = Message {
            wantlist: vec![WantEntry {
                cid,
                kind: WantKind::Block,
                priority: 1,
                send_dont_have: true,
            }],
            ..Message::default()
        };
        let mut framed = Vec::new();
        let body = msg.encode().expect("encode");
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        engine.handle_bytes(now, p, &framed);
        let out = engine.peek_transmit(p, usize::MAX).to_vec();
        engine.advance_transmit(p, out.len());
        Message::decode(&out[4..]).expect("reply")
    };
    let first = ask(&mut engine, 1, leaf);
    assert_eq!(first.blocks.len(), 1);
    let second = ask(&mut engine, 2, leaf);
    assert!(second.blocks.is_empty());
    assert_eq!(second.presences[0].kind, PresenceKind::DontHave);
    for peer in 3..6 {
        assert_eq!(
            ask(&mut engine, peer, root).blocks.len(),
            1,
            "root always served"
        );
    }
}

#[test]
fn bad_frames_and_garbage_disconnect_the_peer_and_are_counted() {
    let (_, _, blocks) = image(300_000, 4);
    let mut engine = Engine::new(blocks, ServerConfig::default());
    let now = Instant::now();
    for p in 1..=3 {
        engine.connect(now, PeerId(p), PeerKind::Swarm);
    }
    // An oversized length prefix: refused before anything is buffered.
    engine.handle_bytes(now, PeerId(1), &((MAX_FRAME as u32) + 1).to_be_bytes());
    // A well-framed message that is not a message.
    engine.handle_bytes(now, PeerId(2), &[0, 0, 0, 3, b'x', b'y', b'z']);
    // An empty frame.
    engine.handle_bytes(now, PeerId(3), &[0, 0, 0, 0]);
    let mut reasons = Vec::new();
    while let Some(e) = engine.poll_event() {
        if let EngineEvent::Disconnect { peer, reason } = e {
            reasons.push((peer, reason));
        }
    }
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(matches!(
        reasons[0],
        (
            PeerId(1),
            DisconnectReason::BadFrame(FrameError::TooLarge { .. })
        )
    ));
    assert!(matches!(
        reasons[1],
        (PeerId(2), DisconnectReason::Garbage(_))
    ));
    assert!(matches!(
        reasons[2],
        (PeerId(3), DisconnectReason::BadFrame(FrameError::Empty))
    ));
    assert_eq!(engine.stats().garbage_peers, 3);
    // Forgotten: further bytes from them are ignored, nothing is sent to them.
    engine.handle_bytes(now, PeerId(2), &[0, 0, 0, 1, 0]);
    assert!(engine.peek_transmit(PeerId(2), 1024).is_empty());
    assert_eq!(engine.stats().garbage_peers, 3);
}

#[test]
fn interrupted_fetch_into_blockstore_resumes_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, root, blocks) = image(3 << 20, 5);
    let total = blocks.blocks.len();
    // First run: fetch about half, then the process "dies" (engine dropped mid-fetch).
    {
        let store = Blockstore::open(dir.path()).expect("open");
        let engines_src = Engine::new(blocks.clone(), ServerConfig::default());
        let mut src = Some(engines_src);
        let mut dst = Engine::new(store, ServerConfig::default());
        let now = Instant::now();
        let src_e = src.as_mut().expect("src");
        dst.connect(now, PeerId(0), PeerKind::Provider);
        src_e.connect(now, PeerId(1), PeerKind::Swarm);
        dst.fetch(now, root, SessionConfig::default(), None)
            .expect("fetch");
        let mut stored = 0;
        'outer: for _ in 0..10_000 {
            let out = dst.peek_transmit(PeerId(0), 16 * 1024).to_vec();
            dst.advance_transmit(PeerId(0), out.len());
            src_e.handle_bytes(now, PeerId(1), &out);
            let back = src_e.peek_transmit(PeerId(1), 16 * 1024).to_vec();
            src_e.advance_transmit(PeerId(1), back.len());
            dst.handle_bytes(now, PeerId(0), &back);
            while let Some(e) = dst.poll_event() {
                if matches!(e, EngineEvent::BlockStored { .. }) {
                    stored += 1;
                    if stored >= total / 2 {
                        break 'outer;
                    }
                }
            }
        }
        assert!(stored >= total / 2);
    }
    // Second run: a fresh engine over the same directory, resuming.
    let store = Blockstore::open(dir.path()).expect("reopen");
    let held = Blockstore::open(dir.path()).expect("view");
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = Blockstore::open(src_dir.path()).expect("open");
    for (cid, bytes) in &blocks.blocks {
        src.put(cid, bytes).expect("put");
    }
    let mut net = Net::new(vec![
        Engine::new(src, ServerConfig::default()),
        Engine::new(store, ServerConfig::default()),
    ]);
    net.link(1, 0, PeerKind::Provider, PeerKind::Swarm);
    let now = net.now;
    net.nodes[1]
        .fetch(now, root, SessionConfig::default(), Some(Box::new(held)))
        .expect("fetch");
    net.run();
    assert!(net.completed(1));
    let p = net.nodes[1].progress();
    assert!(p.blocks_held as usize >= total / 2, "{p:?}");
    assert_eq!(p.blocks_held + p.blocks_fetched, total as u64, "{p:?}");
    assert_eq!(
        export_to_vec(net.nodes[1].store(), &root).expect("export"),
        data
    );
}
