//! A bounded record of the fair rate μ over time: "lowest / highest / mean μ between t and t'".
//!
//! Senders learn μ one feedback delay after the router stamps it, so the router has to judge a
//! flow's behaviour against the μ values it stamped during that delay, not against the current
//! one. The controller asks for the *minimum* (is a flow slower than anything we offered it, so
//! constrained elsewhere? — Charny's test), for the *mean* one RTT ago (what an honest sender is
//! pacing at now), and the policer for the *maximum* (the most we may have allowed it, so an
//! honest sender is never dropped right after μ falls).
//!
//! The history is a list of change points, pruned to `horizon` and to at most `max_points`
//! entries (if μ changed more often than that within the horizon, the oldest changes are
//! forgotten and windows reaching further back see the oldest value kept).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Piecewise-constant history of a rate.
#[derive(Debug, Clone)]
pub struct RateHistory {
    /// `(since, value)`, in time order; the last entry is the value in force now.
    points: VecDeque<(Instant, f64)>,
    horizon: Duration,
    max_points: usize,
    initial: f64,
}

impl RateHistory {
    /// A history whose value is `initial` until the first [`set`](Self::set), remembering
    /// changes for `horizon` and at most `max_points` of them (at least 2).
    pub fn new(initial: f64, horizon: Duration, max_points: usize) -> Self {
        Self {
            points: VecDeque::new(),
            horizon,
            max_points: max_points.max(2),
            initial,
        }
    }

    /// The value in force now.
    pub fn current(&self) -> f64 {
        self.points.back().map_or(self.initial, |p| p.1)
    }

    /// Sets the value from `now` on (times must not go backwards; an earlier `now` is treated
    /// as the last change's time). Values set at the same instant are all remembered by
    /// [`min_since`](Self::min_since) and [`max_since`](Self::max_since).
    pub fn set(&mut self, now: Instant, value: f64) {
        let now = match self.points.back() {
            Some(&(_, v)) if v == value => return,
            // Several values at one instant are all kept: each may have been stamped on a
            // packet, so each counts for the minimum and maximum (the last one is in force).
            Some(&(t, _)) => now.max(t),
            None => now,
        };
        self.points.push_back((now, value));
        // Keep the newest point at or before the cutoff: it is the value in force there.
        if let Some(cut) = now.checked_sub(self.horizon) {
            while self.points.get(1).is_some_and(|p| p.0 <= cut) {
                self.points.pop_front();
            }
        }
        while self.points.len() > self.max_points {
            self.points.pop_front();
        }
    }

    /// Folds `f` over every value in force at some time in `[since, now]`.
    fn fold(&self, since: Instant, f: impl Fn(f64, f64) -> f64) -> f64 {
        let mut acc = self.current();
        // The earliest change point seen so far (all at or after `since`).
        let mut earliest: Option<Instant> = None;
        for &(t, v) in self.points.iter().rev() {
            if t < since {
                // In force up to `earliest`: it counts unless a change happened exactly at
                // `since` (then it ended before the window).
                if earliest != Some(since) {
                    acc = f(acc, v);
                }
                break;
            }
            // Several points at one instant all count: each may have been stamped.
            acc = f(acc, v);
            earliest = Some(t);
        }
        acc
    }

    /// Lowest value in force at any time in `[since, now]`.
    pub fn min_since(&self, since: Instant) -> f64 {
        self.fold(since, f64::min)
    }

    /// Highest value in force at any time in `[since, now]`.
    pub fn max_since(&self, since: Instant) -> f64 {
        self.fold(since, f64::max)
    }

    /// Time-average of the value over `[from, to]` (the value at `from` if the interval is empty).
    pub fn mean_between(&self, from: Instant, to: Instant) -> f64 {
        if to <= from {
            return self.value_at(from);
        }
        let mut sum = 0.0;
        let mut end = to;
        for &(t, v) in self.points.iter().rev() {
            if t >= end {
                continue;
            }
            let start = t.max(from);
            sum += v * (end - start).as_secs_f64();
            end = start;
            if t <= from {
                break;
            }
        }
        if end > from {
            // Before the oldest point kept: its value (or the initial one) was in force.
            let v = self.points.front().map_or(self.initial, |p| p.1);
            sum += v * (end - from).as_secs_f64();
        }
        sum / (to - from).as_secs_f64()
    }

    /// The value in force at time `t`.
    pub fn value_at(&self, t: Instant) -> f64 {
        self.points
            .iter()
            .rev()
            .find(|p| p.0 <= t)
            .or(self.points.front())
            .map_or(self.initial, |p| p.1)
    }

    /// Number of change points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no value was ever set.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn min_max_mean_over_windows() {
        let t0 = Instant::now();
        let mut h = RateHistory::new(100.0, ms(1000), 1000);
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
        assert_eq!(h.value_at(t0 + ms(30)), 50.0);
        assert_eq!(h.value_at(t0 + ms(40)), 80.0);
        let m = h.mean_between(t0 + ms(10), t0 + ms(50));
        assert!(
            (m - (100.0 * 10.0 + 50.0 * 20.0 + 80.0 * 10.0) / 40.0).abs() < 1e-9,
            "{m}"
        );
        assert_eq!(h.mean_between(t0 + ms(41), t0 + ms(60)), 80.0);
    }

    #[test]
    fn bounded_by_horizon_and_count() {
        let t0 = Instant::now();
        let mut h = RateHistory::new(1.0, ms(100), 1000);
        for i in 0..10_000u32 {
            h.set(t0 + ms(u64::from(i)), f64::from(i % 7));
        }
        assert!(h.len() <= 102, "{} points", h.len());
        let now = t0 + ms(9_999);
        assert_eq!(h.max_since(now - ms(50)), 6.0);
        let mut h = RateHistory::new(1.0, ms(100_000), 64);
        for i in 0..10_000u32 {
            h.set(t0 + ms(u64::from(i)), f64::from(i % 7));
        }
        assert_eq!(h.len(), 64);
    }

    #[test]
    fn value_persists_between_changes() {
        let t0 = Instant::now();
        let mut h = RateHistory::new(10.0, ms(1000), 100);
        h.set(t0, 30.0);
        h.set(t0 + ms(500), 20.0);
        // 30 was in force until t0+500 ms.
        assert_eq!(h.max_since(t0 + ms(400)), 30.0);
        assert_eq!(h.min_since(t0 + ms(400)), 20.0);
        assert_eq!(h.min_since(t0 + ms(500)), 20.0);
        assert_eq!(h.mean_between(t0 + ms(400), t0 + ms(600)), 25.0);
    }

    #[test]
    fn values_set_at_one_instant_all_count() {
        let t0 = Instant::now();
        let mut h = RateHistory::new(99.0, ms(1000), 100);
        h.set(t0, 99.0);
        h.set(t0, 49.5);
        h.set(t0, 33.0);
        let now = t0 + ms(5);
        assert_eq!(h.current(), 33.0);
        assert_eq!(h.max_since(now - ms(10)), 99.0);
        assert_eq!(h.value_at(t0), 33.0);
        assert_eq!(h.mean_between(t0, now), 33.0);
        assert_eq!(h.max_since(t0), 99.0);
    }
}
