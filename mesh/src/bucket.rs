//! A token bucket, sans-IO (the caller passes `now`): the relay's per-pair limits, the
//! acceptor's handshake rate limits, and the gateway's firmware upload cap use it.

use std::time::{Duration, Instant};

/// A token bucket counting in millionths of a token. Rate and burst are passed to each call,
/// so one configuration can serve many buckets without being stored in each.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    micro: u128,
    last: Instant,
}

impl TokenBucket {
    /// A bucket holding `burst` tokens at `now`.
    pub fn full(now: Instant, burst: u64) -> TokenBucket {
        TokenBucket {
            micro: u128::from(burst) * 1_000_000,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: u64, burst: u64) {
        let dt = now.saturating_duration_since(self.last).as_micros();
        self.last = self.last.max(now);
        let cap = u128::from(burst) * 1_000_000;
        self.micro = (self.micro + dt * u128::from(rate)).min(cap);
    }

    /// Whether `n` tokens are available (after refilling at `rate` per second, up to `burst`);
    /// does not take them.
    pub fn has(&mut self, now: Instant, n: u64, rate: u64, burst: u64) -> bool {
        self.refill(now, rate, burst);
        self.micro >= u128::from(n) * 1_000_000
    }

    /// Takes one token if there is one.
    pub fn take_one(&mut self, now: Instant, rate: u64, burst: u64) -> bool {
        let ok = self.has(now, 1, rate, burst);
        if ok {
            self.take(1);
        }
        ok
    }

    /// Takes `n` tokens (call after [`TokenBucket::has`] or [`TokenBucket::available`]).
    pub fn take(&mut self, n: u64) {
        self.micro = self.micro.saturating_sub(u128::from(n) * 1_000_000);
    }

    /// Whole tokens available now (after refilling).
    pub fn available(&mut self, now: Instant, rate: u64, burst: u64) -> u64 {
        self.refill(now, rate, burst);
        u64::try_from(self.micro / 1_000_000).unwrap_or(u64::MAX)
    }

    /// When `n` tokens (at most `burst`) will be available at `rate` per second.
    pub fn ready_at(&mut self, now: Instant, n: u64, rate: u64, burst: u64) -> Instant {
        self.refill(now, rate, burst);
        let want = u128::from(n.min(burst)) * 1_000_000;
        let missing = want.saturating_sub(self.micro);
        let micros = missing.div_ceil(u128::from(rate.max(1)));
        now + Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// How long since the bucket was last refilled or used.
    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last)
    }
}
