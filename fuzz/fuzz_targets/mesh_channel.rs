//! Arbitrary bytes parsed as channel frames never panic, and what parses re-emits to the same
//! bytes; the same bytes fed (split into datagrams) to a `mesh::channel::Channels` mux, with
//! timers and transmits in between, never panic nor break its limits.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mesh::channel::frame::Frame;
use mesh::channel::{Channels, Config, Side};

fuzz_target!(|data: &[u8]| {
    if let Ok(frames) = Frame::parse_all(data) {
        let mut again = Vec::new();
        for f in &frames {
            f.emit(&mut again).expect("a parsed frame emits");
        }
        assert_eq!(again, data, "frames re-encode differently");
    }
    let cfg = Config {
        max_channels: 4,
        max_send_buffer: 8192,
        max_recv_buffer: 8192,
        ..Config::default()
    };
    let Ok(mut mux) = Channels::new(Side::Initiator, cfg) else {
        return;
    };
    let mut now = Instant::now();
    if let Ok(id) = mux.open("chain", true) {
        let _ = mux.send(id, &[1; 3000]);
    }
    // The first byte of each chunk is its length (so one input holds several datagrams).
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (d, tail) = tail.split_at(n);
        let _ = mux.handle_datagram(now, d);
        while mux.poll_event().is_some() {}
        now += Duration::from_millis(u64::from(n as u8 % 64));
        mux.handle_timeout(now);
        while let Some(out) = mux.poll_transmit(now) {
            assert!(out.len() <= mux.config().mtu);
        }
        assert!(mux.channel_count() <= 4);
        assert!(mux.buffered_bytes() <= 4 * 2 * 8192);
        rest = tail;
    }
});
