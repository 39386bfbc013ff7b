//! Built-in measurement endpoints: a constant-bit-rate [`ProbeSender`] and a [`ProbeSink`]
//! recording what arrives (count, one-way delay, duplicates, reordering, arrival times).
//!
//! Probe payload: `seq: u64 LE | sent_ns: u64 LE | check: u64 LE | zero padding`, where
//! `sent_ns` is nanoseconds since the simulation epoch and `check` a hash of the two fields and
//! the length; the sink rejects (and counts as corrupted) a payload whose check or padding is
//! wrong, so single-bit corruption is always detected.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::endpoint::{Datagram, Endpoint, IP_UDP_OVERHEAD};
use crate::histogram::DelayHistogram;
use crate::link::MTU;

/// Bytes of the probe header (the smallest probe payload).
pub const PROBE_HEADER_LEN: usize = 24;
/// Largest sequence number the sink accepts (bounds its duplicate-detection bitmap).
const MAX_SEQ: u64 = 1 << 32;

/// What a [`ProbeSender`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Destination address (the sink's).
    pub dst: SocketAddr,
    /// UDP payload length (raised to [`PROBE_HEADER_LEN`] if smaller).
    pub payload_len: usize,
    /// Sending rate in wire bits per second (payload + 28 header bytes); 0 sends nothing.
    pub rate_bps: u64,
    /// Number of packets to send; `None` sends forever.
    pub count: Option<u64>,
    /// Virtual time (since the epoch) of the first packet; if the sender is attached later it
    /// starts when attached.
    pub start: Duration,
}

impl ProbeConfig {
    /// MTU-sized packets (1472-byte payload) to `dst` at `rate_bps`, forever, from time zero.
    pub fn new(dst: SocketAddr, rate_bps: u64) -> Self {
        Self {
            dst,
            payload_len: MTU - IP_UDP_OVERHEAD,
            rate_bps,
            count: None,
            start: Duration::ZERO,
        }
    }

    /// Sets the payload length.
    pub fn with_payload_len(mut self, len: usize) -> Self {
        self.payload_len = len;
        self
    }

    /// Sets the number of packets.
    pub fn with_count(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }

    /// Sets the start time.
    pub fn with_start(mut self, start: Duration) -> Self {
        self.start = start;
        self
    }

    /// Wire length of each packet.
    pub fn wire_len(&self) -> usize {
        self.payload_len.max(PROBE_HEADER_LEN) + IP_UDP_OVERHEAD
    }
}

fn check(seq: u64, sent_ns: u64, len: usize) -> u64 {
    let mut x =
        seq ^ sent_ns.rotate_left(29) ^ (len as u64).rotate_left(58) ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A constant-bit-rate sender of numbered, timestamped packets.
///
/// Packets leave exactly every `wire_len·8/rate` seconds (fractional nanoseconds carried, so
/// the long-run rate is exact). Its source address is left unspecified and filled in by the
/// simulator with the bound address.
#[derive(Debug, Clone)]
pub struct ProbeSender {
    cfg: ProbeConfig,
    epoch: Instant,
    next_ns: u64,
    rem: u128,
    sent: u64,
    received: u64,
}

impl ProbeSender {
    /// A sender whose timestamps count from `epoch` (use [`Sim::epoch`](crate::Sim::epoch)).
    pub fn new(epoch: Instant, cfg: ProbeConfig) -> Self {
        let next_ns = u64::try_from(cfg.start.as_nanos()).unwrap_or(u64::MAX);
        Self {
            cfg,
            epoch,
            next_ns,
            rem: 0,
            sent: 0,
            received: 0,
        }
    }

    /// Packets sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Wire bytes sent so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent * self.cfg.wire_len() as u64
    }

    /// Datagrams received (a sender ignores them, but counts them).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// True when `count` packets have been sent (never for an endless probe).
    pub fn is_done(&self) -> bool {
        self.cfg.rate_bps == 0 || self.cfg.count.is_some_and(|c| self.sent >= c)
    }

    /// The configuration.
    pub fn config(&self) -> &ProbeConfig {
        &self.cfg
    }

    fn since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Endpoint for ProbeSender {
    fn handle_datagram(&mut self, _now: Instant, _dgram: Datagram) {
        self.received += 1;
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let now_ns = self.since_epoch(now);
        if self.is_done() || now_ns < self.next_ns {
            return None;
        }
        // Never catch up with a burst if polled late (the simulator polls on time).
        self.next_ns = now_ns;
        let len = self.cfg.payload_len.max(PROBE_HEADER_LEN);
        let mut payload = vec![0u8; len];
        payload[..8].copy_from_slice(&self.sent.to_le_bytes());
        payload[8..16].copy_from_slice(&now_ns.to_le_bytes());
        payload[16..24].copy_from_slice(&check(self.sent, now_ns, len).to_le_bytes());
        self.sent += 1;
        let rate = u128::from(self.cfg.rate_bps);
        let num = self.cfg.wire_len() as u128 * 8 * 1_000_000_000 + self.rem;
        self.next_ns = self
            .next_ns
            .saturating_add(u64::try_from(num / rate).unwrap_or(u64::MAX));
        self.rem = num % rate;
        Some(Datagram {
            src: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            dst: self.cfg.dst,
            payload,
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.is_done() {
            None
        } else {
            Some(self.epoch + Duration::from_nanos(self.next_ns))
        }
    }
}

/// One packet received by a [`ProbeSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRecord {
    /// Sequence number.
    pub seq: u64,
    /// Send time since the epoch.
    pub sent: Duration,
    /// Arrival time since the epoch.
    pub received: Duration,
}

impl ProbeRecord {
    /// One-way delay.
    pub fn delay(&self) -> Duration {
        self.received.saturating_sub(self.sent)
    }
}

/// Receives probe packets and records what arrived.
#[derive(Debug, Clone)]
pub struct ProbeSink {
    epoch: Instant,
    keep_records: bool,
    received: u64,
    duplicates: u64,
    reordered: u64,
    corrupted: u64,
    bytes: u64,
    wire_bytes: u64,
    first: Option<(Instant, u64)>,
    last_arrival: Option<Instant>,
    max_seq: Option<u64>,
    seen: Vec<u64>,
    delay: DelayHistogram,
    records: Vec<ProbeRecord>,
}

impl ProbeSink {
    /// A sink whose delays count from `epoch` (the sender's) that keeps every
    /// [`ProbeRecord`].
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            keep_records: true,
            received: 0,
            duplicates: 0,
            reordered: 0,
            corrupted: 0,
            bytes: 0,
            wire_bytes: 0,
            first: None,
            last_arrival: None,
            max_seq: None,
            seen: Vec::new(),
            delay: DelayHistogram::new(),
            records: Vec::new(),
        }
    }

    /// A sink that keeps only summaries (no per-packet records), for long runs.
    pub fn summary_only(epoch: Instant) -> Self {
        Self {
            keep_records: false,
            ..Self::new(epoch)
        }
    }

    /// Distinct valid packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Extra copies of already received packets.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets that arrived after a higher sequence number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Datagrams rejected as not a valid probe (corrupted, truncated).
    pub fn corrupted(&self) -> u64 {
        self.corrupted
    }

    /// Payload bytes of distinct packets.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Wire bytes (payload + 28) of distinct packets.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// Arrival of the first valid packet.
    pub fn first_arrival(&self) -> Option<Instant> {
        self.first.map(|(t, _)| t)
    }

    /// Arrival of the last valid packet.
    pub fn last_arrival(&self) -> Option<Instant> {
        self.last_arrival
    }

    /// Highest sequence number received.
    pub fn max_seq(&self) -> Option<u64> {
        self.max_seq
    }

    /// One-way delays of distinct packets.
    pub fn delays(&self) -> &DelayHistogram {
        &self.delay
    }

    /// Every distinct packet in arrival order (empty for [`summary_only`](Self::summary_only)).
    pub fn records(&self) -> &[ProbeRecord] {
        &self.records
    }

    /// Received wire rate in bits per second between the first and last arrival (the first
    /// packet's bytes excluded, since its arrival opens the window). `None` with < 2 packets.
    pub fn throughput_bps(&self) -> Option<f64> {
        let (t0, first_len) = self.first?;
        let span = self.last_arrival?.saturating_duration_since(t0);
        if self.received < 2 || span.is_zero() {
            return None;
        }
        Some((self.wire_bytes - first_len) as f64 * 8.0 / span.as_secs_f64())
    }

    fn parse(payload: &[u8]) -> Option<(u64, u64)> {
        let seq = read_u64(payload, 0)?;
        let sent = read_u64(payload, 8)?;
        let ok = read_u64(payload, 16)? == check(seq, sent, payload.len())
            && payload[PROBE_HEADER_LEN..].iter().all(|&b| b == 0)
            && seq < MAX_SEQ;
        ok.then_some((seq, sent))
    }
}

impl Endpoint for ProbeSink {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        let Some((seq, sent_ns)) = Self::parse(&dgram.payload) else {
            self.corrupted += 1;
            return;
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        if self.max_seq.is_some_and(|m| seq < m) {
            self.reordered += 1;
        }
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        self.received += 1;
        self.bytes += dgram.payload.len() as u64;
        self.wire_bytes += dgram.wire_len() as u64;
        if self.first.is_none() {
            self.first = Some((now, dgram.wire_len() as u64));
        }
        self.last_arrival = Some(now);
        let recv = now.saturating_duration_since(self.epoch);
        let sent = Duration::from_nanos(sent_ns);
        self.delay.record(recv.saturating_sub(sent));
        if self.keep_records {
            self.records.push(ProbeRecord {
                seq,
                sent,
                received: recv,
            });
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
