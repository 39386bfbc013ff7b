//! An SPV light client for the POE chain (issue 4; docs/POE.md "Light client"), `no_std` +
//! `alloc`, for sensors and gateways. It starts from a checkpoint (a trusted final header and
//! the membership at that height), verifies every later header with [`poe::verify`] — the
//! nodes' own code — and keeps a bounded window of compact verified headers against which
//! transactions are proven with RFC 6962 inclusion proofs.
//!
//! Membership changes: every header commits to the membership after its block
//! ([`BlockHeader::members_root`]). When a header's root differs from the client's set, the
//! block changed it, and the client needs that block's membership transactions with their
//! inclusion proofs ([`MemberChange`]); it checks their approvals against its set with
//! [`Membership::successor`] (the nodes' own code) and takes the result only if its root is
//! the header's. A server that leaves a change out, or adds one, is caught by the root.
//!
//! Memory: each header in the window is a [`Verified`] (height, `block_id`, `tx_root`, time:
//! [`HEADER_BYTES`] bytes) in a ring of fixed capacity, allocated once; the membership set is
//! held separately (it grows with the number of registered nodes, not with the chain).
#![no_std]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use poe::members::ChangeError;
use poe::merkle::{self, MerkleError};
use poe::verify::{self, Depth, Membership, Params, Verified, VerifyError};
use poe::wire::{Block, BlockHeader, Encode, Hash, Transaction, TxBody};

/// Bytes one verified header takes in the window.
pub const HEADER_BYTES: usize = core::mem::size_of::<Verified>();

/// Why the light client refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightError {
    /// A header failed verification.
    #[error("header {height}: {source}")]
    Header {
        /// Its height.
        height: u64,
        /// Why.
        source: VerifyError,
    },
    /// The window holds no header at that height (too old, or not yet seen).
    #[error("no verified header at height {0} in the window")]
    UnknownHeight(u64),
    /// An inclusion proof does not verify.
    #[error("inclusion proof rejected: {0:?}")]
    Inclusion(MerkleError),
    /// The window capacity must be at least one header.
    #[error("window must hold at least one header")]
    EmptyWindow,
    /// The checkpoint's `members_root` is not the root of the membership given with it.
    #[error("the membership given with the checkpoint is not the one its header commits to")]
    CheckpointMembers,
    /// The header's block changed the membership (its `members_root` is not the client's
    /// set's) and the changes given do not produce it: one is missing, extra, or not of this
    /// block. Fetch the block's membership transactions with their inclusion proofs.
    #[error("header {height}: membership changes missing or wrong (members_root mismatch)")]
    MembersRoot {
        /// Height of the header.
        height: u64,
    },
    /// A membership change was refused (approvals, quorum, ...).
    #[error("header {height}: membership change refused: {source}")]
    Change {
        /// Height of the header.
        height: u64,
        /// Why.
        source: ChangeError,
    },
    /// A [`MemberChange`] is not a membership transaction, or is for no header given.
    #[error("a change given for height {0} is not a membership transaction of a header given")]
    NotAChange(u64),
}

/// A membership transaction of the block at `height` with its RFC 6962 inclusion proof in
/// that block (what a server hands a light client for a header whose `members_root` changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChange {
    /// Height of the block holding it.
    pub height: u64,
    /// The transaction (a [`TxBody::Membership`]).
    pub tx: Transaction,
    /// Its index among the block's transactions.
    pub index: u64,
    /// Its audit path.
    pub proof: Vec<Hash>,
}

impl MemberChange {
    /// The membership transactions of `block` with their inclusion proofs: what a server
    /// (a node holding the block) sends with a header whose `members_root` changed.
    pub fn of_block(block: &Block) -> Vec<MemberChange> {
        let leaves: Vec<Vec<u8>> = block.txs.iter().map(|t| t.to_bytes()).collect();
        block
            .txs
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.body, TxBody::Membership { .. }))
            .filter_map(|(i, t)| {
                Some(MemberChange {
                    height: block.header.height,
                    tx: t.clone(),
                    index: i as u64,
                    proof: merkle::inclusion_proof(&leaves, i)?,
                })
            })
            .collect()
    }
}

/// The light client.
#[derive(Debug, Clone)]
pub struct LightClient {
    params: Params,
    members: Membership,
    window: VecDeque<Verified>,
    capacity: usize,
}

impl LightClient {
    /// Starts from a trusted checkpoint (a final header's compact form, from a source the user
    /// trusts) and the membership at that height (which must be the one the checkpoint commits
    /// to: [`LightError::CheckpointMembers`] otherwise), keeping at most `capacity` headers.
    pub fn from_checkpoint(
        checkpoint: Verified,
        members: Membership,
        params: Params,
        capacity: usize,
    ) -> Result<Self, LightError> {
        if capacity == 0 {
            return Err(LightError::EmptyWindow);
        }
        if members.root() != checkpoint.members_root {
            return Err(LightError::CheckpointMembers);
        }
        let mut window = VecDeque::with_capacity(capacity);
        window.push_back(checkpoint);
        Ok(Self {
            params,
            members,
            window,
            capacity,
        })
    }

    /// The newest verified header.
    pub fn tip(&self) -> &Verified {
        // The window is never empty: it starts with the checkpoint and only drops the oldest
        // when a newer header was pushed.
        &self.window[self.window.len() - 1]
    }

    /// Verifies a new final header fully (ticket, clerk signature, seal, commit certificate,
    /// link) and adds it. A header whose block changed the membership is refused with
    /// [`LightError::MembersRoot`]: use [`LightClient::push_with_changes`].
    pub fn push(&mut self, h: &BlockHeader) -> Result<&Verified, LightError> {
        self.push_with_changes(h, &[])
    }

    /// [`LightClient::push`] of a header whose block may change the membership, with that
    /// block's membership transactions and their inclusion proofs: the header is verified
    /// against the current set, the changes against the header's transaction root and the
    /// current set's approvers, and the new set must have the header's `members_root`.
    /// Nothing changes unless everything verifies.
    pub fn push_with_changes(
        &mut self,
        h: &BlockHeader,
        changes: &[MemberChange],
    ) -> Result<&Verified, LightError> {
        let v = verify::header(h, self.tip(), &self.members, &self.params, Depth::Full).map_err(
            |source| LightError::Header {
                height: h.height,
                source,
            },
        )?;
        if let Some(c) = changes.iter().find(|c| c.height != h.height) {
            return Err(LightError::NotAChange(c.height));
        }
        let next = successor(&self.members, h, changes)?;
        self.append(v);
        self.members = next;
        Ok(self.tip())
    }

    /// Catch-up: verifies a run of consecutive headers, each one's ticket, clerk signature,
    /// seal and link, and
    /// the commit certificate of the last one only (an honest level-1 member commits only to
    /// a block extending its final chain, so a quorum on the last covers its ancestors).
    /// Nothing is added unless the whole run verifies. Returns how many were added. A run
    /// across a membership change needs [`LightClient::sync_with_changes`].
    pub fn sync(&mut self, headers: &[BlockHeader]) -> Result<usize, LightError> {
        self.sync_with_changes(headers, &[])
    }

    /// [`LightClient::sync`] across membership changes: `changes` holds the membership
    /// transactions (with inclusion proofs) of every block in the run that changed the set;
    /// each header is verified against the set its parent left, as the nodes did. The
    /// approvals of each change are checked (more than 2/3 of the level-1 members of the time
    /// signed it), so the set the last header's certificate is checked against descends from
    /// the checkpoint's by approved changes only.
    pub fn sync_with_changes(
        &mut self,
        headers: &[BlockHeader],
        changes: &[MemberChange],
    ) -> Result<usize, LightError> {
        if let Some(c) = changes
            .iter()
            .find(|c| !headers.iter().any(|h| h.height == c.height))
        {
            return Err(LightError::NotAChange(c.height));
        }
        let mut parent = *self.tip();
        let mut members = self.members.clone();
        let mut verified = Vec::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            let depth = if i + 1 == headers.len() {
                Depth::Full
            } else {
                Depth::Chained
            };
            parent =
                verify::header(h, &parent, &members, &self.params, depth).map_err(|source| {
                    LightError::Header {
                        height: h.height,
                        source,
                    }
                })?;
            if h.members_root != members.root() || changes.iter().any(|c| c.height == h.height) {
                let mine: Vec<MemberChange> = changes
                    .iter()
                    .filter(|c| c.height == h.height)
                    .cloned()
                    .collect();
                members = successor(&members, h, &mine)?;
            }
            verified.push(parent);
        }
        let n = verified.len();
        for v in verified {
            self.append(v);
        }
        self.members = members;
        Ok(n)
    }

    fn append(&mut self, v: Verified) {
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(v);
    }

    /// The verified header at `height`, if still in the window.
    pub fn header(&self, height: u64) -> Option<&Verified> {
        let first = self.window.front()?.height;
        let i = usize::try_from(height.checked_sub(first)?).ok()?;
        self.window.get(i)
    }

    /// Checks that `tx` (its encoding) is transaction `index` of the block at `height`: an
    /// RFC 6962 inclusion proof against the verified header's `tx_root`, with the tree size
    /// taken from the same header (never from the prover).
    pub fn verify_inclusion(
        &self,
        height: u64,
        tx: &[u8],
        index: u64,
        proof: &[Hash],
    ) -> Result<(), LightError> {
        let h = self
            .header(height)
            .ok_or(LightError::UnknownHeight(height))?;
        merkle::verify_inclusion(tx, index, u64::from(h.tx_count), proof, &h.tx_root)
            .map_err(LightError::Inclusion)
    }

    /// The membership the client verifies against.
    pub fn members(&self) -> &Membership {
        &self.members
    }

    /// Headers held now, and the window's capacity.
    pub fn window_len(&self) -> (usize, usize) {
        (self.window.len(), self.capacity)
    }

    /// Bytes the window takes (its allocation, which is made once at the full capacity).
    pub fn window_bytes(&self) -> usize {
        self.window.capacity() * HEADER_BYTES
    }
}

/// The membership after the (verified) header `h`, given `members` (its parent's) and the
/// block's membership transactions `changes`: each is proven to be in the block, their
/// approvals are checked by [`Membership::successor`], and the result must have the header's
/// `members_root`.
fn successor(
    members: &Membership,
    h: &BlockHeader,
    changes: &[MemberChange],
) -> Result<Membership, LightError> {
    for c in changes {
        if !matches!(c.tx.body, TxBody::Membership { .. }) {
            return Err(LightError::NotAChange(c.height));
        }
        merkle::verify_inclusion(
            &c.tx.to_bytes(),
            c.index,
            u64::from(h.tx_count),
            &c.proof,
            &h.tx_root,
        )
        .map_err(LightError::Inclusion)?;
    }
    let next = members
        .successor(changes.iter().map(|c| &c.tx))
        .map_err(|source| LightError::Change {
            height: h.height,
            source,
        })?;
    if next.root() != h.members_root {
        return Err(LightError::MembersRoot { height: h.height });
    }
    Ok(next)
}
