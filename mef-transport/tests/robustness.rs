//! Arbitrary and mutated datagrams never panic an endpoint and are never delivered
//! (the stable-toolchain counterpart of `fuzz/fuzz_targets/endpoint_datagram.rs`).

mod util;

use std::time::Duration;

use mef_transport::Config;
use mef_transport::wire::{HEADER_LEN, Header, PacketType};
use proptest::prelude::*;
use util::{LinkConfig, Pair};

fn connected_pair() -> (Pair, mef_transport::ConnectionHandle) {
    let mut p = Pair::symmetric(30, Config::default(), LinkConfig::default());
    p.c2s.capture = true;
    let h = p.connect();
    assert!(p.drive_until(Duration::from_secs(1), |p| p.connected(h)));
    (p, h)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_datagrams(bytes in proptest::collection::vec(any::<u8>(), 0..1500), addressed: bool,
                         ty in 0u8..4) {
        let (mut p, _) = connected_pair();
        let mut d = bytes.clone();
        if addressed && d.len() >= HEADER_LEN {
            let sc = p.server_conn().expect("accepted");
            let cid = p.server.connection(sc).expect("conn").local_cid();
            let packet_type = match ty { 0 => PacketType::Initial, 1 => PacketType::Handshake, 2 => PacketType::Data, _ => PacketType::Reset };
            Header { packet_type, flags: d[0], hops: d[1], conn_id: cid, packet_number: u64::from(d[2]),
                     demand_kbps: 1, current_rate_kbps: 2, stamp_kbps: 3, rtt_us: 4 }.emit(&mut d);
        }
        let (sa, ca) = (p.server_addr, p.client_addr);
        p.server.handle_datagram(p.now, ca, &d);
        p.client.handle_datagram(p.now, sa, &d);
        p.drive_until(Duration::from_millis(100), |_| false);
        let sc = p.server_conn().expect("accepted");
        let st = p.server.connection(sc).expect("conn").stats();
        prop_assert_eq!(st.bytes_read, 0);
        prop_assert!(p.server.connection_count() <= 2);
    }

    #[test]
    fn bit_flips_of_real_packets_are_rejected(idx in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (mut p, h) = connected_pair();
        let c = p.client.connection_mut(h).expect("conn");
        let s = c.open_stream().expect("stream");
        c.write(s, b"payload").expect("write");
        // The packet is captured but never delivered, so its packet number is fresh.
        p.c2s.cfg.loss = 1.0;
        p.drive_until(Duration::from_millis(5), |_| false);
        let pkt = p.c2s.captured.iter().rev().find(|d| Header::decode(d).is_ok_and(|h| h.packet_type == PacketType::Data)).cloned().expect("a data packet");
        let sc = p.server_conn().expect("accepted");
        let before = p.server.connection(sc).expect("conn").stats();
        let mut bad = pkt.clone();
        let i = idx.index(bad.len());
        bad[i] ^= 1 << bit;
        p.server.handle_datagram(p.now, p.client_addr, &bad);
        let after = p.server.connection(sc).expect("conn").stats();
        // Routers may rewrite hops, stamp and the STAMPED flag: those bits are not authenticated.
        let router_mutable = i == 3 || (28..32).contains(&i) || (i == 2 && bit == 1);
        // Flipping the connection id or the type sends the packet elsewhere.
        let rerouted = i < 2 || (4..12).contains(&i);
        prop_assert_eq!(after.bytes_read, before.bytes_read);
        if !router_mutable && !rerouted {
            // Rejected by the AEAD (or, for a flipped packet number, possibly as a replay).
            prop_assert_eq!(after.decrypt_failures + after.replays_dropped,
                            before.decrypt_failures + before.replays_dropped + 1);
            prop_assert_eq!(after.packets_received, before.packets_received);
        }
        if router_mutable {
            prop_assert_eq!(after.packets_received, before.packets_received + 1);
        }
    }
}
