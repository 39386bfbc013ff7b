//! The upload cap of a firmware node (`firmware serve --max-upload`, `[firmware] max_upload`):
//! a token bucket over the bytes written into exchange channels, so a gateway on a thin uplink
//! (LTE, a shared DSL line) never spends more than its operator allows on serving firmware,
//! whatever the number of peers. Sans-IO: the caller passes `now`.

use std::time::{Duration, Instant};

/// The smallest burst: one write chunk of the node's flush loop.
pub const MIN_BURST: u64 = 64 * 1024;

/// A token bucket of bytes: `rate` bytes per second, holding at most `burst` (a tenth of a
/// second of `rate`, at least [`MIN_BURST`]).
#[derive(Debug, Clone)]
pub struct UploadCap {
    rate: u64,
    burst: u64,
    tokens: u64,
    at: Option<Instant>,
}

impl UploadCap {
    /// A cap of `bits_per_second` (at least 8, one byte per second), starting full.
    pub fn new(bits_per_second: u64) -> Self {
        let rate = (bits_per_second / 8).max(1);
        let burst = (rate / 10).max(MIN_BURST);
        Self {
            rate,
            burst,
            tokens: burst,
            at: None,
        }
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The bucket's size, bytes.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn refill(&mut self, now: Instant) {
        let Some(at) = self.at else {
            self.at = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(at);
        let new = (elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64;
        if new > 0 {
            self.tokens = self.tokens.saturating_add(new).min(self.burst);
            // Advance by the time the whole tokens took, keeping the remainder.
            let used = Duration::from_nanos(
                (u128::from(new) * 1_000_000_000 / u128::from(self.rate)) as u64,
            );
            self.at = Some(at + used);
        }
        if self.tokens == self.burst {
            self.at = Some(now);
        }
    }

    /// How many of `want` bytes may be written at `now` (possibly 0).
    pub fn available(&mut self, now: Instant, want: usize) -> usize {
        self.refill(now);
        usize::try_from(self.tokens).map_or(want, |t| t.min(want))
    }

    /// Records `n` bytes written.
    pub fn spend(&mut self, n: usize) {
        self.tokens = self.tokens.saturating_sub(n as u64);
    }

    /// When at least `want` bytes (capped at the burst) will be available.
    pub fn ready_at(&mut self, now: Instant, want: usize) -> Instant {
        self.refill(now);
        let want = (want as u64).min(self.burst);
        if self.tokens >= want {
            return now;
        }
        let missing = want - self.tokens;
        let wait = Duration::from_nanos(
            (u128::from(missing) * 1_000_000_000).div_ceil(u128::from(self.rate)) as u64,
        );
        now + wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_run_rate_is_the_cap() {
        // 8 Mbit/s = 1,000,000 bytes/s; burst 100,000.
        let mut cap = UploadCap::new(8_000_000);
        assert_eq!((cap.rate(), cap.burst()), (1_000_000, 100_000));
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut now = t0;
        // Writes of 1,500 bytes whenever allowed, for 10 simulated seconds in 1 ms steps.
        while now < t0 + Duration::from_secs(10) {
            while cap.available(now, 1_500) == 1_500 {
                cap.spend(1_500);
                sent += 1_500;
            }
            now += Duration::from_millis(1);
        }
        let expect = 10 * 1_000_000 + 100_000; // ten seconds of rate plus the first burst
        assert!(sent <= expect, "{sent} > {expect}");
        assert!(
            sent >= expect - 2 * 1_500,
            "{sent} bytes: the cap under-delivers"
        );
    }

    #[test]
    fn ready_at_is_when_the_bytes_are_there() {
        let mut cap = UploadCap::new(800_000); // 100,000 bytes/s, burst 65,536
        let t0 = Instant::now();
        let n = cap.available(t0, usize::MAX);
        assert_eq!(n, 65_536);
        cap.spend(n);
        assert_eq!(cap.available(t0, 1), 0);
        let at = cap.ready_at(t0, 10_000);
        assert_eq!(at - t0, Duration::from_millis(100));
        assert_eq!(cap.available(at, 10_000), 10_000);
        // Never more than the burst, however long idle.
        assert_eq!(
            cap.available(t0 + Duration::from_secs(3_600), usize::MAX),
            65_536
        );
    }
}
