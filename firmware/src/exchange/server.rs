//! The sans-IO serving side: answers peers' wants from a [`BlockSource`].
//!
//! WANT_HAVE → HAVE (or DONT_HAVE when asked for it), WANT_BLOCK → BLOCK (or DONT_HAVE),
//! CANCEL removes a still-queued want. Each peer has a bounded queue of pending wants (extra
//! wants are dropped, as Bitswap's ledger caps a peer's wantlist); replies are produced lazily
//! by [`Server::poll_transmit`], so a CANCEL arriving before a want is served takes effect.

use std::collections::{BTreeMap, VecDeque};

use super::PeerId;
use super::message::{Block, Message, MessageError, Presence, PresenceKind, WantEntry, WantKind};
use crate::unixfs::BlockSource;

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most queued wants per peer; further wants are dropped until the queue drains.
    pub max_queue: usize,
    /// Most peers tracked at once; wants from further peers are dropped.
    pub max_peers: usize,
    /// Soft cap on one reply's encoded size (one block is always allowed).
    pub max_message_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_queue: 256,
            max_peers: 1024,
            max_message_bytes: 4 << 20,
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
    next: Option<PeerId>,
}

impl<S: BlockSource> Server<S> {
    /// A server over `source`.
    pub fn new(source: S, cfg: ServerConfig) -> Self {
        Self {
            source,
            cfg,
            queues: BTreeMap::new(),
            next: None,
        }
    }

    /// The block source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Forgets a peer and its queued wants.
    pub fn remove_peer(&mut self, peer: PeerId) {
        self.queues.remove(&peer);
    }

    /// Number of wants queued for `peer`.
    pub fn queued(&self, peer: PeerId) -> usize {
        self.queues.get(&peer).map_or(0, VecDeque::len)
    }

    /// Takes in one message from `peer`; presences and blocks in it are ignored.
    pub fn handle_message(&mut self, peer: PeerId, bytes: &[u8]) -> Result<(), MessageError> {
        let msg = Message::decode(bytes)?;
        if !self.queues.contains_key(&peer) && self.queues.len() >= self.cfg.max_peers {
            return Ok(());
        }
        let queue = self.queues.entry(peer).or_default();
        if msg.full {
            queue.clear();
        }
        for entry in msg.wantlist {
            match entry.kind {
                WantKind::Cancel => queue.retain(|e| e.cid != entry.cid),
                WantKind::Have | WantKind::Block => {
                    if let Some(e) = queue.iter_mut().find(|e| e.cid == entry.cid) {
                        // Upgrade WANT_HAVE to WANT_BLOCK, keep the strongest request.
                        if entry.kind == WantKind::Block {
                            e.kind = WantKind::Block;
                        }
                        e.priority = e.priority.max(entry.priority);
                        e.send_dont_have |= entry.send_dont_have;
                    } else if queue.len() < self.cfg.max_queue {
                        queue.push_back(entry);
                    }
                }
            }
        }
        if queue.is_empty() {
            self.queues.remove(&peer);
        }
        Ok(())
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
        let queue = self.queues.get_mut(&peer)?;
        let mut msg = Message::default();
        let mut size = 10usize;
        while let Some(idx) = best(queue) {
            let Some(entry) = queue.get(idx) else { break };
            let data = self.source.get(&entry.cid);
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
                (Some(data), WantKind::Block) => msg.blocks.push(Block {
                    cid: entry.cid,
                    data,
                }),
                (Some(_), _) => msg.presences.push(Presence {
                    cid: entry.cid,
                    kind: PresenceKind::Have,
                }),
                (None, _) if entry.send_dont_have => msg.presences.push(Presence {
                    cid: entry.cid,
                    kind: PresenceKind::DontHave,
                }),
                (None, _) => {}
            }
        }
        if queue.is_empty() {
            self.queues.remove(&peer);
        }
        if msg.is_empty() {
            return None;
        }
        msg.encode().ok().map(|bytes| (peer, bytes))
    }
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
