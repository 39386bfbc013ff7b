//! A memory-bounded log-linear histogram of durations (queueing delay, one-way delay).

use std::time::Duration;

/// Bits of sub-bucket resolution per power of two: 2^7 = 128 sub-buckets per octave.
const SUB_BITS: u32 = 7;
/// Sub-buckets per octave; values below this are recorded exactly (1 ns buckets).
const SUB: u64 = 1 << SUB_BITS;

/// A histogram of durations with nanosecond input and bounded relative error.
///
/// Values below 128 ns are kept exactly; above that every power of two is split into 128
/// equal buckets, so a reported quantile is within 0.4 % (half a bucket) of a recorded value.
/// Memory grows with the largest value seen, never with the number of samples: at most 7,424
/// counters (58 KiB) for any `u64` nanosecond value, about 3,000 for values below one second.
/// `count`, `min`, `max` and `mean` are exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelayHistogram {
    buckets: Vec<u64>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

/// Bucket index of a nanosecond value.
fn index(v: u64) -> usize {
    if v < SUB {
        v as usize
    } else {
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        (SUB + u64::from(shift) * SUB + ((v >> shift) - SUB)) as usize
    }
}

/// Lowest value and width of bucket `i`.
fn bucket_bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        (i, 1)
    } else {
        let k = i - SUB;
        let shift = k / SUB;
        let sub = k % SUB;
        ((SUB + sub) << shift, 1 << shift)
    }
}

impl DelayHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one sample given in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        let i = index(ns);
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] += 1;
        if self.count == 0 || ns < self.min_ns {
            self.min_ns = ns;
        }
        self.max_ns = self.max_ns.max(ns);
        self.count += 1;
        self.sum_ns += u128::from(ns);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Smallest sample (exact), `None` if empty.
    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.min_ns))
    }

    /// Largest sample (exact), `None` if empty.
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.max_ns))
    }

    /// Arithmetic mean (exact up to nanosecond rounding), `None` if empty.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| {
            let ns = self.sum_ns / u128::from(self.count);
            Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
        })
    }

    /// The `q`-quantile (`q` in `[0, 1]`, clamped): the smallest recorded bucket whose
    /// cumulative count reaches `ceil(q·count)`, reported at the bucket's midpoint and clamped
    /// to the exact min and max. `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket_bounds(i);
                let mid = low + (width - 1) / 2;
                return Some(Duration::from_nanos(mid.clamp(self.min_ns, self.max_ns)));
            }
        }
        self.max()
    }

    /// The median, see [`quantile`](Self::quantile).
    pub fn p50(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    /// The 99th percentile, see [`quantile`](Self::quantile).
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    /// Adds every sample of `other` to this histogram.
    pub fn merge(&mut self, other: &DelayHistogram) {
        if other.count == 0 {
            return;
        }
        if other.buckets.len() > self.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.min_ns = if self.count == 0 {
            other.min_ns
        } else {
            self.min_ns.min(other.min_ns)
        };
        self.max_ns = self.max_ns.max(other.max_ns);
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_contiguous_and_bounds_invert_it() {
        let mut last = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let i = index(v);
            assert!(i == last || i == last + 1 || v > 100_000, "gap at {v}");
            last = i;
            let (low, width) = bucket_bounds(i);
            assert!(
                low <= v && v - low < width,
                "v={v} i={i} low={low} width={width}"
            );
        }
        assert_eq!(index(u64::MAX), 7423);
    }

    #[test]
    fn quantiles_within_half_percent() {
        let mut h = DelayHistogram::new();
        for v in 1..=100_000u64 {
            h.record_ns(v * 1000);
        }
        for (q, want) in [
            (0.5, 50_000_000.0),
            (0.99, 99_000_000.0),
            (0.01, 1_000_000.0),
        ] {
            let got = h.quantile(q).map(|d| d.as_nanos() as f64).unwrap_or(0.0);
            assert!(
                (got - want).abs() / want < 0.005,
                "q={q} got={got} want={want}"
            );
        }
        assert_eq!(h.max(), Some(Duration::from_millis(100)));
        assert_eq!(h.min(), Some(Duration::from_micros(1)));
        assert_eq!(h.mean(), Some(Duration::from_nanos(50_000_500)));
        assert_eq!(h.count(), 100_000);
    }

    #[test]
    fn empty_and_merge() {
        let mut a = DelayHistogram::new();
        assert_eq!(a.p50(), None);
        let mut b = DelayHistogram::new();
        b.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!(a.p99(), Some(Duration::from_millis(3)));
        a.clear();
        assert!(a.is_empty());
    }
}
