//! Shared harness of the split-bridge tests and the `bridge_throughput` example: two
//! [`SplitBridge`]s joined by an in-memory WAN (constant delay, seeded Bernoulli loss, optional
//! rate limit with a `MefQdisc` at its egress that stamps MEF headers), each with a smoltcp LAN
//! host, all on a virtual clock stepped 1 ms at a time (quinn-proto's `Pair::drive` style).
//! Included with `#[path]` by `bridge_memory.rs` and the example; also builds as an empty test.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mef_router::bridge::{BridgeConfig, BridgeEvent, Ipv4Prefix, PeerConfig, SplitBridge};
use mef_router::split::SplitConfig;
use mef_router::{MefQdisc, MefQdiscConfig};
use mef_transport::StaticKeypair;
use sha2::{Digest, Sha256};
use sim_netem::{Datagram, Enqueue, Qdisc};
use smoltcp::wire::Ipv4Address;

// ---------------------------------------------------------------------------------------------
// A smoltcp LAN host on an in-memory IP device.

#[path = "common/smol_host.rs"]
mod smol_host;
// Not every user of this world drives an `App`.
#[allow(unused_imports)]
pub(crate) use smol_host::{App, Host};

pub(crate) fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(crate) fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

// ---------------------------------------------------------------------------------------------
// The WAN: one direction of a link.

pub(crate) struct WanDir {
    pub(crate) delay: Duration,
    /// Loss probability in parts per million.
    pub(crate) loss_ppm: u32,
    pub(crate) rng: u64,
    /// `Some((rate bit/s, qdisc))`: serialise at the rate through the qdisc.
    pub(crate) shaper: Option<(u64, MefQdisc)>,
    pub(crate) free_at: Duration,
    pub(crate) next_id: u64,
    pub(crate) in_flight: VecDeque<(Duration, SocketAddr, SocketAddr, Vec<u8>)>,
    pub(crate) sent: u64,
    pub(crate) lost: u64,
}

impl WanDir {
    pub(crate) fn new(delay: Duration, loss_ppm: u32, seed: u64, rate: Option<u64>) -> Self {
        let shaper = rate.map(|r| {
            let bdp = (r as f64 * (2.0 * delay.as_secs_f64()) / 8.0) as usize;
            let q = MefQdisc::new(MefQdiscConfig::new(r, bdp.max(64 * 1024))).expect("qdisc");
            (r, q)
        });
        Self {
            delay,
            loss_ppm,
            rng: seed | 1,
            shaper,
            free_at: Duration::ZERO,
            next_id: 0,
            in_flight: VecDeque::new(),
            sent: 0,
            lost: 0,
        }
    }

    fn lose(&mut self) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1_000_000) < u64::from(self.loss_ppm)
    }

    fn emit(&mut self, at: Duration, src: SocketAddr, dst: SocketAddr, payload: Vec<u8>) {
        self.sent += 1;
        if self.lose() {
            self.lost += 1;
            return;
        }
        self.in_flight
            .push_back((at + self.delay, src, dst, payload));
    }

    pub(crate) fn send(
        &mut self,
        t0: Instant,
        t: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        p: Vec<u8>,
    ) {
        self.next_id += 1;
        match &mut self.shaper {
            None => self.emit(t, src, dst, p),
            Some((_, q)) => {
                let pkt = sim_netem::Packet {
                    dgram: Datagram {
                        src,
                        dst,
                        payload: p,
                    },
                    id: self.next_id,
                    enqueued_at: t0 + t,
                };
                match q.enqueue(t0 + t, pkt) {
                    Enqueue::Queued | Enqueue::Dropped(_) | Enqueue::QueuedWithDrops(_) => {}
                }
                self.serve(t0, t);
            }
        }
    }

    /// Puts queued packets on the wire up to time `t`.
    pub(crate) fn serve(&mut self, t0: Instant, t: Duration) {
        let step = Duration::from_millis(1);
        loop {
            let Some((rate, q)) = &mut self.shaper else {
                return;
            };
            let rate = *rate;
            let start = self.free_at.max(t.saturating_sub(step));
            if start > t {
                return;
            }
            let Some(p) = q.dequeue(t0 + t) else {
                return;
            };
            let ser = Duration::from_secs_f64(p.wire_len() as f64 * 8.0 / rate as f64);
            self.free_at = start + ser;
            let at = self.free_at;
            self.emit(at, p.dgram.src, p.dgram.dst, p.dgram.payload);
        }
    }

    pub(crate) fn due(&mut self, t: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        if self.in_flight.front().is_some_and(|p| p.0 <= t) {
            self.in_flight.pop_front().map(|(_, src, _, p)| (src, p))
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Two sites.

pub(crate) const A_WAN: &str = "198.51.100.1:7000";
pub(crate) const B_WAN: &str = "198.51.100.2:7000";
pub(crate) const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 1, 0, 2);
pub(crate) const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 2, 0, 7);

pub(crate) struct Site {
    pub(crate) bridge: SplitBridge,
    pub(crate) host: Host,
    pub(crate) wan: SocketAddr,
    pub(crate) events: Vec<BridgeEvent>,
}

pub(crate) struct World {
    pub(crate) t0: Instant,
    pub(crate) t: Duration,
    pub(crate) a: Site,
    pub(crate) b: Site,
    /// A → B and B → A.
    pub(crate) ab: WanDir,
    pub(crate) ba: WanDir,
}

pub(crate) struct Keys {
    pub(crate) a: [u8; 32],
    pub(crate) b: [u8; 32],
}

pub(crate) fn keypair(n: u8) -> StaticKeypair {
    StaticKeypair::from_secret([n; 32])
}

impl World {
    /// `rtt`: WAN round trip; `loss_ppm`: per direction; `rate`: WAN rate limit with a MefQdisc.
    /// `a_knows_b` / `b_knows_a`: the public keys each side configures for the other.
    pub(crate) fn new(
        rtt: Duration,
        loss_ppm: u32,
        rate: Option<u64>,
        a_knows_b: [u8; 32],
        b_knows_a: [u8; 32],
        tune: impl Fn(&mut BridgeConfig),
    ) -> Self {
        let t0 = Instant::now();
        let pfx = |s: &str| -> Ipv4Prefix { s.parse().expect("prefix") };
        let mk = |n: u8, peer_key, peer_wan: &str, peer_pfx: &str, own_pfx: &str| {
            let mut cfg = BridgeConfig {
                split: SplitConfig {
                    random_seed: u64::from(n) * 7919,
                    ..SplitConfig::default()
                },
                peers: vec![PeerConfig {
                    public_key: peer_key,
                    wan_addr: peer_wan.parse().expect("addr"),
                    prefixes: vec![pfx(peer_pfx)],
                }],
                local_prefixes: vec![pfx(own_pfx)],
                ..BridgeConfig::default()
            };
            cfg.transport.handshake_timeout = Duration::from_secs(3);
            tune(&mut cfg);
            SplitBridge::new(cfg, keypair(n), [n; 32], t0).expect("bridge")
        };
        let one_way = rtt / 2;
        Self {
            t0,
            t: Duration::ZERO,
            a: Site {
                bridge: mk(1, a_knows_b, B_WAN, "10.2.0.0/16", "10.1.0.0/16"),
                host: Host::new(CLIENT_IP, Ipv4Address::new(10, 1, 0, 1)),
                wan: A_WAN.parse().expect("addr"),
                events: Vec::new(),
            },
            b: Site {
                bridge: mk(2, b_knows_a, A_WAN, "10.1.0.0/16", "10.2.0.0/16"),
                host: Host::new(SERVER_IP, Ipv4Address::new(10, 2, 0, 1)),
                wan: B_WAN.parse().expect("addr"),
                events: Vec::new(),
            },
            ab: WanDir::new(one_way, loss_ppm, 0x1234_5678, rate),
            ba: WanDir::new(one_way, loss_ppm, 0x8765_4321, rate),
        }
    }

    /// The correct keys: each side knows the other's real public key.
    pub(crate) fn real_keys() -> Keys {
        Keys {
            a: keypair(1).public(),
            b: keypair(2).public(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.t0 + self.t
    }

    /// One millisecond of virtual time.
    pub(crate) fn step(&mut self) {
        self.t += Duration::from_millis(1);
        let (t0, t, now) = (self.t0, self.t, self.now());
        self.ab.serve(t0, t);
        self.ba.serve(t0, t);
        while let Some((from, p)) = self.ab.due(t) {
            self.b.bridge.handle_wan_datagram(now, from, &p);
        }
        while let Some((from, p)) = self.ba.due(t) {
            self.a.bridge.handle_wan_datagram(now, from, &p);
        }
        for (site, wan) in [(&mut self.a, &mut self.ab), (&mut self.b, &mut self.ba)] {
            if site.bridge.poll_timeout().is_some_and(|d| d <= now) {
                site.bridge.handle_timeout(now);
            }
            for _ in 0..8 {
                site.host.poll(t);
                let mut moved = false;
                while let Some(p) = site.host.dev.tx.pop_front() {
                    moved = true;
                    // Every LAN packet of these tests is TCP towards or from the far site.
                    let _ = site.bridge.handle_lan_packet(now, &p);
                }
                if site.bridge.poll_timeout().is_some_and(|d| d <= now) {
                    site.bridge.handle_timeout(now);
                }
                while let Some(p) = site.bridge.poll_wan_transmit(now) {
                    wan.send(t0, t, site.wan, p.0, p.1);
                }
                while let Some(p) = site.bridge.poll_lan_packet() {
                    moved = true;
                    site.host.dev.rx.push_back(p);
                }
                while let Some(e) = site.bridge.poll_event() {
                    site.events.push(e);
                }
                if !moved {
                    break;
                }
            }
        }
    }

    /// Steps until `done` or `limit` of virtual time; returns whether `done` held.
    pub(crate) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        while self.t < limit {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }
}
