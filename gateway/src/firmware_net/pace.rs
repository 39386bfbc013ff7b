//! The upload cap of a firmware node (`firmware serve --max-upload`, `[firmware] max_upload`):
//! a token bucket over the bytes written into exchange channels, so a gateway on a thin uplink
//! (LTE, a shared DSL line) never spends more than its operator allows on serving firmware,
//! whatever the number of peers. Sans-IO: the caller passes `now`.

use std::time::Instant;

use mesh::bucket::TokenBucket;

/// The smallest burst: one write chunk of the node's flush loop.
pub const MIN_BURST: u64 = 64 * 1024;

/// A [`TokenBucket`] of bytes: `rate` bytes per second, holding at most `burst` (a tenth of a
/// second of `rate`, at least [`MIN_BURST`]); full at its first use.
#[derive(Debug, Clone)]
pub struct UploadCap {
    rate: u64,
    burst: u64,
    bucket: Option<TokenBucket>,
}

impl UploadCap {
    /// A cap of `bits_per_second` (at least 8, one byte per second).
    pub fn new(bits_per_second: u64) -> Self {
        let rate = (bits_per_second / 8).max(1);
        Self {
            rate,
            burst: (rate / 10).max(MIN_BURST),
            bucket: None,
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

    fn bucket(&mut self, now: Instant) -> &mut TokenBucket {
        let burst = self.burst;
        self.bucket
            .get_or_insert_with(|| TokenBucket::full(now, burst))
    }

    /// How many of `want` bytes may be written at `now` (possibly 0).
    pub fn available(&mut self, now: Instant, want: usize) -> usize {
        let (rate, burst) = (self.rate, self.burst);
        let n = self.bucket(now).available(now, rate, burst);
        usize::try_from(n).map_or(want, |n| n.min(want))
    }

    /// Records `n` bytes written.
    pub fn spend(&mut self, n: usize) {
        if let Some(b) = &mut self.bucket {
            b.take(n as u64);
        }
    }

    /// When at least `want` bytes (capped at the burst) will be available.
    pub fn ready_at(&mut self, now: Instant, want: usize) -> Instant {
        let (rate, burst) = (self.rate, self.burst);
        self.bucket(now).ready_at(now, want as u64, rate, burst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
