//! The sans-IO serving side: answers peers' wants from a [`BlockSource`].
//!
//! WANT_HAVE → HAVE (or DONT_HAVE when asked for it), WANT_BLOCK → BLOCK (or DONT_HAVE),
//! CANCEL removes a still-queued want. A want for a block not held and without
//! `send_dont_have` is kept in the peer's ledger, as Bitswap 1.2's engine keeps it: once the
//! block arrives ([`Server::notify`]) the peer gets its HAVE or BLOCK. Each peer's queued and
//! kept wants together are bounded (extra wants are dropped, as Bitswap's ledger caps a peer's
//! wantlist); replies are produced lazily, per peer, by [`Server::poll_transmit_to`] (or
//! round-robin by [`Server::poll_transmit`]) when the caller's transport has room, so a CANCEL
//! arriving before a want is served takes effect and a slow peer does not hold blocks in
//! memory.

use std::collections::{BTreeMap, HashMap, VecDeque};

use cid::Cid;

use super::PeerId;
use super::message::{Block, Message, MessageError, Presence, PresenceKind, WantEntry, WantKind};
use super::session::URGENT_PRIORITY;
use crate::unixfs::{BlockSource, RAW_CODEC};

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most queued plus kept wants per peer; further wants are dropped.
    pub max_queue: usize,
    /// Most peers tracked at once; wants from further peers are dropped.
    pub max_peers: usize,
    /// Soft cap on one reply's encoded size (one block is always allowed).
    pub max_message_bytes: usize,
    /// Super-seeding, for the manufacturer's node in a roll-out: serve each block at most this
    /// many times, then answer DONT_HAVE so that devices fetch it from each other (seed 004:
    /// "once enough devices have the update they serve each other and the manufacturer can
    /// stop"). Only raw leaves count: dag-pb nodes (a few KiB each, which every device needs
    /// first to learn the leaves) are always served, and so are wants at
    /// [`URGENT_PRIORITY`]. `None` serves without limit.
    pub copies_per_block: Option<u32>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_queue: 1024,
            max_peers: 1024,
            max_message_bytes: 1 << 20,
            copies_per_block: None,
        }
    }
}

/// Answers wants from a block source. Generic over the source so a blockstore or an in-memory
/// map can back it.
#[derive(Debug)]
pub struct Server<S: BlockSource> {
    source: S,
    cfg: ServerConfig,
    queues: BTreeMap<PeerId, VecDeque<WantEntry>>,
    /// Wants for blocks not held (without `send_dont_have`), answered on [`Server::notify`].
    kept: BTreeMap<PeerId, Vec<WantEntry>>,
    /// Times each block was served (only with `copies_per_block`).
    copies: HashMap<Cid, u32>,
    next: Option<PeerId>,
    served: ServedStats,
}

/// What a [`Server`] has sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServedStats {
    /// Blocks sent.
    pub blocks: u64,
    /// Block payload bytes sent.
    pub block_bytes: u64,
    /// HAVE presences sent.
    pub haves: u64,
    /// DONT_HAVE presences sent.
    pub dont_haves: u64,
}

impl<S: BlockSource> Server<S> {
    /// A server over `source`.
    pub fn new(source: S, cfg: ServerConfig) -> Self {
        Self {
            source,
            cfg,
            queues: BTreeMap::new(),
            kept: BTreeMap::new(),
            copies: HashMap::new(),
            next: None,
            served: ServedStats::default(),
        }
    }

    /// The block source, mutably (to add blocks; call [`Server::notify`] after).
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// What has been sent so far.
    pub fn served(&self) -> ServedStats {
        self.served
    }

    /// A block became available: peers that asked for it without `send_dont_have` get their
    /// HAVE or BLOCK.
    pub fn notify(&mut self, cid: &Cid) {
        let mut emptied = Vec::new();
        for (peer, kept) in &mut self.kept {
            let Some(idx) = kept.iter().position(|e| e.cid == *cid) else {
                continue;
            };
            let entry = kept.swap_remove(idx);
            self.queues.entry(*peer).or_default().push_front(entry);
            if kept.is_empty() {
                emptied.push(*peer);
            }
        }
        for peer in emptied {
            self.kept.remove(&peer);
        }
    }

    /// Whether a reply for `peer` may be waiting.
    pub fn has_transmit(&self, peer: PeerId) -> bool {
        self.queues.contains_key(&peer)
    }

    /// The block source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Forgets a peer and its queued wants.
    pub fn remove_peer(&mut self, peer: PeerId) {
        self.queues.remove(&peer);
        self.kept.remove(&peer);
    }

    /// Number of wants queued (not kept) for `peer`.
    pub fn queued(&self, peer: PeerId) -> usize {
        self.queues.get(&peer).map_or(0, VecDeque::len)
    }

    /// Number of wants kept for `peer` until their blocks arrive.
    pub fn kept(&self, peer: PeerId) -> usize {
        self.kept.get(&peer).map_or(0, Vec::len)
    }

    /// Takes in one message from `peer`; presences and blocks in it are ignored.
    pub fn handle_message(&mut self, peer: PeerId, bytes: &[u8]) -> Result<(), MessageError> {
        let msg = Message::decode(bytes)?;
        self.handle(peer, msg);
        Ok(())
    }

    /// Takes in one decoded message from `peer` (its wantlist).
    pub fn handle(&mut self, peer: PeerId, msg: Message) {
        let known = self.queues.contains_key(&peer) || self.kept.contains_key(&peer);
        let tracked = self.queues.keys().chain(self.kept.keys()).count();
        if !known && tracked >= self.cfg.max_peers {
            return;
        }
        let queue = self.queues.entry(peer).or_default();
        let kept = self.kept.entry(peer).or_default();
        if msg.full {
            queue.clear();
            kept.clear();
        }
        for entry in msg.wantlist {
            match entry.kind {
                WantKind::Cancel => {
                    queue.retain(|e| e.cid != entry.cid);
                    kept.retain(|e| e.cid != entry.cid);
                }
                WantKind::Have | WantKind::Block => {
                    if let Some(i) = kept.iter().position(|e| e.cid == entry.cid) {
                        // Asked again: re-examine it now.
                        let mut e = kept.swap_remove(i);
                        upgrade(&mut e, &entry);
                        queue.push_back(e);
                    } else if let Some(e) = queue.iter_mut().find(|e| e.cid == entry.cid) {
                        upgrade(e, &entry);
                    } else if queue.len() + kept.len() < self.cfg.max_queue {
                        queue.push_back(entry);
                    }
                }
            }
        }
        if queue.is_empty() {
            self.queues.remove(&peer);
        }
        if kept.is_empty() {
            self.kept.remove(&peer);
        }
    }

    /// The next reply to send to `peer`, highest-priority wants first.
    pub fn poll_transmit_to(&mut self, peer: PeerId) -> Option<Vec<u8>> {
        while self.queues.contains_key(&peer) {
            if let Some(out) = self.reply(peer) {
                return Some(out);
            }
        }
        None
    }

    /// The next reply to send, round-robin over peers; highest-priority wants first.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Vec<u8>)> {
        // A peer whose queue yields nothing (unknown blocks, no DONT_HAVE wanted) is drained and
        // dropped, so this loop ends.
        while !self.queues.is_empty() {
            if let Some(out) = self.poll_one() {
                return Some(out);
            }
        }
        None
    }

    fn poll_one(&mut self) -> Option<(PeerId, Vec<u8>)> {
        let peer = self
            .next
            .and_then(|n| self.queues.range(n..).next().map(|(p, _)| *p))
            .or_else(|| self.queues.keys().next().copied())?;
        self.next = Some(PeerId(peer.0.wrapping_add(1)));
        self.reply(peer).map(|bytes| (peer, bytes))
    }

    /// Builds one reply for `peer` from its queue (None if nothing came of it).
    fn reply(&mut self, peer: PeerId) -> Option<Vec<u8>> {
        let queue = self.queues.get_mut(&peer)?;
        let mut msg = Message::default();
        let mut size = 10usize;
        while let Some(idx) = best(queue) {
            let Some(entry) = queue.get(idx) else { break };
            let exhausted = entry.cid.codec() == RAW_CODEC
                && entry.priority < URGENT_PRIORITY
                && self
                    .cfg
                    .copies_per_block
                    .is_some_and(|max| self.copies.get(&entry.cid).is_some_and(|n| *n >= max));
            // A WANT_HAVE only needs to know the block is there.
            let data = if exhausted {
                None
            } else if entry.kind == WantKind::Block {
                self.source.get(&entry.cid)
            } else {
                self.source.has(&entry.cid).then(Vec::new)
            };
            let add = match (&data, entry.kind) {
                (Some(d), WantKind::Block) => 2 + entry.cid.encoded_len() + 4 + d.len(),
                _ => 3 + entry.cid.encoded_len(),
            };
            let full_blocks = msg.blocks.len() >= super::message::MAX_BLOCKS
                || msg.presences.len() >= super::message::MAX_PRESENCES;
            if !msg.is_empty() && (size + add > self.cfg.max_message_bytes || full_blocks) {
                break;
            }
            let Some(entry) = queue.remove(idx) else {
                break;
            };
            size += add;
            match (data, entry.kind) {
                (Some(data), WantKind::Block) => {
                    if self.cfg.copies_per_block.is_some() && entry.cid.codec() == RAW_CODEC {
                        *self.copies.entry(entry.cid).or_default() += 1;
                    }
                    self.served.blocks += 1;
                    self.served.block_bytes += data.len() as u64;
                    msg.blocks.push(Block {
                        cid: entry.cid,
                        data,
                    });
                }
                (Some(_), _) => {
                    self.served.haves += 1;
                    msg.presences.push(Presence {
                        cid: entry.cid,
                        kind: PresenceKind::Have,
                    });
                }
                (None, _) if entry.send_dont_have => {
                    self.served.dont_haves += 1;
                    msg.presences.push(Presence {
                        cid: entry.cid,
                        kind: PresenceKind::DontHave,
                    });
                }
                (None, _) if exhausted => {}
                (None, _) => {
                    let kept = self.kept.entry(peer).or_default();
                    if !kept.iter().any(|e| e.cid == entry.cid) {
                        kept.push(entry);
                    }
                }
            }
        }
        if queue.is_empty() {
            self.queues.remove(&peer);
        }
        if msg.is_empty() {
            return None;
        }
        msg.encode().ok()
    }
}

/// Merges a repeated want into the kept one: WANT_BLOCK wins over WANT_HAVE, the highest
/// priority and any `send_dont_have` are kept.
fn upgrade(e: &mut WantEntry, new: &WantEntry) {
    if new.kind == WantKind::Block {
        e.kind = WantKind::Block;
    }
    e.priority = e.priority.max(new.priority);
    e.send_dont_have |= new.send_dont_have;
}

/// Index of the highest-priority entry (first among equals).
fn best(queue: &VecDeque<WantEntry>) -> Option<usize> {
    let mut best: Option<(usize, i32)> = None;
    for (i, e) in queue.iter().enumerate() {
        if best.is_none_or(|(_, p)| e.priority > p) {
            best = Some((i, e.priority));
        }
    }
    best.map(|(i, _)| i)
}
