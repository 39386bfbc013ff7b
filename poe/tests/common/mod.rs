//! Shared helpers of the integration tests (each test crate uses a part of them).
#![allow(dead_code)]

#[cfg(feature = "std")]
pub mod members;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The virtual clock and event queue of the deterministic simulations: events at virtual
/// nanoseconds since `epoch`, first in first out among equal times; no sleeping, no threads.
pub struct Clock<E> {
    epoch: Instant,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, E>,
}

impl<E> Clock<E> {
    /// An empty queue at virtual time 0 = `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            events: BTreeMap::new(),
        }
    }

    /// Virtual time now, ns.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The `Instant` of virtual time `ns`.
    pub fn at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// The virtual time of an `Instant` (0 before the epoch).
    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Queues `ev` at virtual time `t`.
    pub fn schedule(&mut self, t: u64, ev: E) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, ev);
    }

    /// The next event if it is due at or before `end`, with the clock moved to its time.
    pub fn next_until(&mut self, end: u64) -> Option<(u64, E)> {
        loop {
            let &Reverse((t, seq)) = self.heap.peek()?;
            if t > end {
                return None;
            }
            self.heap.pop();
            self.now = t;
            if let Some(ev) = self.events.remove(&seq) {
                return Some((t, ev));
            }
        }
    }

    /// Moves the clock to `end` if it is behind.
    pub fn advance_to(&mut self, end: u64) {
        self.now = self.now.max(end);
    }
}

/// A fresh directory under cargo's per-target temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `<suite>-<name>-<pid>`, emptied first.
    pub fn new(suite: &str, name: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{suite}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// The database path inside it.
    pub fn db(&self) -> PathBuf {
        self.0.join("poe.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
