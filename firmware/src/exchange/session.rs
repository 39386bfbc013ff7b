//! The sans-IO fetch session: downloads a whole UnixFS DAG from several peers in parallel.
//!
//! # Peers
//!
//! A peer is either a [`PeerKind::Provider`], expected to hold the whole DAG (the
//! manufacturer's node, a seed, a node serving a CAR), or a [`PeerKind::Swarm`] peer, a fellow
//! device that holds what it has fetched so far (seed 004: "once enough devices have the
//! update they serve each other and the manufacturer can stop").
//!
//! # How it works
//!
//! * **Frontier.** CIDs still to fetch sit in a depth-first frontier (children of the newest
//!   node first). Requests are chosen among its first [`SessionConfig::lookahead`] entries, so
//!   at most about `(lookahead + depth) × fan-out` CIDs are pending whatever the image size;
//!   the frontier is capped by [`SessionConfig::max_pending`] (a DAG needing more fails with
//!   [`FailReason::TooManyPending`]). Verified blocks are handed out as
//!   [`SessionEvent::BlockVerified`] for the caller to store; the session keeps no block data.
//! * **Availability (Bitswap 1.2 want-have).** Every CID entering the frontier is sent as
//!   WANT_HAVE (without `send_dont_have`) to every swarm peer. A swarm peer's server keeps the
//!   want and answers HAVE once it holds the block; the session records who announced what.
//!   When the block arrives, the WANT_HAVEs are cancelled.
//! * **Wants.** A swarm peer is asked (WANT_BLOCK, with `send_dont_have`) only for blocks it
//!   announced, the rarest first (fewest announcers; ties broken by the seeded random stream
//!   so that devices pick different blocks). A provider is asked only for blocks no connected
//!   swarm peer announced, and, when swarm peers are connected, only while fewer than
//!   [`SessionConfig::window`] wants are in flight to the swarm: the provider is the last
//!   resort, so its uplink goes to blocks the swarm lacks. Each peer has a window of
//!   outstanding wants ([`SessionConfig::window`], [`SessionConfig::provider_window`]); among
//!   peers with room, the cheapest is served first: latency estimate (EWMA of block round
//!   trips) × (outstanding + 1) × (1 + faults), so fast peers get more of the work.
//! * **Verification.** Each block is hashed against its CID. A mismatch penalises the sender
//!   ([`SessionEvent::PeerPenalised`]), re-requests the block from another peer and, after
//!   [`SessionConfig::max_faults`] faults (corrupt blocks or undecodable messages), disconnects
//!   the peer ([`SessionEvent::PeerDisconnected`]).
//! * **Timeouts.** A peer that delivers nothing for [`SessionConfig::want_timeout`] (counted
//!   from its last delivery or the want, whichever is later) has its latency estimate raised
//!   and its wants cancelled and re-requested elsewhere, if another peer can serve them
//!   (else they stay with it: asking it twice would only make it send twice). A peer that is busy but
//!   delivering keeps its queue (its latency estimate, which includes the queueing, steers
//!   new wants elsewhere), so a loaded uplink does not make every want time out and be sent
//!   twice. A want older than [`MAX_WANT_AGE`] × `want_timeout` expires regardless.
//! * **Unavailable blocks.** With only providers connected, a block every provider said
//!   DONT_HAVE for fails the session ([`FailReason::Unavailable`]), unless
//!   [`SessionConfig::wait_for_peers`]. With swarm peers connected the session waits for an
//!   announcement (or a new peer); the caller owns the deadline.
//! * **Resume.** [`Session::resume`] takes the blocks already held (a [`BlockSource`]); held
//!   blocks are never requested (held dag-pb nodes are read to learn their children).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use cid::Cid;
use thiserror::Error;

use super::PeerId;
use super::message::{
    self, Block, Message, MessageError, Presence, PresenceKind, WantEntry, WantKind,
};
use crate::unixfs::dagpb::PbNode;
use crate::unixfs::{BlockSource, DAG_PB_CODEC, RAW_CODEC, verify_block};

/// Priority of a want a device could get nowhere else: a provider asked again after refusing
/// it (super-seeding budget, [`super::ServerConfig::copies_per_block`]) while no swarm peer
/// announced the block for `want_timeout`. Servers serve it regardless of the budget, so a
/// block whose budgeted copies were lost (a device went away) cannot stall a roll-out.
pub const URGENT_PRIORITY: i32 = 2;

/// A want expires after this many `want_timeout`s even from a peer that keeps delivering
/// other blocks (it may be withholding this one).
pub const MAX_WANT_AGE: u32 = 6;

/// Session tuning.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Most outstanding WANT_BLOCKs per swarm peer; also the swarm load under which providers
    /// are not asked.
    pub window: usize,
    /// Most outstanding WANT_BLOCKs per provider.
    pub provider_window: usize,
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
    /// Requests are chosen among this many entries at the front of the frontier.
    pub lookahead: usize,
    /// Seed of the stream breaking ties between equally rare blocks.
    pub seed: u64,
    /// When every connected peer refused a block and no swarm peer is connected, wait for
    /// peers (a device in a swarm whose neighbours are still connecting) instead of failing
    /// with [`FailReason::Unavailable`] (a one-off fetch from given providers).
    pub wait_for_peers: bool,
    /// How many fetched CIDs the session remembers, so that a block linked again after it
    /// arrived (identical chunks, e.g. padding, under a later dag-pb node) is not fetched
    /// again. A CID's bytes are about 40, so the default 4,096 costs about 200 KiB at most; a
    /// session resumed over a store ([`Session::resume`]) also finds such blocks there.
    pub remember_fetched: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            window: 8,
            provider_window: 8,
            want_timeout: Duration::from_secs(5),
            initial_latency: Duration::from_millis(200),
            ewma_alpha: 0.3,
            max_faults: 3,
            max_pending: 65_536,
            max_links: 8_192,
            lookahead: 256,
            seed: 0,
            wait_for_peers: false,
            remember_fetched: 4_096,
        }
    }
}

impl SessionConfig {
    /// Tuning for a device in a swarm (a gateway during a roll-out): 2 wants per peer, so a
    /// 10 Mbit/s uplink shared by a dozen requesters still answers each within the timeout;
    /// 10 s before a silent peer's wants move (at 5 s, in the 100-gateway roll-out, 2,542 wants
    /// timed out at peers that were only busy and 11 % of the block bytes were sent twice; at
    /// 10 s, 57 and none); waits for peers rather than failing when a block is not yet
    /// anywhere.
    pub fn swarm() -> Self {
        Self {
            window: 2,
            provider_window: 2,
            want_timeout: Duration::from_secs(10),
            wait_for_peers: true,
            ..Self::default()
        }
    }
}

/// What a peer is expected to hold. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// Holds the whole DAG (manufacturer, seed): asked for blocks the swarm lacks.
    Provider,
    /// Holds what it announced with HAVE: a fellow device.
    Swarm,
}

/// Why a peer was penalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PenaltyReason {
    /// It sent a block whose bytes do not match the CID.
    CorruptBlock(Cid),
    /// It sent bytes that are not a valid message.
    Garbage(MessageError),
    /// It did not deliver a wanted block in time (not counted as a fault).
    Timeout(Cid),
}

/// Why the session gave up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FailReason {
    /// Every connected provider said DONT_HAVE for this block and no swarm peer is connected.
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
    /// Links to a block this session had already fetched (identical chunks): not fetched
    /// again.
    pub duplicate_links: u64,
    /// Wants currently outstanding.
    pub in_flight: usize,
    /// CIDs discovered but not yet requested.
    pub pending: usize,
    /// Wants re-sent to another peer (timeouts, corrupt blocks, DONT_HAVE, lost peers).
    pub rerequests: u64,
    /// Wants that timed out.
    pub timeouts: u64,
    /// Blocks accepted after their want had timed out or been refused (not re-fetched).
    pub late_blocks: u64,
    /// Wants sent to a provider as urgent after it had refused them (its super-seeding
    /// budget) and no swarm peer announced the block for `want_timeout`.
    pub urgent_wants: u64,
    /// Wants answered DONT_HAVE.
    pub dont_haves: u64,
    /// Blocks fetched from providers.
    pub blocks_from_providers: u64,
    /// Blocks fetched from swarm peers.
    pub blocks_from_swarm: u64,
}

#[derive(Debug)]
struct PeerState {
    kind: PeerKind,
    latency: Option<Duration>,
    outstanding: usize,
    faults: u32,
    /// When this peer last delivered a wanted block.
    last_delivery: Option<Instant>,
}

#[derive(Debug)]
struct Want {
    peer: PeerId,
    sent: Instant,
    /// Peers that said DONT_HAVE or sent a corrupt copy: not asked again for this block.
    excluded: Vec<PeerId>,
    /// Carried from the frontier entry (see `Pending::refused_at`).
    refused_at: Option<Instant>,
}

/// A frontier entry: a CID to request and the peers to avoid for it.
#[derive(Debug, Clone)]
struct Pending {
    cid: Cid,
    avoid: Vec<PeerId>,
    /// When a provider last refused it (DONT_HAVE): after `want_timeout` with no swarm
    /// announcer, the provider is asked again, urgently.
    refused_at: Option<Instant>,
}

/// A sans-IO fetch of one DAG. See the module docs.
pub struct Session {
    root: Cid,
    cfg: SessionConfig,
    held: Option<Box<dyn BlockSource>>,
    peers: BTreeMap<PeerId, PeerState>,
    /// Depth-first frontier of CIDs to fetch (front = next).
    frontier: VecDeque<Pending>,
    /// Swarm peers that announced HAVE, for CIDs in the frontier or wanted. (Ordered maps:
    /// iteration order decides re-request order, and a simulation must replay bit for bit.)
    announced: BTreeMap<Cid, Vec<PeerId>>,
    wants: BTreeMap<Cid, Want>,
    /// Messages being assembled, per peer, drained by `poll_transmit`.
    outbox: BTreeMap<PeerId, VecDeque<Message>>,
    events: VecDeque<SessionEvent>,
    /// The newest fetched CIDs (at most `remember_fetched`), oldest first, and as a set.
    fetched: VecDeque<Cid>,
    fetched_set: BTreeSet<Cid>,
    progress: Progress,
    rng: u64,
    /// The latest `now` seen.
    last_now: Option<Instant>,
    started: bool,
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
        let rng = cfg.seed ^ 0x9e37_79b9_7f4a_7c15;
        Self {
            root,
            cfg,
            held: None,
            peers: BTreeMap::new(),
            frontier: VecDeque::new(),
            announced: BTreeMap::new(),
            wants: BTreeMap::new(),
            outbox: BTreeMap::new(),
            events: VecDeque::new(),
            fetched: VecDeque::new(),
            fetched_set: BTreeSet::new(),
            progress: Progress::default(),
            rng,
            last_now: None,
            started: false,
            done: false,
        }
    }

    /// A session continuing an interrupted fetch: blocks in `held` are not requested again.
    pub fn resume(root: Cid, cfg: SessionConfig, held: Box<dyn BlockSource>) -> Self {
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

    /// Adds a connected provider (no-op if known). See [`Session::add_peer_as`].
    pub fn add_peer(&mut self, now: Instant, peer: PeerId) {
        self.add_peer_as(now, peer, PeerKind::Provider);
    }

    /// Adds a connected peer of the given kind (no-op if known). A swarm peer is sent
    /// WANT_HAVE for the whole frontier.
    pub fn add_peer_as(&mut self, now: Instant, peer: PeerId, kind: PeerKind) {
        if self.peers.contains_key(&peer) {
            return;
        }
        self.peers.insert(
            peer,
            PeerState {
                kind,
                latency: None,
                outstanding: 0,
                faults: 0,
                last_delivery: None,
            },
        );
        if kind == PeerKind::Swarm {
            // Wanted CIDs too: a want may come back (DONT_HAVE, timeout) and need this peer.
            let cids: Vec<Cid> = self
                .frontier
                .iter()
                .map(|p| p.cid)
                .chain(self.wants.keys().copied())
                .collect();
            for cid in cids {
                self.push_entry(peer, cid, WantKind::Have, false);
            }
        }
        self.pump(now);
    }

    /// Removes a peer; its outstanding wants are re-requested elsewhere.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerId) {
        if self.peers.remove(&peer).is_none() {
            return;
        }
        self.outbox.remove(&peer);
        for list in self.announced.values_mut() {
            list.retain(|p| *p != peer);
        }
        let lost: Vec<Cid> = self
            .wants
            .iter()
            .filter(|(_, w)| w.peer == peer)
            .map(|(c, _)| *c)
            .collect();
        for cid in lost {
            if let Some(w) = self.wants.remove(&cid) {
                self.requeue(cid, w, None, None);
            }
        }
        self.pump(now);
    }

    /// Takes in one encoded message from `peer`; an undecodable one is a fault.
    pub fn handle_message(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) {
        match Message::decode(bytes) {
            Ok(m) => self.handle(now, peer, m),
            Err(e) => self.report_garbage(now, peer, e),
        }
    }

    /// Counts an undecodable message from `peer` as a fault (the caller decoded it).
    pub fn report_garbage(&mut self, now: Instant, peer: PeerId, err: MessageError) {
        if self.done || !self.peers.contains_key(&peer) {
            return;
        }
        self.fault(now, peer, PenaltyReason::Garbage(err));
        self.pump(now);
    }

    /// Takes in one decoded message from `peer` (its presences and blocks; the wantlist is
    /// the server's business).
    pub fn handle(&mut self, now: Instant, peer: PeerId, msg: Message) {
        if self.done || !self.peers.contains_key(&peer) {
            return;
        }
        for p in msg.presences {
            self.presence(now, peer, p);
        }
        for b in msg.blocks {
            if !self.peers.contains_key(&peer) {
                break;
            }
            self.block(now, peer, b);
            if self.done {
                return;
            }
        }
        self.pump(now);
    }

    /// The next message to send, to any peer.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Vec<u8>)> {
        let peers: Vec<PeerId> = self.outbox.keys().copied().collect();
        for peer in peers {
            if let Some(bytes) = self.poll_transmit_to(peer) {
                return Some((peer, bytes));
            }
        }
        None
    }

    /// The next message to send to `peer`.
    pub fn poll_transmit_to(&mut self, peer: PeerId) -> Option<Vec<u8>> {
        let queue = self.outbox.get_mut(&peer)?;
        let mut out = None;
        while let Some(msg) = queue.pop_front() {
            if msg.is_empty() {
                continue;
            }
            if let Ok(bytes) = msg.encode() {
                out = Some(bytes);
                break;
            }
        }
        if queue.is_empty() {
            self.outbox.remove(&peer);
        }
        out
    }

    /// Whether a message for `peer` is waiting.
    pub fn has_transmit(&self, peer: PeerId) -> bool {
        self.outbox.contains_key(&peer)
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
        let wants = self.wants.values().map(|w| self.deadline(w));
        // Refused entries become urgent later: wake then (only for deadlines still ahead, so
        // an entry waiting for a provider's window does not spin the caller).
        let look = self.cfg.lookahead.max(1).min(self.frontier.len());
        let refused = self
            .frontier
            .iter()
            .take(look)
            .filter_map(|e| e.refused_at)
            .map(|t| t + self.cfg.want_timeout)
            .filter(|t| self.last_now.is_none_or(|n| *t > n));
        wants.chain(refused).min()
    }

    /// When a want expires: `want_timeout` after the later of its sending and its peer's last
    /// delivery, and at most `MAX_WANT_AGE × want_timeout` after its sending.
    fn deadline(&self, w: &Want) -> Instant {
        let t = self.cfg.want_timeout;
        let last = self
            .peers
            .get(&w.peer)
            .and_then(|p| p.last_delivery)
            .map_or(w.sent, |d| d.max(w.sent));
        (last + t).min(w.sent + t * MAX_WANT_AGE)
    }

    /// Re-requests wants whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done {
            return;
        }
        let expired: Vec<Cid> = self
            .wants
            .iter()
            .filter(|(_, w)| now >= self.deadline(w))
            .map(|(c, _)| *c)
            .collect();
        for cid in expired {
            let timeout = self.cfg.want_timeout;
            let Some(peer) = self.wants.get(&cid).map(|w| w.peer) else {
                continue;
            };
            self.sample(peer, timeout);
            self.events.push_back(SessionEvent::PeerPenalised {
                peer,
                reason: PenaltyReason::Timeout(cid),
            });
            self.progress.timeouts += 1;
            if !self.has_alternative(&cid, peer) {
                // Nobody else can serve it: asking elsewhere is impossible and asking the same
                // peer again would only make it send the block twice. Keep waiting.
                if let Some(w) = self.wants.get_mut(&cid) {
                    w.sent = now;
                }
                continue;
            }
            let Some(w) = self.wants.remove(&cid) else {
                continue;
            };
            self.dec(w.peer);
            self.cancel_at(w.peer, cid);
            // Not avoided for good: its raised latency estimate steers the want to a cheaper
            // peer, and it may be asked again if it turns out to be the only one.
            self.requeue(cid, w, None, None);
        }
        self.pump(now);
    }

    // -----------------------------------------------------------------------------------------

    /// Whether a peer other than `peer` could serve `cid`: another provider not excluded for
    /// it, or a swarm peer that announced it.
    fn has_alternative(&self, cid: &Cid, peer: PeerId) -> bool {
        let excluded = self.wants.get(cid).map_or(&[][..], |w| &w.excluded[..]);
        let provider = self
            .peers
            .iter()
            .any(|(id, p)| *id != peer && p.kind == PeerKind::Provider && !excluded.contains(id));
        let announcer = self
            .announced
            .get(cid)
            .is_some_and(|l| l.iter().any(|id| *id != peer && !excluded.contains(id)));
        provider || announcer
    }

    fn presence(&mut self, now: Instant, peer: PeerId, p: Presence) {
        match p.kind {
            PresenceKind::Have => {
                let swarm = self
                    .peers
                    .get(&peer)
                    .is_some_and(|s| s.kind == PeerKind::Swarm);
                let tracked =
                    self.wants.contains_key(&p.cid) || self.frontier.iter().any(|e| e.cid == p.cid);
                if swarm && tracked {
                    let list = self.announced.entry(p.cid).or_default();
                    if !list.contains(&peer) {
                        list.push(peer);
                    }
                }
            }
            PresenceKind::DontHave => {
                if let Some(list) = self.announced.get_mut(&p.cid) {
                    list.retain(|x| *x != peer);
                }
                self.dont_have(now, peer, p.cid);
            }
        }
    }

    fn block(&mut self, now: Instant, peer: PeerId, b: Block) {
        let wanted_from = self.wants.get(&b.cid).map(|w| w.peer);
        // A block whose want timed out or was refused elsewhere and went back to the frontier
        // is still welcome when it arrives late (the bytes crossed the network already).
        let late = match wanted_from {
            Some(_) => None,
            None => self.frontier.iter().position(|e| e.cid == b.cid),
        };
        if wanted_from.is_none() && late.is_none() {
            return; // unwanted or already received: ignore
        }
        if verify_block(&b.cid, &b.data).is_err() {
            if wanted_from == Some(peer) {
                if let Some(w) = self.wants.remove(&b.cid) {
                    self.dec(peer);
                    self.requeue(b.cid, w, Some(peer), None);
                }
            } else if let Some(i) = late
                && let Some(e) = self.frontier.get_mut(i)
            {
                e.avoid.push(peer);
            }
            if let Some(list) = self.announced.get_mut(&b.cid) {
                list.retain(|x| *x != peer);
            }
            self.fault(now, peer, PenaltyReason::CorruptBlock(b.cid));
            return;
        }
        let mut asked = None;
        if let Some(want) = self.wants.remove(&b.cid) {
            asked = Some(want.peer);
            self.dec(want.peer);
            if want.peer == peer {
                let sample = now.saturating_duration_since(want.sent);
                self.sample(peer, sample);
            } else {
                self.cancel_at(want.peer, b.cid);
            }
        } else if let Some(i) = late {
            self.frontier.remove(i);
            self.progress.late_blocks += 1;
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_delivery = Some(now);
        }
        match self.peers.get(&peer).map(|p| p.kind) {
            Some(PeerKind::Swarm) => self.progress.blocks_from_swarm += 1,
            _ => self.progress.blocks_from_providers += 1,
        }
        // The swarm peers were sent WANT_HAVE for it: cancel (the sender's server already
        // dropped its entry when it served the block).
        self.announced.remove(&b.cid);
        let swarm: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, s)| s.kind == PeerKind::Swarm && **id != peer && Some(**id) != asked)
            .map(|(id, _)| *id)
            .collect();
        for other in swarm {
            self.cancel_at(other, b.cid);
        }
        self.progress.blocks_fetched += 1;
        self.progress.bytes_fetched += b.data.len() as u64;
        self.remember(b.cid);
        if self.learn_children(&b.cid, &b.data) {
            self.events.push_back(SessionEvent::BlockVerified {
                cid: b.cid,
                data: b.data,
            });
            self.check_complete();
        }
    }

    /// Puts a want taken out of `wants` back at the front of the frontier, avoiding `avoid`
    /// from now on, with its refusal time (or `refused_now` if a provider just refused).
    fn requeue(
        &mut self,
        cid: Cid,
        mut w: Want,
        avoid: Option<PeerId>,
        refused_now: Option<Instant>,
    ) {
        w.excluded.extend(avoid);
        self.progress.rerequests += 1;
        self.frontier.push_front(Pending {
            cid,
            avoid: w.excluded,
            refused_at: refused_now.or(w.refused_at),
        });
    }

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

    /// Appends a wantlist entry to the message being assembled for `peer`.
    fn push_entry(&mut self, peer: PeerId, cid: Cid, kind: WantKind, send_dont_have: bool) {
        self.push_want(peer, cid, kind, send_dont_have, false);
    }

    /// [`Session::push_entry`], optionally at [`URGENT_PRIORITY`].
    fn push_want(
        &mut self,
        peer: PeerId,
        cid: Cid,
        kind: WantKind,
        send_dont_have: bool,
        urgent: bool,
    ) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        let queue = self.outbox.entry(peer).or_default();
        if queue
            .back()
            .is_none_or(|m| m.wantlist.len() >= message::MAX_ENTRIES)
        {
            queue.push_back(Message::default());
        }
        if let Some(msg) = queue.back_mut() {
            msg.wantlist.push(WantEntry {
                cid,
                kind,
                priority: if urgent {
                    URGENT_PRIORITY
                } else {
                    i32::from(kind == WantKind::Block)
                },
                send_dont_have,
            });
        }
    }

    fn cancel_at(&mut self, peer: PeerId, cid: Cid) {
        self.push_entry(peer, cid, WantKind::Cancel, false);
    }

    fn fault(&mut self, now: Instant, peer: PeerId, reason: PenaltyReason) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.faults += 1;
        let faults = p.faults;
        self.events
            .push_back(SessionEvent::PeerPenalised { peer, reason });
        if faults >= self.cfg.max_faults {
            self.events
                .push_back(SessionEvent::PeerDisconnected { peer });
            self.remove_peer(now, peer);
        }
    }

    fn dont_have(&mut self, now: Instant, peer: PeerId, cid: Cid) {
        let Some(w) = self.wants.get(&cid) else {
            return;
        };
        if w.peer != peer {
            return;
        }
        if let Some(w) = self.wants.remove(&cid) {
            self.dec(peer);
            self.progress.dont_haves += 1;
            let provider = self
                .peers
                .get(&peer)
                .is_some_and(|p| p.kind == PeerKind::Provider);
            self.requeue(cid, w, Some(peer), provider.then_some(now));
        }
    }

    fn fail(&mut self, reason: FailReason) {
        if !self.done {
            self.done = true;
            self.frontier.clear();
            self.wants.clear();
            self.announced.clear();
            self.outbox.clear();
            self.events.push_back(SessionEvent::Failed { reason });
        }
    }

    /// Notes a fetched CID, forgetting the oldest beyond `remember_fetched`.
    fn remember(&mut self, cid: Cid) {
        if self.cfg.remember_fetched == 0 || !self.fetched_set.insert(cid) {
            return;
        }
        self.fetched.push_back(cid);
        while self.fetched.len() > self.cfg.remember_fetched {
            if let Some(old) = self.fetched.pop_front() {
                self.fetched_set.remove(&old);
            }
        }
    }

    /// Puts a newly discovered CID on the frontier, or, if held, walks it (resume). A CID
    /// fetched earlier in this session (and still remembered) is skipped: its children were
    /// learnt when it arrived. False if the session failed.
    fn discover(&mut self, cid: Cid) -> bool {
        let mut stack = vec![cid];
        while let Some(cid) = stack.pop() {
            if self.fetched_set.contains(&cid) {
                self.progress.duplicate_links += 1;
                continue;
            }
            if let Some(children) = self.held_children(&cid) {
                match children {
                    Ok(links) => {
                        self.progress.blocks_held += 1;
                        stack.extend(links.into_iter().rev());
                        continue;
                    }
                    Err(reason) => {
                        self.fail(reason);
                        return false;
                    }
                }
            }
            if self.frontier.len() >= self.cfg.max_pending {
                self.fail(FailReason::TooManyPending);
                return false;
            }
            self.frontier.push_front(Pending {
                cid,
                avoid: Vec::new(),
                refused_at: None,
            });
            let swarm: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, s)| s.kind == PeerKind::Swarm)
                .map(|(id, _)| *id)
                .collect();
            for peer in swarm {
                self.push_entry(peer, cid, WantKind::Have, false);
            }
        }
        true
    }

    /// If `cid` is held and usable: its children, in link order (none for a raw leaf).
    fn held_children(&self, cid: &Cid) -> Option<Result<Vec<Cid>, FailReason>> {
        let held = self.held.as_ref()?;
        if !held.has(cid) {
            return None;
        }
        if cid.codec() != DAG_PB_CODEC {
            return Some(Ok(Vec::new()));
        }
        let data = held.get(cid)?;
        verify_block(cid, &data).ok()?;
        Some(self.children(cid, &data))
    }

    /// The children of a verified block.
    fn children(&self, cid: &Cid, data: &[u8]) -> Result<Vec<Cid>, FailReason> {
        match cid.codec() {
            RAW_CODEC => Ok(Vec::new()),
            DAG_PB_CODEC => {
                let node = PbNode::decode(data).map_err(|_| FailReason::Malformed(*cid))?;
                if node.links.len() > self.cfg.max_links
                    || self.frontier.len() + node.links.len() > self.cfg.max_pending
                {
                    return Err(FailReason::TooManyPending);
                }
                let mut out = Vec::with_capacity(node.links.len());
                for link in node.links {
                    let codec = link.hash.codec();
                    if codec != RAW_CODEC && codec != DAG_PB_CODEC {
                        return Err(FailReason::UnsupportedCodec {
                            cid: link.hash,
                            codec,
                        });
                    }
                    out.push(link.hash);
                }
                Ok(out)
            }
            codec => Err(FailReason::UnsupportedCodec { cid: *cid, codec }),
        }
    }

    /// Puts the children of a verified block on the frontier; false if the session failed.
    fn learn_children(&mut self, cid: &Cid, data: &[u8]) -> bool {
        match self.children(cid, data) {
            Ok(links) => {
                for link in links.into_iter().rev() {
                    if !self.discover(link) {
                        return false;
                    }
                }
                true
            }
            Err(reason) => {
                self.fail(reason);
                false
            }
        }
    }

    fn check_complete(&mut self) {
        if !self.done && self.started && self.frontier.is_empty() && self.wants.is_empty() {
            self.done = true;
            self.outbox.clear();
            self.events.push_back(SessionEvent::Complete);
        }
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64: only breaks ties, so a statistical generator is enough.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn window_of(&self, kind: PeerKind) -> usize {
        match kind {
            PeerKind::Provider => self.cfg.provider_window,
            PeerKind::Swarm => self.cfg.window,
        }
    }

    /// Peers with room for one more want, cheapest first.
    fn peers_by_cost(&self) -> Vec<(PeerId, PeerKind)> {
        let mut v: Vec<(u128, PeerId, PeerKind)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.outstanding < self.window_of(p.kind))
            .map(|(id, p)| {
                let lat = p
                    .latency
                    .unwrap_or(self.cfg.initial_latency)
                    .as_micros()
                    .max(1);
                let cost = lat * (p.outstanding as u128 + 1) * (u128::from(p.faults) + 1);
                (cost, *id, p.kind)
            })
            .collect();
        v.sort_by_key(|(c, id, _)| (*c, *id));
        v.into_iter().map(|(_, id, k)| (id, k)).collect()
    }

    /// The frontier index to request from `peer` next, if any.
    /// The frontier index to request from `peer` next, if any, and whether the want is
    /// urgent (a provider asked again for a block it refused; see [`URGENT_PRIORITY`]).
    fn choose_for(
        &mut self,
        now: Instant,
        peer: PeerId,
        kind: PeerKind,
        any_swarm: bool,
    ) -> Option<(usize, bool)> {
        let look = self.cfg.lookahead.max(1).min(self.frontier.len());
        let mut best: Option<(usize, usize, u64, bool)> = None; // (index, announcers, tiebreak, urgent)
        for i in 0..look {
            let Some(entry) = self.frontier.get(i) else {
                break;
            };
            if self.wants.contains_key(&entry.cid) {
                continue;
            }
            // Announcers not to be avoided for this entry (slow, lying or refusing ones are).
            let (announcers, by_peer) = self.announced.get(&entry.cid).map_or((0, false), |l| {
                (
                    l.iter().filter(|p| !entry.avoid.contains(p)).count(),
                    l.contains(&peer),
                )
            });
            let mut urgent = false;
            if entry.avoid.contains(&peer) {
                // A provider that refused (its budget) is asked again, urgently, once nobody
                // announced the block for `want_timeout`.
                let stale = entry
                    .refused_at
                    .is_some_and(|t| now >= t + self.cfg.want_timeout);
                if !(kind == PeerKind::Provider && stale && announcers == 0) {
                    continue;
                }
                urgent = true;
            }
            let eligible = match kind {
                PeerKind::Swarm => by_peer,
                PeerKind::Provider => announcers == 0,
            };
            if !eligible {
                continue;
            }
            if !any_swarm {
                return Some((i, urgent)); // providers only: depth-first order
            }
            let tiebreak = self.next_random();
            if best.is_none_or(|(_, a, t, _)| (announcers, tiebreak) < (a, t)) {
                best = Some((i, announcers, tiebreak, urgent));
            }
        }
        best.map(|(i, _, _, u)| (i, u))
    }

    /// Fails the session if, with only providers connected, a block near the front of the
    /// frontier has been refused by every one of them.
    fn check_unavailable(&mut self) -> bool {
        if self.cfg.wait_for_peers
            || self.peers.is_empty()
            || self.peers.values().any(|p| p.kind == PeerKind::Swarm)
        {
            return false;
        }
        let look = self.cfg.lookahead.max(1).min(self.frontier.len());
        let dead = self
            .frontier
            .iter()
            .take(look)
            .find(|e| self.peers.keys().all(|p| e.avoid.contains(p)))
            .map(|e| e.cid);
        if let Some(cid) = dead {
            self.fail(FailReason::Unavailable(cid));
            return true;
        }
        false
    }

    /// Moves frontier CIDs into wants while peers have room.
    fn pump(&mut self, now: Instant) {
        self.last_now = Some(self.last_now.map_or(now, |n| n.max(now)));
        if !self.started && !self.done {
            self.started = true;
            let root = self.root;
            if !self.discover(root) {
                return;
            }
        }
        // Drop entries already wanted or fetched (a CID met twice in the DAG).
        self.frontier
            .retain(|e| !self.wants.contains_key(&e.cid) && !self.fetched_set.contains(&e.cid));
        while !self.done {
            if self
                .frontier
                .iter()
                .all(|e| self.wants.contains_key(&e.cid))
            {
                self.frontier.clear();
                self.check_complete();
                return;
            }
            if self.check_unavailable() {
                return;
            }
            let any_swarm = self.peers.values().any(|p| p.kind == PeerKind::Swarm);
            let swarm_in_flight: usize = self
                .peers
                .values()
                .filter(|p| p.kind == PeerKind::Swarm)
                .map(|p| p.outstanding)
                .sum();
            let mut chosen = None;
            for (peer, kind) in self.peers_by_cost() {
                if kind == PeerKind::Provider && any_swarm && swarm_in_flight >= self.cfg.window {
                    continue;
                }
                if let Some((i, urgent)) = self.choose_for(now, peer, kind, any_swarm) {
                    chosen = Some((i, peer, urgent));
                    break;
                }
            }
            let Some((i, peer, urgent)) = chosen else {
                return;
            };
            let Some(entry) = self.frontier.remove(i) else {
                return;
            };
            if let Some(p) = self.peers.get_mut(&peer) {
                p.outstanding += 1;
            }
            if urgent {
                self.progress.urgent_wants += 1;
            }
            self.push_want(peer, entry.cid, WantKind::Block, true, urgent);
            self.wants.insert(
                entry.cid,
                Want {
                    peer,
                    sent: now,
                    excluded: entry.avoid,
                    refused_at: entry.refused_at,
                },
            );
        }
    }
}
