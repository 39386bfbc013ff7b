//! An SPV light client for the POE chain (issue 4; docs/POE.md "Light client"), `no_std` +
//! `alloc`, for sensors and gateways. It starts from a checkpoint (a trusted final header and
//! the membership at that height), verifies every later header with [`poe::verify`] — the
//! nodes' own code — and keeps a bounded window of compact verified headers against which
//! transactions are proven with RFC 6962 inclusion proofs.
//!
//! Memory: each header in the window is a [`Verified`] (height, `block_id`, `tx_root`, time:
//! [`HEADER_BYTES`] bytes) in a ring of fixed capacity, allocated once; the membership set is
//! held separately (it grows with the number of registered nodes, not with the chain).
#![no_std]

extern crate alloc;

use alloc::collections::VecDeque;

use poe::merkle::{self, MerkleError};
use poe::verify::{self, Depth, Membership, Params, Verified, VerifyError};
use poe::wire::{BlockHeader, Hash};

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
    /// trusts) and the membership at that height, keeping at most `capacity` headers.
    pub fn from_checkpoint(
        checkpoint: Verified,
        members: Membership,
        params: Params,
        capacity: usize,
    ) -> Result<Self, LightError> {
        if capacity == 0 {
            return Err(LightError::EmptyWindow);
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
    /// link) and adds it.
    pub fn push(&mut self, h: &BlockHeader) -> Result<&Verified, LightError> {
        self.push_at(h, Depth::Full)
    }

    /// Catch-up: verifies a run of consecutive headers, each one's ticket, clerk signature,
    /// seal and link, and
    /// the commit certificate of the last one only (an honest level-1 member commits only to
    /// a block that extends its final chain, so a quorum on the last covers its ancestors).
    /// Nothing is added unless the whole run verifies. Returns how many were added.
    pub fn sync(&mut self, headers: &[BlockHeader]) -> Result<usize, LightError> {
        let Some((last, rest)) = headers.split_last() else {
            return Ok(0);
        };
        let mut parent = *self.tip();
        let mut verified = alloc::vec::Vec::with_capacity(headers.len());
        for h in rest {
            parent = verify::header(h, &parent, &self.members, &self.params, Depth::Chained)
                .map_err(|source| LightError::Header {
                    height: h.height,
                    source,
                })?;
            verified.push(parent);
        }
        let v = verify::header(last, &parent, &self.members, &self.params, Depth::Full).map_err(
            |source| LightError::Header {
                height: last.height,
                source,
            },
        )?;
        verified.push(v);
        let n = verified.len();
        for v in verified {
            self.append(v);
        }
        Ok(n)
    }

    fn push_at(&mut self, h: &BlockHeader, depth: Depth) -> Result<&Verified, LightError> {
        let v = verify::header(h, self.tip(), &self.members, &self.params, depth).map_err(
            |source| LightError::Header {
                height: h.height,
                source,
            },
        )?;
        self.append(v);
        Ok(self.tip())
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
