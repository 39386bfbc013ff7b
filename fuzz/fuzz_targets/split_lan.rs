//! Arbitrary bytes as LAN packets (read from the TUN device) fed to the TCP splitter never panic,
//! and every packet the splitter answers with is a well-formed IPv4/TCP packet. The input is cut
//! into packets at 0xFF-prefixed length bytes so one run can drive a connection through several
//! states (SYN, data, FIN, RST for the same pair).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mef_router::split::{SplitConfig, TcpSplitter};
use smoltcp::wire::{Ipv4Packet, TcpPacket};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let config = SplitConfig {
        max_connections: 4,
        ..SplitConfig::default()
    };
    let Ok(mut s) = TcpSplitter::new(config, t0) else {
        return;
    };
    let mut rest = data;
    let mut now = t0;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (packet, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(len % 8));
        let _ = s.handle_ip_packet(now, packet);
        s.handle_timeout(now);
        while let Some(out) = s.poll_ip_packet() {
            let ip = Ipv4Packet::new_checked(&out[..]).expect("splitter emits valid IPv4");
            assert!(ip.verify_checksum(), "IPv4 checksum");
            TcpPacket::new_checked(ip.payload()).expect("splitter emits valid TCP");
        }
        while s.poll_event().is_some() {}
    }
});
