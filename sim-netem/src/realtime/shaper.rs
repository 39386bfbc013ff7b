//! The sans-IO core of one emulated direction: given a packet's arrival time and size, decide
//! whether the queue drops it, the loss model loses it, or when (and how many times) it leaves.
//!
//! No clock, no sockets: times are nanoseconds since the emulator's epoch, passed in. The
//! impairments after serialisation are [`decide_fate`](crate::link) — the very function the
//! simulator's links use — so a [`LinkConfig`] means the same thing in both.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::link::{ConfigError, LinkConfig, decide_fate};
use crate::loss::LossState;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// What becomes of one offered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Dropped on arrival: the bytes not yet serialised plus this packet exceed the queue limit
    /// (drop-tail).
    QueueDrop,
    /// Serialised, then lost by the random loss model (it consumed link capacity).
    Lost,
    /// Delivered at `at_ns`.
    Deliver {
        /// Release time, nanoseconds since the epoch.
        at_ns: u64,
        /// Whether a second copy leaves right after the first.
        duplicate: bool,
        /// The bit of the packet's impairable region to flip, if corrupted.
        corrupt_bit: Option<u64>,
        /// Whether the packet was held back by the reorder delay.
        reordered: bool,
    },
}

/// One direction of the emulated link: a FIFO serialiser of `rate_bps` behind a drop-tail
/// queue of `queue_limit_bytes`, then loss, corruption, duplication, delay/jitter, reordering.
///
/// The serialiser is virtual: it remembers when the link becomes free (`link_free_ns`), so a
/// packet arriving at `t` starts serialising at `max(t, link_free_ns)` and ends
/// `wire_len·8/rate` later, with fractional nanoseconds carried between back-to-back packets
/// (exactly as the simulator's links do, so a saturated direction delivers exactly its rate).
/// The backlog the queue limit applies to is the number of bytes not yet serialised at `t`.
#[derive(Debug)]
pub struct Shaper {
    cfg: LinkConfig,
    rng: ChaCha8Rng,
    loss: LossState,
    link_free_ns: u64,
    tx_rem: u128,
    last_delivery_ns: u64,
}

impl Shaper {
    /// A shaper for `cfg` (validated) drawing its random decisions from `seed`.
    pub fn new(cfg: LinkConfig, seed: u64) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss: LossState::default(),
            link_free_ns: 0,
            tx_rem: 0,
            last_delivery_ns: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Bytes not yet serialised at `now_ns` (the queue backlog, including the unsent part of
    /// the packet on the wire).
    pub fn backlog_bytes(&self, now_ns: u64) -> usize {
        let left = u128::from(self.link_free_ns.saturating_sub(now_ns));
        let bytes = left * u128::from(self.cfg.rate_bps) / (8 * NANOS_PER_SEC);
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// Offers a packet of `wire_len` bytes (the IP packet: what the rate counts) arriving at
    /// `now_ns`; `impairable_bits` is the size of the region corruption may flip a bit in
    /// (0 disables corruption for this packet).
    pub fn offer(&mut self, now_ns: u64, wire_len: usize, impairable_bits: u64) -> Verdict {
        if self.backlog_bytes(now_ns).saturating_add(wire_len) > self.cfg.queue_limit_bytes {
            return Verdict::QueueDrop;
        }
        let start = if self.link_free_ns <= now_ns {
            self.tx_rem = 0;
            now_ns
        } else {
            self.link_free_ns
        };
        let rate = u128::from(self.cfg.rate_bps.max(1));
        let num = wire_len as u128 * 8 * NANOS_PER_SEC + self.tx_rem;
        let dur = u64::try_from(num / rate).unwrap_or(u64::MAX);
        self.tx_rem = num % rate;
        let tx_end = start.saturating_add(dur);
        self.link_free_ns = tx_end;
        let fate = decide_fate(
            &self.cfg,
            &mut self.rng,
            &mut self.loss,
            &mut self.last_delivery_ns,
            tx_end,
            impairable_bits,
        );
        match fate.deliver_at_ns {
            None => Verdict::Lost,
            Some(at_ns) => Verdict::Deliver {
                at_ns,
                duplicate: fate.duplicate,
                corrupt_bit: fate.corrupt_bit,
                reordered: fate.reordered,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::LossModel;

    fn at(v: Verdict) -> u64 {
        match v {
            Verdict::Deliver { at_ns, .. } => at_ns,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn serialisation_and_delay() {
        // 100 Mbit/s: 1250 bytes take 100 us.
        let cfg = LinkConfig::new(100_000_000, Duration::from_millis(10)).with_queue_limit(10_000);
        let mut s = Shaper::new(cfg, 1).expect("valid");
        assert_eq!(at(s.offer(0, 1250, 0)), 100_000 + 10_000_000);
        // Back to back: queued behind the first.
        assert_eq!(at(s.offer(0, 1250, 0)), 200_000 + 10_000_000);
        assert_eq!(s.backlog_bytes(0), 2500);
        assert_eq!(s.backlog_bytes(100_000), 1250);
        // Idle link: starts at once.
        assert_eq!(at(s.offer(1_000_000, 1250, 0)), 1_100_000 + 10_000_000);
    }

    #[test]
    fn drop_tail_limit() {
        let cfg = LinkConfig::new(8_000_000, Duration::ZERO).with_queue_limit(3000);
        let mut s = Shaper::new(cfg, 1).expect("valid");
        assert!(matches!(s.offer(0, 1500, 0), Verdict::Deliver { .. }));
        assert!(matches!(s.offer(0, 1500, 0), Verdict::Deliver { .. }));
        assert_eq!(s.offer(0, 1500, 0), Verdict::QueueDrop);
        // 1 ms at 8 Mbit/s serialises 1000 bytes: room again for 1000 bytes.
        assert!(matches!(
            s.offer(1_000_000, 1000, 0),
            Verdict::Deliver { .. }
        ));
    }

    #[test]
    fn saturated_rate_is_exact() {
        // 1,000,003 bit/s does not divide evenly: the carried remainder keeps the total exact.
        let cfg = LinkConfig::new(1_000_003, Duration::ZERO).with_queue_limit(usize::MAX);
        let mut s = Shaper::new(cfg, 1).expect("valid");
        let mut last = 0;
        for _ in 0..10_000 {
            last = at(s.offer(0, 1000, 0));
        }
        let expect = 10_000u128 * 1000 * 8 * NANOS_PER_SEC / 1_000_003;
        assert!((i128::from(last) - expect as i128).abs() <= 1);
    }

    #[test]
    fn loss_rate_matches_model() {
        let cfg = LinkConfig::new(1_000_000_000, Duration::ZERO)
            .with_queue_limit(usize::MAX)
            .with_loss(LossModel::Bernoulli(0.01));
        let mut s = Shaper::new(cfg, 7).expect("valid");
        let lost = (0..100_000)
            .filter(|i| s.offer(i * 100_000, 100, 0) == Verdict::Lost)
            .count();
        // 1000 expected, sd ~31.5: 5 sigma.
        assert!((843..1157).contains(&lost), "lost {lost}");
    }
}
