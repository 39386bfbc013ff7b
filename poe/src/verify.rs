//! Verification of what a header claims (docs/POE.md): the clerk's lottery ticket and its
//! signature on the header, the level-2 seal, the commit certificate and the link to the
//! parent. `no_std`: the light client runs the very same code as the nodes.

use crate::lottery::{self, Rank};
pub use crate::members::Membership;
use crate::sig;
use crate::wire::{
    BlockHeader, Certificate, Hash, Level, NodeId, Phase, Seal, Ticket, block_signing_bytes,
};

/// Why a header (or one of its parts) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header does not extend the expected parent.
    #[error(
        "header {height} does not link to the previous header (expected height {expected_height})"
    )]
    BadLink {
        /// Height of the header.
        height: u64,
        /// Height it should have had.
        expected_height: u64,
    },
    /// A node is not a registered member of the needed level.
    #[error("node {0:?} is not a registered member of the needed level")]
    NotMember(NodeId),
    /// A member's RSA key could not be parsed.
    #[error("member {0:?} has an unusable RSA key")]
    BadKey(NodeId),
    /// The ticket is for another height or parent than the header's.
    #[error("ticket is for another height or parent")]
    TicketMismatch,
    /// The VRF proof of a ticket or seal does not verify.
    #[error("VRF proof of {0:?} does not verify")]
    BadProof(NodeId),
    /// The VRF output has fewer leading zeros than the threshold.
    #[error("VRF output of {node:?} has {zeros} leading zero bits, {needed} needed")]
    BelowThreshold {
        /// The node.
        node: NodeId,
        /// Zeros it has.
        zeros: u32,
        /// Zeros needed.
        needed: u32,
    },
    /// The header's `clerk_sig` is not a valid signature of its ticket's node over
    /// `"POE1-block" || block_id` (someone else built a block under the clerk's ticket).
    #[error("clerk signature of {0:?} does not verify")]
    BadClerkSignature(NodeId),
    /// The header has no seal.
    #[error("header is not sealed")]
    Unsealed,
    /// The header has no commit certificate.
    #[error("header has no commit certificate")]
    NoCertificate,
    /// The certificate is for another block, height, round or phase.
    #[error("certificate does not match the header")]
    CertificateMismatch,
    /// The commit certificate is of a round before the block's ticket round (no honest member
    /// votes for a block before the round it was built in).
    #[error(
        "commit certificate of round {commit_round} is before the ticket's round {ticket_round}"
    )]
    CommitBeforeTicket {
        /// Round of the block's ticket.
        ticket_round: u32,
        /// Round of the certificate.
        commit_round: u32,
    },
    /// Voters must be strictly increasing (no duplicates).
    #[error("certificate voters are not strictly increasing")]
    UnorderedVoters,
    /// A vote signature does not verify.
    #[error("vote of {0:?} has a bad signature")]
    BadVote(NodeId),
    /// Fewer votes than the quorum.
    #[error("certificate has {votes} votes, quorum is {quorum}")]
    NoQuorum {
        /// Valid votes.
        votes: usize,
        /// Needed.
        quorum: usize,
    },
}

/// Consensus parameters a verifier must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Expected lottery candidates per round (`k`).
    pub expected_candidates: usize,
    /// Expected level-2 sealers per block (`s`).
    pub expected_sealers: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            expected_candidates: 4,
            expected_sealers: 3,
        }
    }
}

/// The VRF output of `node` (a member of `level`) for `alpha`, once its proof verifies and the
/// output has at least `needed` leading zero bits.
fn vrf_output(
    members: &Membership,
    node: &NodeId,
    level: Level,
    alpha: &[u8],
    proof: &[u8],
    needed: u32,
) -> Result<Hash, VerifyError> {
    let (_, key) = members.get(node, level)?;
    let beta = key
        .verify(alpha, proof)
        .map_err(|_| VerifyError::BadProof(*node))?;
    let zeros = lottery::leading_zeros(&beta);
    if zeros < needed {
        return Err(VerifyError::BelowThreshold {
            node: *node,
            zeros,
            needed,
        });
    }
    Ok(beta)
}

/// Verifies a lottery ticket: the clerk is a level-1 member, its VRF proof over
/// (height, prev, round) verifies, and the output passes the level-1 threshold. Returns its
/// [`Rank`].
pub fn ticket(t: &Ticket, members: &Membership, params: &Params) -> Result<Rank, VerifyError> {
    let needed = lottery::threshold(members.level1_count(), params.expected_candidates);
    let alpha = lottery::ticket_alpha(t.height, &t.prev_hash, t.round);
    let beta = vrf_output(members, &t.node, Level::One, &alpha, &t.proof, needed)?;
    Ok(Rank::new(t.round, beta))
}

/// Verifies the clerk's signature on header `h` whose `block_id` is `block_id` (computed by
/// the caller): `h.clerk_sig` is an ed25519 signature over `"POE1-block" || block_id` by the
/// key of `h.ticket.node`, a level-1 member. The ticket itself is checked by [`ticket`].
pub fn clerk_signature(
    h: &BlockHeader,
    block_id: &Hash,
    members: &Membership,
) -> Result<(), VerifyError> {
    let clerk = h.ticket.node;
    let (member, _) = members.get(&clerk, Level::One)?;
    sig::verify(
        &member.ed25519,
        &[],
        &[&block_signing_bytes(block_id)],
        &h.clerk_sig,
    )
    .map_err(|_| VerifyError::BadClerkSignature(clerk))
}

/// Verifies a level-2 seal over `block_id`; returns the seal's leading zeros.
pub fn seal(
    s: &Seal,
    block_id: &Hash,
    members: &Membership,
    params: &Params,
) -> Result<u32, VerifyError> {
    let needed = lottery::threshold(members.level2_count(), params.expected_sealers);
    let alpha = lottery::seal_alpha(block_id);
    let beta = vrf_output(members, &s.node, Level::Two, &alpha, &s.proof, needed)?;
    Ok(lottery::leading_zeros(&beta))
}

/// Verifies a certificate: the phase, height, round and block match, voters are distinct
/// level-1 members in increasing order, every signature verifies, and there are at least
/// [`Membership::quorum`] of them.
pub fn certificate(
    c: &Certificate,
    phase: Phase,
    height: u64,
    round: u32,
    block_id: &Hash,
    members: &Membership,
) -> Result<(), VerifyError> {
    if c.phase != phase || c.height != height || c.round != round || &c.block_id != block_id {
        return Err(VerifyError::CertificateMismatch);
    }
    let quorum = members.quorum();
    if c.votes.len() < quorum {
        return Err(VerifyError::NoQuorum {
            votes: c.votes.len(),
            quorum,
        });
    }
    // Every vote signed the same bytes (the voter is not part of them): `"POE1-vote" || phase
    // || height || round || block_id` (wire::ids).
    let msg = c.signing_bytes();
    let mut prev: Option<&NodeId> = None;
    for (voter, signature) in &c.votes {
        if prev.is_some_and(|p| p >= voter) {
            return Err(VerifyError::UnorderedVoters);
        }
        prev = Some(voter);
        let (member, _) = members.get(voter, Level::One)?;
        sig::verify(&member.ed25519, &[], &[&msg], signature)
            .map_err(|_| VerifyError::BadVote(*voter))?;
    }
    Ok(())
}

/// Verifies the commit certificate `c` of the header `h` whose `block_id` is `id`: a
/// [`certificate`] for (COMMIT, `h.height`, `c.round`, `id`) whose round is at least the round
/// of the block's ticket. The round may be later than the ticket's: a block with a prepare
/// certificate is re-proposed unchanged in later rounds until it is final (docs/POE.md,
/// "Finality"); at most one block per height gets commit certificates, whatever their rounds.
pub fn commit(
    c: &Certificate,
    h: &BlockHeader,
    id: &Hash,
    members: &Membership,
) -> Result<(), VerifyError> {
    if c.round < h.ticket.round {
        return Err(VerifyError::CommitBeforeTicket {
            ticket_round: h.ticket.round,
            commit_round: c.round,
        });
    }
    certificate(c, Phase::Commit, h.height, c.round, id, members)
}

/// What a verified final header leaves behind for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Height.
    pub height: u64,
    /// The header's `block_id`.
    pub block_id: Hash,
    /// Merkle root of its transactions.
    pub tx_root: Hash,
    /// Number of transactions (the tree size for inclusion proofs).
    pub tx_count: u32,
    /// [`Membership::root`] of the members that verify the next header.
    pub members_root: Hash,
    /// Clerk's time.
    pub time_ms: u64,
}

impl Verified {
    /// The compact form of header `h` whose `block_id` is `id` (computed by the caller, who
    /// usually needed it already).
    pub fn of(h: &BlockHeader, id: Hash) -> Self {
        Self {
            height: h.height,
            block_id: id,
            tx_root: h.tx_root,
            tx_count: h.tx_count,
            members_root: h.members_root,
            time_ms: h.time_ms,
        }
    }
}

/// How much of a header to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Ticket, clerk signature, seal, certificate and link.
    Full,
    /// Ticket, seal and link (catch-up sync). The certificate and the clerk signature are
    /// covered by a descendant's certificate: honest members commit only to a block extending
    /// their final chain, whose clerk signatures they checked, and the links bind every
    /// ancestor's `block_id`, which does not include the signature; so a replaced signature on
    /// an ancestor changes nothing the verifier keeps (the light client stores compact headers
    /// without it). Skipping it keeps catch-up at two RSA public-key operations per header.
    Chained,
}

/// Verifies a final header extending `parent` (height + 1 and `prev_hash` = parent's
/// `block_id`): the link, the clerk's ticket, the seal and, at [`Depth::Full`], the clerk's
/// signature and the commit certificate, which may be of the ticket's round or a later one
/// ([`commit`]).
pub fn header(
    h: &BlockHeader,
    parent: &Verified,
    members: &Membership,
    params: &Params,
    depth: Depth,
) -> Result<Verified, VerifyError> {
    if h.height != parent.height + 1 || h.prev_hash != parent.block_id {
        return Err(VerifyError::BadLink {
            height: h.height,
            expected_height: parent.height + 1,
        });
    }
    if h.ticket.height != h.height || h.ticket.prev_hash != h.prev_hash {
        return Err(VerifyError::TicketMismatch);
    }
    ticket(&h.ticket, members, params)?;
    let id = h.block_id();
    if depth == Depth::Full {
        clerk_signature(h, &id, members)?;
    }
    let s = h.seal.as_ref().ok_or(VerifyError::Unsealed)?;
    seal(s, &id, members, params)?;
    if depth == Depth::Full {
        let c = h.commit.as_ref().ok_or(VerifyError::NoCertificate)?;
        commit(c, h, &id, members)?;
    }
    Ok(Verified::of(h, id))
}
