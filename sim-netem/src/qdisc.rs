//! Queue disciplines at a link's egress: the drop-tail FIFO here, and the trait the MEF
//! router's fair scheduler implements.

use std::any::Any;
use std::collections::VecDeque;
use std::time::Instant;

use crate::endpoint::Datagram;

/// A datagram inside the network, with the bookkeeping links need.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The datagram.
    pub dgram: Datagram,
    /// Unique id assigned when the packet entered the network (for tracing and duplicates).
    pub id: u64,
    /// When it was enqueued at the current link (set by the link; used for queueing delay).
    pub enqueued_at: Instant,
}

impl Packet {
    /// Size on the wire in bytes.
    pub fn wire_len(&self) -> usize {
        self.dgram.wire_len()
    }
}

/// Outcome of offering a packet to a queue discipline.
#[derive(Debug)]
pub enum Enqueue {
    /// The packet was queued.
    Queued,
    /// A packet was dropped to make the decision: the offered one or another victim
    /// (fair queueing drops from the longest queue). The link counts it as a bottleneck drop.
    Dropped(Packet),
    /// The offered packet was queued and these victims were dropped to make room.
    QueuedWithDrops(Vec<Packet>),
}

/// A link egress scheduler. It must be work-conserving: `dequeue` returns a packet whenever
/// `backlog_packets() > 0`. It is `Any` so callers can read a concrete scheduler's statistics.
pub trait Qdisc: Any {
    /// Offers a packet arriving at `now`. The link's rate is known to whoever built the qdisc
    /// (the topology builders pass the [`LinkConfig`](crate::LinkConfig) to the factory).
    fn enqueue(&mut self, now: Instant, pkt: Packet) -> Enqueue;
    /// Takes the next packet to put on the wire.
    fn dequeue(&mut self, now: Instant) -> Option<Packet>;
    /// Bytes queued.
    fn backlog_bytes(&self) -> usize;
    /// Packets queued.
    fn backlog_packets(&self) -> usize;
}

/// Drop-tail FIFO bounded in bytes, as a plain router or `tc` `bfifo` has.
#[derive(Debug)]
pub struct DropTail {
    limit_bytes: usize,
    bytes: usize,
    queue: VecDeque<Packet>,
}

impl DropTail {
    /// A FIFO holding at most `limit_bytes` bytes (at least one packet is always accepted into an
    /// empty queue).
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            limit_bytes,
            bytes: 0,
            queue: VecDeque::new(),
        }
    }
}

impl Qdisc for DropTail {
    fn enqueue(&mut self, _now: Instant, pkt: Packet) -> Enqueue {
        let len = pkt.wire_len();
        if !self.queue.is_empty() && self.bytes + len > self.limit_bytes {
            return Enqueue::Dropped(pkt);
        }
        self.bytes += len;
        self.queue.push_back(pkt);
        Enqueue::Queued
    }

    fn dequeue(&mut self, _now: Instant) -> Option<Packet> {
        let p = self.queue.pop_front()?;
        self.bytes -= p.wire_len();
        Some(p)
    }

    fn backlog_bytes(&self) -> usize {
        self.bytes
    }

    fn backlog_packets(&self) -> usize {
        self.queue.len()
    }
}
