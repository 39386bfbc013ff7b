//! Identifiers (`block_id`, transaction id) and the bytes that signatures cover
//! (docs/POE.md, "Identities" and "Blocks").
//!
//! The `signing_bytes` methods return the whole signed message, domain prefix included. With
//! `poe::sig`, which signs `domain || parts`, sign them as `sign(TX_DOMAIN, &[&bytes[TX_DOMAIN
//! .len()..]])` or equivalently `sign(b"", &[&bytes])`: the signed bytes are the same.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use super::codec::{Encode, MAX_VOTES};
use super::error::CertificateError;
use super::types::{BlockHeader, Certificate, Hash, Member, NodeId, Phase, Transaction, Vote};

/// Domain prefix of transaction signatures.
pub const TX_DOMAIN: &[u8] = b"POE1-tx";
/// Domain prefix of vote signatures.
pub const VOTE_DOMAIN: &[u8] = b"POE1-vote";
/// Domain prefix of membership approvals.
pub const MEMBER_DOMAIN: &[u8] = b"POE1-member";
/// Domain prefix of the clerk's signature on a block header (`BlockHeader::clerk_sig`).
pub const BLOCK_DOMAIN: &[u8] = b"POE1-block";

fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

impl BlockHeader {
    /// SHA-256 of the header's encoding without `clerk_sig` (its 64 bytes left out) and with
    /// `seal` and `commit` set to `None`: `version || height || prev_hash || tx_root ||
    /// tx_count || members_root || time_ms || ticket || 0x00 || 0x00`. What the clerk, sealers and voters
    /// sign, and the next lottery's `prev_hash`. Signing, sealing or certifying a header does
    /// not change it.
    pub fn block_id(&self) -> Hash {
        let mut out = Vec::new();
        self.encode_with(&mut out, None, None, None);
        sha256(&out)
    }

    /// The bytes the clerk signs into `clerk_sig`: `"POE1-block" || block_id` (42 bytes).
    pub fn signing_bytes(&self) -> Vec<u8> {
        block_signing_bytes(&self.block_id())
    }
}

/// The bytes a clerk signs for the header whose `block_id` is `block_id`: `"POE1-block" ||
/// block_id` ([`BlockHeader::signing_bytes`], for a caller that has the id already).
pub fn block_signing_bytes(block_id: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK_DOMAIN.len() + 32);
    out.extend_from_slice(BLOCK_DOMAIN);
    out.extend_from_slice(block_id);
    out
}

impl Transaction {
    /// SHA-256 of the transaction's encoding (signature included).
    pub fn id(&self) -> Hash {
        sha256(&self.to_bytes())
    }

    /// The bytes the sender signs: `"POE1-tx" || sender || nonce (u64 BE) || encoded body`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::from(TX_DOMAIN);
        self.encode_signed_fields(&mut out);
        out
    }
}

/// `"POE1-vote" || phase byte || height (u64 BE) || round (u32 BE) || block_id`: the bytes
/// of every vote on this (phase, height, round, block).
fn vote_signing_bytes(phase: Phase, height: u64, round: u32, block_id: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(VOTE_DOMAIN.len() + 1 + 8 + 4 + 32);
    out.extend_from_slice(VOTE_DOMAIN);
    out.push(phase.to_byte());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&round.to_be_bytes());
    out.extend_from_slice(block_id);
    out
}

impl Vote {
    /// The bytes the voter signs: `"POE1-vote" || phase byte || height (u64 BE) || round
    /// (u32 BE) || block_id` (the phase byte is [`Phase::to_byte`]).
    pub fn signing_bytes(&self) -> Vec<u8> {
        vote_signing_bytes(self.phase, self.height, self.round, &self.block_id)
    }
}

impl Certificate {
    /// The bytes every vote in the certificate signed: [`Vote::signing_bytes`] of a vote
    /// with this phase, height, round and block (the voter is not part of them).
    pub fn signing_bytes(&self) -> Vec<u8> {
        vote_signing_bytes(self.phase, self.height, self.round, &self.block_id)
    }

    /// Aggregates votes into a certificate: all for the first vote's (phase, height, round,
    /// block), at most one per voter, at most [`MAX_VOTES`]; voters are sorted (strictly
    /// increasing, as decoding requires). Signatures are not checked here.
    pub fn from_votes(votes: &[Vote]) -> Result<Certificate, CertificateError> {
        let first = votes.first().ok_or(CertificateError::Empty)?;
        if votes.len() > MAX_VOTES as usize {
            return Err(CertificateError::TooMany {
                count: votes.len(),
                max: MAX_VOTES,
            });
        }
        let mut indexed: Vec<(usize, &Vote)> = votes.iter().enumerate().collect();
        if let Some((index, _)) = indexed.iter().find(|(_, v)| {
            (v.phase, v.height, v.round, v.block_id)
                != (first.phase, first.height, first.round, first.block_id)
        }) {
            return Err(CertificateError::Mismatch { index: *index });
        }
        indexed.sort_by_key(|(_, v)| v.voter);
        if let Some(pair) = indexed.windows(2).find(|w| w[0].1.voter == w[1].1.voter) {
            return Err(CertificateError::DuplicateVoter {
                index: pair[0].0.max(pair[1].0),
            });
        }
        Ok(Certificate {
            phase: first.phase,
            height: first.height,
            round: first.round,
            block_id: first.block_id,
            votes: indexed
                .into_iter()
                .map(|(_, v)| (v.voter, v.signature))
                .collect(),
        })
    }

    /// The `index`-th vote as a [`Vote`], if there is one.
    pub fn vote(&self, index: usize) -> Option<Vote> {
        self.votes.get(index).map(|(voter, signature)| Vote {
            voter: *voter,
            phase: self.phase,
            height: self.height,
            round: self.round,
            block_id: self.block_id,
            signature: *signature,
        })
    }

    /// Every vote as a [`Vote`], in certificate order.
    pub fn iter_votes(&self) -> impl Iterator<Item = Vote> + '_ {
        (0..self.votes.len()).filter_map(|i| self.vote(i))
    }
}

/// The bytes a level-1 member signs to approve a membership change: `"POE1-member" || node ||
/// member`, with `member` encoded as an `Option` (tag 0 for a leave, tag 1 and the
/// [`Member`] for a join), exactly as in the transaction.
pub fn membership_signing_bytes(node: &NodeId, member: Option<&Member>) -> Vec<u8> {
    let mut out = Vec::from(MEMBER_DOMAIN);
    out.extend_from_slice(&node.0);
    match member {
        None => out.push(0),
        Some(m) => {
            out.push(1);
            m.encode(&mut out);
        }
    }
    out
}
