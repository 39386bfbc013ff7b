//! The daemon's data plane ([`Router`]) in memory: two routers joined by a lossless "WAN",
//! packets in at one site's TUN, out at the other's. No root needed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mef_router::daemon::{Config, Output, Router};
use mef_router::tunnel::{PrivateKey, Tai64N};

fn config(key: &PrivateKey, peer: &PrivateKey, lan: &str, remote: &str, ep: &str) -> Config {
    let text = format!(
        r#"
listen = "0.0.0.0:51820"
private_key = "{}"
[lan]
prefixes = ["{lan}"]
[wan]
capacity = "10mbit"
[[peer]]
name = "other"
public_key = "{}"
endpoint = "{ep}"
prefixes = ["{remote}"]
"#,
        key.to_base64(),
        peer.public_key()
    );
    Config::parse(&text, "test.toml").expect("config")
}

fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20 + payload.len()];
    p[0] = 0x45;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..].copy_from_slice(payload);
    p
}

struct Pair {
    r: [Router; 2],
    addr: [SocketAddr; 2],
    now: Instant,
    delivered: [Vec<Vec<u8>>; 2],
}

impl Pair {
    fn new(wrong_key: bool) -> Self {
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let b_seen_by_a = if wrong_key {
            PrivateKey::generate()
        } else {
            kb.clone()
        };
        let ca = config(
            &ka,
            &b_seen_by_a,
            "10.1.0.0/24",
            "10.2.0.0/24",
            "192.0.2.2:51820",
        );
        let cb = config(&kb, &ka, "10.2.0.0/24", "10.1.0.0/24", "192.0.2.1:51820");
        let now = Instant::now();
        Self {
            r: [
                Router::new(&ca, ka, now, Tai64N::now()).expect("router a"),
                Router::new(&cb, kb, now, Tai64N::now()).expect("router b"),
            ],
            addr: [
                "192.0.2.1:51820".parse().expect("a"),
                "192.0.2.2:51820".parse().expect("b"),
            ],
            now,
            delivered: [Vec::new(), Vec::new()],
        }
    }

    /// Runs timers and the network until quiet, advancing time by `step` each round.
    fn settle(&mut self, rounds: usize, step: Duration) {
        for _ in 0..rounds {
            self.now += step;
            let mut pending: Vec<(usize, SocketAddr, Vec<u8>)> = Vec::new();
            for i in 0..2 {
                let mut out = Output::default();
                self.r[i].on_timers(self.now, &mut out);
                pending.extend(out.net.into_iter().map(|(_, b)| (1 - i, self.addr[i], b)));
            }
            while let Some((to, src, bytes)) = pending.pop() {
                let mut out = Output::default();
                self.r[to].on_udp(self.now, src, &bytes, &mut out);
                self.r[to].on_timers(self.now, &mut out);
                self.delivered[to].extend(out.tun);
                pending.extend(out.net.into_iter().map(|(_, b)| (1 - to, self.addr[to], b)));
            }
        }
    }
}

#[test]
fn packets_cross_between_sites_both_ways() {
    let mut p = Pair::new(false);
    let a_to_b = ipv4([10, 1, 0, 2], [10, 2, 0, 2], b"hello from site a");
    p.r[0].on_tun_packet(p.now, &a_to_b);
    p.settle(5, Duration::from_millis(10));
    assert_eq!(p.delivered[1], vec![a_to_b]);
    let b_to_a = ipv4([10, 2, 0, 2], [10, 1, 0, 2], b"reply");
    p.r[1].on_tun_packet(p.now, &b_to_a);
    p.settle(5, Duration::from_millis(10));
    assert_eq!(p.delivered[0], vec![b_to_a]);
    let m = p.r[0].render_metrics();
    assert!(
        m.contains("mef_router_tunnel_state{peer=\"other\",state=\"established\"} 1"),
        "{m}"
    );
    assert!(m.contains("mef_router_link_capacity_bps{link=\"wan\"} 10000000"));
    p.r[0].sample_rates(p.now);
    let s = p.r[0].render_status(p.now);
    assert!(s.contains("state established"), "{s}");
}

#[test]
fn bad_packets_are_counted_and_dropped() {
    let mut p = Pair::new(false);
    p.r[0].on_tun_packet(p.now, &[0x45, 0, 0]);
    p.r[0].on_tun_packet(p.now, &[0x60; 48]);
    p.r[0].on_tun_packet(p.now, &ipv4([10, 1, 0, 2], [8, 8, 8, 8], b"x"));
    let c = *p.r[0].counters();
    assert_eq!((c.tun_malformed, c.tun_not_ipv4, c.no_route), (1, 1, 1));
    let mut out = Output::default();
    p.r[1].on_udp(p.now, p.addr[0], &[4, 0, 0, 0, 1], &mut out);
    p.r[1].on_udp(p.now, p.addr[0], &[], &mut out);
    assert_eq!(p.r[1].counters().udp_rejected, 2);
    assert!(out.tun.is_empty() && out.net.is_empty());
    // A spoofed inner source from the peer (outside its prefixes) is dropped after decryption.
    let spoof = ipv4([10, 9, 0, 2], [10, 2, 0, 2], b"spoof");
    p.r[0].on_tun_packet(p.now, &spoof);
    p.settle(5, Duration::from_millis(10));
    assert!(p.delivered[1].is_empty());
    assert_eq!(p.r[1].counters().not_allowed, 1);
}

#[test]
fn wrong_peer_key_passes_nothing() {
    let mut p = Pair::new(true);
    for i in 0..10u8 {
        p.r[0].on_tun_packet(p.now, &ipv4([10, 1, 0, 2], [10, 2, 0, 2], &[i; 40]));
        p.settle(3, Duration::from_secs(2));
    }
    assert!(p.delivered[1].is_empty());
    assert!(p.r[1].tunnels().stats().bad_mac1 > 0);
}

#[test]
fn tunnelled_mef_packets_are_stamped_before_encryption() {
    use mef_transport::wire::{HEADER_LEN, Header, Packet, PacketType};
    let mut p = Pair::new(false);
    let hdr = Header {
        packet_type: PacketType::Data,
        flags: 0,
        hops: 0,
        conn_id: 7,
        packet_number: 1,
        demand_kbps: 500_000,
        current_rate_kbps: 0,
        stamp_kbps: 500_000,
        rtt_us: 0,
    };
    let mut udp_payload = vec![0u8; HEADER_LEN + 64];
    hdr.emit(&mut udp_payload);
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&4001u16.to_be_bytes());
    let ulen = (8 + udp_payload.len()) as u16;
    udp[4..6].copy_from_slice(&ulen.to_be_bytes());
    udp.extend_from_slice(&udp_payload);
    let mut pkt = ipv4([10, 1, 0, 2], [10, 2, 0, 2], &udp);
    pkt[9] = 17;
    p.r[0].on_tun_packet(p.now, &pkt);
    p.settle(5, Duration::from_millis(10));
    assert_eq!(p.delivered[1].len(), 1);
    let got = Packet::new_checked(&p.delivered[1][0][28..]).expect("still MEF");
    assert!(
        got.stamp_kbps() <= 10_000,
        "stamped at most the 10 Mbit/s WAN: {}",
        got.stamp_kbps()
    );
    assert_eq!(p.r[0].egress().qdisc().stats().stamped, 1);
}
