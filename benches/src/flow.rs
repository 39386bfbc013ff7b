//! What every protocol adapter shares: the plan of a flow, what a sink observed of it, and the
//! sender's counters. The quinn baselines ([`crate::quinn_flow`]) and the MEF adapter
//! ([`crate::mef_flow`]) use the same types so scenarios are written once.

use std::time::{Duration, Instant};

use sim_netem::IP_UDP_OVERHEAD;

/// Length of the flow-id tag (little-endian `u64`) that starts every flow's byte stream, so a
/// sink serving many flows can tell them apart. It is not counted as payload.
pub const FLOW_TAG_LEN: usize = 8;

/// One flow a sender will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowPlan {
    /// Flow id, carried in the stream's first bytes; unique per sink.
    pub id: u64,
    /// When the sender opens the connection (its first packet leaves then).
    pub start: Instant,
    /// Payload bytes to send; `None` sends forever (a bulk flow).
    pub size: Option<u64>,
}

/// Counters of a sender, summed over its connections (live and finished).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Flows whose connection was opened.
    pub flows_started: u64,
    /// Sized flows whose every byte was acknowledged.
    pub flows_finished: u64,
    /// UDP datagrams sent.
    pub sent_packets: u64,
    /// UDP payload bytes sent.
    pub sent_bytes: u64,
    /// Packets the sender declared lost and whose data it sent again (quinn: path
    /// `lost_packets`; MEF: retransmitted packets).
    pub lost_packets: u64,
    /// Bytes in packets declared lost.
    pub lost_bytes: u64,
    /// Congestion events (window reductions) the sender recorded (0 for MEF, which never
    /// reduces its rate on loss).
    pub congestion_events: u64,
}

impl SenderStats {
    /// The counters accumulated between `earlier` and `self` (saturating).
    pub fn since(&self, earlier: &SenderStats) -> SenderStats {
        SenderStats {
            flows_started: self.flows_started.saturating_sub(earlier.flows_started),
            flows_finished: self.flows_finished.saturating_sub(earlier.flows_finished),
            sent_packets: self.sent_packets.saturating_sub(earlier.sent_packets),
            sent_bytes: self.sent_bytes.saturating_sub(earlier.sent_bytes),
            lost_packets: self.lost_packets.saturating_sub(earlier.lost_packets),
            lost_bytes: self.lost_bytes.saturating_sub(earlier.lost_bytes),
            congestion_events: self
                .congestion_events
                .saturating_sub(earlier.congestion_events),
        }
    }

    /// Wire bytes (UDP payload + IPv4/UDP headers) of the packets that were not declared lost.
    pub fn delivered_wire_bytes(&self) -> u64 {
        let sent = self.sent_bytes + IP_UDP_OVERHEAD as u64 * self.sent_packets;
        let lost = self.lost_bytes + IP_UDP_OVERHEAD as u64 * self.lost_packets;
        sent.saturating_sub(lost)
    }
}

/// What a sink observed of one flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowRecv {
    /// Flow id from the stream tag.
    pub id: u64,
    /// When the connection was accepted (its first packet reached the sink).
    pub accepted_at: Option<Instant>,
    /// When the first payload byte was delivered in order.
    pub first_byte_at: Option<Instant>,
    /// When the last payload byte so far was delivered.
    pub last_byte_at: Option<Instant>,
    /// Payload bytes delivered in order to the application (tag excluded).
    pub bytes: u64,
    /// When the stream's end was delivered (sized flows only).
    pub finished_at: Option<Instant>,
    /// Payload bytes delivered per series bin, starting at the sink's epoch (empty when the sink
    /// records no series).
    pub series: Vec<u64>,
}

/// Records delivered payload into a flow's counters and its time series.
pub fn record_delivery(
    f: &mut FlowRecv,
    n: u64,
    now: Instant,
    epoch: Instant,
    series_bin: Option<Duration>,
) {
    if n == 0 {
        return;
    }
    f.bytes += n;
    f.first_byte_at.get_or_insert(now);
    f.last_byte_at = Some(now);
    if let Some(bin) = series_bin {
        let idx =
            (now.saturating_duration_since(epoch).as_nanos() / bin.as_nanos().max(1)) as usize;
        if f.series.len() <= idx {
            f.series.resize(idx + 1, 0);
        }
        f.series[idx] += n;
    }
}

/// Incremental parser of the flow tag (for transports that deliver bytes in order) at the start of a byte stream.
#[derive(Debug, Clone, Default)]
pub struct TagReader {
    buf: Vec<u8>,
    id: Option<u64>,
}

impl TagReader {
    /// The flow id, once all tag bytes arrived.
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// Consumes tag bytes from the front of `data`; returns the rest (payload).
    pub fn feed<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        if self.id.is_some() {
            return data;
        }
        let take = (FLOW_TAG_LEN - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == FLOW_TAG_LEN {
            let mut b = [0u8; FLOW_TAG_LEN];
            b.copy_from_slice(&self.buf);
            self.id = Some(u64::from_le_bytes(b));
        }
        &data[take..]
    }
}

/// Tracks which byte ranges of a stream arrived (in any order) and how long the contiguous
/// prefix from offset 0 is: the bytes an application reading in order has received. Unlike
/// quinn's own ordered reassembly it has no limit on the number of gaps (quinn 0.11 aborts a
/// connection with more than 1024 gaps in one stream's buffer, which drop-tail overflow at
/// large windows produces).
#[derive(Debug, Clone, Default)]
pub struct Reassembly {
    /// Received ranges above the prefix: start → end (disjoint, non-adjacent).
    ranges: std::collections::BTreeMap<u64, u64>,
    prefix: u64,
    tag: [u8; FLOW_TAG_LEN],
}

impl Reassembly {
    /// Length of the contiguous prefix received.
    pub fn prefix(&self) -> u64 {
        self.prefix
    }

    /// The flow id, once the tag bytes are part of the prefix.
    pub fn flow_id(&self) -> Option<u64> {
        (self.prefix >= FLOW_TAG_LEN as u64).then(|| u64::from_le_bytes(self.tag))
    }

    /// Records `data` received at stream `offset`; returns how much the prefix grew.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> u64 {
        let end = offset + data.len() as u64;
        // Keep the tag bytes.
        if offset < FLOW_TAG_LEN as u64 {
            for (i, b) in data.iter().enumerate() {
                let pos = offset as usize + i;
                if pos >= FLOW_TAG_LEN {
                    break;
                }
                self.tag[pos] = *b;
            }
        }
        if end <= self.prefix {
            return 0;
        }
        let mut start = offset.max(self.prefix);
        let mut end = end;
        // Merge with overlapping or adjacent ranges.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.ranges.remove(&s);
        }
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        let before = self.prefix;
        if start <= self.prefix {
            self.prefix = end;
        } else {
            self.ranges.insert(start, end);
        }
        self.prefix - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembly_counts_in_order_prefix() {
        let mut r = Reassembly::default();
        let mut tag = 42u64.to_le_bytes().to_vec();
        tag.extend_from_slice(&[0; 2]);
        assert_eq!(r.insert(20, &[0; 10]), 0);
        assert_eq!(r.insert(12, &[0; 4]), 0);
        assert_eq!(r.flow_id(), None);
        assert_eq!(r.insert(0, &tag), 10);
        assert_eq!(r.flow_id(), Some(42));
        // Fill [10, 12): joins [12, 16), prefix 16; [20, 30) still waits for [16, 20).
        assert_eq!(r.insert(10, &[0; 2]), 6);
        assert_eq!(r.insert(14, &[0; 8]), 14); // [16,22) bridges to [20,30): prefix 16 -> 30
        assert_eq!(r.prefix(), 30);
        assert_eq!(r.insert(0, &[0; 30]), 0); // duplicate
    }
}
