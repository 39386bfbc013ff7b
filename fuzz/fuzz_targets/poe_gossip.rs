//! Arbitrary bytes as a gossip frame never panic the decoder (an accepted frame re-encodes to
//! the same bytes), and fed to a live `Gossip` engine from two known peers they never panic it;
//! the engine's queues, pulls and IDONTWANT sets stay within their configured bounds. The first
//! byte picks the large-message mode (push, gossipsub v1.2 IDONTWANT, announce-first), with a
//! 16-byte threshold so fuzzed messages take the large-message paths.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use poe::gossip::{Frame, Gossip, GossipConfig, LargeMessageMode, PeerId};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert_eq!(out, data, "frame re-encodes differently");
    }
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let config = GossipConfig {
        large_message_mode: match mode % 3 {
            0 => LargeMessageMode::Push,
            1 => LargeMessageMode::IDontWant,
            _ => LargeMessageMode::AnnounceFirst,
        },
        large_message_threshold: 16,
        max_idontwant_ids: 64,
        max_pending_iwant: 64,
        ..GossipConfig::default()
    };
    let now = Instant::now();
    let Ok(mut g) = Gossip::new(config.clone(), PeerId::from_u64(1)) else {
        return;
    };
    let peers = [PeerId::from_u64(2), PeerId::from_u64(3)];
    for p in peers {
        g.add_peer(p);
    }
    let _ = g.subscribe("poe/blocks");
    g.handle_timeout(now);
    // The input cut into frames at length-byte prefixes, so one run drives several; the length
    // byte's low bit picks the sending peer.
    let mut rest = data;
    let mut t = now;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        rest = next;
        let _ = g.handle(t, peers[usize::from(len & 1)], frame);
        t += Duration::from_millis(u64::from(len) * 4);
        g.handle_timeout(t);
        let s = g.stats();
        assert!(s.pulls <= config.max_pending_iwant, "pulls unbounded");
        assert!(s.pending_iwant <= config.max_pending_iwant, "IWANT unbounded");
        assert!(s.queued_bytes <= 2 * config.max_queue_bytes, "queues unbounded");
        while g.poll_transmit().is_some() {}
        while g.poll_event().is_some() {}
    }
});
