//! Restarting a node from its store, sans-IO: the driver writes each final block durably when
//! the node reports it ([`NodeEvent::Finalized`](super::NodeEvent::Finalized) carries the
//! block; [`Store::append_final`] writes it), and after a crash reads the final chain back
//! ([`Store::final_blocks`]) and hands it to [`Node::resume`], which verifies it and rebuilds
//! the tip, the in-memory window and the mempool's nonce floors. The node itself never touches
//! the file.
//!
//! The two [`Store`] helpers live here rather than in [`crate::store`] because they decode
//! [`crate::wire`] types; the store itself keeps bytes only.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use std::vec::Vec;

use super::{Node, NodeConfig, NodeError, Reject, TxReject};
use crate::sig::{self, SigningKey};
use crate::store::{PutOutcome, Store, StoreError};
use crate::verify::{self, Depth, Membership, Params, Verified, VerifyError};
use crate::vrf::VrfSecretKey;
use crate::wire::{Block, BlockHeader, Decode, Encode, Level, Phase, Transaction, WireError};

/// Why the store could not write or give back final blocks as [`Block`]s.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The store failed (I/O, corruption, a conflicting final block, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored header or transaction does not decode.
    #[error("stored block at height {height}: {what} does not decode: {source}")]
    Decode {
        /// Height of the block.
        height: u64,
        /// `"header"` or `"transaction"`.
        what: &'static str,
        /// The decoding error.
        #[source]
        source: WireError,
    },
    /// The stored block id is not the id of the stored header (or the header is for another
    /// height).
    #[error("stored block at height {height}: its id or height does not match its header")]
    IdMismatch {
        /// Height of the block.
        height: u64,
    },
    /// A stored transaction id is not the id of the stored transaction.
    #[error("stored block at height {height}: transaction {index} does not match its id")]
    TxIdMismatch {
        /// Height of the block.
        height: u64,
        /// Index of the transaction in the block.
        index: usize,
    },
}

/// Why [`Node::resume`] refused a stored chain (a damaged or forged store, or a chain from
/// another genesis or membership).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The node itself could not be created.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A stored header does not verify against its parent (link, ticket, seal, or, for the
    /// blocks kept in memory, the commit certificate).
    #[error("stored block at height {height}: {source}")]
    Header {
        /// Height of the block.
        height: u64,
        /// What failed.
        #[source]
        source: VerifyError,
    },
    /// A stored block's body does not match its header, or a transaction is invalid (non-member
    /// sender, nonce not above the sender's last, or, for the blocks kept in memory, a bad
    /// signature).
    #[error("stored block at height {height}: {source}")]
    Body {
        /// Height of the block.
        height: u64,
        /// What failed.
        #[source]
        source: Reject,
    },
}

impl Store {
    /// Writes a final block (header with its commit certificate, and its transactions) in one
    /// durable transaction: [`Store::put_block`] with `is_final = true`. Idempotent for the
    /// same block; a different block already final at its height is
    /// [`StoreError::Conflict`].
    pub fn append_final(&mut self, block: &Block) -> Result<PutOutcome, PersistError> {
        let txs: Vec<([u8; 32], Vec<u8>)> =
            block.txs.iter().map(|t| (t.id(), t.to_bytes())).collect();
        Ok(self.put_block(
            block.header.height,
            &block.header.block_id(),
            &block.header.to_bytes(),
            &txs,
            true,
        )?)
    }

    /// The final blocks at heights `from..from + count`, decoded, in height order; stops at the
    /// first height that is missing or not final. Each header's id and height and each
    /// transaction's id are checked against what the store recorded (not signatures or
    /// certificates: [`Node::resume`] and the peers that receive the blocks verify those).
    ///
    /// Memory grows with `count`: read a long chain in slices (e.g. of
    /// [`crate::wire::codec::MAX_GET_BLOCKS`] heights, as a [`NodeEvent::BlocksWanted`](super::NodeEvent) asks).
    pub fn final_blocks(&self, from: u64, count: u64) -> Result<Vec<Block>, PersistError> {
        let mut out = Vec::new();
        let end = from.saturating_add(count);
        let mut height = from;
        while height < end {
            let Some(stored) = self.block_by_height(height)? else {
                break;
            };
            if !stored.is_final {
                break;
            }
            let header =
                BlockHeader::decode(&stored.header).map_err(|source| PersistError::Decode {
                    height,
                    what: "header",
                    source,
                })?;
            if header.height != height || header.block_id() != stored.block_id {
                return Err(PersistError::IdMismatch { height });
            }
            let mut txs = Vec::with_capacity(stored.txs.len());
            for (index, (id, bytes)) in stored.txs.iter().enumerate() {
                let tx = Transaction::decode(bytes).map_err(|source| PersistError::Decode {
                    height,
                    what: "transaction",
                    source,
                })?;
                if tx.id() != *id {
                    return Err(PersistError::TxIdMismatch { height, index });
                }
                txs.push(tx);
            }
            out.push(Block { header, txs });
            height += 1;
        }
        Ok(out)
    }
}

impl Node {
    /// A node restarted from its stored final chain: like [`Node::new`] on `genesis`, then
    /// `chain` (the final blocks at heights `genesis.height + 1`, `+ 2`, ... in order, e.g.
    /// from [`Store::final_blocks`]) is appended without events; the node resumes at the last
    /// block as its tip, holds the last [`NodeConfig::keep_blocks`] in memory, has its
    /// mempool's nonce floors rebuilt from every transaction in the chain, and enters round 0
    /// of the next height at `now` (its clerk clock restarts at `now`; a header it builds is
    /// still stamped after the tip's time). Votes and locks of the height in progress before
    /// the crash are not restored. Membership changes in the chain are applied as they were
    /// ([`Node::members`] is the set after the tip; no event reports them), and each block
    /// is verified against the set its parent left.
    ///
    /// Verification depth: every stored header is checked against its parent with
    /// [`verify::header`] at [`Depth::Chained`] (link, ticket, seal) and every body against its
    /// header's Merkle root and the nonce rules; the blocks kept in memory (the tip among them)
    /// are also checked at [`Depth::Full`] (the commit certificate) with every transaction
    /// signature. Why not `Full` throughout: the store was written by this node after it
    /// verified each block at `Full`, the link chain already binds every stored header to the
    /// tip (a changed header changes its `block_id`, which breaks its seal and its child's
    /// link), and the tip's certificate covers its ancestors (an honest member commits only to
    /// a block extending its final chain), while a certificate costs a quorum of signature
    /// checks per block, which would make restarting a long chain slow. The blocks held in
    /// memory get `Full` because they are served to peers as they are.
    ///
    /// Errors: [`ResumeError::Node`] as for [`Node::new`]; [`ResumeError::Header`] or
    /// [`ResumeError::Body`] for the first stored block that does not verify (a gap in the
    /// heights is a [`VerifyError::BadLink`]). Never panics on a damaged chain.
    // The arguments are those of `Node::new` plus the chain.
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        now: Instant,
        key: SigningKey,
        vrf: VrfSecretKey,
        members: Membership,
        params: Params,
        genesis: Verified,
        config: NodeConfig,
        chain: impl IntoIterator<Item = Block>,
    ) -> Result<Self, ResumeError> {
        let mut node = Self::init(now, key, vrf, members, params, genesis, config)?;
        // The membership each held block is verified against (its parent's), kept alongside
        // the in-memory window.
        let mut held: VecDeque<Membership> = VecDeque::new();
        let keep = node.config.keep_blocks.max(1);
        for b in chain {
            held.push_back(node.members.clone());
            if held.len() > keep {
                held.pop_front();
            }
            node.restore(b)?;
        }
        for (b, members) in node.finalized.iter().zip(&held) {
            node.check_held(b, members)?;
        }
        node.enter_round(now, 0)?;
        node.drain(now);
        Ok(node)
    }

    /// Appends one stored block: [`Depth::Chained`], its body's root and nonces.
    fn restore(&mut self, b: Block) -> Result<(), ResumeError> {
        let height = b.header.height;
        let v = verify::header(
            &b.header,
            &self.tip,
            &self.members,
            &self.params,
            Depth::Chained,
        )
        .map_err(|source| ResumeError::Header { height, source })?;
        let body = |source: Reject| ResumeError::Body { height, source };
        self.check_root(&b).map_err(body)?;
        for tx in &b.txs {
            let member = self.members.get(&tx.sender, Level::One).is_ok()
                || self.members.get(&tx.sender, Level::Two).is_ok();
            if !member {
                return Err(body(Reject::Tx(TxReject::NotMember)));
            }
            let floor = self.nonce_floor.entry(tx.sender).or_insert(0);
            if tx.nonce < *floor {
                return Err(body(Reject::Tx(TxReject::OldNonce)));
            }
            *floor = tx.nonce.saturating_add(1);
        }
        let next = self.successor(&b).map_err(body)?;
        self.tip = v;
        self.keep_final(Arc::new(b));
        self.change_members(height, next, true);
        Ok(())
    }

    /// The [`Depth::Full`] part for a block held in memory: its commit certificate and its
    /// transactions' signatures.
    fn check_held(&self, b: &Block, members: &Membership) -> Result<(), ResumeError> {
        let hd = &b.header;
        let height = hd.height;
        let header = |source: VerifyError| ResumeError::Header { height, source };
        let c = hd
            .commit
            .as_ref()
            .ok_or(header(VerifyError::NoCertificate))?;
        // Of the ticket's round or a later one (a re-proposed block).
        verify::commit(c, hd, &hd.block_id(), members).map_err(header)?;
        for tx in &b.txs {
            let bad = ResumeError::Body {
                height,
                source: Reject::Tx(TxReject::BadSignature),
            };
            let (member, _) = members
                .get(&tx.sender, Level::One)
                .or_else(|_| members.get(&tx.sender, Level::Two))
                .map_err(|_| bad.clone())?;
            sig::verify(&member.ed25519, &[], &[&tx.signing_bytes()], &tx.signature)
                .map_err(|_| bad)?;
        }
        Ok(())
    }
}

/// Most `(phase, round)` entries a [`VoteRecord`] decodes (two phases for each round a height
/// can spin through before a node gives up is far below this).
const MAX_RECORDED_VOTES: usize = 4_096;

/// What a level-1 member has committed to at the height in progress: the `(phase, round)`s it
/// voted in and its lock. A member that crashes and is [resumed](Node::resume) must not vote
/// again in a round it voted in (that would be equivocation), nor forget its lock (safety
/// rests on it: docs/POE.md, "Locks and re-proposal"). The driver stores
/// [`Node::vote_record`] durably (e.g. with [`Store::put_meta`]) **before** it transmits any
/// vote the node output, and after a restart hands it back with [`Node::restore_votes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteRecord {
    /// The height in progress.
    pub height: u64,
    /// `(phase, round)` this member voted in at that height.
    pub voted: Vec<(Phase, u32)>,
    /// Its lock: the highest prepare certificate it saw at that height.
    pub lock: Option<crate::wire::Certificate>,
}

impl VoteRecord {
    /// `height (u64) || n (u32) || n × (phase || round u32) || lock (Option<Certificate>)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&(self.voted.len() as u32).to_be_bytes());
        for (phase, round) in &self.voted {
            phase.encode(&mut out);
            out.extend_from_slice(&round.to_be_bytes());
        }
        match &self.lock {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                c.encode(&mut out);
            }
        }
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes) strictly (a damaged record is an error, never a
    /// panic; at most 4,096 entries).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = crate::wire::codec::Reader::new(bytes);
        let height = r.u64("VoteRecord.height")?;
        let n = r.count("VoteRecord.voted", MAX_RECORDED_VOTES as u32, 5)?;
        let mut voted = r.list(n);
        for _ in 0..n {
            let phase = Phase::decode_from(&mut r)?;
            voted.push((phase, r.u32("VoteRecord.round")?));
        }
        let lock = r.option("VoteRecord.lock")?;
        r.finish("VoteRecord")?;
        Ok(Self {
            height,
            voted,
            lock,
        })
    }
}

impl Node {
    /// What this member has voted and locked at the height in progress (see [`VoteRecord`]).
    pub fn vote_record(&self) -> VoteRecord {
        VoteRecord {
            height: self.next_height(),
            voted: self.h.voted.iter().copied().collect(),
            lock: self.h.lock.clone(),
        }
    }

    /// Takes back a [`VoteRecord`] saved before a crash: if it is for the height this node is
    /// at, the rounds it voted in are not voted in again and its lock (verified) is restored.
    /// A record of another height is ignored (that height is final).
    pub fn restore_votes(&mut self, now: Instant, record: &VoteRecord) -> Result<(), Reject> {
        if record.height != self.next_height() {
            return Ok(());
        }
        self.h.voted.extend(record.voted.iter().copied());
        if let Some(c) = &record.lock {
            self.raise_lock(c)?;
            self.catch_up_round(now, c.round);
        }
        Ok(())
    }
}
