//! Unidirectional links: configuration, statistics and the serialise → lose → corrupt →
//! duplicate → delay/jitter/reorder pipeline.

use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::histogram::DelayHistogram;
use crate::loss::{LossModel, LossState, below, chance, check_probability};
use crate::qdisc::{Enqueue, Packet, Qdisc};
use crate::sim::NodeId;

/// The MTU (IP packet size in bytes) the defaults assume.
pub const MTU: usize = 1500;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// An invalid link or loss-model configuration.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    /// The link rate is zero.
    #[error("link rate must be positive")]
    ZeroRate,
    /// A probability lies outside `[0, 1]` (or is NaN).
    #[error("{what} probability {value} is not in [0, 1]")]
    Probability {
        /// Which probability.
        what: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A Gilbert-Elliott mean burst length below one packet (or not finite).
    #[error("mean burst length {0} must be a finite number >= 1")]
    BurstLength(f64),
    /// No Gilbert model has this loss rate and burst length (`p_good_to_bad` would exceed 1).
    #[error("no Gilbert model has mean loss {mean_loss} with mean burst {mean_burst}")]
    Unreachable {
        /// Requested mean loss rate.
        mean_loss: f64,
        /// Requested mean burst length.
        mean_burst: f64,
    },
}

/// Configuration of one unidirectional link, like a `tc netem` + `tbf` pair.
///
/// The queue limit is not enforced by the link itself but by the queue discipline it is given:
/// [`Sim::add_link_droptail`](crate::Sim::add_link_droptail) and the topology builders create a
/// [`DropTail`](crate::DropTail) of `queue_limit_bytes`; a custom qdisc factory may read it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Capacity in bits per second (of wire bytes: payload + 28 bytes IPv4/UDP headers).
    pub rate_bps: u64,
    /// One-way propagation delay added after serialisation.
    pub delay: Duration,
    /// Each packet's delay is `delay + U[-jitter, +jitter]` (never below zero in total).
    /// Jitter alone never reorders: a packet is not delivered before the one sent before it.
    pub jitter: Duration,
    /// Random loss after serialisation.
    pub loss: LossModel,
    /// Queue capacity in bytes for drop-tail queues built from this configuration.
    pub queue_limit_bytes: usize,
    /// Probability that a packet is held back by an extra `reorder_delay`, letting later
    /// packets overtake it.
    pub reorder: f64,
    /// Extra delay of a packet picked for reordering.
    pub reorder_delay: Duration,
    /// Probability that a delivered packet is delivered twice.
    pub duplicate: f64,
    /// Probability that one uniformly chosen bit of the UDP payload is flipped.
    pub corrupt: f64,
}

impl Default for LinkConfig {
    /// 100 Mbit/s, no delay, no impairments, a 100 × MTU (150 kB) drop-tail queue.
    fn default() -> Self {
        Self {
            rate_bps: 100_000_000,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: LossModel::None,
            queue_limit_bytes: 100 * MTU,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            duplicate: 0.0,
            corrupt: 0.0,
        }
    }
}

impl LinkConfig {
    /// A link of `rate_bps` and one-way `delay` with a queue of one bandwidth-delay product of
    /// the round trip `2·delay` (at least 10 × MTU), otherwise as [`Default`].
    pub fn new(rate_bps: u64, delay: Duration) -> Self {
        Self {
            rate_bps,
            delay,
            ..Self::default()
        }
        .with_queue_bdp(1.0, 2 * delay)
    }

    /// Sets the rate in bits per second.
    pub fn with_rate(mut self, rate_bps: u64) -> Self {
        self.rate_bps = rate_bps;
        self
    }

    /// Sets the one-way propagation delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the jitter amplitude.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the random loss model.
    pub fn with_loss(mut self, loss: LossModel) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the queue limit in bytes.
    pub fn with_queue_limit(mut self, bytes: usize) -> Self {
        self.queue_limit_bytes = bytes;
        self
    }

    /// Sets the queue limit to `multiple` bandwidth-delay products of this link's rate and the
    /// given round-trip time, but at least 10 × MTU so a tiny BDP still holds a burst.
    pub fn with_queue_bdp(mut self, multiple: f64, rtt: Duration) -> Self {
        let bytes = multiple * self.bdp_bytes(rtt) as f64;
        self.queue_limit_bytes = (bytes.max(0.0) as usize).max(10 * MTU);
        self
    }

    /// Sets the reordering probability and the extra delay of reordered packets.
    pub fn with_reorder(mut self, probability: f64, extra_delay: Duration) -> Self {
        self.reorder = probability;
        self.reorder_delay = extra_delay;
        self
    }

    /// Sets the duplication probability.
    pub fn with_duplicate(mut self, probability: f64) -> Self {
        self.duplicate = probability;
        self
    }

    /// Sets the corruption probability.
    pub fn with_corrupt(mut self, probability: f64) -> Self {
        self.corrupt = probability;
        self
    }

    /// Bandwidth-delay product in bytes of this link's rate over `rtt`.
    pub fn bdp_bytes(&self, rtt: Duration) -> usize {
        let bits = u128::from(self.rate_bps) * rtt.as_nanos() / NANOS_PER_SEC;
        usize::try_from(bits / 8).unwrap_or(usize::MAX)
    }

    /// Time to serialise `wire_bytes` at this rate (rounded down to the nanosecond).
    pub fn tx_time(&self, wire_bytes: usize) -> Duration {
        if self.rate_bps == 0 {
            return Duration::MAX;
        }
        let ns = (wire_bytes as u128) * 8 * NANOS_PER_SEC / u128::from(self.rate_bps);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Checks the rate is positive and every probability lies in `[0, 1]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rate_bps == 0 {
            return Err(ConfigError::ZeroRate);
        }
        self.loss.validate()?;
        check_probability("reorder", self.reorder)?;
        check_probability("duplicate", self.duplicate)?;
        check_probability("corrupt", self.corrupt)
    }
}

/// Counters of one link. Reset with [`Sim::reset_stats`](crate::Sim::reset_stats).
///
/// Every offered packet ends in exactly one of: a queue drop, still queued or in transmission,
/// a random loss, or delivered (plus `duplicated` extra deliveries). Byte counts are wire bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered to the queue.
    pub offered_packets: u64,
    /// Bytes offered to the queue.
    pub offered_bytes: u64,
    /// Packets dropped by the queue discipline (bottleneck drops).
    pub queue_drops: u64,
    /// Bytes dropped by the queue discipline.
    pub queue_drop_bytes: u64,
    /// Packets whose serialisation finished.
    pub transmitted_packets: u64,
    /// Bytes whose serialisation finished.
    pub transmitted_bytes: u64,
    /// Serialised packets then lost by the random loss model.
    pub random_losses: u64,
    /// Bytes of `random_losses`.
    pub random_loss_bytes: u64,
    /// Packets that reached the far end (duplicates included).
    pub delivered_packets: u64,
    /// Bytes that reached the far end (duplicates included).
    pub delivered_bytes: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Packets with one payload bit flipped.
    pub corrupted: u64,
    /// Packets held back by the reorder delay.
    pub reordered: u64,
    /// Largest queue backlog in bytes seen after an enqueue (a packet that finds the link
    /// idle and goes straight onto the wire never counts).
    pub max_backlog_bytes: usize,
    /// Largest queue backlog in packets seen after an enqueue.
    pub max_backlog_packets: usize,
    /// Total serialisation time of the `transmitted_packets`.
    pub busy_time: Duration,
    /// Queueing delay: from enqueue to the start of serialisation, one sample per packet.
    pub queue_delay: DelayHistogram,
}

impl LinkStats {
    /// Fraction of transmitted packets lost at random.
    pub fn random_loss_rate(&self) -> f64 {
        ratio(self.random_losses, self.transmitted_packets)
    }

    /// Fraction of offered packets dropped by the queue.
    pub fn drop_rate(&self) -> f64 {
        ratio(self.queue_drops, self.offered_packets)
    }

    /// Fraction of `window` the link spent serialising.
    pub fn utilization(&self, window: Duration) -> f64 {
        if window.is_zero() {
            0.0
        } else {
            self.busy_time.as_secs_f64() / window.as_secs_f64()
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// A packet leaving a link towards its far end at time `at_ns`.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) at_ns: u64,
    pub(crate) pkt: Packet,
}

/// The runtime state of a link.
pub(crate) struct Link {
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
    pub(crate) cfg: LinkConfig,
    pub(crate) qdisc: Box<dyn Qdisc>,
    pub(crate) stats: LinkStats,
    rng: ChaCha8Rng,
    loss: LossState,
    /// The packet being serialised and its transmission time in ns.
    in_tx: Option<(Packet, u64)>,
    /// Fractional nanoseconds (numerator over `rate_bps`) carried between back-to-back packets.
    tx_rem: u128,
    /// Delivery time of the last in-order packet (FIFO under jitter).
    last_delivery_ns: u64,
}

impl Link {
    pub(crate) fn new(
        from: NodeId,
        to: NodeId,
        cfg: LinkConfig,
        qdisc: Box<dyn Qdisc>,
        rng: ChaCha8Rng,
    ) -> Self {
        Self {
            from,
            to,
            cfg,
            qdisc,
            stats: LinkStats::default(),
            rng,
            loss: LossState::default(),
            in_tx: None,
            tx_rem: 0,
            last_delivery_ns: 0,
        }
    }

    /// Offers a packet to the queue. Returns the end of a transmission it started.
    pub(crate) fn offer(&mut self, now_ns: u64, now: Instant, mut pkt: Packet) -> Option<u64> {
        let len = pkt.wire_len() as u64;
        self.stats.offered_packets += 1;
        self.stats.offered_bytes += len;
        pkt.enqueued_at = now;
        match self.qdisc.enqueue(now, pkt) {
            Enqueue::Queued => {}
            Enqueue::Dropped(p) => self.count_drop(&p),
            Enqueue::QueuedWithDrops(victims) => victims.iter().for_each(|p| self.count_drop(p)),
        }
        let started = if self.in_tx.is_none() {
            self.start_tx(now_ns, now)
        } else {
            None
        };
        // Measured after a packet that found the link idle went straight onto the wire.
        let st = &mut self.stats;
        st.max_backlog_bytes = st.max_backlog_bytes.max(self.qdisc.backlog_bytes());
        st.max_backlog_packets = st.max_backlog_packets.max(self.qdisc.backlog_packets());
        started
    }

    fn count_drop(&mut self, p: &Packet) {
        self.stats.queue_drops += 1;
        self.stats.queue_drop_bytes += p.wire_len() as u64;
    }

    /// Takes the next packet from the qdisc onto the wire; returns when it finishes.
    fn start_tx(&mut self, now_ns: u64, now: Instant) -> Option<u64> {
        let Some(pkt) = self.qdisc.dequeue(now) else {
            self.tx_rem = 0;
            return None;
        };
        self.stats
            .queue_delay
            .record(now.saturating_duration_since(pkt.enqueued_at));
        let rate = u128::from(self.cfg.rate_bps.max(1));
        let num = pkt.wire_len() as u128 * 8 * NANOS_PER_SEC + self.tx_rem;
        let dur = u64::try_from(num / rate).unwrap_or(u64::MAX);
        self.tx_rem = num % rate;
        self.in_tx = Some((pkt, dur));
        Some(now_ns.saturating_add(dur))
    }

    /// Serialisation of the current packet ended at `now`: applies loss, corruption,
    /// duplication, delay, jitter and reordering. Returns up to two deliveries and the end
    /// of the next transmission, if one started.
    pub(crate) fn finish_tx(
        &mut self,
        now_ns: u64,
        now: Instant,
    ) -> ([Option<Delivery>; 2], Option<u64>) {
        let mut out = [None, None];
        if let Some((pkt, dur)) = self.in_tx.take() {
            self.stats.busy_time += Duration::from_nanos(dur);
            out = self.impair(now_ns, pkt);
        }
        (out, self.start_tx(now_ns, now))
    }

    fn impair(&mut self, now_ns: u64, mut pkt: Packet) -> [Option<Delivery>; 2] {
        let len = pkt.wire_len() as u64;
        self.stats.transmitted_packets += 1;
        self.stats.transmitted_bytes += len;
        let payload_bits = pkt.dgram.payload.len() as u64 * 8;
        let fate = decide_fate(
            &self.cfg,
            &mut self.rng,
            &mut self.loss,
            &mut self.last_delivery_ns,
            now_ns,
            payload_bits,
        );
        let Some(at) = fate.deliver_at_ns else {
            self.stats.random_losses += 1;
            self.stats.random_loss_bytes += len;
            return [None, None];
        };
        if let Some(bit) = fate.corrupt_bit
            && let Some(b) = pkt.dgram.payload.get_mut((bit / 8) as usize)
        {
            *b ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        if fate.reordered {
            self.stats.reordered += 1;
        }
        let copy = fate.duplicate.then(|| {
            self.stats.duplicated += 1;
            Delivery {
                at_ns: at,
                pkt: pkt.clone(),
            }
        });
        [Some(Delivery { at_ns: at, pkt }), copy]
    }

    /// Clears statistics; the backlog maxima restart from the current backlog.
    pub(crate) fn reset_stats(&mut self) {
        self.stats = LinkStats {
            max_backlog_bytes: self.qdisc.backlog_bytes(),
            max_backlog_packets: self.qdisc.backlog_packets(),
            ..LinkStats::default()
        };
    }
}

/// What happens to one packet after its serialisation ended: the impairment decisions shared
/// by the simulator's links and the real-time emulator ([`crate::realtime`]), so both apply
/// exactly the same [`LinkConfig`] semantics with the same random draws in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fate {
    /// Delivery time in ns, `None` if the loss model lost the packet.
    pub(crate) deliver_at_ns: Option<u64>,
    /// The payload bit to flip, if the packet is corrupted.
    pub(crate) corrupt_bit: Option<u64>,
    /// Whether a second copy is delivered right after the first.
    pub(crate) duplicate: bool,
    /// Whether the packet was held back by `reorder_delay`.
    pub(crate) reordered: bool,
}

/// Decides a packet's fate at `now_ns` (the end of its serialisation), in this order: random
/// loss, corruption (only if `payload_bits > 0`), duplication, delay + jitter (never before the
/// previous in-order delivery, tracked in `last_delivery_ns`), reordering.
pub(crate) fn decide_fate(
    cfg: &LinkConfig,
    rng: &mut ChaCha8Rng,
    loss: &mut LossState,
    last_delivery_ns: &mut u64,
    now_ns: u64,
    payload_bits: u64,
) -> Fate {
    if loss.lose(&cfg.loss, rng) {
        return Fate {
            deliver_at_ns: None,
            corrupt_bit: None,
            duplicate: false,
            reordered: false,
        };
    }
    let corrupt_bit =
        (chance(rng, cfg.corrupt) && payload_bits > 0).then(|| below(rng, payload_bits));
    let duplicate = chance(rng, cfg.duplicate);
    let mut delay = i128::try_from(cfg.delay.as_nanos()).unwrap_or(i128::MAX);
    if !cfg.jitter.is_zero() {
        let j = u64::try_from(cfg.jitter.as_nanos()).unwrap_or(u64::MAX / 4);
        let span = j.saturating_mul(2).saturating_add(1);
        delay += i128::from(below(rng, span)) - i128::from(j);
    }
    let delay = u64::try_from(delay.max(0)).unwrap_or(u64::MAX);
    let mut at = now_ns.saturating_add(delay).max(*last_delivery_ns);
    let reordered = chance(rng, cfg.reorder);
    if reordered {
        at = at.saturating_add(u64::try_from(cfg.reorder_delay.as_nanos()).unwrap_or(u64::MAX));
    } else {
        *last_delivery_ns = at;
    }
    Fate {
        deliver_at_ns: Some(at),
        corrupt_bit,
        duplicate,
        reordered,
    }
}
