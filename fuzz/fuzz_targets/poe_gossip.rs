//! Arbitrary bytes as a gossip frame never panic the decoder (an accepted frame re-encodes to
//! the same bytes), and fed to a live `Gossip` engine from a known peer they never panic it; the
//! engine's queues stay within their configured bounds.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use poe::gossip::{Frame, Gossip, GossipConfig, PeerId};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert_eq!(out, data, "frame re-encodes differently");
    }
    let now = Instant::now();
    let Ok(mut g) = Gossip::new(GossipConfig::default(), PeerId::from_u64(1)) else {
        return;
    };
    let peer = PeerId::from_u64(2);
    g.add_peer(peer);
    let _ = g.subscribe("poe/blocks");
    g.handle_timeout(now);
    // The input cut into frames at 0xFF-prefixed lengths, so one run drives several.
    let mut rest = data;
    let mut t = now;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        rest = next;
        let _ = g.handle(t, peer, frame);
        t += Duration::from_millis(u64::from(len));
        g.handle_timeout(t);
        while g.poll_transmit().is_some() {}
        while g.poll_event().is_some() {}
    }
});
