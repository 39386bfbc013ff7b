//! Per-height state and the bounded mempool.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::vec::Vec;

use crate::lottery::Rank;
use crate::wire::{
    Block, BlockHeader, Certificate, Hash, NodeId, Phase, Ticket, Transaction, TxBody, Vote,
};

/// A validated candidate block of the current height.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    /// The block (with its seal once one was verified).
    pub block: Block,
    /// Its clerk ticket's rank.
    pub rank: Rank,
    /// Whether a valid seal was seen.
    pub sealed: bool,
}

/// A verified re-proposal of a prepared block for one round (docs/POE.md, "Finality").
#[derive(Debug, Clone, Copy)]
pub(super) struct Proposal {
    /// Rank of the proposing clerk's ticket for the round.
    pub rank: Rank,
    /// The re-proposed block.
    pub block_id: Hash,
    /// The proposing clerk (votes go to it).
    pub clerk: NodeId,
}

/// What a node holds for the height it works on; reset when a block is final.
#[derive(Debug, Default)]
pub(super) struct HeightState {
    /// Best ticket per round.
    pub tickets: BTreeMap<u32, (Rank, Ticket)>,
    /// Validated candidates by `block_id`.
    pub blocks: BTreeMap<Hash, Candidate>,
    /// First header per (round, clerk), to detect double blocks.
    pub clerk_blocks: BTreeMap<(u32, NodeId), BlockHeader>,
    /// Valid votes per (phase, round, voter).
    pub votes: BTreeMap<(Phase, u32, NodeId), Vote>,
    /// (phase, round) this node voted in.
    pub voted: BTreeSet<(Phase, u32)>,
    /// Blocks this node built, per round (as clerk).
    pub built: BTreeMap<u32, Hash>,
    /// Blocks whose sealed version this clerk broadcast.
    pub seal_sent: BTreeSet<Hash>,
    /// Certificates this clerk formed, per (phase, round).
    pub cert_sent: BTreeSet<(Phase, u32)>,
    /// Lock: the highest prepare certificate seen (its round and block are the lock; the
    /// certificate is what justifies re-proposing the block and is announced on spins).
    pub lock: Option<Certificate>,
    /// The best re-proposal per round.
    pub reproposals: BTreeMap<u32, Proposal>,
    /// Blocks this level-2 node tried to seal.
    pub sealed_by_me: BTreeSet<Hash>,
}

/// A bounded mempool: insertion order, evicts the oldest when full (count or bytes).
#[derive(Debug, Default)]
pub(super) struct Mempool {
    order: VecDeque<Hash>,
    txs: BTreeMap<Hash, (Transaction, usize)>,
    nonces: BTreeSet<(NodeId, u64)>,
    bytes: usize,
    evicted: u64,
}

impl Mempool {
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn contains(&self, tx: &Transaction) -> bool {
        self.txs.contains_key(&tx.id())
    }

    pub fn has_nonce(&self, sender: &NodeId, nonce: u64) -> bool {
        self.nonces.contains(&(*sender, nonce))
    }

    pub fn insert(&mut self, tx: Transaction, len: usize, max_txs: usize, max_bytes: usize) {
        while !self.order.is_empty() && (self.txs.len() >= max_txs || self.bytes + len > max_bytes)
        {
            if let Some(old) = self.order.pop_front()
                && self.remove(&old)
            {
                self.evicted += 1;
            }
        }
        if self.txs.len() >= max_txs || self.bytes + len > max_bytes {
            self.evicted += 1;
            return;
        }
        let id = tx.id();
        self.nonces.insert((tx.sender, tx.nonce));
        self.bytes += len;
        self.order.push_back(id);
        self.txs.insert(id, (tx, len));
    }

    fn remove(&mut self, id: &Hash) -> bool {
        match self.txs.remove(id) {
            Some((tx, len)) => {
                self.nonces.remove(&(tx.sender, tx.nonce));
                self.bytes -= len;
                true
            }
            None => false,
        }
    }

    /// Up to `max` transactions, oldest first, then ordered by (sender, nonce) as blocks
    /// require; at most one membership change per node (a block may change a node once).
    pub fn select(&self, max: usize) -> Vec<Transaction> {
        let mut changed = BTreeSet::new();
        let mut out: Vec<Transaction> = self
            .order
            .iter()
            .filter_map(|id| self.txs.get(id))
            .filter(|(t, _)| match &t.body {
                TxBody::Membership { node, .. } => changed.insert(*node),
                _ => true,
            })
            .take(max)
            .map(|(t, _)| t.clone())
            .collect();
        out.sort_by_key(|t| (t.sender, t.nonce));
        out
    }

    /// Drops every membership transaction (after the set changed: their approvals name the
    /// old [`crate::members::Membership::root`] and no longer verify).
    pub fn drop_membership(&mut self) {
        let stale: Vec<Hash> = self
            .txs
            .iter()
            .filter(|(_, (t, _))| matches!(t.body, TxBody::Membership { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.remove(&id);
        }
        let txs = &self.txs;
        self.order.retain(|id| txs.contains_key(id));
    }

    /// Drops what a final block included and whatever its nonces made stale.
    pub fn remove_committed(&mut self, included: &[Transaction], floor: &BTreeMap<NodeId, u64>) {
        for tx in included {
            self.remove(&tx.id());
        }
        let stale: Vec<Hash> = self
            .txs
            .iter()
            .filter(|(_, (t, _))| floor.get(&t.sender).is_some_and(|f| t.nonce < *f))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.remove(&id);
        }
        let txs = &self.txs;
        self.order.retain(|id| txs.contains_key(id));
    }
}
