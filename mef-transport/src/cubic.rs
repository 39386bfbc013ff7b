//! The fallback congestion controller: CUBIC (RFC 9438), used only when no MEF router stamps the
//! path.
//!
//! Why CUBIC: on a plain shared path MEF has no in-network rate to follow and must compete with
//! ordinary TCP and QUIC flows, nearly all of which run CUBIC (the Linux, Windows and quinn
//! default). Running the standard algorithm keeps MEF exactly TCP-friendly there (RFC 9438 §4.3
//! Reno-friendly region) instead of inventing a new end-to-end controller. HyStart++ is not
//! implemented; slow start is plain RFC 5681 doubling.
//!
//! Units: windows are in bytes; the cubic function works in segments of `mss` bytes as the RFC
//! writes it, and results are converted back.

use std::time::{Duration, Instant};

/// CUBIC constant C (RFC 9438 §5.1: 0.4).
const C: f64 = 0.4;
/// Multiplicative decrease factor β_cubic (RFC 9438 §4.6: 0.7).
const BETA: f64 = 0.7;

/// CUBIC state (RFC 9438 §4).
#[derive(Debug, Clone)]
pub struct Cubic {
    mss: u64,
    cwnd: u64,
    ssthresh: u64,
    /// W_max in segments (RFC 9438 §4.1).
    w_max: f64,
    /// K in seconds (§4.2, eq. 2).
    k: f64,
    /// Window at the start of the current congestion-avoidance epoch, segments.
    cwnd_epoch: f64,
    /// Reno-friendly estimate W_est, segments (§4.3).
    w_est: f64,
    /// cwnd when ssthresh was last set, segments (for α_cubic switching, §4.3).
    cwnd_prior: f64,
    epoch_start: Option<Instant>,
    recovery_start: Option<Instant>,
}

impl Cubic {
    /// Starts in slow start with `initial_packets` segments of `mss` bytes.
    pub fn new(mss: u64, initial_packets: u64) -> Self {
        Self {
            mss,
            cwnd: mss * initial_packets.max(2),
            ssthresh: u64::MAX,
            w_max: 0.0,
            k: 0.0,
            cwnd_epoch: 0.0,
            w_est: 0.0,
            cwnd_prior: 0.0,
            epoch_start: None,
            recovery_start: None,
        }
    }

    /// Congestion window, bytes.
    pub fn window(&self) -> u64 {
        self.cwnd
    }

    /// `true` while in slow start.
    pub fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// Sets the window, e.g. to rate·RTT when falling back from router-given rates.
    pub fn set_window(&mut self, bytes: u64) {
        self.cwnd = bytes.max(2 * self.mss);
        self.ssthresh = self.cwnd;
        self.epoch_start = None;
    }

    fn segs(&self, bytes: u64) -> f64 {
        bytes as f64 / self.mss as f64
    }

    /// Bytes acknowledged (RFC 9438 §4.2–§4.5). `sent` is when the acknowledged packet was sent;
    /// `app_limited` suppresses growth when the window was not the limit (RFC 7661 spirit).
    pub fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        srtt: Duration,
        app_limited: bool,
    ) {
        if self.recovery_start.is_some_and(|r| sent <= r) || app_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            // Slow start (RFC 5681 §3.1).
            self.cwnd += bytes;
            return;
        }
        let epoch = *self.epoch_start.get_or_insert_with(|| {
            // New congestion-avoidance epoch (§4.2).
            let cwnd = self.cwnd as f64 / self.mss as f64;
            self.cwnd_epoch = cwnd;
            if self.w_max <= cwnd {
                self.k = 0.0;
                self.w_max = cwnd;
            } else {
                self.k = ((self.w_max - cwnd) / C).cbrt();
            }
            self.w_est = cwnd;
            now
        });
        let cwnd_segs = self.segs(self.cwnd);
        let t = now.saturating_duration_since(epoch).as_secs_f64();
        let rtt = srtt.as_secs_f64();
        // W_cubic(t + RTT) (§4.2, eq. 1), the target one RTT ahead.
        let w_cubic = C * (t + rtt - self.k).powi(3) + self.w_max;
        // Reno-friendly estimate (§4.3): α_cubic = 3(1−β)/(1+β), then 1 once W_est ≥ cwnd_prior.
        let alpha = if self.w_est >= self.cwnd_prior {
            1.0
        } else {
            3.0 * (1.0 - BETA) / (1.0 + BETA)
        };
        self.w_est += alpha * self.segs(bytes) / cwnd_segs;
        let target = if w_cubic < self.w_est {
            // Reno-friendly region (§4.3).
            self.w_est
        } else {
            // Concave/convex regions (§4.4, §4.5): target clamped to [cwnd, 1.5·cwnd].
            w_cubic.clamp(cwnd_segs, 1.5 * cwnd_segs)
        };
        if target > cwnd_segs {
            let inc = (target - cwnd_segs) / cwnd_segs * self.segs(bytes);
            self.cwnd += (inc * self.mss as f64) as u64;
        }
    }

    /// A loss detected for a packet sent at `sent` (RFC 9438 §4.6, fast convergence §4.7).
    /// One reduction per recovery period (RFC 9002 §7.3.2).
    pub fn on_congestion_event(&mut self, now: Instant, sent: Instant) {
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        self.recovery_start = Some(now);
        let cwnd = self.segs(self.cwnd);
        // Fast convergence (§4.7).
        self.w_max = if cwnd < self.w_max {
            cwnd * (1.0 + BETA) / 2.0
        } else {
            cwnd
        };
        self.cwnd_prior = cwnd;
        let new = ((cwnd * BETA) * self.mss as f64) as u64;
        self.ssthresh = new.max(2 * self.mss);
        self.cwnd = self.ssthresh;
        self.epoch_start = None;
    }

    /// Persistent congestion (RFC 9002 §7.6.2): collapse to the minimum window.
    pub fn on_persistent_congestion(&mut self) {
        self.cwnd = 2 * self.mss;
        self.epoch_start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_then_reduction_then_regrowth() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut c = Cubic::new(1000, 10);
        assert_eq!(c.window(), 10_000);
        c.on_ack(t0, t0, 10_000, rtt, false);
        assert_eq!(c.window(), 20_000);
        c.on_congestion_event(t0 + rtt, t0);
        assert_eq!(c.window(), 14_000);
        // A second loss from the same flight does not reduce again.
        c.on_congestion_event(t0 + rtt, t0);
        assert_eq!(c.window(), 14_000);
        // Growth resumes for packets sent after recovery started, and approaches W_max = 20.
        let mut now = t0 + rtt * 2;
        for _ in 0..50 {
            c.on_ack(now, now, 14_000, rtt, false);
            now += rtt;
        }
        assert!(
            c.window() > 20_000,
            "cubic regrows past W_max: {}",
            c.window()
        );
        // Application-limited ACKs do not grow the window.
        let w = c.window();
        c.on_ack(now, now, 10_000, rtt, true);
        assert_eq!(c.window(), w);
    }
}
