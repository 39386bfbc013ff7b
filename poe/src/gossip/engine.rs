//! The gossip state machine ([`Gossip`]): peers, subscriptions, meshes, fanout, caches,
//! outbound queues and the heartbeat.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::cache::{MessageCache, SeenCache};
use super::config::{ConfigError, GossipConfig, LargeMessageMode};
use super::frame::{Frame, FrameError, MAX_TOPIC_LEN, MAX_TOPICS, Subscription};
use super::{GossipEvent, MessageId, PeerId, Transport};

/// Requested ids are not requested again for this many heartbeats.
const IWANT_FOLLOWUP_HEARTBEATS: u32 = 3;

/// Counters and cache sizes of a [`Gossip`] node ([`Gossip::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Peers connected (gauge).
    pub peers: usize,
    /// Topics subscribed to (gauge).
    pub topics: usize,
    /// Mesh memberships summed over topics (gauge).
    pub mesh_peers: usize,
    /// Fanout memberships summed over topics (gauge).
    pub fanout_peers: usize,
    /// Ids in the seen cache (gauge).
    pub seen_entries: usize,
    /// Messages in the message cache (gauge).
    pub mcache_messages: usize,
    /// Bytes of data in the message cache (gauge).
    pub mcache_bytes: usize,
    /// Frames waiting in the per-peer outbound queues (gauge).
    pub queued_frames: usize,
    /// Bytes waiting in the per-peer outbound queues (gauge).
    pub queued_bytes: usize,
    /// Events waiting for the application (gauge).
    pub pending_events: usize,
    /// Requested ids not yet received (gauge).
    pub pending_iwant: usize,
    /// Messages published by this node.
    pub published: u64,
    /// Messages delivered to the application as events.
    pub delivered: u64,
    /// Messages received again while their id was in the seen cache.
    pub duplicates: u64,
    /// Frames given to [`Gossip::handle`].
    pub frames_received: u64,
    /// Frames that did not decode, or were larger than any valid frame.
    pub decode_errors: u64,
    /// Frames from a peer that was not added.
    pub unknown_peer_frames: u64,
    /// Messages larger than `max_message_size` that were dropped.
    pub oversize_drops: u64,
    /// Messages on topics this node is not subscribed to (not delivered, not forwarded).
    pub unsubscribed_drops: u64,
    /// Frames handed out by [`Gossip::poll_transmit`].
    pub frames_sent: u64,
    /// Bytes handed out by [`Gossip::poll_transmit`].
    pub bytes_sent: u64,
    /// Of `frames_sent`, PUBLISH frames (full messages).
    pub publish_frames_sent: u64,
    /// Of `frames_sent`, control frames (subscriptions, GRAFT, PRUNE, IHAVE, IWANT).
    pub control_frames_sent: u64,
    /// Frames dropped because the peer's outbound queue was full.
    pub queue_drops: u64,
    /// Messages not delivered because the event queue was full.
    pub event_drops: u64,
    /// Topic announcements ignored because the peer announced `max_peer_topics` already.
    pub peer_topic_drops: u64,
    /// Ids forgotten by the seen cache before their TTL (count bound).
    pub seen_evictions: u64,
    /// Messages dropped by the message cache before their window ended (count bound).
    pub mcache_evictions: u64,
    /// GRAFT frames queued.
    pub grafts_sent: u64,
    /// PRUNE frames queued.
    pub prunes_sent: u64,
    /// IHAVE frames queued.
    pub ihave_sent: u64,
    /// IWANT frames queued.
    pub iwant_sent: u64,
    /// Messages queued in answer to IWANT.
    pub iwant_served: u64,
    /// IHAVE frames ignored (over `max_ihave_messages` per heartbeat).
    pub ihave_ignored: u64,
    /// Requested ids not answered (over `max_iwant_replies` per heartbeat, or not cached).
    pub iwant_refused: u64,
    /// Heartbeats run.
    pub heartbeats: u64,
    /// IDONTWANT frames queued (gossipsub v1.2).
    pub idontwant_sent: u64,
    /// IDONTWANT frames taken from peers.
    pub idontwant_received: u64,
    /// IDONTWANT frames ignored (over `max_idontwant_messages` per heartbeat).
    pub idontwant_ignored: u64,
    /// Ids a peer's IDONTWANT set forgot early because it was full (`max_idontwant_ids`).
    pub idontwant_evictions: u64,
    /// Full messages not pushed to a peer because it had sent IDONTWANT for them.
    pub idontwant_suppressed: u64,
    /// Large messages announced to a mesh peer with IHAVE instead of pushed (announce-first).
    pub announced: u64,
    /// Pulls that timed out and asked the next announcer.
    pub iwant_retries: u64,
    /// Pulls given up: every remembered announcer timed out.
    pub iwant_given_up: u64,
    /// Ids still being pulled (gauge).
    pub pulls: usize,
}

/// Why a topic was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// Topics are 1 to 255 bytes.
    #[error("topic must be 1..={MAX_TOPIC_LEN} bytes, got {len}")]
    InvalidTopic {
        /// Its length.
        len: usize,
    },
}

/// Why [`Gossip::publish`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Topics are 1 to 255 bytes.
    #[error("topic must be 1..={MAX_TOPIC_LEN} bytes, got {len}")]
    InvalidTopic {
        /// Its length.
        len: usize,
    },
    /// The data is larger than `max_message_size`.
    #[error("message of {size} bytes exceeds max_message_size {max}")]
    MessageTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The same topic and data are in the seen cache (published or received recently).
    #[error("duplicate message {0:?}")]
    Duplicate(MessageId),
}

/// Why [`Gossip::handle`] rejected a frame (each also counted in [`GossipStats`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The sender was never added with [`Gossip::add_peer`] (or was removed).
    #[error("frame from unknown peer {0:?}")]
    UnknownPeer(PeerId),
    /// Larger than any valid frame under this configuration.
    #[error("frame of {len} bytes exceeds the limit {max}")]
    FrameTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// It did not decode.
    #[error("bad frame: {0}")]
    Decode(#[from] FrameError),
    /// A message larger than `max_message_size`.
    #[error("message of {size} bytes exceeds max_message_size {max}")]
    MessageTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// What this node knows of one peer.
#[derive(Debug, Default)]
struct Peer {
    /// Topics it announced (at most `max_peer_topics`).
    topics: BTreeSet<String>,
    /// Frames waiting to be sent to it (at most `max_queue_frames` and `max_queue_bytes`).
    queue: VecDeque<Vec<u8>>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    /// Whether it is in `Gossip::ready`.
    in_ready: bool,
    /// IHAVE frames taken from it this heartbeat.
    ihave_taken: usize,
    /// Messages sent to it in answer to IWANT this heartbeat.
    iwant_replies: usize,
    /// IDONTWANT frames taken from it this heartbeat.
    idontwant_taken: usize,
    /// Ids it does not want pushed (gossipsub v1.2 `dont_send_message_ids`), at most
    /// `max_idontwant_ids`, with the heartbeat each arrived at (in `dont_want_order`).
    dont_want: BTreeSet<MessageId>,
    /// `dont_want` in arrival order, to expire and evict the oldest first.
    dont_want_order: VecDeque<(u64, MessageId)>,
}

/// A message being pulled with IWANT: who was asked, until when, and who else announced it.
#[derive(Debug)]
struct Pull {
    /// The peer the last IWANT went to.
    asked: PeerId,
    /// When to ask the next announcer.
    deadline: Instant,
    /// Other peers that announced it, in arrival order (at most `max_announcers`).
    others: VecDeque<PeerId>,
    /// Every peer that announced it (they have it: no need to announce it back), at most
    /// `max_announcers + 1`.
    announcers: BTreeSet<PeerId>,
}

/// Peers a node publishes to on a topic it is not subscribed to.
#[derive(Debug)]
struct Fanout {
    peers: BTreeSet<PeerId>,
    last_publish: Instant,
}

/// A gossipsub-v1.1-like node, sans-IO (see the module documentation for the model).
///
/// Methods, by role (the quinn-proto order):
/// - getters: [`Gossip::stats`], [`Gossip::mesh`], [`Gossip::is_subscribed`],
///   [`Gossip::peer_count`], [`Gossip::self_id`], [`Gossip::config`];
/// - inputs: [`Gossip::handle`], [`Gossip::handle_timeout`];
/// - commands: [`Gossip::add_peer`], [`Gossip::remove_peer`], [`Gossip::subscribe`],
///   [`Gossip::unsubscribe`], [`Gossip::publish`];
/// - outputs, drained after every input or command: [`Gossip::poll_transmit`] (or
///   [`Gossip::flush`]), [`Gossip::poll_event`], then [`Gossip::poll_timeout`].
#[derive(Debug)]
pub struct Gossip {
    config: GossipConfig,
    self_id: PeerId,
    rng: ChaCha8Rng,
    peers: BTreeMap<PeerId, Peer>,
    topics: BTreeSet<String>,
    mesh: BTreeMap<String, BTreeSet<PeerId>>,
    fanout: BTreeMap<String, Fanout>,
    /// (topic, peer) pairs that may not be grafted before the instant.
    backoff: BTreeMap<(String, PeerId), Instant>,
    seen: SeenCache,
    mcache: MessageCache,
    /// Ids requested with IWANT, and when.
    pending_iwant: BTreeMap<MessageId, Instant>,
    /// Of `pending_iwant`, the ids with a fallback plan (at most `max_pending_iwant`).
    pulls: BTreeMap<MessageId, Pull>,
    /// The pulls' deadlines, earliest first.
    pull_deadlines: BTreeSet<(Instant, MessageId)>,
    /// Peers with queued frames, served round-robin.
    ready: VecDeque<PeerId>,
    events: VecDeque<GossipEvent>,
    /// Bytes of data in `events`.
    event_bytes: usize,
    next_heartbeat: Option<Instant>,
    stats: GossipStats,
}

fn topic_ok(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_LEN
}

impl Gossip {
    /// A node named `self_id` with no peers and no subscriptions.
    pub fn new(config: GossipConfig, self_id: PeerId) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut h = Sha256::new();
        h.update(b"POE1-gossip-rng");
        h.update(config.seed.to_be_bytes());
        h.update(self_id.0);
        let rng = ChaCha8Rng::from_seed(h.finalize().into());
        Ok(Gossip {
            seen: SeenCache::new(config.seen_capacity, config.seen_ttl),
            mcache: MessageCache::new(
                config.history_length,
                config.history_gossip,
                config.mcache_capacity,
                config.mcache_max_bytes,
            ),
            config,
            self_id,
            rng,
            peers: BTreeMap::new(),
            topics: BTreeSet::new(),
            mesh: BTreeMap::new(),
            fanout: BTreeMap::new(),
            backoff: BTreeMap::new(),
            pending_iwant: BTreeMap::new(),
            pulls: BTreeMap::new(),
            pull_deadlines: BTreeSet::new(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            event_bytes: 0,
            next_heartbeat: None,
            stats: GossipStats::default(),
        })
    }

    // ----- getters -----

    /// This node's id.
    pub fn self_id(&self) -> PeerId {
        self.self_id
    }

    /// The configuration.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// Peers connected.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether this node is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.topics.contains(topic)
    }

    /// The mesh of `topic`, in id order (empty if not subscribed).
    pub fn mesh(&self, topic: &str) -> Vec<PeerId> {
        self.mesh
            .get(topic)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Counters and current cache and queue sizes.
    pub fn stats(&self) -> GossipStats {
        GossipStats {
            peers: self.peers.len(),
            topics: self.topics.len(),
            mesh_peers: self.mesh.values().map(BTreeSet::len).sum(),
            fanout_peers: self.fanout.values().map(|f| f.peers.len()).sum(),
            seen_entries: self.seen.len(),
            mcache_messages: self.mcache.len(),
            mcache_bytes: self.mcache.bytes(),
            queued_frames: self.peers.values().map(|p| p.queue.len()).sum(),
            queued_bytes: self.peers.values().map(|p| p.queued_bytes).sum(),
            pending_events: self.events.len(),
            pending_iwant: self.pending_iwant.len(),
            pulls: self.pulls.len(),
            seen_evictions: self.seen.evicted(),
            mcache_evictions: self.mcache.evicted(),
            ..self.stats
        }
    }

    // ----- commands -----

    /// A connection to `peer` is up; our subscriptions are sent to it. `false` if it was
    /// already added or is this node.
    pub fn add_peer(&mut self, peer: PeerId) -> bool {
        if peer == self.self_id || self.peers.contains_key(&peer) {
            return false;
        }
        self.peers.insert(peer, Peer::default());
        let subs: Vec<Subscription> = self
            .topics
            .iter()
            .map(|t| Subscription {
                subscribe: true,
                topic: t.clone(),
            })
            .collect();
        for chunk in subs.chunks(MAX_TOPICS) {
            self.send(peer, &Frame::Subscriptions(chunk.to_vec()));
        }
        true
    }

    /// The connection to `peer` is gone: it leaves every mesh and fanout set and its queued
    /// frames are discarded. `false` if it was not added.
    pub fn remove_peer(&mut self, peer: PeerId) -> bool {
        if self.peers.remove(&peer).is_none() {
            return false;
        }
        for m in self.mesh.values_mut() {
            m.remove(&peer);
        }
        for f in self.fanout.values_mut() {
            f.peers.remove(&peer);
        }
        // So the backoff map and the ready list stay within topics × current peers.
        self.backoff.retain(|(_, p), _| *p != peer);
        self.ready.retain(|p| *p != peer);
        true
    }

    /// Join `topic`: announce it to every peer and GRAFT up to `D` of the peers that announced
    /// it (the fanout set first). `Ok(false)` if already subscribed.
    pub fn subscribe(&mut self, topic: &str) -> Result<bool, SubscribeError> {
        if !topic_ok(topic) {
            return Err(SubscribeError::InvalidTopic { len: topic.len() });
        }
        if !self.topics.insert(String::from(topic)) {
            return Ok(false);
        }
        self.announce(topic, true);
        let mut mesh: BTreeSet<PeerId> = self
            .fanout
            .remove(topic)
            .map(|f| f.peers)
            .unwrap_or_default();
        mesh.retain(|p| self.peer_has_topic(p, topic));
        mesh = mesh.into_iter().take(self.config.mesh_n).collect();
        let candidates: Vec<PeerId> = self
            .topic_peers(topic)
            .into_iter()
            .filter(|p| !mesh.contains(p) && !self.backoff.contains_key(&(String::from(topic), *p)))
            .collect();
        let more = self.config.mesh_n.saturating_sub(mesh.len());
        mesh.extend(self.choose(candidates, more));
        let graft = Frame::Graft {
            topics: alloc::vec![String::from(topic)],
        };
        for p in &mesh {
            self.send(*p, &graft);
            self.stats.grafts_sent += 1;
        }
        self.mesh.insert(String::from(topic), mesh);
        Ok(true)
    }

    /// Leave `topic`: PRUNE the mesh and announce it. `false` if not subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        if !self.topics.remove(topic) {
            return false;
        }
        let mesh = self.mesh.remove(topic).unwrap_or_default();
        let prune = Frame::Prune {
            topics: alloc::vec![String::from(topic)],
            backoff_secs: self.config.prune_backoff_secs(),
        };
        for p in mesh {
            self.send(p, &prune);
            self.stats.prunes_sent += 1;
        }
        self.announce(topic, false);
        true
    }

    /// Publish `data` on `topic`: it is remembered as seen, cached for IWANT and IHAVE, and
    /// pushed to the topic's mesh (or to its fanout set when not subscribed). It is not
    /// delivered back to this node. With no peer yet, it still spreads by IHAVE while cached.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: &str,
        data: &[u8],
    ) -> Result<MessageId, PublishError> {
        self.start_clock(now);
        if !topic_ok(topic) {
            return Err(PublishError::InvalidTopic { len: topic.len() });
        }
        if data.len() > self.config.max_message_size {
            return Err(PublishError::MessageTooLarge {
                size: data.len(),
                max: self.config.max_message_size,
            });
        }
        let id = MessageId::new(topic, data);
        if !self.seen.insert(now, id) {
            return Err(PublishError::Duplicate(id));
        }
        self.pending_iwant.remove(&id);
        self.end_pull(&id);
        self.mcache.put(id, topic, data);
        self.stats.published += 1;
        let targets: Vec<PeerId> = if self.topics.contains(topic) {
            self.mesh(topic)
        } else {
            self.fanout_peers(now, topic)
        };
        let bytes = Frame::Publish {
            topic: String::from(topic),
            data: data.to_vec(),
        }
        .to_bytes();
        for p in targets {
            self.enqueue(p, bytes.clone());
        }
        Ok(id)
    }

    // ----- inputs -----

    /// A frame arrived from `from`. Invalid frames are counted and reported; nothing in them
    /// can make this panic or grow a buffer beyond its bound.
    pub fn handle(&mut self, now: Instant, from: PeerId, bytes: &[u8]) -> Result<(), HandleError> {
        self.start_clock(now);
        self.stats.frames_received += 1;
        if !self.peers.contains_key(&from) {
            self.stats.unknown_peer_frames += 1;
            return Err(HandleError::UnknownPeer(from));
        }
        let max = self.config.max_frame_len();
        if bytes.len() > max {
            self.stats.decode_errors += 1;
            return Err(HandleError::FrameTooLarge {
                len: bytes.len(),
                max,
            });
        }
        let frame = Frame::decode(bytes).inspect_err(|_| self.stats.decode_errors += 1)?;
        match frame {
            Frame::Publish { topic, data } => self.on_publish(now, from, topic, data, bytes)?,
            Frame::Subscriptions(subs) => self.on_subscriptions(from, subs),
            Frame::Graft { topics } => self.on_graft(now, from, topics),
            Frame::Prune {
                topics,
                backoff_secs,
            } => self.on_prune(now, from, topics, backoff_secs),
            Frame::IHave { topic, ids } => self.on_ihave(now, from, &topic, ids),
            Frame::IWant { ids } => self.on_iwant(from, ids),
            Frame::IDontWant { ids } => self.on_idontwant(from, ids),
        }
        Ok(())
    }

    /// Time passed: pulls whose announcer did not answer in time ask the next one, and the
    /// heartbeat runs when it is due. The first call (or any first input with a `now`) starts
    /// the heartbeat clock.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.retry_pulls(now);
        let Some(due) = self.next_heartbeat else {
            self.start_clock(now);
            return;
        };
        if now < due {
            return;
        }
        self.heartbeat(now);
        let mut next = due + self.config.heartbeat_interval;
        if next <= now {
            next = now + self.config.heartbeat_interval;
        }
        self.next_heartbeat = Some(next);
    }

    // ----- outputs -----

    /// The next frame to send and its destination; peers are served round-robin.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Vec<u8>)> {
        while let Some(peer) = self.ready.pop_front() {
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            let Some(bytes) = p.queue.pop_front() else {
                p.in_ready = false;
                continue;
            };
            p.queued_bytes -= bytes.len();
            if p.queue.is_empty() {
                p.in_ready = false;
            } else {
                self.ready.push_back(peer);
            }
            self.stats.frames_sent += 1;
            self.stats.bytes_sent += bytes.len() as u64;
            if Frame::is_publish_bytes(&bytes) {
                self.stats.publish_frames_sent += 1;
            } else {
                self.stats.control_frames_sent += 1;
            }
            return Some((peer, bytes));
        }
        None
    }

    /// Drain every queued frame into `transport`; returns how many were sent.
    pub fn flush(&mut self, transport: &mut impl Transport) -> usize {
        let mut n = 0;
        while let Some((to, bytes)) = self.poll_transmit() {
            transport.send(to, bytes);
            n += 1;
        }
        n
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<GossipEvent> {
        let ev = self.events.pop_front()?;
        let GossipEvent::Message { data, .. } = &ev;
        self.event_bytes -= data.len();
        Some(ev)
    }

    /// When [`Gossip::handle_timeout`] should next be called (the next heartbeat or the
    /// earliest pull deadline); `None` until the clock has started.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pull = self.pull_deadlines.first().map(|(t, _)| *t);
        match (self.next_heartbeat, pull) {
            (Some(h), Some(p)) => Some(h.min(p)),
            (h, p) => h.or(p),
        }
    }

    // ----- frame handlers -----

    fn on_publish(
        &mut self,
        now: Instant,
        from: PeerId,
        topic: String,
        data: Vec<u8>,
        raw: &[u8],
    ) -> Result<(), HandleError> {
        if data.len() > self.config.max_message_size {
            self.stats.oversize_drops += 1;
            return Err(HandleError::MessageTooLarge {
                size: data.len(),
                max: self.config.max_message_size,
            });
        }
        // Not remembered as seen: junk on foreign topics must not flush the seen cache.
        if !self.topics.contains(&topic) {
            self.stats.unsubscribed_drops += 1;
            return Ok(());
        }
        let id = MessageId::new(&topic, &data);
        self.pending_iwant.remove(&id);
        // Peers that announced it have it: it is neither pushed nor announced to them.
        let has_it = self.end_pull(&id).unwrap_or_default();
        if !self.seen.insert(now, id) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        self.mcache.put(id, &topic, &data);
        let forward: Vec<PeerId> = self
            .mesh
            .get(&topic)
            .map(|m| {
                m.iter()
                    .copied()
                    .filter(|p| *p != from && !has_it.contains(p))
                    .collect()
            })
            .unwrap_or_default();
        let large = data.len() >= self.config.large_message_threshold;
        match self.config.large_message_mode {
            LargeMessageMode::AnnounceFirst if large => {
                let ihave = Frame::IHave {
                    topic: topic.clone(),
                    ids: alloc::vec![id],
                }
                .to_bytes();
                for p in forward {
                    self.enqueue(p, ihave.clone());
                    self.stats.announced += 1;
                }
            }
            mode => {
                if mode == LargeMessageMode::IDontWant && large {
                    // gossipsub v1.2 "Basic scenario": IDONTWANT to every mesh peer at once,
                    // queued ahead of the message itself.
                    let dont = Frame::IDontWant {
                        ids: alloc::vec![id],
                    }
                    .to_bytes();
                    let mesh: Vec<PeerId> = self
                        .mesh
                        .get(&topic)
                        .map(|m| m.iter().copied().filter(|p| *p != from).collect())
                        .unwrap_or_default();
                    for p in mesh {
                        self.enqueue(p, dont.clone());
                        self.stats.idontwant_sent += 1;
                    }
                }
                for p in forward {
                    if self
                        .peers
                        .get(&p)
                        .is_some_and(|q| q.dont_want.contains(&id))
                    {
                        self.stats.idontwant_suppressed += 1;
                        continue;
                    }
                    self.enqueue(p, raw.to_vec());
                }
            }
        }
        if self.events.len() >= self.config.max_events
            || self.event_bytes + data.len() > self.config.max_event_bytes
        {
            self.stats.event_drops += 1;
        } else {
            self.stats.delivered += 1;
            self.event_bytes += data.len();
            self.events
                .push_back(GossipEvent::Message { topic, data, from });
        }
        Ok(())
    }

    fn on_subscriptions(&mut self, from: PeerId, subs: Vec<Subscription>) {
        let max = self.config.max_peer_topics;
        for s in subs {
            let Some(p) = self.peers.get_mut(&from) else {
                return;
            };
            if s.subscribe {
                if p.topics.len() >= max && !p.topics.contains(&s.topic) {
                    self.stats.peer_topic_drops += 1;
                    continue;
                }
                p.topics.insert(s.topic);
            } else {
                p.topics.remove(&s.topic);
                if let Some(m) = self.mesh.get_mut(&s.topic) {
                    m.remove(&from);
                }
                if let Some(f) = self.fanout.get_mut(&s.topic) {
                    f.peers.remove(&from);
                }
            }
        }
    }

    fn on_graft(&mut self, now: Instant, from: PeerId, topics: Vec<String>) {
        let max = self.config.max_peer_topics;
        let mut refused = Vec::new();
        for t in topics {
            let backed_off = self
                .backoff
                .get(&(t.clone(), from))
                .is_some_and(|until| *until > now);
            if !self.topics.contains(&t) || backed_off {
                refused.push(t);
                continue;
            }
            let Some(p) = self.peers.get_mut(&from) else {
                return;
            };
            // A GRAFT implies a subscription.
            if !p.topics.contains(&t) {
                if p.topics.len() >= max {
                    self.stats.peer_topic_drops += 1;
                    refused.push(t);
                    continue;
                }
                p.topics.insert(t.clone());
            }
            // Over D_hi is fixed at the next heartbeat (gossipsub accepts, then prunes).
            self.mesh.entry(t).or_default().insert(from);
        }
        if !refused.is_empty() {
            refused.dedup();
            refused.truncate(MAX_TOPICS);
            let f = Frame::Prune {
                topics: refused,
                backoff_secs: self.config.prune_backoff_secs(),
            };
            self.send(from, &f);
            self.stats.prunes_sent += 1;
        }
    }

    fn on_prune(&mut self, now: Instant, from: PeerId, topics: Vec<String>, backoff_secs: u16) {
        let backoff = core::time::Duration::from_secs(u64::from(backoff_secs));
        for t in topics {
            if let Some(m) = self.mesh.get_mut(&t) {
                m.remove(&from);
            }
            // Only for our topics, so the backoff map stays within topics × peers.
            if self.topics.contains(&t)
                && !backoff.is_zero()
                && let Some(until) = now.checked_add(backoff)
            {
                self.backoff.insert((t, from), until);
            }
        }
    }

    fn on_ihave(&mut self, now: Instant, from: PeerId, topic: &str, ids: Vec<MessageId>) {
        if !self.topics.contains(topic) {
            return;
        }
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        if p.ihave_taken >= self.config.max_ihave_messages {
            self.stats.ihave_ignored += 1;
            return;
        }
        p.ihave_taken += 1;
        let mut want = Vec::new();
        for id in ids {
            if want.len() >= self.config.max_ihave_length
                || self.pending_iwant.len() >= self.config.max_pending_iwant
            {
                break;
            }
            if self.seen.contains(&id) {
                continue;
            }
            if self.pending_iwant.contains_key(&id) {
                // Already asked someone: remember this peer as a fallback.
                let max = self.config.max_announcers;
                if let Some(pull) = self.pulls.get_mut(&id)
                    && pull.asked != from
                    && !pull.announcers.contains(&from)
                    && pull.others.len() < max
                {
                    pull.others.push_back(from);
                    pull.announcers.insert(from);
                }
                continue;
            }
            self.pending_iwant.insert(id, now);
            let deadline = now + self.config.iwant_timeout;
            self.pulls.insert(
                id,
                Pull {
                    asked: from,
                    deadline,
                    others: VecDeque::new(),
                    announcers: BTreeSet::from([from]),
                },
            );
            self.pull_deadlines.insert((deadline, id));
            want.push(id);
        }
        if !want.is_empty() {
            self.send(from, &Frame::IWant { ids: want });
            self.stats.iwant_sent += 1;
        }
    }

    fn on_iwant(&mut self, from: PeerId, ids: Vec<MessageId>) {
        for id in ids {
            let Some(p) = self.peers.get_mut(&from) else {
                return;
            };
            if p.iwant_replies >= self.config.max_iwant_replies {
                self.stats.iwant_refused += 1;
                continue;
            }
            let Some((topic, data)) = self.mcache.get(&id) else {
                self.stats.iwant_refused += 1;
                continue;
            };
            p.iwant_replies += 1;
            let bytes = Frame::Publish {
                topic: String::from(topic),
                data: data.to_vec(),
            }
            .to_bytes();
            self.enqueue(from, bytes);
            self.stats.iwant_served += 1;
        }
    }

    /// gossipsub v1.2 "IDONTWANT Message": remember the ids in the peer's bounded
    /// `dont_send_message_ids` set (at most `max_idontwant_messages` frames per heartbeat).
    fn on_idontwant(&mut self, from: PeerId, ids: Vec<MessageId>) {
        let heartbeat = self.stats.heartbeats;
        let max_ids = self.config.max_idontwant_ids;
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        if p.idontwant_taken >= self.config.max_idontwant_messages {
            self.stats.idontwant_ignored += 1;
            return;
        }
        p.idontwant_taken += 1;
        self.stats.idontwant_received += 1;
        for id in ids {
            if !p.dont_want.insert(id) {
                continue;
            }
            p.dont_want_order.push_back((heartbeat, id));
            while p.dont_want_order.len() > max_ids {
                if let Some((_, old)) = p.dont_want_order.pop_front() {
                    p.dont_want.remove(&old);
                    self.stats.idontwant_evictions += 1;
                }
            }
        }
    }

    // ----- pulls -----

    /// Forget the pull of `id`; returns the peers that announced it.
    fn end_pull(&mut self, id: &MessageId) -> Option<BTreeSet<PeerId>> {
        let pull = self.pulls.remove(id)?;
        self.pull_deadlines.remove(&(pull.deadline, *id));
        Some(pull.announcers)
    }

    /// Pulls past their deadline ask the next announcer still connected, or are given up
    /// (and the id may be requested again on the next IHAVE).
    fn retry_pulls(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.pull_deadlines.first() {
            if deadline > now {
                break;
            }
            self.pull_deadlines.pop_first();
            let Some(mut pull) = self.pulls.remove(&id) else {
                continue;
            };
            let next = loop {
                match pull.others.pop_front() {
                    Some(p) if self.peers.contains_key(&p) => break Some(p),
                    Some(_) => continue,
                    None => break None,
                }
            };
            let Some(next) = next else {
                self.pending_iwant.remove(&id);
                self.stats.iwant_given_up += 1;
                continue;
            };
            pull.asked = next;
            pull.deadline = now + self.config.iwant_timeout;
            self.pull_deadlines.insert((pull.deadline, id));
            self.pulls.insert(id, pull);
            self.pending_iwant.insert(id, now);
            self.send(
                next,
                &Frame::IWant {
                    ids: alloc::vec![id],
                },
            );
            self.stats.iwant_sent += 1;
            self.stats.iwant_retries += 1;
        }
    }

    // ----- heartbeat -----

    fn heartbeat(&mut self, now: Instant) {
        self.stats.heartbeats += 1;
        self.seen.expire(now);
        self.backoff.retain(|_, until| *until > now);
        let followup = self.config.heartbeat_interval * IWANT_FOLLOWUP_HEARTBEATS;
        // A pull with fallbacks left ends at its own deadlines (`retry_pulls`).
        let pulls = &self.pulls;
        self.pending_iwant.retain(|id, asked| {
            pulls.contains_key(id) || now.saturating_duration_since(*asked) < followup
        });
        // IDONTWANT ids are kept while the message could still be relayed or served from the
        // message cache: `history_length` heartbeats.
        let oldest = self
            .stats
            .heartbeats
            .saturating_sub(self.config.history_length as u64);
        for p in self.peers.values_mut() {
            p.ihave_taken = 0;
            p.iwant_replies = 0;
            p.idontwant_taken = 0;
            while let Some(&(h, id)) = p.dont_want_order.front() {
                if h >= oldest {
                    break;
                }
                p.dont_want_order.pop_front();
                p.dont_want.remove(&id);
            }
        }

        let mut grafts: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
        let mut prunes: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
        let topics: Vec<String> = self.topics.iter().cloned().collect();
        for topic in &topics {
            self.maintain_mesh(now, topic, &mut grafts, &mut prunes);
            let mesh = self.mesh.get(topic).cloned().unwrap_or_default();
            self.emit_gossip(topic, &mesh);
        }
        self.maintain_fanout(now);

        for (peer, topics) in grafts {
            for chunk in topics.chunks(MAX_TOPICS) {
                self.send(
                    peer,
                    &Frame::Graft {
                        topics: chunk.to_vec(),
                    },
                );
                self.stats.grafts_sent += 1;
            }
        }
        let backoff_secs = self.config.prune_backoff_secs();
        for (peer, topics) in prunes {
            for chunk in topics.chunks(MAX_TOPICS) {
                self.send(
                    peer,
                    &Frame::Prune {
                        topics: chunk.to_vec(),
                        backoff_secs,
                    },
                );
                self.stats.prunes_sent += 1;
            }
        }
        self.mcache.shift();
    }

    /// Keep the mesh of `topic` within `D_lo..=D_hi` (gossipsub "Mesh Maintenance").
    fn maintain_mesh(
        &mut self,
        now: Instant,
        topic: &str,
        grafts: &mut BTreeMap<PeerId, Vec<String>>,
        prunes: &mut BTreeMap<PeerId, Vec<String>>,
    ) {
        let mut mesh = self.mesh.remove(topic).unwrap_or_default();
        mesh.retain(|p| self.peer_has_topic(p, topic));
        if mesh.len() < self.config.mesh_n_low {
            let candidates: Vec<PeerId> = self
                .topic_peers(topic)
                .into_iter()
                .filter(|p| !mesh.contains(p) && !self.backoff.contains_key(&(topic.into(), *p)))
                .collect();
            let need = self.config.mesh_n - mesh.len();
            for p in self.choose(candidates, need) {
                mesh.insert(p);
                grafts.entry(p).or_default().push(String::from(topic));
            }
        } else if mesh.len() > self.config.mesh_n_high {
            let members: Vec<PeerId> = mesh.iter().copied().collect();
            let n = members.len();
            let shuffled = self.choose(members, n);
            for p in shuffled.into_iter().skip(self.config.mesh_n) {
                mesh.remove(&p);
                prunes.entry(p).or_default().push(String::from(topic));
                self.backoff
                    .insert((String::from(topic), p), now + self.config.prune_backoff);
            }
        }
        self.mesh.insert(String::from(topic), mesh);
    }

    /// IHAVE the newest cached ids of `topic` to `D_lazy` topic peers outside `exclude`.
    fn emit_gossip(&mut self, topic: &str, exclude: &BTreeSet<PeerId>) {
        let mut ids = self.mcache.gossip_ids(topic);
        if ids.is_empty() {
            return;
        }
        ids.truncate(self.config.max_ihave_length);
        let candidates: Vec<PeerId> = self
            .topic_peers(topic)
            .into_iter()
            .filter(|p| !exclude.contains(p))
            .collect();
        let frame = Frame::IHave {
            topic: String::from(topic),
            ids,
        };
        let targets = self.choose(candidates, self.config.gossip_lazy);
        for p in targets {
            self.send(p, &frame);
            self.stats.ihave_sent += 1;
        }
    }

    /// Expire idle fanout sets, refill the others to `D`, and gossip their topics.
    fn maintain_fanout(&mut self, now: Instant) {
        let ttl = self.config.fanout_ttl;
        self.fanout
            .retain(|_, f| now.saturating_duration_since(f.last_publish) < ttl);
        let topics: Vec<String> = self.fanout.keys().cloned().collect();
        for topic in topics {
            let Some(mut f) = self.fanout.remove(&topic) else {
                continue;
            };
            f.peers.retain(|p| self.peer_has_topic(p, &topic));
            if f.peers.len() < self.config.mesh_n {
                let candidates: Vec<PeerId> = self
                    .topic_peers(&topic)
                    .into_iter()
                    .filter(|p| !f.peers.contains(p))
                    .collect();
                let need = self.config.mesh_n - f.peers.len();
                f.peers.extend(self.choose(candidates, need));
            }
            self.emit_gossip(&topic, &f.peers);
            self.fanout.insert(topic, f);
        }
    }

    // ----- helpers -----

    fn start_clock(&mut self, now: Instant) {
        if self.next_heartbeat.is_none() {
            self.next_heartbeat = Some(now + self.config.heartbeat_interval);
        }
    }

    fn peer_has_topic(&self, peer: &PeerId, topic: &str) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.topics.contains(topic))
    }

    /// Peers that announced `topic`, in id order.
    fn topic_peers(&self, topic: &str) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.topics.contains(topic))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The fanout set of `topic` (created from `D` random topic peers), marked as used now.
    fn fanout_peers(&mut self, now: Instant, topic: &str) -> Vec<PeerId> {
        if !self.fanout.contains_key(topic) {
            let candidates = self.topic_peers(topic);
            let peers = self
                .choose(candidates, self.config.mesh_n)
                .into_iter()
                .collect();
            self.fanout.insert(
                String::from(topic),
                Fanout {
                    peers,
                    last_publish: now,
                },
            );
        }
        match self.fanout.get_mut(topic) {
            Some(f) => {
                f.last_publish = now;
                f.peers.iter().copied().collect()
            }
            None => Vec::new(),
        }
    }

    /// `n` distinct elements of `v` chosen uniformly by the seeded stream (partial
    /// Fisher–Yates), in the chosen order.
    fn choose(&mut self, mut v: Vec<PeerId>, n: usize) -> Vec<PeerId> {
        let n = n.min(v.len());
        for i in 0..n {
            let span = (v.len() - i) as u64;
            let j = i + (self.rng.next_u64() % span) as usize;
            v.swap(i, j);
        }
        v.truncate(n);
        v
    }

    fn announce(&mut self, topic: &str, subscribe: bool) {
        let frame = Frame::Subscriptions(alloc::vec![Subscription {
            subscribe,
            topic: String::from(topic),
        }]);
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.send(p, &frame);
        }
    }

    fn send(&mut self, to: PeerId, frame: &Frame) {
        self.enqueue(to, frame.to_bytes());
    }

    /// Queue `bytes` for `to` within its bound (dropped and counted when full).
    fn enqueue(&mut self, to: PeerId, bytes: Vec<u8>) {
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        if p.queue.len() >= self.config.max_queue_frames
            || p.queued_bytes + bytes.len() > self.config.max_queue_bytes
        {
            self.stats.queue_drops += 1;
            return;
        }
        p.queued_bytes += bytes.len();
        p.queue.push_back(bytes);
        if !p.in_ready {
            p.in_ready = true;
            self.ready.push_back(to);
        }
    }
}
