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

/// Incremental parser of the flow tag at the start of a byte stream.
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
