//! The two bounded caches of the gossip core: the seen cache (de-duplication) and the message
//! cache (`mcache`, answers to IWANT and the ids advertised in IHAVE).

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::MessageId;

/// Ids of messages already seen, bounded in count and in time.
///
/// An id is forgotten `ttl` after it was inserted, or earlier when `capacity` newer ids
/// arrived (the oldest goes first; each such early eviction is counted). Lookups use a hash
/// set; the eviction order is the insertion order, so nothing depends on hash iteration.
#[derive(Debug)]
pub struct SeenCache {
    capacity: usize,
    ttl: Duration,
    order: VecDeque<(Instant, MessageId)>,
    ids: HashSet<MessageId>,
    evicted: u64,
}

impl SeenCache {
    /// An empty cache of at most `capacity` ids, each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        SeenCache {
            capacity,
            ttl,
            order: VecDeque::new(),
            ids: HashSet::new(),
            evicted: 0,
        }
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.ids.contains(id)
    }

    /// Remember `id`; `false` if it was already remembered (a duplicate).
    pub fn insert(&mut self, now: Instant, id: MessageId) -> bool {
        self.expire(now);
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back((now, id));
        while self.order.len() > self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
                self.evicted += 1;
            }
        }
        true
    }

    /// Forget ids older than the TTL.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.order.front() {
            if now.saturating_duration_since(t) < self.ttl {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&id);
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Ids forgotten before their TTL because the cache was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

/// One cached message.
#[derive(Debug, Clone)]
struct Entry {
    topic: String,
    data: Vec<u8>,
}

/// Recent full messages in `history_length` windows, one per heartbeat (gossipsub `mcache`).
///
/// [`MessageCache::shift`] at every heartbeat opens a new window and drops the oldest with its
/// messages; [`MessageCache::gossip_ids`] lists the ids of the newest `history_gossip` windows
/// (what IHAVE advertises). Besides the windows, the cache holds at most `capacity` messages
/// and `max_bytes` bytes of data: when full, the oldest message goes first (counted in
/// [`MessageCache::evicted`]).
#[derive(Debug)]
pub struct MessageCache {
    capacity: usize,
    max_bytes: usize,
    history_gossip: usize,
    /// Newest window first; each window in insertion order.
    windows: VecDeque<VecDeque<MessageId>>,
    entries: HashMap<MessageId, Entry>,
    bytes: usize,
    evicted: u64,
}

impl MessageCache {
    /// An empty cache of `history_length` windows (at least one) advertising the newest
    /// `history_gossip`, holding at most `capacity` messages and `max_bytes` bytes of data.
    pub fn new(
        history_length: usize,
        history_gossip: usize,
        capacity: usize,
        max_bytes: usize,
    ) -> Self {
        let mut windows = VecDeque::new();
        for _ in 0..history_length.max(1) {
            windows.push_back(VecDeque::new());
        }
        MessageCache {
            capacity,
            max_bytes,
            history_gossip,
            windows,
            entries: HashMap::new(),
            bytes: 0,
            evicted: 0,
        }
    }

    /// Add a message to the newest window; `false` if it is already cached or larger than the
    /// whole cache.
    pub fn put(&mut self, id: MessageId, topic: &str, data: &[u8]) -> bool {
        if self.capacity == 0 || data.len() > self.max_bytes || self.entries.contains_key(&id) {
            return false;
        }
        while (self.entries.len() >= self.capacity || self.bytes + data.len() > self.max_bytes)
            && self.evict_oldest()
        {
            self.evicted += 1;
        }
        self.bytes += data.len();
        self.entries.insert(
            id,
            Entry {
                topic: String::from(topic),
                data: data.to_vec(),
            },
        );
        if let Some(w) = self.windows.front_mut() {
            w.push_back(id);
        }
        true
    }

    /// The cached message `id`, as (topic, data).
    pub fn get(&self, id: &MessageId) -> Option<(&str, &[u8])> {
        self.entries
            .get(id)
            .map(|e| (e.topic.as_str(), e.data.as_slice()))
    }

    /// Ids of `topic` in the newest `history_gossip` windows, newest window first.
    pub fn gossip_ids(&self, topic: &str) -> Vec<MessageId> {
        self.windows
            .iter()
            .take(self.history_gossip)
            .flat_map(|w| w.iter())
            .filter(|id| self.entries.get(id).is_some_and(|e| e.topic == topic))
            .copied()
            .collect()
    }

    /// Open a new window and drop the oldest one with its messages (at every heartbeat).
    pub fn shift(&mut self) {
        if let Some(old) = self.windows.pop_back() {
            for id in old {
                if let Some(e) = self.entries.remove(&id) {
                    self.bytes -= e.data.len();
                }
            }
        }
        self.windows.push_front(VecDeque::new());
    }

    fn evict_oldest(&mut self) -> bool {
        for w in self.windows.iter_mut().rev() {
            while let Some(id) = w.pop_front() {
                if let Some(e) = self.entries.remove(&id) {
                    self.bytes -= e.data.len();
                    return true;
                }
            }
        }
        false
    }

    /// Messages cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no message is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of data cached.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages dropped before leaving the windows because the cache was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        MessageId([n; 32])
    }

    #[test]
    fn seen_cache_is_bounded_in_count() {
        let t0 = Instant::now();
        let mut s = SeenCache::new(3, Duration::from_secs(60));
        for n in 0..5 {
            assert!(s.insert(t0, id(n)));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.evicted(), 2);
        assert!(!s.contains(&id(0)) && !s.contains(&id(1)));
        assert!(s.contains(&id(4)));
        assert!(!s.insert(t0, id(4)), "a duplicate");
    }

    #[test]
    fn seen_cache_is_bounded_in_time() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut s = SeenCache::new(100, ttl);
        assert!(s.insert(t0, id(1)));
        assert!(s.insert(t0 + Duration::from_secs(5), id(2)));
        s.expire(t0 + ttl);
        assert!(!s.contains(&id(1)));
        assert!(s.contains(&id(2)));
        assert_eq!(s.evicted(), 0, "expiry is not eviction");
        // Once forgotten, the id is new again.
        assert!(s.insert(t0 + ttl, id(1)));
    }

    #[test]
    fn mcache_windows_shift_out_and_gossip_covers_the_newest() {
        let mut m = MessageCache::new(3, 2, 100, 1000);
        assert!(m.put(id(1), "a", b"one"));
        assert!(!m.put(id(1), "a", b"one"));
        m.shift();
        assert!(m.put(id(2), "a", b"two"));
        assert!(m.put(id(3), "b", b"three"));
        assert_eq!(m.gossip_ids("a"), [id(2), id(1)]);
        m.shift();
        // id(1) is now in the third window: cached (IWANT) but no longer advertised.
        assert_eq!(m.gossip_ids("a"), [id(2)]);
        assert_eq!(m.get(&id(1)), Some(("a", &b"one"[..])));
        m.shift();
        assert_eq!(m.get(&id(1)), None);
        assert_eq!(m.len(), 2);
        assert_eq!(m.bytes(), 8);
        m.shift();
        m.shift();
        assert!(m.is_empty());
        assert_eq!(m.bytes(), 0);
    }

    #[test]
    fn mcache_is_bounded_in_count() {
        let mut m = MessageCache::new(5, 3, 2, 1000);
        m.put(id(1), "a", b"1");
        m.shift();
        m.put(id(2), "a", b"2");
        m.put(id(3), "a", b"3");
        assert_eq!(m.len(), 2);
        assert_eq!(m.evicted(), 1);
        assert_eq!(m.get(&id(1)), None, "the oldest goes first");
        m.put(id(4), "a", b"4");
        assert_eq!(m.get(&id(2)), None);
        assert_eq!(m.gossip_ids("a"), [id(3), id(4)]);
    }

    #[test]
    fn mcache_is_bounded_in_bytes() {
        let mut m = MessageCache::new(5, 3, 100, 10);
        assert!(m.put(id(1), "a", b"12345"));
        assert!(m.put(id(2), "a", b"1234"));
        assert!(m.put(id(3), "a", b"123"));
        assert_eq!((m.len(), m.bytes(), m.evicted()), (2, 7, 1));
        assert!(!m.put(id(4), "a", b"12345678901"), "larger than the cache");
        assert_eq!(m.len(), 2);
    }
}
