//! The consensus messages as plain data (docs/POE.md). Encoding and decoding are in
//! [`super::codec`]: big-endian integers, length-prefixed byte strings (u32), a version byte in
//! front of every top-level message.

use alloc::vec::Vec;

/// SHA-256 output.
pub type Hash = [u8; 32];

/// A node's identity: SHA-256 of its ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 32]);

/// Level of a member (seed 002 §2: level-1 nodes keep the ledger, level-2 nodes witness it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Public, in data centres (the MEF routers): lottery, clerks, votes.
    One,
    /// Edge devices (the gateways): seals.
    Two,
}

/// A registered member: its keys and level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Level 1 or 2.
    pub level: Level,
    /// ed25519 public key (transactions, votes); `NodeId` is its SHA-256.
    pub ed25519: [u8; 32],
    /// RSA public key for the VRF, PKCS#1 DER (`RSAPublicKey`).
    pub rsa_der: Vec<u8>,
    /// Reserved for a hardware attestation (TPM quote); empty for now.
    pub attestation: Vec<u8>,
}

/// A lottery ticket: the VRF proof of `node` for (height, prev_hash, round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The candidate.
    pub node: NodeId,
    /// Height of the block the ticket is for.
    pub height: u64,
    /// `block_id` of the previous final block.
    pub prev_hash: Hash,
    /// Spin round (0 first).
    pub round: u32,
    /// RSA-FDH-VRF proof (k bytes).
    pub proof: Vec<u8>,
}

/// A level-2 seal: the VRF proof of `node` over a `block_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// The level-2 sealer.
    pub node: NodeId,
    /// RSA-FDH-VRF proof over `"POE1-seal" || block_id`.
    pub proof: Vec<u8>,
}

/// Which vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// First phase: the block is valid and the best sealed candidate seen.
    Prepare,
    /// Second phase: a prepare certificate was seen; the voter is locked on the block.
    Commit,
}

/// A level-1 member's signed vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The voter.
    pub voter: NodeId,
    /// Phase.
    pub phase: Phase,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// The block voted for.
    pub block_id: Hash,
    /// ed25519 signature over `"POE1-vote" || phase || height || round || block_id`.
    pub signature: [u8; 64],
}

/// Signatures of a quorum of level-1 members for one (phase, height, round, block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Phase of every vote in it.
    pub phase: Phase,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// The block.
    pub block_id: Hash,
    /// (voter, signature), voters strictly increasing.
    pub votes: Vec<(NodeId, [u8; 64])>,
}

/// A block header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    /// Height (genesis is 0).
    pub height: u64,
    /// `block_id` of the parent.
    pub prev_hash: Hash,
    /// RFC 6962 Merkle tree hash of the transactions' encodings.
    pub tx_root: Hash,
    /// Number of transactions: the size of the `tx_root` tree. Inclusion proofs are checked
    /// against it (RFC 9162 §2.1.3.2 needs the tree size from the same trusted source as the
    /// root: with a wrong size, a proof can verify for a different index).
    pub tx_count: u32,
    /// [`crate::verify::Membership::root`] of the membership after this block's membership
    /// transactions are applied: the members that verify the next block. A light client that
    /// holds the parent's membership learns from it whether this block changed the set (and
    /// needs the changes, with inclusion proofs) without trusting whoever serves it.
    pub members_root: Hash,
    /// Milliseconds since the Unix epoch, as the clerk saw it.
    pub time_ms: u64,
    /// The clerk's winning ticket.
    pub ticket: Ticket,
    /// The clerk's ed25519 signature (by the key of `ticket.node`) over
    /// `"POE1-block" || block_id` ([`BlockHeader::signing_bytes`]): the ticket is a VRF proof
    /// anyone can copy, the signature shows that its holder built this block. Not covered by
    /// `block_id` (it signs it).
    pub clerk_sig: [u8; 64],
    /// The level-2 seal (state 2), if any.
    pub seal: Option<Seal>,
    /// The commit certificate (state 3), if any.
    pub commit: Option<Certificate>,
}

/// One reading of a sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Sensor identifier (e.g. BLE MAC or LoRa DevEUI, 8 bytes).
    pub device: [u8; 8],
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Quantity code (BTHome object id, Cayenne LPP type).
    pub kind: u16,
    /// Value in the quantity's fixed-point unit.
    pub value: i64,
}

/// What a transaction does.
// `Evidence` makes this large (~620 bytes); kept unboxed so the contract's type stays plain.
// Decoders bound what they reserve by the input's size (`wire::codec`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxBody {
    /// A gateway's batch of sensor readings.
    SensorBatch(Vec<Reading>),
    /// Anchors a firmware manifest (content id and version).
    FirmwareAnchor {
        /// The manifest's CID (binary).
        cid: Vec<u8>,
        /// Firmware version.
        version: u32,
    },
    /// A join (`Some`) or leave (`None`) of `node`, approved by level-1 members.
    Membership {
        /// The node joining or leaving.
        node: NodeId,
        /// Its record when joining.
        member: Option<Member>,
        /// ed25519 signatures of level-1 members over `"POE1-member" || node || encoded
        /// member`; more than 2/3 of level-1 members are needed.
        approvals: Vec<(NodeId, [u8; 64])>,
    },
    /// Proof of equivocation.
    Evidence(Evidence),
}

/// A signed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The submitting member.
    pub sender: NodeId,
    /// Per-sender sequence number (replay protection).
    pub nonce: u64,
    /// Content.
    pub body: TxBody,
    /// ed25519 signature over `"POE1-tx" || sender || nonce || encoded body`.
    pub signature: [u8; 64],
}

/// Two conflicting signed statements by one key.
// Evidence is rare and decoded once; boxing the headers would only complicate the type.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Two votes for one (phase, height, round) with different blocks.
    DoubleVote(Vote, Vote),
    /// Two different headers (different `block_id`s) signed by one clerk for one
    /// (height, round): both `clerk_sig`s verify under the key of the same `ticket.node`.
    DoubleBlock(BlockHeader, BlockHeader),
}

/// A block: header and transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Header.
    pub header: BlockHeader,
    /// Transactions, in Merkle leaf order.
    pub txs: Vec<Transaction>,
}

/// A clerk's re-proposal of a block that already has a prepare certificate (docs/POE.md,
/// "Finality", re-proposal): the clerk of round `ticket.round` proposes `block` (built and
/// sealed in an earlier round, so its `block_id` is unchanged) instead of building a new one,
/// justified by a prepare certificate for it of a round in `[block's ticket round,
/// ticket.round)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reproposal {
    /// The proposing clerk's ticket for the round of the re-proposal (height and parent as the
    /// block's).
    pub ticket: Ticket,
    /// The re-proposed block, sealed, without a commit certificate.
    pub block: Block,
    /// A prepare certificate for `block` (the justification: the highest the clerk saw).
    pub justify: Certificate,
}

/// What nodes gossip.
// Messages are decoded and matched on once, not stored in bulk: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A candidacy.
    Ticket(Ticket),
    /// A transaction for the mempool.
    Tx(Transaction),
    /// A block in any state (built, sealed, final).
    Block(Block),
    /// A seal for a block (level-2 to clerk).
    Seal {
        /// The sealed block.
        block_id: Hash,
        /// The seal.
        seal: Seal,
    },
    /// A vote (level-1 to clerk).
    Vote(Vote),
    /// A certificate (clerk to all).
    Certificate(Certificate),
    /// Equivocation evidence.
    Evidence(Evidence),
    /// A request for the final blocks at heights `from .. from + count` (catch-up of a node
    /// that missed some), answered with one [`Message::Block`] per block the peer holds.
    /// `count` is at most [`super::codec::MAX_GET_BLOCKS`].
    GetBlocks {
        /// First height wanted.
        from: u64,
        /// How many consecutive heights (at most [`super::codec::MAX_GET_BLOCKS`]).
        count: u32,
    },
    /// A clerk's re-proposal of a prepared block in a later round.
    Repropose(Reproposal),
}
