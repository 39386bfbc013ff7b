//! Deficit Round Robin over per-flow queues with a shared byte limit and longest-queue drop.
//!
//! DRR (M. Shreedhar & G. Varghese, "Efficient fair queueing using deficit round robin",
//! SIGCOMM 1995): each backlogged flow has a FIFO and a deficit counter; flows are visited in
//! round-robin order, each visit adds one *quantum* (one MTU here) to the deficit, and the flow
//! sends head packets while the deficit covers them. Backlogged flows get equal byte shares
//! whatever their packet sizes, at O(1) work per packet. The signed-deficit form used here
//! (a flow may send while its deficit is positive and then goes negative by less than one
//! packet) is the one of fq_codel (RFC 8290 §4.2); a newly backlogged flow starts with a full
//! quantum so a sparse flow's packet waits at most one round.
//!
//! All flows share one byte limit (the configured buffer). When it is exceeded, packets are
//! dropped from the head of the **longest** queue, as fq_codel does on overflow (RFC 8290 §4.1,
//! "drop from the fattest flow"): a flow that sends faster than its share fills its own queue and
//! loses its own packets, while a light flow keeps its few packets. If the arriving packet's own
//! flow is (or ties for) the longest, the arriving packet is the one refused.
//!
//! The queue is generic over the flow key and the queued item so the simulator (queueing
//! `sim_netem::Packet`) and the daemon (queueing real buffers) share it. Keys are kept in a
//! `BTreeMap` so ties are broken the same way on every run (deterministic simulation).

use std::collections::{BTreeMap, VecDeque};

/// The outcome of [`FairQueue::enqueue`].
#[derive(Debug)]
pub enum Admit<K, T> {
    /// Queued; nothing dropped.
    Queued,
    /// Refused: the arriving item's flow is the longest and the buffer is full.
    Rejected(T),
    /// Queued; these items (with their flow keys) were dropped from the longest queue(s).
    QueuedWithDrops(Vec<(K, T)>),
}

#[derive(Debug)]
struct FlowQueue<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    deficit: i64,
}

/// A DRR scheduler over flows `K` holding items `T` (see the module docs).
#[derive(Debug)]
pub struct FairQueue<K, T> {
    /// Flows that are in the round-robin list (possibly emptied by a drop since).
    flows: BTreeMap<K, FlowQueue<T>>,
    /// Round-robin order; exactly the keys of `flows`.
    active: VecDeque<K>,
    quantum: usize,
    limit_bytes: usize,
    bytes: usize,
    packets: usize,
}

impl<K: Ord + Clone, T> FairQueue<K, T> {
    /// A scheduler with a shared buffer of `limit_bytes` (at least one item is always accepted
    /// into an empty scheduler) and a DRR quantum of `quantum` bytes (one MTU is the usual choice;
    /// at least 1).
    pub fn new(limit_bytes: usize, quantum: usize) -> Self {
        Self {
            flows: BTreeMap::new(),
            active: VecDeque::new(),
            quantum: quantum.max(1),
            limit_bytes,
            bytes: 0,
            packets: 0,
        }
    }

    /// Bytes queued.
    pub fn backlog_bytes(&self) -> usize {
        self.bytes
    }

    /// Items queued.
    pub fn backlog_packets(&self) -> usize {
        self.packets
    }

    /// Bytes queued by one flow.
    pub fn flow_backlog(&self, key: &K) -> usize {
        self.flows.get(key).map_or(0, |f| f.bytes)
    }

    /// Flows with at least one queued item.
    pub fn backlogged_flows(&self) -> usize {
        self.flows.values().filter(|f| !f.items.is_empty()).count()
    }

    /// The shared buffer limit in bytes.
    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// The DRR quantum in bytes.
    pub fn quantum(&self) -> usize {
        self.quantum
    }

    /// The key of the longest queue (ties: the smallest key), with its bytes.
    fn longest(&self) -> Option<(K, usize)> {
        let mut best: Option<(&K, usize)> = None;
        for (k, f) in &self.flows {
            if f.bytes > 0 && best.is_none_or(|(_, b)| f.bytes > b) {
                best = Some((k, f.bytes));
            }
        }
        best.map(|(k, b)| (k.clone(), b))
    }

    /// Offers `item` of `len` bytes from flow `key`.
    pub fn enqueue(&mut self, key: K, item: T, len: usize) -> Admit<K, T> {
        let over = self.packets > 0 && self.bytes + len > self.limit_bytes;
        if over {
            let own = self.flow_backlog(&key) + len;
            if self.longest().is_none_or(|(_, b)| own >= b) {
                return Admit::Rejected(item);
            }
        }
        self.push(key.clone(), item, len);
        if !over {
            return Admit::Queued;
        }
        let mut victims = Vec::new();
        while self.bytes > self.limit_bytes {
            let Some((victim, _)) = self.longest() else {
                break;
            };
            let Some(f) = self.flows.get_mut(&victim) else {
                break;
            };
            // Never drop the item just queued (it would be the only one of its flow).
            if victim == key && f.items.len() <= 1 {
                break;
            }
            let Some((it, l)) = f.items.pop_front() else {
                break;
            };
            f.bytes -= l;
            self.bytes -= l;
            self.packets -= 1;
            victims.push((victim, it));
        }
        Admit::QueuedWithDrops(victims)
    }

    fn push(&mut self, key: K, item: T, len: usize) {
        let quantum = self.quantum as i64;
        let f = match self.flows.get_mut(&key) {
            Some(f) => f,
            None => {
                self.active.push_back(key.clone());
                self.flows.entry(key).or_insert(FlowQueue {
                    items: VecDeque::new(),
                    bytes: 0,
                    deficit: quantum,
                })
            }
        };
        f.items.push_back((item, len));
        f.bytes += len;
        self.bytes += len;
        self.packets += 1;
    }

    /// Takes the next item in DRR order, with its flow key and length. Work-conserving: returns
    /// `Some` whenever anything is queued.
    pub fn dequeue(&mut self) -> Option<(K, T, usize)> {
        let quantum = self.quantum as i64;
        loop {
            let key = self.active.front()?.clone();
            let Some(f) = self.flows.get_mut(&key) else {
                self.active.pop_front();
                continue;
            };
            if f.items.is_empty() {
                // Emptied by a drop: leave the round.
                self.flows.remove(&key);
                self.active.pop_front();
                continue;
            }
            if f.deficit <= 0 {
                f.deficit += quantum;
                self.active.rotate_left(1);
                continue;
            }
            let (item, len) = f.items.pop_front()?;
            f.deficit -= len as i64;
            f.bytes -= len;
            self.bytes -= len;
            self.packets -= 1;
            if f.items.is_empty() {
                // Classic DRR: a flow that empties leaves the round and forgets its deficit.
                self.flows.remove(&key);
                self.active.pop_front();
            }
            return Some((key, item, len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backlogged_flows_share_bytes_equally_despite_packet_sizes() {
        // Flow 0 sends 1500-byte packets, flow 1 300-byte ones, flow 2 a mix: all backlogged.
        let mut q: FairQueue<u8, ()> = FairQueue::new(usize::MAX, 1500);
        let sizes: [&[usize]; 3] = [&[1500], &[300], &[64, 1200, 700, 1500]];
        let mut next = [0usize; 3];
        let mut served = [0usize; 3];
        for (f, s) in sizes.iter().enumerate() {
            for i in 0..50 {
                q.enqueue(f as u8, (), s[i % s.len()]);
            }
            next[f] = 50;
        }
        let mut total = 0;
        while total < 3_000_000 {
            let (k, (), len) = q.dequeue().expect("backlogged");
            let f = k as usize;
            served[f] += len;
            total += len;
            // keep it backlogged
            let s = sizes[f];
            q.enqueue(k, (), s[next[f] % s.len()]);
            next[f] += 1;
        }
        for s in served {
            let share = s as f64 / total as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.01 / 3.0, "share {share}");
        }
    }

    #[test]
    fn longest_queue_drop_protects_a_light_flow() {
        let mut q: FairQueue<&str, u32> = FairQueue::new(15_000, 1500);
        // The fat flow fills the buffer.
        for i in 0..10 {
            assert!(matches!(q.enqueue("fat", i, 1500), Admit::Queued));
        }
        // It cannot add more: it is the longest.
        assert!(matches!(q.enqueue("fat", 10, 1500), Admit::Rejected(10)));
        // A light flow still gets in, at the fat flow's expense (head drop).
        match q.enqueue("light", 100, 1500) {
            Admit::QueuedWithDrops(v) => assert_eq!(v, vec![("fat", 0)]),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.flow_backlog(&"light"), 1500);
        assert_eq!(q.backlog_bytes(), 15_000);
        // And is served within one round.
        let order: Vec<&str> = (0..3)
            .filter_map(|_| q.dequeue().map(|(k, _, _)| k))
            .collect();
        assert!(order[..2].contains(&"light"), "{order:?}");
    }

    #[test]
    fn empty_scheduler_accepts_one_oversized_item() {
        let mut q: FairQueue<u8, ()> = FairQueue::new(100, 1500);
        assert!(matches!(q.enqueue(1, (), 1500), Admit::Queued));
        assert!(matches!(q.enqueue(2, (), 1500), Admit::Rejected(())));
        assert_eq!(q.dequeue().map(|(k, _, l)| (k, l)), Some((1, 1500)));
        assert!(q.dequeue().is_none());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enq(u8, usize),
        Deq,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..6, 1usize..1600).prop_map(|(k, l)| Op::Enq(k, l)),
            2 => Just(Op::Deq),
        ]
    }

    proptest! {
        /// Byte and packet accounting stays exact, the limit holds (beyond a single item),
        /// nothing is lost or duplicated, per-flow FIFO order is kept, and the scheduler is
        /// work-conserving.
        #[test]
        fn accounting_and_conservation(ops in proptest::collection::vec(op(), 1..400)) {
            let mut q: FairQueue<u8, u32> = FairQueue::new(8000, 1500);
            let mut queued: Vec<(u8, u32, usize)> = Vec::new();
            let mut id = 0u32;
            let mut last_out: BTreeMap<u8, u32> = BTreeMap::new();
            for o in ops {
                match o {
                    Op::Enq(k, l) => {
                        id += 1;
                        match q.enqueue(k, id, l) {
                            Admit::Queued => queued.push((k, id, l)),
                            Admit::Rejected(i) => prop_assert_eq!(i, id),
                            Admit::QueuedWithDrops(v) => {
                                queued.push((k, id, l));
                                for (vk, vi) in v {
                                    let pos = queued.iter().position(|e| e.1 == vi);
                                    prop_assert!(pos.is_some());
                                    if let Some(p) = pos {
                                        prop_assert_eq!(queued[p].0, vk);
                                        queued.remove(p);
                                    }
                                }
                            }
                        }
                    }
                    Op::Deq => {
                        let got = q.dequeue();
                        prop_assert_eq!(got.is_some(), !queued.is_empty());
                        if let Some((k, i, l)) = got {
                            let pos = queued.iter().position(|e| e.1 == i);
                            prop_assert_eq!(pos.map(|p| (queued[p].0, queued[p].2)), Some((k, l)));
                            if let Some(p) = pos {
                                queued.remove(p);
                            }
                            if let Some(prev) = last_out.insert(k, i) {
                                prop_assert!(prev < i, "FIFO order within a flow");
                            }
                        }
                    }
                }
                let bytes: usize = queued.iter().map(|e| e.2).sum();
                prop_assert_eq!(q.backlog_bytes(), bytes);
                prop_assert_eq!(q.backlog_packets(), queued.len());
                prop_assert!(q.backlog_packets() <= 1 || bytes <= 8000 + 1600);
            }
        }
    }
}
