//! The sans-IO fetch session: downloads a whole UnixFS DAG from several peers in parallel.
//!
//! # How it works
//!
//! * **Frontier.** CIDs still to fetch sit in a depth-first frontier (children of the newest
//!   node first), so at most about `(wants in flight + depth) × fan-out` CIDs are pending
//!   whatever the image size;
//!   the frontier is capped by [`SessionConfig::max_pending`] (a DAG needing more fails with
//!   [`FailReason::TooManyPending`]). Verified blocks are handed out as
//!   [`SessionEvent::BlockVerified`] for the caller to store; the session keeps no block data.
//! * **Wants.** The root is asked of every peer with WANT_HAVE and of the best peer with
//!   WANT_BLOCK; every other CID goes as WANT_BLOCK (with `send_dont_have`) to the cheapest
//!   peer with room in its window ([`SessionConfig::window`] outstanding wants per peer). The
//!   cost of a peer is its latency estimate (EWMA of block round trips) × (outstanding + 1) ×
//!   (1 + faults), so fast peers get more of the work.
//! * **Verification.** Each block is hashed against its CID. A mismatch penalises the sender
//!   ([`SessionEvent::PeerPenalised`]), re-requests the block from another peer and, after
//!   [`SessionConfig::max_faults`] faults (corrupt blocks or undecodable messages), disconnects
//!   the peer ([`SessionEvent::PeerDisconnected`]).
//! * **Timeouts.** A want not answered within [`SessionConfig::want_timeout`] is cancelled at the
//!   slow peer and re-requested elsewhere (the slow peer's latency estimate is raised).
//! * **Resume.** [`Session::resume`] takes the blocks already held ([`HeldBlocks`]); held
//!   blocks are never requested (held dag-pb nodes are read to learn their children).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use cid::Cid;
use thiserror::Error;

use super::message::{Message, PresenceKind, WantEntry, WantKind};
use super::{HeldBlocks, PeerId};
use crate::unixfs::dagpb::PbNode;
use crate::unixfs::{DAG_PB_CODEC, RAW_CODEC, verify_block};

/// Session tuning.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Most outstanding WANT_BLOCKs per peer.
    pub window: usize,
    /// How long a peer gets to deliver a wanted block before it is asked elsewhere.
    pub want_timeout: Duration,
    /// Latency assumed for a peer before its first block.
    pub initial_latency: Duration,
    /// EWMA weight of a new latency sample (0..=1).
    pub ewma_alpha: f64,
    /// Faults (corrupt blocks, garbage messages) after which a peer is disconnected.
    pub max_faults: u32,
    /// Cap on pending (discovered, not yet fetched) CIDs.
    pub max_pending: usize,
    /// Most links a single dag-pb node may have.
    pub max_links: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            window: 8,
            want_timeout: Duration::from_secs(5),
            initial_latency: Duration::from_millis(200),
            ewma_alpha: 0.3,
            max_faults: 3,
            max_pending: 65_536,
            max_links: 8_192,
        }
    }
}

/// Why a peer was penalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PenaltyReason {
    /// It sent a block whose bytes do not match the CID.
    CorruptBlock(Cid),
    /// It sent bytes that are not a valid message.
    Garbage(super::MessageError),
    /// It did not deliver a wanted block in time (not counted as a fault).
    Timeout(Cid),
}

/// Why the session gave up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FailReason {
    /// Every connected peer said DONT_HAVE for this block (or no peer is left).
    #[error("no peer has block {0}")]
    Unavailable(Cid),
    /// A verified dag-pb node does not decode (the DAG itself is malformed).
    #[error("malformed dag-pb node {0}")]
    Malformed(Cid),
    /// A link to a codec other than raw or dag-pb.
    #[error("unsupported codec {codec:#x} in {cid}")]
    UnsupportedCodec {
        /// The CID.
        cid: Cid,
        /// Its codec.
        codec: u64,
    },
    /// The DAG would need more pending CIDs than [`SessionConfig::max_pending`].
    #[error("frontier over its cap")]
    TooManyPending,
}

/// What the session reports to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A block arrived and matches its CID: store it.
    BlockVerified {
        /// The block's CID.
        cid: Cid,
        /// The block's bytes.
        data: Vec<u8>,
    },
    /// A peer misbehaved or was slow.
    PeerPenalised {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: PenaltyReason,
    },
    /// A peer reached [`SessionConfig::max_faults`]; the caller should close the connection.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// Every block of the DAG is verified (fetched or already held).
    Complete,
    /// The session cannot finish.
    Failed {
        /// Why.
        reason: FailReason,
    },
}

/// Progress counters (for a progress bar).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Blocks fetched and verified in this session.
    pub blocks_fetched: u64,
    /// Bytes of those blocks.
    pub bytes_fetched: u64,
    /// Blocks found already held (resume).
    pub blocks_held: u64,
    /// Wants currently outstanding.
    pub in_flight: usize,
    /// CIDs discovered but not yet requested.
    pub pending: usize,
    /// Wants re-sent to another peer (timeouts, corrupt blocks, DONT_HAVE, lost peers).
    pub rerequests: u64,
}

#[derive(Debug)]
struct PeerState {
    latency: Option<Duration>,
    outstanding: usize,
    faults: u32,
    score: i64,
}

#[derive(Debug)]
struct Want {
    peer: PeerId,
    sent: Instant,
    /// Peers that said DONT_HAVE or sent a corrupt copy: not asked again for this block.
    excluded: Vec<PeerId>,
}

/// A sans-IO fetch of one DAG. See the module docs.
pub struct Session {
    root: Cid,
    cfg: SessionConfig,
    held: Option<Box<dyn HeldBlocks>>,
    peers: BTreeMap<PeerId, PeerState>,
    /// Depth-first frontier of CIDs to fetch (front = next), with the peers to avoid.
    frontier: VecDeque<(Cid, Vec<PeerId>)>,
    wants: HashMap<Cid, Want>,
    /// Messages being assembled, per peer, drained by `poll_transmit`.
    outbox: BTreeMap<PeerId, Message>,
    events: VecDeque<SessionEvent>,
    progress: Progress,
    root_asked: HashSet<PeerId>,
    done: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("root", &self.root)
            .field("peers", &self.peers)
            .field("progress", &self.progress)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session fetching the DAG rooted at `root` from scratch.
    pub fn new(root: Cid, cfg: SessionConfig) -> Self {
        let mut frontier = VecDeque::new();
        frontier.push_back((root, Vec::new()));
        Self {
            root,
            cfg,
            held: None,
            peers: BTreeMap::new(),
            frontier,
            wants: HashMap::new(),
            outbox: BTreeMap::new(),
            events: VecDeque::new(),
            progress: Progress::default(),
            root_asked: HashSet::new(),
            done: false,
        }
    }

    /// A session continuing an interrupted fetch: blocks in `held` are not requested again.
    pub fn resume(root: Cid, cfg: SessionConfig, held: Box<dyn HeldBlocks>) -> Self {
        let mut s = Self::new(root, cfg);
        s.held = Some(held);
        s
    }

    /// The root CID.
    pub fn root(&self) -> &Cid {
        &self.root
    }

    /// Progress counters.
    pub fn progress(&self) -> Progress {
        let mut p = self.progress;
        p.in_flight = self.wants.len();
        p.pending = self.frontier.len();
        p
    }

    /// True once [`SessionEvent::Complete`] or [`SessionEvent::Failed`] was queued.
    pub fn is_finished(&self) -> bool {
        self.done
    }

    /// Adds a connected peer (no-op if known).
    pub fn add_peer(&mut self, now: Instant, peer: PeerId) {
        self.peers.entry(peer).or_insert(PeerState {
            latency: None,
            outstanding: 0,
            faults: 0,
            score: 0,
        });
        self.pump(now);
    }

    /// Removes a peer; its outstanding wants are re-requested elsewhere.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerId) {
        if self.peers.remove(&peer).is_none() {
            return;
        }
        self.outbox.remove(&peer);
        self.root_asked.remove(&peer);
        let lost: Vec<Cid> = self
            .wants
            .iter()
            .filter(|(_, w)| w.peer == peer)
            .map(|(c, _)| *c)
            .collect();
        for cid in lost {
            if let Some(w) = self.wants.remove(&cid) {
                self.progress.rerequests += 1;
                self.frontier.push_front((cid, w.excluded));
            }
        }
        self.pump(now);
    }

    /// Takes in one message from `peer`.
    pub fn handle_message(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) {
        if self.done || !self.peers.contains_key(&peer) {
            return;
        }
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.fault(now, peer, PenaltyReason::Garbage(e));
                self.pump(now);
                return;
            }
        };
        for p in msg.presences {
            // HAVE needs no action: the block is already wanted from the cheapest peer.
            if p.kind == PresenceKind::DontHave {
                self.dont_have(peer, p.cid);
            }
        }
        for b in msg.blocks {
            if !self.peers.contains_key(&peer) {
                break;
            }
            let Some(want) = self.wants.get(&b.cid) else {
                continue; // unwanted or already received: ignore
            };
            if verify_block(&b.cid, &b.data).is_err() {
                let mut excluded = Vec::new();
                if want.peer == peer {
                    if let Some(w) = self.wants.remove(&b.cid) {
                        excluded = w.excluded;
                        self.dec(peer);
                    }
                    excluded.push(peer);
                    self.progress.rerequests += 1;
                    self.frontier.push_front((b.cid, excluded));
                }
                self.fault(now, peer, PenaltyReason::CorruptBlock(b.cid));
                continue;
            }
            let Some(want) = self.wants.remove(&b.cid) else {
                continue;
            };
            self.dec(want.peer);
            if want.peer != peer {
                self.cancel_at(want.peer, b.cid);
            }
            if want.peer == peer {
                let sample = now.saturating_duration_since(want.sent);
                self.sample(peer, sample);
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.score += 1;
            }
            self.accept(b.cid, b.data);
            if self.done {
                return;
            }
        }
        self.pump(now);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Vec<u8>)> {
        while let Some((peer, msg)) = self.outbox.pop_first() {
            if msg.is_empty() {
                continue;
            }
            if let Ok(bytes) = msg.encode() {
                return Some((peer, bytes));
            }
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        self.wants
            .values()
            .map(|w| w.sent + self.cfg.want_timeout)
            .min()
    }

    /// Re-requests wants whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done {
            return;
        }
        let expired: Vec<Cid> = self
            .wants
            .iter()
            .filter(|(_, w)| now >= w.sent + self.cfg.want_timeout)
            .map(|(c, _)| *c)
            .collect();
        for cid in expired {
            let Some(w) = self.wants.remove(&cid) else {
                continue;
            };
            self.dec(w.peer);
            self.cancel_at(w.peer, cid);
            let timeout = self.cfg.want_timeout;
            self.sample(w.peer, timeout);
            if let Some(p) = self.peers.get_mut(&w.peer) {
                p.score -= 1;
            }
            self.events.push_back(SessionEvent::PeerPenalised {
                peer: w.peer,
                reason: PenaltyReason::Timeout(cid),
            });
            self.progress.rerequests += 1;
            // Prefer another peer this time; if it is the only one, it may be asked again.
            let mut avoid = w.excluded.clone();
            avoid.push(w.peer);
            let others = self.peers.keys().any(|p| !avoid.contains(p));
            self.frontier
                .push_front((cid, if others { avoid } else { w.excluded }));
        }
        self.pump(now);
    }

    // -----------------------------------------------------------------------------------------

    fn dec(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.outstanding = p.outstanding.saturating_sub(1);
        }
    }

    fn sample(&mut self, peer: PeerId, sample: Duration) {
        let alpha = self.cfg.ewma_alpha.clamp(0.0, 1.0);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.latency = Some(match p.latency {
                None => sample,
                Some(old) => old.mul_f64(1.0 - alpha) + sample.mul_f64(alpha),
            });
        }
    }

    fn msg(&mut self, peer: PeerId) -> &mut Message {
        self.outbox.entry(peer).or_default()
    }

    fn cancel_at(&mut self, peer: PeerId, cid: Cid) {
        if self.peers.contains_key(&peer) {
            self.msg(peer).wantlist.push(WantEntry {
                cid,
                kind: WantKind::Cancel,
                priority: 0,
                send_dont_have: false,
            });
        }
    }

    fn fault(&mut self, now: Instant, peer: PeerId, reason: PenaltyReason) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.faults += 1;
        p.score -= 10;
        let faults = p.faults;
        self.events
            .push_back(SessionEvent::PeerPenalised { peer, reason });
        if faults >= self.cfg.max_faults {
            self.events
                .push_back(SessionEvent::PeerDisconnected { peer });
            self.remove_peer(now, peer);
        }
    }

    fn dont_have(&mut self, peer: PeerId, cid: Cid) {
        let Some(w) = self.wants.get(&cid) else {
            return;
        };
        if w.peer != peer {
            return;
        }
        if let Some(mut w) = self.wants.remove(&cid) {
            self.dec(peer);
            w.excluded.push(peer);
            self.progress.rerequests += 1;
            self.frontier.push_front((cid, w.excluded));
        }
    }

    fn fail(&mut self, reason: FailReason) {
        if !self.done {
            self.done = true;
            self.frontier.clear();
            self.wants.clear();
            self.outbox.clear();
            self.events.push_back(SessionEvent::Failed { reason });
        }
    }

    /// Learns a verified block's children and queues it for the caller.
    fn accept(&mut self, cid: Cid, data: Vec<u8>) {
        self.progress.blocks_fetched += 1;
        self.progress.bytes_fetched += data.len() as u64;
        if self.learn_children(&cid, &data) {
            self.events
                .push_back(SessionEvent::BlockVerified { cid, data });
            self.check_complete();
        }
    }

    /// Pushes the children of a verified block onto the frontier; false if the session failed.
    fn learn_children(&mut self, cid: &Cid, data: &[u8]) -> bool {
        match cid.codec() {
            RAW_CODEC => true,
            DAG_PB_CODEC => {
                let Ok(node) = PbNode::decode(data) else {
                    self.fail(FailReason::Malformed(*cid));
                    return false;
                };
                if node.links.len() > self.cfg.max_links
                    || self.frontier.len() + node.links.len() > self.cfg.max_pending
                {
                    self.fail(FailReason::TooManyPending);
                    return false;
                }
                for link in node.links.iter().rev() {
                    let codec = link.hash.codec();
                    if codec != RAW_CODEC && codec != DAG_PB_CODEC {
                        self.fail(FailReason::UnsupportedCodec {
                            cid: link.hash,
                            codec,
                        });
                        return false;
                    }
                    self.frontier.push_front((link.hash, Vec::new()));
                }
                true
            }
            codec => {
                self.fail(FailReason::UnsupportedCodec { cid: *cid, codec });
                false
            }
        }
    }

    fn check_complete(&mut self) {
        if !self.done && self.frontier.is_empty() && self.wants.is_empty() {
            self.done = true;
            self.outbox.clear();
            self.events.push_back(SessionEvent::Complete);
        }
    }

    /// The cheapest peer with room for one more want, not in `avoid`.
    fn pick(&self, avoid: &[PeerId]) -> Option<PeerId> {
        self.peers
            .iter()
            .filter(|(id, p)| p.outstanding < self.cfg.window && !avoid.contains(id))
            .min_by_key(|(_, p)| {
                let lat = p
                    .latency
                    .unwrap_or(self.cfg.initial_latency)
                    .as_micros()
                    .max(1);
                lat * (p.outstanding as u128 + 1) * (u128::from(p.faults) + 1)
            })
            .map(|(id, _)| *id)
    }

    /// Moves frontier CIDs into wants while peers have room.
    fn pump(&mut self, now: Instant) {
        while !self.done {
            let Some((cid, avoid)) = self.frontier.front().cloned() else {
                self.check_complete();
                return;
            };
            if self.wants.contains_key(&cid) {
                self.frontier.pop_front();
                continue;
            }
            // Resume: a held block is not requested.
            if let Some(held) = &self.held
                && held.has(&cid)
            {
                let data = if cid.codec() == DAG_PB_CODEC {
                    held.get(&cid)
                } else {
                    Some(Vec::new())
                };
                let usable = match &data {
                    Some(d) if cid.codec() == DAG_PB_CODEC => verify_block(&cid, d).is_ok(),
                    Some(_) => true,
                    None => false,
                };
                if usable {
                    self.frontier.pop_front();
                    self.progress.blocks_held += 1;
                    if !self.learn_children(&cid, data.as_deref().unwrap_or_default()) {
                        return;
                    }
                    continue;
                }
            }
            let live_avoid: Vec<PeerId> = avoid
                .iter()
                .copied()
                .filter(|p| self.peers.contains_key(p))
                .collect();
            if !self.peers.is_empty() && self.peers.keys().all(|p| live_avoid.contains(p)) {
                self.fail(FailReason::Unavailable(cid));
                return;
            }
            let Some(peer) = self.pick(&live_avoid) else {
                return;
            };
            self.frontier.pop_front();
            if let Some(p) = self.peers.get_mut(&peer) {
                p.outstanding += 1;
            }
            self.msg(peer).wantlist.push(WantEntry {
                cid,
                kind: WantKind::Block,
                priority: 1,
                send_dont_have: true,
            });
            if cid == self.root {
                let others: Vec<PeerId> = self
                    .peers
                    .keys()
                    .copied()
                    .filter(|p| *p != peer && !self.root_asked.contains(p))
                    .collect();
                for other in others {
                    self.root_asked.insert(other);
                    self.msg(other).wantlist.push(WantEntry {
                        cid,
                        kind: WantKind::Have,
                        priority: 2,
                        send_dont_have: true,
                    });
                }
            }
            self.wants.insert(
                cid,
                Want {
                    peer,
                    sent: now,
                    excluded: avoid,
                },
            );
        }
    }
}
