//! The node's configuration, outputs, events, errors and counters.

use core::time::Duration;
use std::sync::Arc;

use std::vec::Vec;

use crate::members::ChangeError;
use crate::verify::VerifyError;
use crate::wire::{Block, Evidence, Hash, Message, NodeId};

/// Where level-2 seals and level-1 votes go (docs/POE.md, "Finality").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fanout {
    /// To the clerk only, which aggregates the certificates and broadcasts them: O(n)
    /// messages per phase, and each phase costs a round trip through the clerk.
    #[default]
    Clerk,
    /// To every level-1 member, each of which forms the certificates itself (the clerk still
    /// broadcasts them, for the level-2 members and anyone who missed votes): O(n²) messages
    /// per phase among level-1 members, one one-way delay per phase instead of a round trip,
    /// which saves about 1.5 RTT of finality (a seal reaches the committee directly, and
    /// each of the two vote phases completes at every member, not at the clerk).
    AllLevel1,
}

/// Tunables of a [`super::Node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    /// How long level-1 nodes collect tickets after a round starts before the best one heard is
    /// the clerk.
    pub candidacy_window: Duration,
    /// How long a round may last before every level-1 node spins to the next round.
    pub round_timeout: Duration,
    /// Most transactions in the mempool.
    pub mempool_max_txs: usize,
    /// Most encoded bytes in the mempool.
    pub mempool_max_bytes: usize,
    /// Largest encoded transaction admitted.
    pub max_tx_bytes: usize,
    /// Most transactions a clerk puts in one block (and accepts in a received one).
    pub max_block_txs: usize,
    /// Most entries in each per-height cache (tickets, blocks, votes, seen evidence).
    pub cache_limit: usize,
    /// Most finalized blocks kept in memory (the oldest are dropped; the tip is always kept).
    /// Older heights asked for with [`Message::GetBlocks`] are handed to the driver as
    /// [`NodeEvent::BlocksWanted`].
    pub keep_blocks: usize,
    /// Most [`Message::GetBlocks`] requests answered per peer per
    /// [`round_timeout`](Self::round_timeout) window; more are dropped and counted in
    /// [`Rejects::rate_limited`]. At most [`cache_limit`](Self::cache_limit) peers are tracked.
    pub get_blocks_per_peer: u32,
    /// Where seals and votes go.
    pub fanout: Fanout,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            candidacy_window: Duration::from_millis(200),
            round_timeout: Duration::from_secs(2),
            mempool_max_txs: 10_000,
            mempool_max_bytes: 8 * 1024 * 1024,
            max_tx_bytes: 16 * 1024,
            max_block_txs: 1_000,
            cache_limit: 4_096,
            keep_blocks: 1_024,
            fanout: Fanout::Clerk,
            get_blocks_per_peer: 8,
        }
    }
}

/// Something the driver must transmit.
// Outputs are drained one at a time, not stored in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// To every member, level-2 included (through gossip or directly): transactions, built
    /// and final blocks, evidence.
    Broadcast(Message),
    /// To every level-1 member (the committee), which alone uses it: tickets, the sealed
    /// block, the prepare certificate, lock announcements and re-proposals. Level-2 members
    /// never need these (a block's header carries its own ticket and seal), so a driver need
    /// not carry them network-wide.
    Committee(Message),
    /// To one member (votes and seals to the clerk).
    Send(NodeId, Message),
}

/// Something that happened, for the application.
// Evidence is rare and handed over once; boxing it would only complicate matching.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A block became final and was appended to the chain. A driver with a store writes
    /// `block` durably here (e.g. [`crate::store::Store::append_final`]) so that
    /// [`super::Node::resume`] can restart from it.
    Finalized {
        /// Its height.
        height: u64,
        /// Its `block_id`.
        block_id: Hash,
        /// The round it became final in (its commit certificate's): the round it was built in,
        /// or a later one if it was re-proposed.
        round: u32,
        /// The block with its commit certificate (shared with the node's in-memory window).
        block: Arc<Block>,
    },
    /// Proof that a member equivocated.
    Evidence(Evidence),
    /// A peer asked with [`Message::GetBlocks`] for final heights below the blocks this node
    /// holds in memory: the driver answers from its store, sending `peer` a
    /// [`Message::Block`] for each final block of `from..from + count` it has (e.g. from
    /// [`crate::store::Store::final_blocks`]). `count` is at most
    /// [`crate::wire::codec::MAX_GET_BLOCKS`]; the heights are all at or below the tip.
    BlocksWanted {
        /// Who asked (the request passed the per-peer limit).
        peer: NodeId,
        /// First height.
        from: u64,
        /// Number of heights.
        count: u32,
    },
    /// A final block changed the membership (joins and leaves, in `NodeId` order): the driver
    /// updates its peers (and this node's own [`Node::level`](super::Node::level) may have changed).
    MembersChanged {
        /// Height of the block.
        height: u64,
        /// Nodes that joined.
        joined: Vec<NodeId>,
        /// Nodes that left.
        left: Vec<NodeId>,
    },
    /// The node moved to a new spin round at the current height.
    Spin {
        /// Height.
        height: u64,
        /// The new round.
        round: u32,
    },
}

/// Why a node could not be created or a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The VRF key could not prove (the key is broken).
    #[error("VRF proof failed")]
    Vrf,
    /// A transaction was refused.
    #[error("transaction rejected: {0}")]
    Tx(#[from] TxReject),
}

/// Why a transaction was not admitted to the mempool (or makes a block invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxReject {
    /// The sender is not a member.
    #[error("sender is not a member")]
    NotMember,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The nonce was already used (committed or pending).
    #[error("nonce already used")]
    OldNonce,
    /// Larger than [`NodeConfig::max_tx_bytes`].
    #[error("transaction too large")]
    TooLarge,
    /// Already in the mempool.
    #[error("duplicate")]
    Duplicate,
    /// A membership change that the current set refuses (approvals, quorum, ...).
    #[error("membership change: {0}")]
    Membership(#[from] ChangeError),
}

/// Why a received message was rejected (each has a counter in [`Rejects`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// A ticket, clerk signature, seal or certificate did not verify.
    #[error("verification: {0}")]
    Verify(#[from] VerifyError),
    /// A transaction in a block or from a peer is invalid.
    #[error("transaction: {0}")]
    Tx(#[from] TxReject),
    /// Not for the height this node works on (or the previous block is not its tip).
    #[error("wrong height or parent")]
    Stale,
    /// The vote's signature does not verify or the voter is not a level-1 member.
    #[error("bad vote")]
    BadVote,
    /// The block's Merkle root or count does not match its transactions, or it has too many.
    #[error("block body does not match its header")]
    BadBody,
    /// The message is not meant for this node's role (e.g. a vote to a non-clerk).
    #[error("not for this node")]
    Unexpected,
    /// Evidence that does not prove anything.
    #[error("bad evidence")]
    BadEvidence,
    /// The header's `members_root` is not the root of the membership after the block's
    /// changes.
    #[error("header's members_root does not match the membership after the block")]
    MembersRoot,
    /// A re-proposal whose certificate does not justify it (another phase, height or block,
    /// a round outside `[block's ticket round, proposal round)`), or of a final block.
    #[error("re-proposal not justified")]
    Unjustified,
}

/// Counters of rejected messages, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejects {
    /// Tickets that did not verify.
    pub ticket: u64,
    /// Seals that did not verify.
    pub seal: u64,
    /// Votes with a bad signature or a non-member voter.
    pub vote: u64,
    /// Certificates that did not verify.
    pub certificate: u64,
    /// Blocks and re-proposals that did not verify (ticket, clerk signature, seal, certificate,
    /// body, transactions, or a re-proposal's justification).
    pub block: u64,
    /// Transactions refused by the mempool.
    pub tx: u64,
    /// Evidence that proved nothing.
    pub evidence: u64,
    /// Messages for another height or parent, or not for this node's role (not an attack).
    pub stale: u64,
    /// [`Message::GetBlocks`] requests dropped by the per-peer limit
    /// ([`NodeConfig::get_blocks_per_peer`]) or because the table of peers was full.
    pub rate_limited: u64,
}

/// Sizes of the node's bounded structures and its counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Height of the final tip.
    pub height: u64,
    /// Current spin round.
    pub round: u32,
    /// Transactions in the mempool.
    pub mempool_txs: usize,
    /// Encoded bytes in the mempool.
    pub mempool_bytes: usize,
    /// Transactions dropped because the mempool was full (oldest evicted).
    pub mempool_evicted: u64,
    /// Tickets held for the current height.
    pub tickets: usize,
    /// Candidate blocks held for the current height.
    pub blocks: usize,
    /// Votes held for the current height.
    pub votes: usize,
    /// Evidence fingerprints remembered.
    pub evidence_seen: usize,
    /// Finalized blocks held in memory.
    pub finalized_blocks: usize,
    /// Peers in the [`Message::GetBlocks`] rate-limit table (at most
    /// [`NodeConfig::cache_limit`]).
    pub get_blocks_peers: usize,
    /// Rejections by kind.
    pub rejects: Rejects,
    /// Messages dropped because a cache was full.
    pub cache_drops: u64,
}
