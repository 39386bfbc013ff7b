//! Loss detection and RTT estimation (RFC 9002 §5 and §6).
//!
//! Packet numbers are never reused (RFC 9000 §12.3), so the sent-packet list is ordered by
//! packet number; acknowledged and lost packets become tombstones and are popped from the front.
//! Lost packets are never retransmitted as such: their *frames* are re-queued and go out in new
//! packets (RFC 9002 §2, "retransmission of frames, not packets").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Timer granularity (RFC 9002 §6.1.2 kGranularity = 1 ms).
pub const GRANULARITY: Duration = Duration::from_millis(1);
/// Packet reordering threshold (RFC 9002 §6.1.1 kPacketThreshold = 3).
pub const PACKET_THRESHOLD: u64 = 3;

/// RTT estimator (RFC 9002 §5).
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
    initial: Duration,
}

impl RttEstimator {
    /// Starts with `initial` as the assumed RTT (RFC 9002 §5.3: rttvar = initial/2).
    pub fn new(initial: Duration) -> Self {
        Self {
            latest: initial,
            smoothed: None,
            var: initial / 2,
            min: initial,
            initial,
        }
    }

    /// Smoothed RTT (the initial RTT before the first sample).
    pub fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(self.initial)
    }

    /// `true` once a sample was taken.
    pub fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    /// RTT variation.
    pub fn var(&self) -> Duration {
        self.var
    }

    /// Minimum RTT seen.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// Most recent sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// Adds a sample (RFC 9002 §5.3): `ack_delay` is subtracted only if that keeps the sample
    /// above min_rtt, and is capped at the peer's max_ack_delay by the caller.
    pub fn update(&mut self, sample: Duration, ack_delay: Duration) {
        self.latest = sample;
        match self.smoothed {
            None => {
                self.min = sample;
                self.smoothed = Some(sample);
                self.var = sample / 2;
            }
            Some(srtt) => {
                self.min = self.min.min(sample);
                let adjusted = if sample >= self.min + ack_delay {
                    sample - ack_delay
                } else {
                    sample
                };
                let diff = srtt.abs_diff(adjusted);
                self.var = (self.var * 3 + diff) / 4;
                self.smoothed = Some((srtt * 7 + adjusted) / 8);
            }
        }
    }

    /// PTO base duration without backoff (RFC 9002 §6.2.1):
    /// smoothed_rtt + max(4·rttvar, kGranularity) + max_ack_delay.
    pub fn pto_base(&self, max_ack_delay: Duration) -> Duration {
        self.smoothed() + (self.var * 4).max(GRANULARITY) + max_ack_delay
    }

    /// Time-threshold loss delay (RFC 9002 §6.1.2): 9/8 · max(smoothed, latest), ≥ 1 ms.
    pub fn loss_delay(&self) -> Duration {
        (self.smoothed().max(self.latest) * 9 / 8).max(GRANULARITY)
    }
}

/// Stream data carried by a sent packet, to re-queue if the packet is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamChunk {
    /// Stream id.
    pub id: u64,
    /// Offset of the first byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// Whether the frame carried FIN.
    pub fin: bool,
}

/// Retransmittable content of a sent packet.
#[derive(Debug, Clone, Default)]
pub struct SentFrames {
    /// The first stream chunk (most packets carry exactly one).
    pub stream: Option<StreamChunk>,
    /// Further stream chunks (rare: small writes on several streams).
    pub more_streams: Vec<StreamChunk>,
    /// Carried MAX_DATA.
    pub max_data: bool,
    /// Streams whose MAX_STREAM_DATA it carried.
    pub max_stream_data: Vec<u64>,
    /// Largest acknowledged of the ACK frame it carried (RFC 9000 §13.2.4).
    pub ack_largest: Option<u64>,
}

impl SentFrames {
    /// Iterates every stream chunk.
    pub fn stream_chunks(&self) -> impl Iterator<Item = &StreamChunk> {
        self.stream.iter().chain(self.more_streams.iter())
    }
}

/// A packet in flight (RFC 9002 §A.1.1 "Sent Packet Fields").
#[derive(Debug, Clone)]
pub struct SentPacket {
    /// Packet number.
    pub pn: u64,
    /// When it was sent.
    pub time_sent: Instant,
    /// UDP payload bytes.
    pub size: u32,
    /// Contains a frame other than ACK/PADDING/CLOSE.
    pub ack_eliciting: bool,
    /// Counted in bytes in flight.
    pub in_flight: bool,
    /// Content to re-queue on loss.
    pub frames: SentFrames,
    /// Acknowledged or declared lost: only kept to preserve the ordering.
    pub done: bool,
}

/// What an ACK frame did.
#[derive(Debug, Default)]
pub struct AckOutcome {
    /// Packets newly acknowledged.
    pub acked: Vec<SentPacket>,
    /// Packets declared lost by this ACK.
    pub lost: Vec<SentPacket>,
    /// An RTT sample was taken.
    pub rtt_updated: bool,
    /// Bytes in flight before processing.
    pub in_flight_before: u64,
}

/// Sent-packet tracking, loss detection and the PTO (RFC 9002 §6, appendix A).
#[derive(Debug)]
pub struct Recovery {
    sent: VecDeque<SentPacket>,
    /// RTT estimate.
    pub rtt: RttEstimator,
    /// Largest packet number the peer acknowledged.
    pub largest_acked: Option<u64>,
    /// Bytes in flight (RFC 9002 §B.2).
    pub bytes_in_flight: u64,
    /// Time-threshold loss timer (RFC 9002 §6.1.2).
    pub loss_time: Option<Instant>,
    /// Consecutive PTO expirations (RFC 9002 §6.2.1 backoff exponent).
    pub pto_count: u32,
    /// Time the last ack-eliciting packet was sent.
    pub last_ack_eliciting: Option<Instant>,
    ack_eliciting_in_flight: u64,
}

impl Recovery {
    /// Empty state.
    pub fn new(initial_rtt: Duration) -> Self {
        Self {
            sent: VecDeque::new(),
            rtt: RttEstimator::new(initial_rtt),
            largest_acked: None,
            bytes_in_flight: 0,
            loss_time: None,
            pto_count: 0,
            last_ack_eliciting: None,
            ack_eliciting_in_flight: 0,
        }
    }

    /// Records a sent packet (RFC 9002 §A.5 OnPacketSent).
    pub fn on_sent(&mut self, p: SentPacket) {
        debug_assert!(self.sent.back().is_none_or(|b| b.pn < p.pn));
        if p.in_flight {
            self.bytes_in_flight += u64::from(p.size);
        }
        if p.ack_eliciting {
            self.last_ack_eliciting = Some(p.time_sent);
            self.ack_eliciting_in_flight += 1;
        }
        self.sent.push_back(p);
    }

    /// Packets still tracked (not acked or lost).
    pub fn outstanding(&self) -> usize {
        self.sent.iter().filter(|p| !p.done).count()
    }

    /// `true` if ack-eliciting packets are in flight.
    pub fn ack_eliciting_in_flight(&self) -> bool {
        self.ack_eliciting_in_flight > 0
    }

    fn index_of(&self, pn: u64) -> Result<usize, usize> {
        self.sent.binary_search_by_key(&pn, |p| p.pn)
    }

    fn retire(&mut self, idx: usize) -> SentPacket {
        let p = &mut self.sent[idx];
        p.done = true;
        if p.in_flight {
            self.bytes_in_flight = self.bytes_in_flight.saturating_sub(u64::from(p.size));
        }
        if p.ack_eliciting {
            self.ack_eliciting_in_flight = self.ack_eliciting_in_flight.saturating_sub(1);
        }
        SentPacket {
            pn: p.pn,
            time_sent: p.time_sent,
            size: p.size,
            ack_eliciting: p.ack_eliciting,
            in_flight: p.in_flight,
            frames: core::mem::take(&mut p.frames),
            done: true,
        }
    }

    fn pop_done(&mut self) {
        while self.sent.front().is_some_and(|p| p.done) {
            self.sent.pop_front();
        }
    }

    /// Processes an ACK frame (RFC 9002 §A.7 OnAckReceived). `ranges` are inclusive, descending.
    /// `ack_delay` must already be capped at the peer's max_ack_delay.
    pub fn on_ack(
        &mut self,
        now: Instant,
        ranges: impl Iterator<Item = (u64, u64)>,
        ack_delay: Duration,
        out: &mut AckOutcome,
    ) {
        out.in_flight_before = self.bytes_in_flight;
        let mut largest_frame: Option<u64> = None;
        for (lo, hi) in ranges {
            largest_frame = Some(largest_frame.map_or(hi, |l| l.max(hi)));
            let start = match self.index_of(lo) {
                Ok(i) | Err(i) => i,
            };
            let mut i = start;
            while i < self.sent.len() && self.sent[i].pn <= hi {
                if !self.sent[i].done {
                    let p = self.retire(i);
                    out.acked.push(p);
                }
                i += 1;
            }
        }
        let Some(largest) = largest_frame else { return };
        if self.largest_acked.is_none_or(|l| largest > l) {
            self.largest_acked = Some(largest);
        }
        // RTT sample only if the largest acknowledged is newly acked and ack-eliciting (§5.1).
        if let Some(p) = out.acked.iter().find(|p| p.pn == largest)
            && out.acked.iter().any(|p| p.ack_eliciting)
        {
            self.rtt
                .update(now.saturating_duration_since(p.time_sent), ack_delay);
            out.rtt_updated = true;
        }
        if !out.acked.is_empty() {
            self.detect_lost(now, &mut out.lost);
            // RFC 9002 §6.2.1: reset the PTO backoff on acknowledgement.
            self.pto_count = 0;
        }
        self.pop_done();
    }

    /// Declares packets lost by packet or time threshold (RFC 9002 §6.1, §A.10 DetectAndRemoveLostPackets)
    /// and sets the loss timer for the rest.
    pub fn detect_lost(&mut self, now: Instant, lost: &mut Vec<SentPacket>) {
        self.loss_time = None;
        let Some(largest) = self.largest_acked else {
            return;
        };
        let delay = self.rtt.loss_delay();
        let lost_send_time = now.checked_sub(delay);
        let mut i = 0;
        while i < self.sent.len() {
            let p = &self.sent[i];
            if p.pn > largest {
                break;
            }
            if !p.done {
                if lost_send_time.is_some_and(|t| p.time_sent <= t)
                    || largest >= p.pn + PACKET_THRESHOLD
                {
                    let p = self.retire(i);
                    lost.push(p);
                } else {
                    let t = p.time_sent + delay;
                    self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
                }
            }
            i += 1;
        }
        self.pop_done();
    }

    /// When the PTO fires, or `None` if nothing ack-eliciting is in flight (RFC 9002 §6.2.1).
    pub fn pto_time(&self, max_ack_delay: Duration) -> Option<Instant> {
        if self.ack_eliciting_in_flight == 0 {
            return None;
        }
        let base = self.rtt.pto_base(max_ack_delay);
        let backoff = base.saturating_mul(1u32 << self.pto_count.min(16));
        self.last_ack_eliciting.map(|t| t + backoff)
    }

    /// The earliest loss-detection deadline: the loss timer, else the PTO (RFC 9002 §A.8).
    pub fn timer(&self, max_ack_delay: Duration) -> Option<Instant> {
        self.loss_time.or_else(|| self.pto_time(max_ack_delay))
    }

    /// The oldest outstanding ack-eliciting packet's frames, for a PTO probe (RFC 9002 §6.2.4:
    /// a probe may carry data from unacknowledged packets). The packet stays tracked.
    pub fn oldest_unacked_frames(&self) -> Option<&SentFrames> {
        self.sent
            .iter()
            .find(|p| !p.done && p.ack_eliciting)
            .map(|p| &p.frames)
    }

    /// Forgets everything in flight (used when the connection closes).
    pub fn clear(&mut self) {
        self.sent.clear();
        self.bytes_in_flight = 0;
        self.ack_eliciting_in_flight = 0;
        self.loss_time = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(pn: u64, t: Instant) -> SentPacket {
        SentPacket {
            pn,
            time_sent: t,
            size: 1000,
            ack_eliciting: true,
            in_flight: true,
            frames: SentFrames::default(),
            done: false,
        }
    }

    #[test]
    fn packet_threshold_and_rtt() {
        let t0 = Instant::now();
        let mut r = Recovery::new(Duration::from_millis(100));
        for pn in 0..10 {
            r.on_sent(pkt(pn, t0 + Duration::from_millis(pn)));
        }
        assert_eq!(r.bytes_in_flight, 10_000);
        let mut out = AckOutcome::default();
        // Ack 5..=9: 0, 1, 2 (≤ 9-3... pn + 3 <= 9 → pn <= 6) lost: 0..=4 all ≤ 6.
        r.on_ack(
            t0 + Duration::from_millis(60),
            [(5, 9)].into_iter(),
            Duration::ZERO,
            &mut out,
        );
        assert_eq!(out.acked.len(), 5);
        assert_eq!(
            out.lost.iter().map(|p| p.pn).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(out.rtt_updated);
        assert_eq!(r.rtt.smoothed(), Duration::from_millis(51));
        assert_eq!(r.bytes_in_flight, 0);
        assert_eq!(r.outstanding(), 0);
    }

    #[test]
    fn time_threshold_sets_timer() {
        let t0 = Instant::now();
        let mut r = Recovery::new(Duration::from_millis(100));
        r.on_sent(pkt(0, t0));
        r.on_sent(pkt(1, t0));
        let mut out = AckOutcome::default();
        r.on_ack(
            t0 + Duration::from_millis(100),
            [(1, 1)].into_iter(),
            Duration::ZERO,
            &mut out,
        );
        assert!(out.lost.is_empty());
        let lt = r.loss_time.expect("loss timer");
        assert_eq!(lt, t0 + Duration::from_micros(112_500));
        let mut lost = Vec::new();
        r.detect_lost(lt, &mut lost);
        assert_eq!(lost.len(), 1);
    }

    #[test]
    fn pto_backoff() {
        let t0 = Instant::now();
        let mut r = Recovery::new(Duration::from_millis(100));
        r.on_sent(pkt(0, t0));
        let base = r.rtt.pto_base(Duration::ZERO);
        assert_eq!(r.pto_time(Duration::ZERO), Some(t0 + base));
        r.pto_count = 2;
        assert_eq!(r.pto_time(Duration::ZERO), Some(t0 + base * 4));
    }
}
