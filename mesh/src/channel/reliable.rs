//! The reliable channel's two halves: `Sender` (segmentation, retransmission, RTO, flow and
//! congestion control) and `Receiver` (reassembly, cumulative + selective ACKs, delayed ACKs).
//!
//! - **Acknowledgements** (telehash v3 channels `ack`/`miss`; RFC 2018 SACK): every ACK carries
//!   the cumulative ack (next segment expected), the free receive window in bytes and up to
//!   [`MAX_SACK_RANGES`] ranges of segments held above it (lowest first: the holes nearest the
//!   cumulative ack matter most to the sender).
//! - **Loss detection**: a sent segment is lost when three segments above it that were sent no
//!   earlier than it have been selectively acknowledged (the SACK form of "three duplicate
//!   ACKs", RFC 6675 `DupThresh`), or when the retransmission timer fires. Only lost segments
//!   are retransmitted; a SACKed segment is never sent again.
//! - **RTO** (RFC 6298): `SRTT`/`RTTVAR` from samples of segments sent once (Karn), `RTO =
//!   SRTT + max(G, 4·RTTVAR)` clamped to `[min_rto, max_rto]` (a 200 ms floor like Linux rather
//!   than RFC 6298's 1 s), 1 s initially; doubled on each expiry (§5.5), restarted when new data
//!   is acknowledged (§5.3), stopped when nothing is outstanding (§5.2).
//! - **Congestion control**: NewReno-like AIMD in segments (RFC 5681/6582 in spirit): slow
//!   start from `initial_cwnd` while `cwnd < ssthresh` (+1 per segment acknowledged),
//!   congestion avoidance above (+1/cwnd per segment); on the first loss detected by SACK,
//!   `ssthresh = cwnd = max(cwnd/2, 2)` once per recovery episode (until everything sent before
//!   it is acknowledged); on RTO, `ssthresh = max(flight/2, 2)` and `cwnd = 1`. Per channel.
//!   After an RTO the window grows again in slow start while the lost segments are resent
//!   (only a SACK-triggered recovery freezes it).
//! - **Slow-start exit on delay** (HyStart, Ha & Rhee 2011): the smallest RTT of each batch
//!   of 8 samples is compared with the smallest ever seen; once it exceeds it by
//!   `clamp(min_rtt/8, 4 ms, 16 ms)` a queue is building, and slow start ends with `cwnd =
//!   ssthresh = cwnd · min_rtt / recent_rtt` (at least 16) before loss would end it.
//! - **Pacing** ([`super::Config::pacing`]): sends are spaced at `gain · cwnd · mss / srtt`
//!   (gain 2 in slow start, 1.25 above, like Linux) by a token bucket that allows bursts of
//!   4 segments or 1 ms, whichever is more; a send held back by the pacer becomes a
//!   deadline. No pacing before the first RTT sample.
//! - **Cost per packet**: the pipe, lost and SACKed segment counts are kept incrementally;
//!   loss detection scans the window only when an ACK brings new SACK information, and
//!   segments are written into the datagram from the send buffer without copying them out.
//! - **Flow control**: a new segment goes out only if all bytes from the cumulative ack through
//!   it fit the peer's advertised window; with a closed window and nothing in flight, the RTO
//!   timer becomes a persist timer that sends one segment as a window probe.
//! - **Delayed ACKs** (RFC 1122 §4.2.3.2 / RFC 5681 §4.2): ACK every second in-order segment,
//!   at once for out-of-order, duplicate or hole-filling segments, otherwise after `ack_delay`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::frame::{MAX_SACK_RANGES, SackRange};

/// Counters of one reliable sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Payload bytes accepted from the application.
    pub bytes_written: u64,
    /// Payload bytes sent for the first time.
    pub bytes_sent: u64,
    /// Payload bytes sent again.
    pub bytes_retransmitted: u64,
    /// Segments sent again.
    pub segments_retransmitted: u64,
    /// Retransmission timer expiries.
    pub rto_expiries: u64,
    /// Recovery episodes entered on SACK evidence (fast retransmit).
    pub fast_recoveries: u64,
    /// Zero-window probes sent.
    pub window_probes: u64,
    /// Slow starts ended by the delay signal (queue building up) before any loss.
    pub slow_start_delay_exits: u64,
}

/// A snapshot of a reliable sender's congestion state, for instrumentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CongestionState {
    /// Congestion window in segments.
    pub cwnd: f64,
    /// Slow-start threshold in segments ([`super::Config::max_cwnd`] until the first exit).
    pub ssthresh: f64,
    /// Segments in flight: sent, neither acknowledged nor deemed lost.
    pub in_flight: usize,
    /// Segments deemed lost and not yet sent again.
    pub lost: usize,
    /// Smoothed round-trip time, once sampled.
    pub srtt: Option<Duration>,
    /// Smallest round-trip time sampled.
    pub min_rtt: Option<Duration>,
    /// Current retransmission timeout.
    pub rto: Duration,
    /// Pacing rate in bytes per second (none before the first RTT sample: unpaced).
    pub pacing_rate: Option<f64>,
    /// In a loss-recovery episode (fast recovery or after an RTO).
    pub in_recovery: bool,
    /// The peer's advertised receive window in bytes.
    pub peer_window: u32,
}

#[derive(Debug)]
struct Segment {
    data: Vec<u8>,
    sent_at: Option<Instant>,
    tx_count: u32,
    sacked: bool,
    lost: bool,
}

/// Tuning shared by senders, copied from [`super::Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendParams {
    pub initial_rto: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
    pub initial_cwnd: u32,
    pub max_cwnd: u32,
    /// Full segment payload size (for pacing).
    pub mss: usize,
    /// Pace sends at a multiple of `cwnd / srtt`.
    pub pacing: bool,
}

/// Slow-start exit on delay (HyStart, Ha & Rhee 2011; Linux `tcp_cubic` "delay" detection):
/// RTT samples needed in a round before judging it.
const HYSTART_MIN_SAMPLES: u32 = 8;
/// Smallest window (segments) at which the delay signal may end slow start.
const HYSTART_LOW_WINDOW: f64 = 16.0;
/// Bounds of the delay increase (`min_rtt / 8`, clamped) that ends slow start.
const HYSTART_MIN_ETA: Duration = Duration::from_millis(4);
const HYSTART_MAX_ETA: Duration = Duration::from_millis(16);
/// Pacing gains (Linux `sysctl_tcp_pacing_ss_ratio` / `ca_ratio`: 200 % and 120 %).
const PACING_GAIN_SS: f64 = 2.0;
const PACING_GAIN_CA: f64 = 1.25;
/// Bursts allowed by the pacer: this many segments or this much time at the pacing rate,
/// whichever is more (so a driver with coarse timers is not throttled at high rates).
const PACING_BURST_SEGMENTS: f64 = 4.0;
const PACING_BURST_TIME: Duration = Duration::from_millis(1);

/// Why an ACK was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckViolation {
    /// Cumulative ack or SACK range beyond what was sent.
    AckBeyondSent,
}

/// The sending half of a reliable channel.
#[derive(Debug)]
pub(crate) struct Sender {
    p: SendParams,
    /// `segs[i]` has sequence number `una + i`.
    segs: VecDeque<Segment>,
    una: u32,
    /// Index in `segs` of the first never-sent segment.
    next_idx: usize,
    /// Bytes in `segs` (sent or not).
    buffered: usize,
    /// Bytes of `segs[..next_idx]`.
    span_bytes: usize,
    /// Segments of `segs[..next_idx]` neither SACKed nor lost (the RFC 6675 "pipe").
    pipe: usize,
    /// Segments of `segs[..next_idx]` marked lost (not SACKed, not yet resent).
    lost_count: usize,
    /// Segments of `segs` SACKed.
    sacked_count: usize,
    peer_window: u32,
    cwnd: f64,
    ssthresh: f64,
    recovery_until: Option<u32>,
    /// The recovery episode came from SACK evidence (cwnd frozen) rather than an RTO (slow
    /// start from one segment).
    fast_recovery: bool,
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    /// Slow-start round: ends when the cumulative ack passes this sequence number.
    round_end: u32,
    round_min: Option<Duration>,
    round_samples: u32,
    rto: Duration,
    timer: Option<Instant>,
    /// Pacer: earliest time of the next send, in token-bucket virtual time.
    release_at: Option<Instant>,
    /// Set when a send was held back by the pacer: wake up then.
    pace_wait: Option<Instant>,
    probe: bool,
    pub(crate) stats: SendStats,
}

impl Sender {
    pub(crate) fn new(p: SendParams, initial_window: u32) -> Self {
        Self {
            p,
            segs: VecDeque::new(),
            una: 0,
            next_idx: 0,
            buffered: 0,
            span_bytes: 0,
            pipe: 0,
            lost_count: 0,
            sacked_count: 0,
            peer_window: initial_window,
            cwnd: f64::from(p.initial_cwnd.max(1)),
            ssthresh: f64::from(p.max_cwnd),
            recovery_until: None,
            fast_recovery: false,
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            round_end: 0,
            round_min: None,
            round_samples: 0,
            rto: p.initial_rto,
            timer: None,
            release_at: None,
            pace_wait: None,
            probe: false,
            stats: SendStats::default(),
        }
    }

    /// Bytes held (unsent or unacknowledged).
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Nothing left to send or acknowledge.
    pub(crate) fn is_idle(&self) -> bool {
        self.segs.is_empty()
    }

    /// Current retransmission timeout.
    pub(crate) fn rto(&self) -> Duration {
        self.rto
    }

    /// A snapshot of the congestion state.
    pub(crate) fn congestion(&self) -> CongestionState {
        CongestionState {
            cwnd: self.cwnd,
            ssthresh: self.ssthresh,
            in_flight: self.pipe,
            lost: self.lost_count,
            srtt: self.srtt,
            min_rtt: self.min_rtt,
            rto: self.rto,
            pacing_rate: self.pacing_rate(),
            in_recovery: self.recovery_until.is_some(),
            peer_window: self.peer_window,
        }
    }

    /// Queues `data`, filling the last unsent segment first, in segments of `seg_size`.
    /// The caller has checked the buffer limit.
    pub(crate) fn write(&mut self, mut data: &[u8], seg_size: usize) -> bool {
        let seg_size = seg_size.max(1);
        let extra = data.len().div_ceil(seg_size);
        let last_seq = u64::from(self.una) + (self.segs.len() + extra) as u64;
        if last_seq > u64::from(u32::MAX) {
            return false;
        }
        self.buffered += data.len();
        self.stats.bytes_written += data.len() as u64;
        if self.segs.len() > self.next_idx
            && let Some(last) = self.segs.back_mut()
        {
            let room = seg_size.saturating_sub(last.data.len());
            let n = room.min(data.len());
            last.data.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        while !data.is_empty() {
            let n = seg_size.min(data.len());
            let mut buf = Vec::with_capacity(seg_size);
            buf.extend_from_slice(&data[..n]);
            self.segs.push_back(Segment {
                data: buf,
                sent_at: None,
                tx_count: 0,
                sacked: false,
                lost: false,
            });
            data = &data[n..];
        }
        true
    }

    fn cwnd_ok(&self) -> bool {
        (self.pipe as f64) < self.cwnd.floor().max(1.0)
    }

    fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh && self.recovery_until.is_none()
    }

    /// The window may grow: outside recovery, or in the slow start that follows an RTO.
    fn may_grow(&self) -> bool {
        self.recovery_until.is_none() || !self.fast_recovery
    }

    /// Bytes per second the pacer allows (none before the first RTT sample, or when off).
    fn pacing_rate(&self) -> Option<f64> {
        if !self.p.pacing {
            return None;
        }
        let srtt = self.srtt?.as_secs_f64().max(1e-6);
        let gain = if self.cwnd < self.ssthresh {
            PACING_GAIN_SS
        } else {
            PACING_GAIN_CA
        };
        Some(gain * self.cwnd * self.p.mss.max(1) as f64 / srtt)
    }

    fn pacing_ok(&self, now: Instant) -> bool {
        self.release_at.is_none_or(|t| t <= now)
    }

    /// Charges `len` bytes sent at `now` to the pacer's token bucket.
    fn pace(&mut self, now: Instant, len: usize) {
        let Some(rate) = self.pacing_rate() else {
            self.release_at = None;
            return;
        };
        let burst = Duration::from_secs_f64(PACING_BURST_SEGMENTS * self.p.mss as f64 / rate)
            .max(PACING_BURST_TIME);
        let floor = now.checked_sub(burst).unwrap_or(now);
        let base = self.release_at.map_or(floor, |t| t.max(floor));
        self.release_at = Some(base + Duration::from_secs_f64(len as f64 / rate));
        self.pace_wait = None;
    }

    fn first_lost(&self) -> Option<usize> {
        if self.lost_count == 0 {
            return None;
        }
        self.segs.iter().take(self.next_idx).position(|s| s.lost)
    }

    /// The next segment to (re)send if it fits `max_payload`: a lost one first, else a new one
    /// the windows allow. Marks it sent at `now`. Call [`Self::wants_to_send`] first: it
    /// applies the pacer.
    pub(crate) fn next_segment(
        &mut self,
        now: Instant,
        max_payload: usize,
    ) -> Option<(u32, &[u8])> {
        let cwnd_ok = self.cwnd_ok();
        // Retransmissions first (lowest sequence first).
        if cwnd_ok && let Some(i) = self.first_lost() {
            let len = self.segs[i].data.len();
            if len > max_payload {
                return None;
            }
            self.lost_count -= 1;
            self.pipe += 1;
            self.stats.bytes_retransmitted += len as u64;
            self.stats.segments_retransmitted += 1;
            self.timer.get_or_insert(now + self.rto);
            self.pace(now, len);
            let seg = &mut self.segs[i];
            seg.lost = false;
            seg.tx_count += 1;
            seg.sent_at = Some(now);
            return Some((self.una.wrapping_add(i as u32), &seg.data));
        }
        let len = self.segs.get(self.next_idx)?.data.len();
        if len > max_payload {
            return None;
        }
        let window_ok = self.span_bytes + len <= self.peer_window as usize;
        let probe = !window_ok && self.probe;
        if !(probe || window_ok && cwnd_ok) {
            if !window_ok && self.pipe == 0 && self.timer.is_none() {
                // Persist timer (zero-window probe).
                self.timer = Some(now + self.rto);
            }
            return None;
        }
        if probe {
            self.probe = false;
            self.stats.window_probes += 1;
        }
        let seq = self.una.wrapping_add(self.next_idx as u32);
        let idx = self.next_idx;
        self.next_idx += 1;
        self.span_bytes += len;
        self.pipe += 1;
        self.stats.bytes_sent += len as u64;
        self.timer.get_or_insert(now + self.rto);
        self.pace(now, len);
        let seg = &mut self.segs[idx];
        seg.tx_count = 1;
        seg.sent_at = Some(now);
        Some((seq, &seg.data))
    }

    /// Something can be sent now (lost segments, or new ones within the windows, and the
    /// pacer allows it). When only the pacer holds it back, its release time becomes a
    /// deadline.
    pub(crate) fn wants_to_send(&mut self, now: Instant) -> bool {
        if !self.cwnd_ok() {
            return false;
        }
        let want = if self.lost_count > 0 {
            true
        } else {
            match self.segs.get(self.next_idx) {
                Some(s) => {
                    if self.span_bytes + s.data.len() <= self.peer_window as usize {
                        true
                    } else {
                        // A window probe is never paced.
                        return self.probe;
                    }
                }
                None => false,
            }
        };
        if want && !self.pacing_ok(now) {
            self.pace_wait = self.release_at;
            return false;
        }
        want
    }

    fn rtt_sample(&mut self, r: Duration) {
        // RFC 6298 §2.2-2.3 (alpha = 1/8, beta = 1/4, G = 1 ms).
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + r) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        let rto = srtt + (self.rttvar * 4).max(Duration::from_millis(1));
        self.rto = rto.clamp(self.p.min_rto, self.p.max_rto);
        let min_rtt = self.min_rtt.map_or(r, |m| m.min(r));
        self.min_rtt = Some(min_rtt);
        // Delay-based slow-start exit: the smallest of the last few RTT samples rose well
        // above the smallest ever seen, so a queue is building. Judged on batches of samples
        // within the round (not only its first ones) because with a queue of one BDP, a round
        // of doubling overflows it before the next round's first samples could tell.
        if self.in_slow_start() {
            self.round_min = Some(self.round_min.map_or(r, |m| m.min(r)));
            self.round_samples += 1;
            if self.round_samples >= HYSTART_MIN_SAMPLES {
                let eta = (min_rtt / 8).clamp(HYSTART_MIN_ETA, HYSTART_MAX_ETA);
                let recent = self.round_min.unwrap_or(r);
                if self.cwnd >= HYSTART_LOW_WINDOW && recent >= min_rtt + eta {
                    // The window that produced `recent` would fill the path at `min_rtt`
                    // scaled down by the queueing seen: continue from there, not from the
                    // doubled window already sent.
                    let scaled = self.cwnd * min_rtt.as_secs_f64() / recent.as_secs_f64();
                    self.ssthresh = scaled.max(HYSTART_LOW_WINDOW);
                    self.cwnd = self.ssthresh;
                    self.stats.slow_start_delay_exits += 1;
                }
                self.round_min = None;
                self.round_samples = 0;
            }
        }
    }

    /// Processes an ACK; returns the number of payload bytes freed from the buffer.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        cum: u32,
        window: u32,
        sacks: &[SackRange],
    ) -> Result<usize, AckViolation> {
        let sent_end = u64::from(self.una) + self.next_idx as u64;
        if u64::from(cum) > sent_end || sacks.iter().any(|s| u64::from(s.end) > sent_end) {
            return Err(AckViolation::AckBeyondSent);
        }
        if cum >= self.una {
            // A reordered older ACK must not shrink the window it was overtaken by.
            self.peer_window = window;
        }
        let mut newest_sample: Option<Instant> = None;
        let mut newly_acked = 0usize;
        let mut newly_sacked = 0usize;
        let mut freed = 0usize;
        // Cumulative part.
        while self.una < cum {
            let Some(seg) = self.segs.pop_front() else {
                break;
            };
            self.una = self.una.wrapping_add(1);
            self.next_idx = self.next_idx.saturating_sub(1);
            self.span_bytes = self.span_bytes.saturating_sub(seg.data.len());
            self.buffered = self.buffered.saturating_sub(seg.data.len());
            freed += seg.data.len();
            if seg.sacked {
                self.sacked_count -= 1;
            } else {
                if seg.lost {
                    self.lost_count -= 1;
                } else {
                    self.pipe -= 1;
                }
                newly_acked += 1;
                if seg.tx_count == 1 {
                    newest_sample = seg.sent_at.max(newest_sample);
                }
            }
        }
        // Selective part.
        for r in sacks {
            let lo = r.start.saturating_sub(self.una) as usize;
            let hi = (r.end.saturating_sub(self.una) as usize).min(self.next_idx);
            for seg in self.segs.iter_mut().take(hi).skip(lo) {
                if !seg.sacked {
                    seg.sacked = true;
                    self.sacked_count += 1;
                    if seg.lost {
                        seg.lost = false;
                        self.lost_count -= 1;
                    } else {
                        self.pipe -= 1;
                    }
                    newly_acked += 1;
                    newly_sacked += 1;
                    if seg.tx_count == 1 {
                        newest_sample = seg.sent_at.max(newest_sample);
                    }
                }
            }
        }
        if let Some(t) = newest_sample {
            self.rtt_sample(now.saturating_duration_since(t));
        }
        if freed > 0 {
            // RFC 6298 §5.3: restart the timer when new data is acknowledged.
            self.timer = None;
            self.probe = false;
        }
        if let Some(until) = self.recovery_until
            && self.una >= until
        {
            self.recovery_until = None;
        }
        if self.una >= self.round_end {
            // A new slow-start round: everything sent so far is its last segment.
            self.round_end = self.una.wrapping_add(self.next_idx as u32);
            self.round_min = None;
            self.round_samples = 0;
        }
        // Loss detection: three later-sent SACKed segments above an un-SACKed one. Only new
        // SACK information can change the verdict.
        let mut newly_lost = false;
        if newly_sacked > 0 {
            let mut top3: [Option<Instant>; 3] = [None; 3];
            for seg in self.segs.iter_mut().take(self.next_idx).rev() {
                if seg.sacked {
                    let t = seg.sent_at;
                    if t > top3[0] {
                        top3 = [t, top3[0], top3[1]];
                    } else if t > top3[1] {
                        top3 = [top3[0], t, top3[1]];
                    } else if t > top3[2] {
                        top3[2] = t;
                    }
                } else if !seg.lost
                    && let (Some(third), Some(sent)) = (top3[2], seg.sent_at)
                    && third >= sent
                {
                    seg.lost = true;
                    self.lost_count += 1;
                    self.pipe -= 1;
                    newly_lost = true;
                }
            }
        }
        if newly_lost && self.recovery_until.is_none() {
            self.ssthresh = (self.cwnd / 2.0).max(2.0);
            self.cwnd = self.ssthresh;
            self.recovery_until = Some(self.una.wrapping_add(self.next_idx as u32));
            self.fast_recovery = true;
            self.stats.fast_recoveries += 1;
        } else if self.may_grow() && newly_acked > 0 {
            let n = newly_acked as f64;
            if self.cwnd < self.ssthresh {
                self.cwnd = (self.cwnd + n).min(self.ssthresh.max(self.cwnd));
            } else {
                self.cwnd += n / self.cwnd;
            }
            self.cwnd = self.cwnd.min(f64::from(self.p.max_cwnd));
        }
        if self.next_idx == 0 {
            // RFC 6298 §5.2: nothing outstanding.
            self.timer = None;
        } else if self.timer.is_none() {
            self.timer = Some(now + self.rto);
        }
        Ok(freed)
    }

    /// The retransmission (or persist) deadline, or the pacer's release time when it holds a
    /// send back.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match (self.timer, self.pace_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles an expired timer.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if self.pace_wait.is_some_and(|t| t <= now) {
            // The pacer released: the next poll sends.
            self.pace_wait = None;
        }
        let Some(t) = self.timer else { return };
        if t > now {
            return;
        }
        self.timer = None;
        if self.next_idx == 0 {
            // Persist timer: allow one segment past a closed window.
            if !self.segs.is_empty() {
                self.probe = true;
            }
            self.rto = (self.rto * 2).min(self.p.max_rto);
            return;
        }
        // RFC 6298 §5.4-5.7: everything un-SACKed is lost; back off.
        self.stats.rto_expiries += 1;
        let flight = self.pipe as f64;
        for seg in self.segs.iter_mut().take(self.next_idx) {
            if !seg.sacked && !seg.lost {
                seg.lost = true;
                self.lost_count += 1;
            }
        }
        self.pipe = 0;
        self.ssthresh = (flight / 2.0).max(2.0);
        self.cwnd = 1.0;
        self.recovery_until = Some(self.una.wrapping_add(self.next_idx as u32));
        self.fast_recovery = false;
        self.rto = (self.rto * 2).min(self.p.max_rto);
        self.release_at = None;
        // Re-armed when the retransmission goes out.
    }
}

/// What the receiver did with a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// In order: delivered (with any segments it unblocked).
    InOrder {
        /// A hole was filled (segments were waiting above it).
        filled_hole: bool,
    },
    /// Held above a hole.
    OutOfOrder,
    /// Already had it.
    Duplicate,
    /// No room (window or out-of-order limit): dropped.
    Dropped,
}

/// The receiving half of a reliable channel.
#[derive(Debug, Default)]
pub(crate) struct Receiver {
    next: u32,
    ooo: BTreeMap<u32, Vec<u8>>,
    ooo_bytes: usize,
}

impl Receiver {
    /// Next segment expected (the cumulative ack).
    pub(crate) fn cum(&self) -> u32 {
        self.next
    }

    /// Bytes held out of order.
    pub(crate) fn ooo_bytes(&self) -> usize {
        self.ooo_bytes
    }

    /// Accepts a segment; in-order bytes are appended to `deliver`. `room` is the buffer
    /// space left (excluding out-of-order bytes); `max_ooo` bounds segments held above a hole.
    pub(crate) fn on_data(
        &mut self,
        seq: u32,
        payload: &[u8],
        room: usize,
        max_ooo: usize,
        deliver: &mut Vec<Vec<u8>>,
    ) -> Arrival {
        if seq < self.next || self.ooo.contains_key(&seq) {
            return Arrival::Duplicate;
        }
        let ahead = (seq - self.next) as usize;
        if ahead >= max_ooo || self.ooo_bytes + payload.len() > room {
            return Arrival::Dropped;
        }
        if seq != self.next {
            self.ooo_bytes += payload.len();
            self.ooo.insert(seq, payload.to_vec());
            return Arrival::OutOfOrder;
        }
        deliver.push(payload.to_vec());
        self.next = self.next.wrapping_add(1);
        let filled_hole = !self.ooo.is_empty();
        while let Some(data) = self.ooo.remove(&self.next) {
            self.ooo_bytes -= data.len();
            deliver.push(data);
            self.next = self.next.wrapping_add(1);
        }
        Arrival::InOrder { filled_hole }
    }

    /// Up to `max` SACK ranges of held segments, lowest first.
    pub(crate) fn sack_ranges(&self, max: usize) -> Vec<SackRange> {
        let max = max.min(MAX_SACK_RANGES);
        let mut out: Vec<SackRange> = Vec::new();
        for &seq in self.ooo.keys() {
            match out.last_mut() {
                Some(r) if r.end == seq => r.end = seq.wrapping_add(1),
                _ => {
                    if out.len() == max {
                        break;
                    }
                    out.push(SackRange {
                        start: seq,
                        end: seq.saturating_add(1),
                    });
                }
            }
        }
        out
    }
}
