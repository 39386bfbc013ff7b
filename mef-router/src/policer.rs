//! Per-flow token-bucket policer: enforcement of the stamped rate.
//!
//! MEF goes beyond RCP and XCP by *enforcing* the allocation (MISSION §1): a sender that ignores
//! its stamped rate must not take other flows' shares. Each MEF flow gets a token bucket (the
//! classic single-rate policer of RFC 2697/2698 with one bucket) refilled at
//! `max(floor, rate·(1 + slack))` with depth `rate·(1 + slack)·burst + burst_packets·packet_bytes`.
//! A packet that finds too few tokens is dropped and counted against its flow.
//!
//! The rate the caller passes is the highest μ the router stamped during the flow's feedback
//! window ([`RateController::policing_rate_bps`](crate::RateController::policing_rate_bps)):
//! a sender only learns a new μ one feedback delay later, so an honest sender pacing at the old,
//! higher μ right after μ fell is still within its rate, and one pacing at the new μ right after
//! it rose finds the bucket already refilling faster. The floor keeps handshake and
//! acknowledgement-only flows alive however small μ gets; the burst covers a pacer's small bursts
//! and the clumping that jitter causes on the way to the router.
//!
//! Tokens count **wire bytes** (UDP payload + 28 bytes of IPv4/UDP), the unit routers allocate
//! and MEF senders pace (docs/PROTOCOL.md §4.2), so an honest sender at μ is at most at the
//! bucket rate whatever its packet size, and a cheater gets no more than `1 + slack` times μ.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::{ConfigError, check_range};
use crate::flow::FlowKey;

/// Parameters of a [`Policer`].
#[derive(Debug, Clone, PartialEq)]
pub struct PolicerConfig {
    /// Tolerance above the allowed rate. Default 0.05 (5 %).
    pub slack: f64,
    /// Bucket depth in time at the bucket rate. Default 10 ms.
    pub burst: Duration,
    /// Extra bucket depth in full-size packets. Default 8.
    pub burst_packets: u32,
    /// Size of a full packet for `burst_packets`, bytes. Default 1500.
    pub packet_bytes: usize,
    /// Smallest bucket rate, bits/s, so handshakes and acknowledgement-only flows are never
    /// starved. Default 200 kbit/s.
    pub floor_bps: u64,
    /// Buckets of flows silent this long are forgotten. Default 2 s.
    pub idle_expiry: Duration,
}

impl Default for PolicerConfig {
    fn default() -> Self {
        Self {
            slack: 0.05,
            burst: Duration::from_millis(10),
            burst_packets: 8,
            packet_bytes: 1500,
            floor_bps: 200_000,
            idle_expiry: Duration::from_secs(2),
        }
    }
}

impl PolicerConfig {
    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("slack", self.slack, 0.0, 10.0, "must be in [0, 10]")?;
        if self.packet_bytes == 0 {
            return Err(ConfigError::ZeroSize("packet_bytes"));
        }
        if self.idle_expiry.is_zero() {
            return Err(ConfigError::ZeroDuration("idle_expiry"));
        }
        Ok(())
    }
}

/// A policing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: forward.
    Conform,
    /// Above the rate: drop.
    Exceed,
}

/// Per-flow policing counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicerCounters {
    /// Packets that conformed.
    pub conformed: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
    counters: PolicerCounters,
}

/// Token buckets per flow (see the module docs).
#[derive(Debug, Clone)]
pub struct Policer {
    cfg: PolicerConfig,
    buckets: BTreeMap<FlowKey, Bucket>,
}

impl Policer {
    /// A policer. Fails if the configuration is out of range.
    pub fn new(cfg: PolicerConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            buckets: BTreeMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PolicerConfig {
        &self.cfg
    }

    /// The bucket rate (bits/s) for an allowed rate.
    pub fn bucket_rate_bps(&self, allowed_bps: f64) -> f64 {
        let r = if allowed_bps.is_finite() {
            allowed_bps.max(0.0)
        } else {
            f64::MAX / 16.0
        };
        (r * (1.0 + self.cfg.slack)).max(self.cfg.floor_bps as f64)
    }

    /// The bucket depth (bytes) at a bucket rate.
    pub fn depth_bytes(&self, bucket_rate_bps: f64) -> f64 {
        bucket_rate_bps / 8.0 * self.cfg.burst.as_secs_f64()
            + f64::from(self.cfg.burst_packets) * self.cfg.packet_bytes as f64
    }

    /// Polices a packet of `bytes` (wire bytes) from `key` arriving at `now`, for a flow allowed
    /// `allowed_bps`. A flow's first packet finds a full bucket.
    pub fn police(
        &mut self,
        now: Instant,
        key: FlowKey,
        bytes: usize,
        allowed_bps: f64,
    ) -> Verdict {
        let rate = self.bucket_rate_bps(allowed_bps);
        let depth = self.depth_bytes(rate);
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: depth,
            last: now,
            counters: PolicerCounters::default(),
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * rate / 8.0).min(depth);
        b.last = now;
        let need = bytes as f64;
        if b.tokens >= need {
            b.tokens -= need;
            b.counters.conformed += 1;
            Verdict::Conform
        } else {
            b.counters.dropped += 1;
            b.counters.dropped_bytes += bytes as u64;
            Verdict::Exceed
        }
    }

    /// A flow's counters.
    pub fn counters(&self, key: &FlowKey) -> Option<PolicerCounters> {
        self.buckets.get(key).map(|b| b.counters)
    }

    /// Forgets buckets idle longer than `idle_expiry`.
    pub fn expire(&mut self, now: Instant) {
        let keep = self.cfg.idle_expiry;
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) <= keep);
    }

    /// Number of buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn key() -> FlowKey {
        FlowKey::Mef {
            src: SocketAddr::from(([10, 0, 0, 1], 1)),
            dst: SocketAddr::from(([10, 0, 0, 2], 2)),
            conn_id: 7,
        }
    }

    /// Sends `secs` of `size`-byte packets paced at `send_bps`; returns (sent, dropped).
    fn pace(p: &mut Policer, t0: Instant, send_bps: f64, allowed: f64, secs: f64) -> (u64, u64) {
        let size = 1200usize;
        let gap = Duration::from_secs_f64(size as f64 * 8.0 / send_bps);
        let n = (secs / gap.as_secs_f64()) as u64;
        let mut dropped = 0;
        for i in 0..n {
            let t = t0 + gap * i as u32;
            if p.police(t, key(), size, allowed) == Verdict::Exceed {
                dropped += 1;
            }
        }
        (n, dropped)
    }

    #[test]
    fn honest_flow_at_the_rate_is_never_dropped() {
        let mut p = Policer::new(PolicerConfig::default()).expect("valid");
        let (n, d) = pace(&mut p, Instant::now(), 50e6, 50e6, 2.0);
        assert!(n > 10_000);
        assert_eq!(d, 0);
    }

    #[test]
    fn cheater_is_held_to_rate_plus_slack() {
        let mut p = Policer::new(PolicerConfig::default()).expect("valid");
        let (n, d) = pace(&mut p, Instant::now(), 100e6, 25e6, 2.0);
        let passed = (n - d) as f64 * 1200.0 * 8.0 / 2.0;
        // 25 Mbit/s · 1.05 plus the initial bucket.
        assert!(passed <= 25e6 * 1.05 * 1.02, "passed {passed}");
        assert!(passed >= 25e6 * 1.0, "passed {passed}");
        let c = p.counters(&key()).expect("bucket");
        assert_eq!(c.dropped, d);
    }

    #[test]
    fn floor_keeps_tiny_flows_alive() {
        let mut p = Policer::new(PolicerConfig::default()).expect("valid");
        // An ack-only flow: 100 kbit/s while μ is (absurdly) 1 kbit/s.
        let (_, d) = pace(&mut p, Instant::now(), 100e3, 1e3, 5.0);
        assert_eq!(d, 0);
    }

    #[test]
    fn idle_buckets_expire() {
        let mut p = Policer::new(PolicerConfig::default()).expect("valid");
        let t0 = Instant::now();
        p.police(t0, key(), 100, 1e6);
        assert_eq!(p.len(), 1);
        p.expire(t0 + Duration::from_secs(3));
        assert!(p.is_empty());
    }
}
