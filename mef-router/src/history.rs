//! A bounded record of the fair rate μ over time, answering "lowest / highest μ since t".
//!
//! Senders learn μ one feedback delay after the router stamps it, so the router has to judge a
//! flow's behaviour against the μ values it stamped during that delay, not against the current
//! one. The controller asks for the *minimum* (is a flow slower than anything we offered it, so
//! constrained elsewhere? — Charny's test), the policer for the *maximum* (the most we may have
//! allowed it, so an honest sender is never dropped right after μ falls).
//!
//! Values are kept in fixed-width time bins holding the minimum and maximum μ in force during
//! the bin, so memory and query cost are bounded by `horizon / bin` whatever the update rate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bin {
    start: Instant,
    min: f64,
    max: f64,
}

/// Piecewise-constant history of a rate, binned.
#[derive(Debug, Clone)]
pub struct RateHistory {
    bins: VecDeque<Bin>,
    bin: Duration,
    horizon: Duration,
    current: f64,
}

impl RateHistory {
    /// A history whose value is `initial` until the first [`set`](Self::set). Queries reach back
    /// at most `horizon`; resolution is `bin` (windows are widened to whole bins, which only makes
    /// both the minimum and the maximum more conservative).
    pub fn new(initial: f64, bin: Duration, horizon: Duration) -> Self {
        Self {
            bins: VecDeque::new(),
            bin: bin.max(Duration::from_micros(100)),
            horizon,
            current: initial,
        }
    }

    /// The value in force now.
    pub fn current(&self) -> f64 {
        self.current
    }

    /// Sets the value from `now` on.
    pub fn set(&mut self, now: Instant, value: f64) {
        let need_new = match self.bins.back() {
            None => true,
            Some(b) => now.saturating_duration_since(b.start) >= self.bin,
        };
        if need_new {
            // The old value was in force until `now`: it is recorded in the previous bin.
            self.bins.push_back(Bin {
                start: now,
                min: value,
                max: value,
            });
        } else if let Some(b) = self.bins.back_mut() {
            b.min = b.min.min(value);
            b.max = b.max.max(value);
        }
        self.current = value;
        self.prune(now);
    }

    /// Drops bins that ended before `now - horizon`.
    fn prune(&mut self, now: Instant) {
        // Bin i lasts until bin i+1 starts; drop bins that ended before now - horizon.
        let cutoff = now.checked_sub(self.horizon);
        while let (Some(cut), Some(second)) = (cutoff, self.bins.get(1)) {
            if second.start <= cut {
                self.bins.pop_front();
            } else {
                break;
            }
        }
    }

    /// Folds `f` over the bins overlapping `[since, now]`, starting from the current value.
    fn fold(&self, since: Instant, init: f64, f: impl Fn(f64, &Bin) -> f64) -> f64 {
        let mut acc = init;
        let mut end: Option<Instant> = None; // end of the bin being looked at (None = open)
        for b in self.bins.iter().rev() {
            if let Some(e) = end
                && e <= since
            {
                break;
            }
            acc = f(acc, b);
            end = Some(b.start);
        }
        acc
    }

    /// Lowest value in force at any time in `[since, now]`.
    pub fn min_since(&self, since: Instant) -> f64 {
        self.fold(since, self.current, |a, b| a.min(b.min))
    }

    /// Highest value in force at any time in `[since, now]`.
    pub fn max_since(&self, since: Instant) -> f64 {
        self.fold(since, self.current, |a, b| a.max(b.max))
    }

    /// Number of bins held (bounded by `horizon / bin + 2`).
    pub fn len(&self) -> usize {
        self.bins.len()
    }

    /// Whether no value was ever set.
    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn min_and_max_over_windows() {
        let t0 = Instant::now();
        let mut h = RateHistory::new(100.0, ms(5), ms(1000));
        h.set(t0, 100.0);
        h.set(t0 + ms(20), 50.0);
        h.set(t0 + ms(40), 80.0);
        let now = t0 + ms(60);
        assert_eq!(h.current(), 80.0);
        assert_eq!(h.min_since(now - ms(10)), 80.0);
        assert_eq!(h.max_since(now - ms(10)), 80.0);
        assert_eq!(h.min_since(now - ms(30)), 50.0);
        assert_eq!(h.max_since(now - ms(30)), 80.0);
        assert_eq!(h.max_since(t0), 100.0);
        assert_eq!(h.min_since(t0), 50.0);
    }

    #[test]
    fn bounded_by_horizon() {
        let t0 = Instant::now();
        let mut h = RateHistory::new(1.0, ms(5), ms(100));
        for i in 0..10_000u32 {
            h.set(t0 + ms(u64::from(i)), f64::from(i % 7));
        }
        assert!(h.len() <= 100 / 5 + 2, "{} bins", h.len());
        // The old extreme values are forgotten, recent ones kept.
        let now = t0 + ms(9_999);
        assert_eq!(h.max_since(now - ms(50)), 6.0);
    }

    #[test]
    fn value_persists_across_empty_bins() {
        let t0 = Instant::now();
        let mut h = RateHistory::new(10.0, ms(5), ms(1000));
        h.set(t0, 30.0);
        h.set(t0 + ms(500), 20.0);
        // 30 was in force until t0+500 ms.
        assert_eq!(h.max_since(t0 + ms(400)), 30.0);
        assert_eq!(h.min_since(t0 + ms(400)), 20.0);
    }
}
