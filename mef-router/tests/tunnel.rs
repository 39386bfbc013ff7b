//! Tunnel core tests: two [`TunnelSet`]s over an in-memory network on a virtual clock
//! (quinn-proto's `Pair` idea). Faults are injected by editing the datagrams in flight.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mef_router::tunnel::{
    PeerId, PrivateKey, Tai64N, TunnResult, Tunnel, TunnelConfig, TunnelError, TunnelSet,
    TunnelSetConfig, TunnelState,
};
use proptest::prelude::*;

const BUF: usize = 2048;

fn ip_packet(tag: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(20)];
    p[0] = 0x45;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 1, 0, 1]);
    p[16..20].copy_from_slice(&[10, 2, 0, 1]);
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = (tag as usize + i) as u8;
    }
    p
}

struct Side {
    set: TunnelSet,
    addr: SocketAddr,
    delivered: Vec<Vec<u8>>,
    errors: Vec<TunnelError>,
}

struct Net {
    sides: [Side; 2],
    now: Instant,
    in_flight: VecDeque<(usize, SocketAddr, Vec<u8>)>,
    /// Every datagram ever sent from side 0 to side 1 (for replay attacks).
    captured: Vec<Vec<u8>>,
    /// Drop everything in flight (a dead path).
    blackhole: bool,
}

impl Net {
    fn new(cfg: TunnelConfig) -> Self {
        Self::with_keys(cfg, None)
    }

    /// `wrong`: side 0 believes side 1's public key is this other key.
    fn with_keys(cfg: TunnelConfig, wrong: Option<PrivateKey>) -> Self {
        let now = Instant::now();
        let wall = Tai64N::now();
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let mut a = TunnelSet::new(ka.clone(), TunnelSetConfig::default());
        let mut b = TunnelSet::new(kb.clone(), TunnelSetConfig::default());
        let b_pub = wrong.map_or(kb.public_key(), |w| w.public_key());
        a.add_peer(b_pub, cfg.clone(), now, wall).expect("peer");
        b.add_peer(ka.public_key(), cfg, now, wall).expect("peer");
        let side = |set, addr: &str| Side {
            set,
            addr: addr.parse().expect("addr"),
            delivered: Vec::new(),
            errors: Vec::new(),
        };
        Self {
            sides: [side(a, "192.0.2.1:51820"), side(b, "192.0.2.2:51820")],
            now,
            in_flight: VecDeque::new(),
            captured: Vec::new(),
            blackhole: false,
        }
    }

    fn push(&mut self, from: usize, bytes: &[u8]) {
        if from == 0 {
            self.captured.push(bytes.to_vec());
        }
        let src = self.sides[from].addr;
        self.in_flight.push_back((1 - from, src, bytes.to_vec()));
    }

    fn drain(&mut self, side: usize, peer: PeerId) {
        let mut out = [0u8; BUF];
        loop {
            let now = self.now;
            let Some(t) = self.sides[side].set.peer_mut(peer) else {
                return;
            };
            match t.poll_transmit(now, &mut out) {
                TunnResult::WriteToNetwork(b) => {
                    let b = b.to_vec();
                    self.push(side, &b);
                }
                _ => return,
            }
        }
    }

    fn handle(&mut self, side: usize, r: TunnResult<'_>) {
        match r {
            TunnResult::WriteToNetwork(b) => {
                let b = b.to_vec();
                self.push(side, &b);
            }
            TunnResult::WriteToTunnel(p) => self.sides[side].delivered.push(p.to_vec()),
            TunnResult::Err(e) => self.sides[side].errors.push(e),
            TunnResult::Done => {}
        }
    }

    fn run(&mut self) {
        let mut out = [0u8; BUF];
        while let Some((to, src, bytes)) = self.in_flight.pop_front() {
            if self.blackhole {
                continue;
            }
            let now = self.now;
            let (peer, r) = self.sides[to].set.decapsulate(now, src, &bytes, &mut out);
            self.handle(to, r);
            if let Some(p) = peer {
                self.drain(to, p);
            }
        }
    }

    fn send(&mut self, side: usize, packet: &[u8]) {
        let mut out = [0u8; BUF];
        let now = self.now;
        let r = self.sides[side]
            .set
            .peer_mut(PeerId(0))
            .expect("peer")
            .encapsulate(now, packet, &mut out);
        self.handle(side, r);
        self.drain(side, PeerId(0));
        self.run();
    }

    fn tick(&mut self, dt: Duration) {
        self.now += dt;
        let mut out = [0u8; BUF];
        for side in 0..2 {
            for _ in 0..8 {
                let now = self.now;
                let r = self.sides[side]
                    .set
                    .peer_mut(PeerId(0))
                    .expect("peer")
                    .update_timers(now, &mut out);
                let done = matches!(r, TunnResult::Done | TunnResult::Err(_));
                self.handle(side, r);
                if done {
                    break;
                }
            }
            self.drain(side, PeerId(0));
        }
        self.run();
    }

    fn tunnel(&self, side: usize) -> &Tunnel {
        self.sides[side].set.peer(PeerId(0)).expect("peer")
    }
}

#[test]
fn handshake_and_data_both_ways() {
    let mut net = Net::new(TunnelConfig::default());
    let p = ip_packet(1, 100);
    net.send(0, &p);
    assert_eq!(
        net.sides[1].delivered,
        vec![p.clone()],
        "queued packet flushed"
    );
    assert_eq!(net.tunnel(0).state(), TunnelState::Established);
    // The responder confirmed the keypair on the first data packet and can send now.
    assert_eq!(net.tunnel(1).state(), TunnelState::Established);
    let q = ip_packet(2, 1400);
    net.send(1, &q);
    assert_eq!(net.sides[0].delivered, vec![q]);
    for i in 0..100 {
        net.send(0, &ip_packet(i, 60 + i as usize));
    }
    assert_eq!(net.sides[1].delivered.len(), 101);
    assert_eq!(
        net.sides[1].delivered[100],
        ip_packet(99, 159),
        "padding removed"
    );
    assert_eq!(net.tunnel(0).stats().handshakes_completed, 1);
    assert_eq!(net.tunnel(1).stats().handshakes_completed, 1);
    assert!(net.sides.iter().all(|s| s.errors.is_empty()));
    assert!(format!("{:?}", net.tunnel(0)).contains("Established"));
}

#[test]
fn point_to_point_tunnel_without_a_set() {
    let now = Instant::now();
    let wall = Tai64N::now();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let cfg = TunnelConfig::default();
    let mut a = Tunnel::new(ka.clone(), kb.public_key(), cfg.clone(), now, wall);
    let mut b = Tunnel::new(kb, ka.public_key(), cfg, now, wall);
    let (mut o1, mut o2) = ([0u8; BUF], [0u8; BUF]);
    let p = ip_packet(7, 200);
    let TunnResult::WriteToNetwork(init) = a.encapsulate(now, &p, &mut o1) else {
        panic!("expected initiation")
    };
    let TunnResult::WriteToNetwork(resp) = b.decapsulate(now, init, &mut o2) else {
        panic!("expected response")
    };
    let TunnResult::WriteToNetwork(data) = a.decapsulate(now, resp, &mut o1) else {
        panic!("expected data")
    };
    let TunnResult::WriteToTunnel(got) = b.decapsulate(now, data, &mut o2) else {
        panic!("expected packet")
    };
    assert_eq!(got, &p[..]);
}

#[test]
fn replayed_and_tampered_packets_are_rejected_and_counted() {
    let mut net = Net::new(TunnelConfig::default());
    net.send(0, &ip_packet(1, 100));
    net.send(0, &ip_packet(2, 100));
    let captured = net.captured.clone();
    let data: Vec<_> = captured.iter().filter(|d| d[0] == 4).cloned().collect();
    assert_eq!(data.len(), 2);
    // Replay both data messages.
    for d in &data {
        net.push(0, d);
    }
    net.run();
    assert_eq!(net.sides[1].delivered.len(), 2, "replays not delivered");
    assert_eq!(net.tunnel(1).stats().replays, 2);
    // Tamper: flip one ciphertext bit of a fresh packet.
    let mut out = [0u8; BUF];
    let now = net.now;
    let TunnResult::WriteToNetwork(fresh) = net.sides[0]
        .set
        .peer_mut(PeerId(0))
        .expect("peer")
        .encapsulate(now, &ip_packet(3, 100), &mut out)
    else {
        panic!("expected data")
    };
    let mut bad = fresh.to_vec();
    bad[40] ^= 1;
    net.push(0, &bad);
    net.run();
    assert_eq!(net.tunnel(1).stats().decrypt_failures, 1);
    // The genuine one still goes through afterwards (the window was not advanced by forgery).
    let good = fresh.to_vec();
    net.push(0, &good);
    net.run();
    assert_eq!(net.sides[1].delivered.len(), 3);
    // A replayed initiation is rejected by its timestamp.
    let init = captured
        .iter()
        .find(|d| d[0] == 1)
        .expect("initiation")
        .clone();
    net.push(0, &init);
    net.run();
    assert!(net.sides[1].errors.contains(&TunnelError::StaleTimestamp));
    assert_eq!(net.sides[1].delivered.len(), 3);
}

#[test]
fn wrong_peer_key_passes_no_traffic() {
    let mut net = Net::with_keys(TunnelConfig::default(), Some(PrivateKey::generate()));
    for i in 0..5 {
        net.send(0, &ip_packet(i, 100));
        net.tick(Duration::from_secs(6));
    }
    assert!(net.sides[1].delivered.is_empty());
    assert!(net.sides[1].set.stats().bad_mac1 >= 1);
    assert_eq!(net.tunnel(0).state(), TunnelState::Handshaking);
    // After REKEY_ATTEMPT_TIME it gives up and drops the queue.
    for _ in 0..20 {
        net.tick(Duration::from_secs(6));
    }
    assert!(
        net.sides[0]
            .errors
            .contains(&TunnelError::ConnectionExpired)
    );
    assert_eq!(net.tunnel(0).queued(), 0);
}

#[test]
fn rekey_after_time_keeps_traffic_flowing() {
    let mut net = Net::new(TunnelConfig::default());
    let mut sent = 0;
    // Ten minutes of traffic both ways, one packet per second each way.
    for s in 0..600u32 {
        net.send(0, &ip_packet(s, 80));
        net.send(1, &ip_packet(s, 90));
        sent += 1;
        net.tick(Duration::from_secs(1));
    }
    assert_eq!(net.sides[1].delivered.len(), sent, "A->B");
    assert_eq!(net.sides[0].delivered.len(), sent, "B->A");
    let hs =
        net.tunnel(0).stats().handshakes_completed + net.tunnel(1).stats().handshakes_completed;
    assert!(hs >= 6, "rekeyed every ~2 minutes, got {hs}");
    assert_eq!(net.tunnel(1).stats().replays, 0);
    assert_eq!(net.tunnel(1).stats().decrypt_failures, 0);
}

#[test]
fn dead_path_triggers_new_handshake_and_recovers() {
    let mut net = Net::new(TunnelConfig::default());
    net.send(0, &ip_packet(0, 100));
    net.tick(Duration::from_secs(1));
    net.blackhole = true;
    net.send(0, &ip_packet(1, 100));
    let before = net.tunnel(0).stats().initiations_sent;
    net.tick(Duration::from_secs(16));
    assert!(
        net.tunnel(0).stats().initiations_sent > before,
        "KEEPALIVE+REKEY_TIMEOUT rule"
    );
    net.blackhole = false;
    net.tick(Duration::from_secs(6));
    net.send(0, &ip_packet(2, 100));
    assert_eq!(net.sides[1].delivered.last(), Some(&ip_packet(2, 100)));
}

#[test]
fn flood_of_bogus_initiations_does_not_stop_the_real_peer() {
    let mut net = Net::new(TunnelConfig::default());
    let b_pub = net.sides[1].set.public_key();
    let mut out = [0u8; BUF];
    let now = net.now;
    let mut rng_bytes = 0x1234_5678_u64;
    let mut rnd = || {
        rng_bytes ^= rng_bytes << 13;
        rng_bytes ^= rng_bytes >> 7;
        rng_bytes ^= rng_bytes << 17;
        rng_bytes
    };
    // 500 random initiation-shaped datagrams and 500 valid initiations from unknown keys, from
    // spoofed sources: the responder is now under load.
    for i in 0..1000u32 {
        let src: SocketAddr = format!("198.51.100.{}:{}", i % 250, 1000 + i)
            .parse()
            .expect("a");
        let bytes = if i % 2 == 0 {
            let mut b: Vec<u8> = (0..148).map(|_| rnd() as u8).collect();
            b[..4].copy_from_slice(&[1, 0, 0, 0]);
            b
        } else {
            let mut t = Tunnel::new(
                PrivateKey::generate(),
                b_pub,
                TunnelConfig::default(),
                now,
                Tai64N::now(),
            );
            match t.encapsulate(now, &ip_packet(0, 40), &mut out) {
                TunnResult::WriteToNetwork(b) => b.to_vec(),
                other => panic!("{other:?}"),
            }
        };
        let _ = net.sides[1].set.decapsulate(now, src, &bytes, &mut out);
    }
    let st = *net.sides[1].set.stats();
    assert_eq!(st.bad_mac1, 500, "random bytes stop at MAC1");
    assert!(
        st.cookie_replies_sent > 300,
        "under load, unknown initiators get cookies: {st:?}"
    );
    // The real peer: first try gets a cookie reply, the retry carries MAC2 and completes.
    net.send(0, &ip_packet(9, 100));
    assert_eq!(net.tunnel(0).stats().cookies_received, 1);
    assert!(net.sides[1].delivered.is_empty());
    net.tick(Duration::from_secs(6));
    assert_eq!(net.tunnel(0).state(), TunnelState::Established);
    assert_eq!(net.sides[1].delivered, vec![ip_packet(9, 100)]);
}

#[test]
fn malformed_plaintext_and_garbage_are_counted_not_fatal() {
    let mut net = Net::new(TunnelConfig::default());
    net.send(0, &ip_packet(1, 100));
    // A non-IP payload inside a valid session.
    net.send(0, &[0x99; 30]);
    assert_eq!(net.tunnel(1).stats().invalid_packets, 1);
    let mut out = [0u8; BUF];
    let now = net.now;
    let src = net.sides[0].addr;
    for bad in [&[][..], &[4, 0, 0, 0, 1, 1, 0, 0][..], &[7; 3][..]] {
        let (_, r) = net.sides[1].set.decapsulate(now, src, bad, &mut out);
        assert!(matches!(r, TunnResult::Err(_)));
    }
    assert_eq!(net.sides[1].set.stats().malformed, 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Arbitrary bytes never panic, whatever the session state, and never deliver anything.
    #[test]
    fn decapsulate_never_panics(datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20)) {
        let mut net = Net::new(TunnelConfig::default());
        net.send(0, &ip_packet(1, 50));
        let before = net.sides[1].delivered.len();
        for mut d in datagrams {
            if let Some(first) = d.first_mut() { *first %= 5; }
            if d.len() > 4 { d[1..4].fill(0); }
            net.push(0, &d);
            net.run();
        }
        prop_assert_eq!(net.sides[1].delivered.len(), before);
    }
}

#[test]
fn previous_keypair_still_decrypts_packets_in_flight_across_a_rekey() {
    let mut net = Net::new(TunnelConfig::default());
    net.send(0, &ip_packet(0, 100));
    net.tick(Duration::from_secs(1));
    // A packet encrypted under the first keypair, held back (delayed in the network).
    let mut out = [0u8; BUF];
    let now = net.now;
    let TunnResult::WriteToNetwork(late) = net.sides[0]
        .set
        .peer_mut(PeerId(0))
        .expect("peer")
        .encapsulate(now, &ip_packet(1, 100), &mut out)
    else {
        panic!("expected data")
    };
    let late = late.to_vec();
    // Past REKEY_AFTER_TIME the initiator rekeys on its next send.
    net.tick(Duration::from_secs(121));
    net.send(0, &ip_packet(2, 100));
    net.tick(Duration::from_millis(10));
    assert_eq!(net.tunnel(0).stats().handshakes_completed, 2);
    net.push(0, &late);
    net.run();
    assert!(
        net.sides[1].delivered.contains(&ip_packet(1, 100)),
        "late packet delivered"
    );
    assert_eq!(net.tunnel(1).stats().decrypt_failures, 0);
}
