//! A deterministic in-memory network for two endpoints (quinn-proto's `tests/util.rs` `Pair`
//! idea): a virtual clock, seeded loss, jitter (reordering), duplication, corruption, an optional
//! bottleneck rate with a drop-tail queue, and an optional "router" that stamps MEF headers.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mef_transport::wire::Packet;
use mef_transport::{
    Config, ConnectionHandle, Endpoint, Event, ReadError, StaticKeypair, StreamId,
};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// One direction of the simulated path.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Propagation delay.
    pub delay: Duration,
    /// Extra uniform random delay in [0, jitter] (reorders packets).
    pub jitter: Duration,
    /// Bottleneck rate in bit/s (`None` = infinite).
    pub rate_bps: Option<u64>,
    /// Drop-tail queue limit in bytes at the bottleneck.
    pub queue_bytes: usize,
    /// Random loss probability.
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub dup: f64,
    /// Probability one random byte of the packet is flipped.
    pub corrupt: f64,
    /// A MEF router on the path stamps this rate (kbit/s).
    pub stamp_kbps: Option<u32>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            rate_bps: None,
            queue_bytes: usize::MAX,
            loss: 0.0,
            dup: 0.0,
            corrupt: 0.0,
            stamp_kbps: None,
        }
    }
}

/// Link counters.
#[derive(Debug, Default, Clone)]
pub struct LinkStats {
    pub sent: u64,
    pub lost: u64,
    pub dropped_queue: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub closing_flag_seen: u64,
    pub max_queue_bytes: usize,
}

pub struct Link {
    pub cfg: LinkConfig,
    in_flight: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    busy_until: Option<Instant>,
    seq: u64,
    pub stats: LinkStats,
    /// Departures still queued at the bottleneck: (departure time, bytes).
    backlog: std::collections::VecDeque<(Instant, usize)>,
    pub captured: Vec<Vec<u8>>,
    pub capture: bool,
}

impl Link {
    fn new(cfg: LinkConfig) -> Self {
        Self {
            cfg,
            in_flight: BinaryHeap::new(),
            busy_until: None,
            seq: 0,
            stats: LinkStats::default(),
            backlog: Default::default(),
            captured: Vec::new(),
            capture: false,
        }
    }

    fn send(&mut self, now: Instant, mut payload: Vec<u8>, rng: &mut ChaCha20Rng) {
        self.stats.sent += 1;
        if let Ok(p) = Packet::new_checked(&payload[..])
            && p.flags() & mef_transport::wire::header::flags::CLOSING != 0
        {
            self.stats.closing_flag_seen += 1;
        }
        if self.capture {
            self.captured.push(payload.clone());
        }
        if self.cfg.loss > 0.0 && rng.random_bool(self.cfg.loss) {
            self.stats.lost += 1;
            return;
        }
        if let Some(k) = self.cfg.stamp_kbps
            && let Ok(mut p) = Packet::new_checked(&mut payload[..])
        {
            p.stamp(k);
        }
        let mut depart = now;
        if let Some(rate) = self.cfg.rate_bps {
            while self.backlog.front().is_some_and(|(t, _)| *t <= now) {
                self.backlog.pop_front();
            }
            let queued: usize = self.backlog.iter().map(|(_, b)| *b).sum();
            let wire = payload.len() + 28;
            if queued + wire > self.cfg.queue_bytes {
                self.stats.dropped_queue += 1;
                return;
            }
            self.stats.max_queue_bytes = self.stats.max_queue_bytes.max(queued + wire);
            let start = self.busy_until.map_or(now, |b| b.max(now));
            depart = start + Duration::from_nanos((wire as u64 * 8 * 1_000_000_000) / rate);
            self.busy_until = Some(depart);
            self.backlog.push_back((depart, wire));
        }
        if self.cfg.corrupt > 0.0 && rng.random_bool(self.cfg.corrupt) {
            let i = rng.random_range(0..payload.len());
            payload[i] ^= 1 << rng.random_range(0..8u32);
            self.stats.corrupted += 1;
        }
        let copies = if self.cfg.dup > 0.0 && rng.random_bool(self.cfg.dup) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.cfg.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(rng.random_range(0..self.cfg.jitter.as_nanos() as u64))
            };
            let at = depart + self.cfg.delay + jitter;
            self.seq += 1;
            self.in_flight
                .push(Reverse((at, self.seq, payload.clone())));
        }
    }

    /// Injects a datagram to arrive at `at` (for replay tests).
    pub fn inject(&mut self, at: Instant, payload: Vec<u8>) {
        self.seq += 1;
        self.in_flight.push(Reverse((at, self.seq, payload)));
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((t, _, _))| *t)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_arrival()? <= now {
            self.in_flight.pop().map(|Reverse((_, _, p))| p)
        } else {
            None
        }
    }
}

pub struct Pair {
    pub client: Endpoint,
    pub server: Endpoint,
    pub client_addr: SocketAddr,
    pub server_addr: SocketAddr,
    pub c2s: Link,
    pub s2c: Link,
    pub now: Instant,
    pub start: Instant,
    pub rng: ChaCha20Rng,
    pub client_events: Vec<Event>,
    pub server_events: Vec<Event>,
}

pub fn seed32(seed: u64) -> [u8; 32] {
    let mut r = ChaCha20Rng::seed_from_u64(seed);
    let mut s = [0u8; 32];
    r.fill_bytes(&mut s);
    s
}

impl Pair {
    pub fn new(
        seed: u64,
        client_cfg: Config,
        server_cfg: Config,
        c2s: LinkConfig,
        s2c: LinkConfig,
    ) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ck = StaticKeypair::generate(&mut rng);
        let sk = StaticKeypair::generate(&mut rng);
        let client = Endpoint::new(client_cfg, ck, seed32(seed ^ 1));
        let server = Endpoint::new(server_cfg, sk, seed32(seed ^ 2));
        let start = Instant::now();
        Self {
            client,
            server,
            client_addr: "10.0.0.1:4000".parse().expect("addr"),
            server_addr: "10.0.0.2:5000".parse().expect("addr"),
            c2s: Link::new(c2s),
            s2c: Link::new(s2c),
            now: start,
            start,
            rng,
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    pub fn symmetric(seed: u64, cfg: Config, link: LinkConfig) -> Self {
        Self::new(seed, cfg.clone(), cfg, link.clone(), link)
    }

    pub fn connect(&mut self) -> ConnectionHandle {
        let pk = self.server.public_key();
        self.client
            .connect(self.now, self.server_addr, pk)
            .expect("connect")
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit(self.now) {
            assert_eq!(t.dst, self.server_addr);
            self.c2s.send(self.now, t.payload, &mut self.rng);
        }
        while let Some(t) = self.server.poll_transmit(self.now) {
            assert_eq!(t.dst, self.client_addr);
            self.s2c.send(self.now, t.payload, &mut self.rng);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
    }

    /// Advances to the next event; `false` if nothing will ever happen again or `limit` passed.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.flush();
        let next = [
            self.client.poll_timeout(),
            self.server.poll_timeout(),
            self.c2s.next_arrival(),
            self.s2c.next_arrival(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        if next > limit {
            self.now = limit;
            return false;
        }
        self.now = self.now.max(next);
        while let Some(p) = self.c2s.pop_due(self.now) {
            self.server.handle_datagram(self.now, self.client_addr, &p);
        }
        while let Some(p) = self.s2c.pop_due(self.now) {
            self.client.handle_datagram(self.now, self.server_addr, &p);
        }
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
        self.flush();
        true
    }

    /// Steps until `done` holds or `max` simulated time passes; returns whether `done` held.
    pub fn drive_until(&mut self, max: Duration, mut done: impl FnMut(&mut Pair) -> bool) -> bool {
        let limit = self.now + max;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                return done(self);
            }
        }
    }

    pub fn server_conn(&self) -> Option<ConnectionHandle> {
        self.server_events.iter().find_map(|e| match e {
            Event::Accepted(h) => Some(*h),
            _ => None,
        })
    }

    pub fn nth_server_conn(&self, n: usize) -> Option<ConnectionHandle> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                Event::Accepted(h) => Some(*h),
                _ => None,
            })
            .nth(n)
    }

    pub fn connected(&self, h: ConnectionHandle) -> bool {
        self.client_events.contains(&Event::Connected(h))
    }
}

/// Deterministic pseudo-random test data.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut r = ChaCha20Rng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    r.fill_bytes(&mut v);
    v
}

pub fn sha(d: &[u8]) -> [u8; 32] {
    Sha256::digest(d).into()
}

/// Drives a one-way bulk transfer from the client to the server on one stream and returns
/// (SHA-256 of the received bytes, bytes received, time when the server read FIN).
pub struct Transfer {
    pub client: ConnectionHandle,
    pub stream: Option<StreamId>,
    pub sent: usize,
    pub finished: bool,
    pub received: Vec<u8>,
    pub server_stream: Option<StreamId>,
    pub fin_at: Option<Instant>,
    pub first_byte_at: Option<Instant>,
    pub acked_at: Option<Instant>,
    /// Which accepted server connection (in accept order) is the peer.
    pub server_index: usize,
    pub server_conn: Option<ConnectionHandle>,
    buf: Vec<u8>,
    events_seen: usize,
    is_connected: bool,
}

impl Transfer {
    pub fn new(client: ConnectionHandle) -> Self {
        Self {
            client,
            stream: None,
            sent: 0,
            finished: false,
            received: Vec::new(),
            server_stream: None,
            fin_at: None,
            first_byte_at: None,
            acked_at: None,
            server_index: 0,
            server_conn: None,
            buf: vec![0u8; 65536],
            events_seen: 0,
            is_connected: false,
        }
    }

    pub fn with_index(client: ConnectionHandle, server_index: usize) -> Self {
        Self {
            server_index,
            ..Self::new(client)
        }
    }

    /// One round of application work: write what fits, read what arrived.
    pub fn pump(&mut self, pair: &mut Pair, payload: &[u8]) {
        let now = pair.now;
        if !self.is_connected {
            self.is_connected = pair.connected(self.client);
        }
        if self.is_connected
            && let Some(c) = pair.client.connection_mut(self.client)
        {
            if self.stream.is_none() {
                self.stream = c.open_stream();
            }
            if let Some(s) = self.stream {
                while self.sent < payload.len() {
                    match c.write(s, &payload[self.sent..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => self.sent += n,
                    }
                }
                if self.sent == payload.len() && !self.finished {
                    self.finished = c.finish(s).is_ok();
                }
                if self.acked_at.is_none() && self.finished && c.stream_send_complete(s) {
                    self.acked_at = Some(now);
                }
            }
        }
        if self.server_conn.is_none() {
            self.server_conn = pair.nth_server_conn(self.server_index);
        }
        if let Some(h) = self.server_conn {
            if self.server_stream.is_none() {
                self.server_stream =
                    pair.server_events[self.events_seen..]
                        .iter()
                        .find_map(|e| match e {
                            Event::StreamOpened { conn, stream } if *conn == h => Some(*stream),
                            _ => None,
                        });
                if self.server_stream.is_none() {
                    self.events_seen = pair.server_events.len();
                }
            }
            if let (Some(s), Some(c)) = (self.server_stream, pair.server.connection_mut(h)) {
                let buf = &mut self.buf;
                loop {
                    match c.read(s, buf) {
                        Ok(Some(n)) => {
                            if self.first_byte_at.is_none() {
                                self.first_byte_at = Some(now);
                            }
                            self.received.extend_from_slice(&buf[..n]);
                        }
                        Ok(None) => {
                            if self.fin_at.is_none() {
                                self.fin_at = Some(now);
                            }
                            break;
                        }
                        Err(ReadError::Blocked) | Err(_) => break,
                    }
                }
            }
        }
    }

    /// Runs until the server read FIN and the client saw everything acknowledged.
    pub fn run(&mut self, pair: &mut Pair, payload: &[u8], max: Duration) -> bool {
        pair.drive_until(max, |p| {
            self.pump(p, payload);
            self.fin_at.is_some() && self.acked_at.is_some()
        })
    }
}
