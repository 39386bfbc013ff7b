//! Rate control: follow the rate MEF routers allocate, or fall back to CUBIC.
//!
//! The explicit mode is the point of MEF. Routers next to each bottleneck compute a fair share
//! per flow and lower the `stamp` field of passing packets to it, as in RCP (Dukkipati &
//! McKeown, "Processor Sharing Flows in the Internet", 2005) and the explicit-rate ABR service
//! whose max-min computation Charny described ("An algorithm for rate allocation in a
//! packet-switching network with feedback", 1994: sources advertise their current rate, switches
//! compute the max-min share). The receiver echoes the stamp back in ACK frames, and the sender:
//!
//! * paces at exactly `min(echo, demand)`; no slow start, no probing;
//! * does **not** lower its rate on loss (seed 003: with the share fixed by the network, loss is
//!   not a congestion signal; lost frames are simply retransmitted);
//! * caps bytes in flight at `inflight_cap_rtts × rate × srtt` (at least
//!   `inflight_cap_min_packets` packets) so a stale rate cannot flood the path if feedback stops.
//!
//! When no router is on the path (echoes arrive without the STAMPED flag) the sender runs CUBIC
//! ([`crate::cubic`]) and paces at 1.25·cwnd/srtt (2·cwnd/srtt in slow start, as Linux does).
//!
//! [`RateMode::Fixed`] ignores all of this; it exists only for tests and the benchmark's
//! cheater ([`crate::Config::ignore_rate`]).

use std::time::{Duration, Instant};

use crate::cubic::Cubic;

/// Lowest rate a sender paces at even if a router stamps less (16 kbit/s), so a flow can
/// always get its acknowledgements and a new stamp through.
pub const MIN_RATE_BPS: u64 = 16_000;
/// Unstamped echoes in a row after which an explicit-mode sender concludes the routers are gone.
const UNSTAMPED_TO_FALLBACK: u32 = 8;

/// Which controller sets the sending rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RateMode {
    /// A MEF router stamps the path: pace at `min(echo, demand)`.
    Explicit,
    /// No router stamps: CUBIC (RFC 9438). Every connection starts here until a stamp arrives.
    #[default]
    Fallback,
    /// Test/benchmark only: a fixed rate, ignoring stamps ([`crate::Config::ignore_rate`]).
    Fixed,
}

impl core::fmt::Display for RateMode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Explicit => "explicit",
            Self::Fallback => "fallback-cubic",
            Self::Fixed => "fixed",
        })
    }
}

/// A token-bucket pacer (bytes, refilled at the pacing rate, burst bounded).
#[derive(Debug, Clone)]
struct Pacer {
    tokens: f64,
    last: Option<Instant>,
}

impl Pacer {
    fn refill(&mut self, now: Instant, rate_bps: u64, capacity: f64) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate_bps as f64 / 8.0).min(capacity);
        } else {
            self.tokens = capacity;
        }
        self.last = Some(now);
    }

    /// `None` if `size` bytes may go now, else when they may.
    fn delay(&mut self, now: Instant, rate_bps: u64, size: u64, capacity: f64) -> Option<Instant> {
        self.refill(now, rate_bps, capacity);
        let need = size as f64 - self.tokens;
        if need <= 0.0 {
            return None;
        }
        let secs = need * 8.0 / rate_bps.max(1) as f64;
        // Round up to the next nanosecond so the timer never fires a hair early.
        Some(now + Duration::from_nanos((secs * 1e9).ceil() as u64 + 1))
    }

    fn on_sent(&mut self, size: u64) {
        self.tokens -= size as f64;
    }
}

/// The sender's rate state.
#[derive(Debug, Clone)]
pub struct RateController {
    mode: RateMode,
    mss: u64,
    demand_bps: u64,
    explicit_bps: u64,
    fixed_bps: u64,
    cap_rtts: f64,
    cap_min_packets: u64,
    burst: Duration,
    unstamped_echoes: u32,
    cubic: Cubic,
    pacer: Pacer,
}

/// Rate-control parameters taken from [`crate::Config`].
#[derive(Debug, Clone, Copy)]
pub struct RateParams {
    /// Full packet size, bytes.
    pub mss: u64,
    /// Configured demand, bit/s (`u64::MAX` = unlimited).
    pub demand_bps: u64,
    /// `Some(rate)` for [`RateMode::Fixed`].
    pub fixed_bps: Option<u64>,
    /// In-flight cap multiple of rate·srtt.
    pub cap_rtts: f64,
    /// In-flight cap floor, packets.
    pub cap_min_packets: u64,
    /// Pacing burst as time at the pacing rate.
    pub burst: Duration,
    /// Fallback initial window, packets.
    pub initial_window_packets: u64,
}

impl RateController {
    /// Starts in fallback mode (or fixed); [`RateController::on_stamp`] switches to explicit.
    pub fn new(p: RateParams) -> Self {
        Self {
            mode: if p.fixed_bps.is_some() {
                RateMode::Fixed
            } else {
                RateMode::Fallback
            },
            mss: p.mss,
            demand_bps: p.demand_bps,
            explicit_bps: 0,
            fixed_bps: p.fixed_bps.unwrap_or(0),
            cap_rtts: p.cap_rtts,
            cap_min_packets: p.cap_min_packets,
            burst: p.burst,
            unstamped_echoes: 0,
            cubic: Cubic::new(p.mss, p.initial_window_packets),
            pacer: Pacer {
                tokens: 0.0,
                last: None,
            },
        }
    }

    /// Current mode.
    pub fn mode(&self) -> RateMode {
        self.mode
    }

    /// The configured demand, bit/s (`u64::MAX` = unlimited).
    pub fn demand_bps(&self) -> u64 {
        self.demand_bps
    }

    /// CUBIC's congestion window, bytes (meaningful in fallback mode).
    pub fn cwnd(&self) -> u64 {
        self.cubic.window()
    }

    /// Feedback: `echo` is the rate echo of an ACK (kbit/s, already clamped by the receiver to
    /// our authenticated demand) or `None` if the receiver saw no router stamp. Called for
    /// each ACK frame that acknowledges something new, and once with the handshake reply.
    pub fn on_stamp(&mut self, echo_kbps: Option<u32>, srtt: Duration) {
        if self.mode == RateMode::Fixed {
            return;
        }
        match echo_kbps {
            // An "unlimited" stamp carries no rate: treat as no router.
            Some(k) if k != crate::wire::header::UNLIMITED_KBPS => {
                // RCP: the sender adopts the network's rate at once, clamped to its own demand.
                let bps = crate::wire::header::kbps_to_bps(k)
                    .min(self.demand_bps)
                    .max(MIN_RATE_BPS);
                self.explicit_bps = bps;
                self.unstamped_echoes = 0;
                self.mode = RateMode::Explicit;
            }
            _ => {
                self.unstamped_echoes = self.unstamped_echoes.saturating_add(1);
                if self.mode == RateMode::Explicit && self.unstamped_echoes >= UNSTAMPED_TO_FALLBACK
                {
                    // The routers are gone (route change): continue from the rate we had, as a
                    // congestion window, and let CUBIC take over.
                    let bdp = (self.explicit_bps as f64 / 8.0 * srtt.as_secs_f64()) as u64;
                    self.cubic.set_window(bdp);
                    self.mode = RateMode::Fallback;
                }
            }
        }
    }

    /// The pacing rate in bit/s given the smoothed RTT.
    pub fn pacing_rate(&self, srtt: Duration) -> u64 {
        match self.mode {
            RateMode::Explicit => self.explicit_bps,
            RateMode::Fixed => self.fixed_bps,
            RateMode::Fallback => {
                let gain = if self.cubic.in_slow_start() {
                    2.0
                } else {
                    1.25
                };
                let secs = srtt.as_secs_f64().max(1e-6);
                let r = gain * self.cubic.window() as f64 * 8.0 / secs;
                (r as u64).min(self.demand_bps).max(MIN_RATE_BPS)
            }
        }
    }

    /// Most bytes that may be in flight: CUBIC's window in fallback, the safety cap otherwise.
    pub fn window(&self, srtt: Duration) -> u64 {
        match self.mode {
            RateMode::Fallback => self.cubic.window(),
            RateMode::Fixed => u64::MAX,
            RateMode::Explicit => {
                let bdp = self.explicit_bps as f64 / 8.0 * srtt.as_secs_f64();
                ((self.cap_rtts * bdp) as u64).max(self.cap_min_packets * self.mss)
            }
        }
    }

    fn burst_capacity(&self, rate_bps: u64) -> f64 {
        let by_time = rate_bps as f64 / 8.0 * self.burst.as_secs_f64();
        by_time.max(2.0 * self.mss as f64)
    }

    /// `None` if a `size`-byte packet may be sent now, else the time it may.
    pub fn pacing_delay(&mut self, now: Instant, srtt: Duration, size: u64) -> Option<Instant> {
        let rate = self.pacing_rate(srtt);
        let cap = self.burst_capacity(rate);
        self.pacer.delay(now, rate, size, cap)
    }

    /// A packet was sent (consumes pacing tokens).
    pub fn on_sent(&mut self, size: u64) {
        self.pacer.on_sent(size);
    }

    /// Bytes acknowledged (fallback growth).
    pub fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        srtt: Duration,
        app_limited: bool,
    ) {
        self.cubic.on_ack(now, sent, bytes, srtt, app_limited);
    }

    /// Packets declared lost; `largest_sent` is the send time of the newest lost packet.
    /// Only CUBIC reacts: in explicit mode loss is repaired, not treated as congestion.
    pub fn on_loss(&mut self, now: Instant, largest_sent: Instant) {
        if self.mode == RateMode::Fallback {
            self.cubic.on_congestion_event(now, largest_sent);
        }
    }

    /// Persistent congestion (RFC 9002 §7.6), fallback only.
    pub fn on_persistent_congestion(&mut self) {
        if self.mode == RateMode::Fallback {
            self.cubic.on_persistent_congestion();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RateParams {
        RateParams {
            mss: 1472,
            demand_bps: u64::MAX,
            fixed_bps: None,
            cap_rtts: 2.0,
            cap_min_packets: 16,
            burst: Duration::from_millis(1),
            initial_window_packets: 10,
        }
    }

    #[test]
    fn explicit_rate_follows_stamp_and_ignores_loss() {
        let rtt = Duration::from_millis(100);
        let mut r = RateController::new(params());
        assert_eq!(r.mode(), RateMode::Fallback);
        r.on_stamp(Some(50_000), rtt);
        assert_eq!(r.mode(), RateMode::Explicit);
        assert_eq!(r.pacing_rate(rtt), 50_000_000);
        let t = Instant::now();
        r.on_loss(t, t);
        assert_eq!(
            r.pacing_rate(rtt),
            50_000_000,
            "loss does not lower the explicit rate"
        );
        assert_eq!(r.window(rtt), 2 * 625_000);
        // A few unstamped echoes do not flip the mode; many do.
        for _ in 0..7 {
            r.on_stamp(None, rtt);
        }
        assert_eq!(r.mode(), RateMode::Explicit);
        r.on_stamp(None, rtt);
        assert_eq!(r.mode(), RateMode::Fallback);
        assert_eq!(r.cwnd(), 625_000);
    }

    #[test]
    fn demand_clamps_rate() {
        let mut p = params();
        p.demand_bps = 10_000_000;
        let mut r = RateController::new(p);
        r.on_stamp(Some(50_000), Duration::from_millis(10));
        assert_eq!(r.pacing_rate(Duration::from_millis(10)), 10_000_000);
    }

    #[test]
    fn pacer_spaces_packets() {
        let mut p = params();
        p.burst = Duration::ZERO;
        let mut r = RateController::new(p);
        r.on_stamp(Some(11_776), Duration::from_millis(10)); // 1472 B every ms
        let t0 = Instant::now();
        assert_eq!(r.pacing_delay(t0, Duration::from_millis(10), 1472), None);
        r.on_sent(1472);
        assert_eq!(r.pacing_delay(t0, Duration::from_millis(10), 1472), None);
        r.on_sent(1472);
        let next = r
            .pacing_delay(t0, Duration::from_millis(10), 1472)
            .expect("paced");
        let gap = next - t0;
        assert!(
            gap >= Duration::from_micros(999) && gap <= Duration::from_micros(1001),
            "{gap:?}"
        );
    }
}
