//! Encoding and strict decoding of the types in [`super::types`] (format in [`super`]).
//!
//! [`Encode`] appends a value's bytes to a buffer and cannot fail. [`Decode::decode`] takes the
//! whole buffer and returns a [`WireError`] for anything but the canonical encoding of one value:
//! truncation, trailing bytes, unknown tags or versions, lengths above the limits, certificate
//! voters out of order. Decoding never panics, and never allocates more than the remaining
//! input can justify: a length prefix or item count is checked against its limit *and* against
//! the bytes left (each item's smallest encoding) before any `Vec` is reserved.
//!
//! Encoding a value outside the limits (a 20 KiB proof, 5,000 votes) is possible and gives
//! bytes that [`Decode`] rejects: builders check limits where values are made.

use alloc::vec::Vec;

use super::error::WireError;
use super::types::{
    Block, BlockHeader, Certificate, Evidence, Hash, Level, Member, Message, NodeId, Phase,
    Reading, Reproposal, Seal, Ticket, Transaction, TxBody, Vote,
};

/// The version byte in front of every top-level message.
pub const VERSION: u8 = 1;
/// Most bytes in one length-prefixed byte string (16 KiB).
pub const MAX_BYTES: u32 = 16 * 1024;
/// Most transactions in one block.
pub const MAX_TXS: u32 = 65_536;
/// Most votes in one certificate.
pub const MAX_VOTES: u32 = 4_096;
/// Most readings in one sensor batch.
pub const MAX_READINGS: u32 = 4_096;
/// Most approvals in one membership transaction (one per level-1 member, like votes).
pub const MAX_APPROVALS: u32 = 4_096;
/// Most blocks asked for in one [`Message::GetBlocks`].
pub const MAX_GET_BLOCKS: u32 = 64;

/// Encoded length of a [`Reading`].
const READING_LEN: usize = 8 + 8 + 2 + 8;
/// Encoded length of a `(NodeId, signature)` pair.
const SIGNED_LEN: usize = 32 + 64;
/// Shortest encoded [`Transaction`]: version, sender, nonce, an empty sensor batch, signature.
pub(crate) const MIN_TX_LEN: usize = 1 + 32 + 8 + (1 + 4) + 64;

/// Writes a value in the POE wire format.
pub trait Encode {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The encoding of `self` in a new buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Reads a value in the POE wire format, strictly.
pub trait Decode: Sized {
    /// Name of the type in errors.
    const NAME: &'static str;

    /// Reads one value from the front of `r`, leaving `r` after it (for values nested in
    /// others, or several values in one buffer).
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError>;

    /// Decodes `bytes`, which must hold exactly one value: trailing bytes are an error.
    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let value = Self::decode_from(&mut r)?;
        r.finish(Self::NAME)?;
        Ok(value)
    }
}

/// A cursor over input bytes whose reads return [`WireError::Truncated`] (naming the field)
/// instead of panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Ok if every byte was read, else [`WireError::TrailingBytes`] after `message`.
    pub fn finish(self, message: &'static str) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes {
                message,
                count: self.rest.len(),
            })
        }
    }

    /// The next `n` bytes of `field`.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(WireError::Truncated {
            field,
            needed: n,
            remaining: self.rest.len(),
        })?;
        self.rest = tail;
        Ok(head)
    }

    /// A fixed-size byte array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let remaining = self.rest.len();
        let bytes = self.take(N, field)?;
        <[u8; N]>::try_from(bytes).map_err(|_| WireError::Truncated {
            field,
            needed: N,
            remaining,
        })
    }

    /// A byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A big-endian two's complement `i64`.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// A byte string: `u32` length (at most [`MAX_BYTES`], at most what is left), then bytes.
    pub fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, WireError> {
        let len = self.u32(field)?;
        if len > MAX_BYTES {
            return Err(WireError::TooLong {
                field,
                len,
                max: MAX_BYTES,
            });
        }
        // `take` checks the length against the input before anything is allocated.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        Ok(self.take(len, field)?.to_vec())
    }

    /// A list's `u32` item count, checked against `max` and against the bytes left, given
    /// that every item takes at least `min_item` bytes. Reserve room for the items with
    /// [`Reader::list`], which also bounds the memory by the bytes left.
    pub fn count(
        &mut self,
        field: &'static str,
        max: u32,
        min_item: usize,
    ) -> Result<usize, WireError> {
        let count = self.u32(field)?;
        if count > max {
            return Err(WireError::TooLong {
                field,
                len: count,
                max,
            });
        }
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let needed = count.saturating_mul(min_item);
        if needed > self.rest.len() {
            return Err(WireError::Truncated {
                field,
                needed,
                remaining: self.rest.len(),
            });
        }
        Ok(count)
    }

    /// An empty `Vec` for `count` items (from [`Reader::count`]), reserving at most as many
    /// bytes of memory as there are bytes left in the input: an item's in-memory size can
    /// exceed its encoding (a `Transaction` is hundreds of bytes, its encoding from 110), so
    /// the rest of the room is only taken as items actually decode.
    pub fn list<T>(&self, count: usize) -> Vec<T> {
        let fit = self.rest.len() / core::mem::size_of::<T>().max(1);
        Vec::with_capacity(count.min(fit))
    }

    /// The version byte of `message`, which must be [`VERSION`].
    pub fn version(&mut self, message: &'static str) -> Result<(), WireError> {
        match self.u8(message)? {
            VERSION => Ok(()),
            version => Err(WireError::BadVersion { message, version }),
        }
    }

    /// An `Option` tag: 0 (`None`) or 1 (`Some`).
    pub fn option_tag(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(WireError::BadTag { field, tag }),
        }
    }

    /// A value of type `T` that may be absent (`Option` tag, then the value).
    pub fn option<T: Decode>(&mut self, field: &'static str) -> Result<Option<T>, WireError> {
        if self.option_tag(field)? {
            T::decode_from(self).map(Some)
        } else {
            Ok(None)
        }
    }
}

// ----- encoding helpers -----

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A list length as `u32`; lengths beyond `u32::MAX` saturate (and then fail to decode).
fn put_len(out: &mut Vec<u8>, len: usize) {
    put_u32(out, u32::try_from(len).unwrap_or(u32::MAX));
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_option<T: Encode>(out: &mut Vec<u8>, value: Option<&T>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            v.encode(out);
        }
    }
}

fn put_signed(out: &mut Vec<u8>, list: &[(NodeId, [u8; 64])]) {
    put_len(out, list.len());
    for (node, sig) in list {
        out.extend_from_slice(&node.0);
        out.extend_from_slice(sig);
    }
}

/// A list of `(NodeId, signature)` pairs; if `strict`, node ids must be strictly increasing.
fn read_signed(
    r: &mut Reader<'_>,
    field: &'static str,
    max: u32,
    strict: bool,
) -> Result<Vec<(NodeId, [u8; 64])>, WireError> {
    let count = r.count(field, max, SIGNED_LEN)?;
    let mut list: Vec<(NodeId, [u8; 64])> = r.list(count);
    for index in 0..count {
        let node = NodeId(r.array(field)?);
        let sig = r.array(field)?;
        if strict && list.last().is_some_and(|(prev, _)| *prev >= node) {
            return Err(WireError::Unordered { field, index });
        }
        list.push((node, sig));
    }
    Ok(list)
}

// ----- plain values -----

impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl<const N: usize> Decode for [u8; N] {
    const NAME: &'static str = "byte array";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.array(Self::NAME)
    }
}

impl Encode for NodeId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for NodeId {
    const NAME: &'static str = "NodeId";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.array(Self::NAME).map(NodeId)
    }
}

impl Level {
    /// The wire byte: the level's number (1 or 2).
    pub fn to_byte(self) -> u8 {
        match self {
            Level::One => 1,
            Level::Two => 2,
        }
    }
}

impl Encode for Level {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.to_byte());
    }
}

impl Decode for Level {
    const NAME: &'static str = "Level";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        match r.u8(Self::NAME)? {
            1 => Ok(Level::One),
            2 => Ok(Level::Two),
            tag => Err(WireError::BadTag {
                field: Self::NAME,
                tag,
            }),
        }
    }
}

impl Phase {
    /// The wire byte (also the phase byte of [`Vote::signing_bytes`]): `Prepare` 1, `Commit` 2.
    pub fn to_byte(self) -> u8 {
        match self {
            Phase::Prepare => 1,
            Phase::Commit => 2,
        }
    }
}

impl Encode for Phase {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.to_byte());
    }
}

impl Decode for Phase {
    const NAME: &'static str = "Phase";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        match r.u8(Self::NAME)? {
            1 => Ok(Phase::Prepare),
            2 => Ok(Phase::Commit),
            tag => Err(WireError::BadTag {
                field: Self::NAME,
                tag,
            }),
        }
    }
}

impl Encode for Member {
    fn encode(&self, out: &mut Vec<u8>) {
        self.level.encode(out);
        out.extend_from_slice(&self.ed25519);
        put_bytes(out, &self.rsa_der);
        put_bytes(out, &self.attestation);
    }
}

impl Decode for Member {
    const NAME: &'static str = "Member";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Member {
            level: Level::decode_from(r)?,
            ed25519: r.array("Member.ed25519")?,
            rsa_der: r.bytes("Member.rsa_der")?,
            attestation: r.bytes("Member.attestation")?,
        })
    }
}

impl Encode for Reading {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.device);
        put_u64(out, self.time_ms);
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&self.value.to_be_bytes());
    }
}

impl Decode for Reading {
    const NAME: &'static str = "Reading";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Reading {
            device: r.array("Reading.device")?,
            time_ms: r.u64("Reading.time_ms")?,
            kind: r.u16("Reading.kind")?,
            value: r.i64("Reading.value")?,
        })
    }
}

// ----- top-level messages (version byte first) -----

impl Encode for Ticket {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.node.0);
        put_u64(out, self.height);
        out.extend_from_slice(&self.prev_hash);
        put_u32(out, self.round);
        put_bytes(out, &self.proof);
    }
}

impl Decode for Ticket {
    const NAME: &'static str = "Ticket";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        Ok(Ticket {
            node: NodeId(r.array("Ticket.node")?),
            height: r.u64("Ticket.height")?,
            prev_hash: r.array("Ticket.prev_hash")?,
            round: r.u32("Ticket.round")?,
            proof: r.bytes("Ticket.proof")?,
        })
    }
}

impl Encode for Seal {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.node.0);
        put_bytes(out, &self.proof);
    }
}

impl Decode for Seal {
    const NAME: &'static str = "Seal";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        Ok(Seal {
            node: NodeId(r.array("Seal.node")?),
            proof: r.bytes("Seal.proof")?,
        })
    }
}

impl Encode for Vote {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.voter.0);
        self.phase.encode(out);
        put_u64(out, self.height);
        put_u32(out, self.round);
        out.extend_from_slice(&self.block_id);
        out.extend_from_slice(&self.signature);
    }
}

impl Decode for Vote {
    const NAME: &'static str = "Vote";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        Ok(Vote {
            voter: NodeId(r.array("Vote.voter")?),
            phase: Phase::decode_from(r)?,
            height: r.u64("Vote.height")?,
            round: r.u32("Vote.round")?,
            block_id: r.array("Vote.block_id")?,
            signature: r.array("Vote.signature")?,
        })
    }
}

impl Encode for Certificate {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        self.phase.encode(out);
        put_u64(out, self.height);
        put_u32(out, self.round);
        out.extend_from_slice(&self.block_id);
        put_signed(out, &self.votes);
    }
}

impl Decode for Certificate {
    const NAME: &'static str = "Certificate";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        Ok(Certificate {
            phase: Phase::decode_from(r)?,
            height: r.u64("Certificate.height")?,
            round: r.u32("Certificate.round")?,
            block_id: r.array("Certificate.block_id")?,
            votes: read_signed(r, "Certificate.votes", MAX_VOTES, true)?,
        })
    }
}

impl BlockHeader {
    /// Encodes the header with `clerk_sig`, `seal` and `commit` given explicitly (for
    /// `block_id`, which hashes it without the signature and with seal and commit absent,
    /// without cloning). `clerk_sig: None` leaves the 64 signature bytes out entirely.
    pub(crate) fn encode_with(
        &self,
        out: &mut Vec<u8>,
        clerk_sig: Option<&[u8; 64]>,
        seal: Option<&Seal>,
        commit: Option<&Certificate>,
    ) {
        out.push(VERSION);
        put_u64(out, self.height);
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&self.tx_root);
        put_u32(out, self.tx_count);
        out.extend_from_slice(&self.members_root);
        put_u64(out, self.time_ms);
        self.ticket.encode(out);
        if let Some(sig) = clerk_sig {
            out.extend_from_slice(sig);
        }
        put_option(out, seal);
        put_option(out, commit);
    }
}

impl Encode for BlockHeader {
    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_with(
            out,
            Some(&self.clerk_sig),
            self.seal.as_ref(),
            self.commit.as_ref(),
        );
    }
}

impl Decode for BlockHeader {
    const NAME: &'static str = "BlockHeader";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        Ok(BlockHeader {
            height: r.u64("BlockHeader.height")?,
            prev_hash: r.array("BlockHeader.prev_hash")?,
            tx_root: r.array("BlockHeader.tx_root")?,
            tx_count: r.u32("BlockHeader.tx_count")?,
            members_root: r.array("BlockHeader.members_root")?,
            time_ms: r.u64("BlockHeader.time_ms")?,
            ticket: Ticket::decode_from(r)?,
            clerk_sig: r.array("BlockHeader.clerk_sig")?,
            seal: r.option("BlockHeader.seal")?,
            commit: r.option("BlockHeader.commit")?,
        })
    }
}

/// Tags of [`TxBody`] variants.
mod tx_tag {
    pub const SENSOR_BATCH: u8 = 0;
    pub const FIRMWARE_ANCHOR: u8 = 1;
    pub const MEMBERSHIP: u8 = 2;
    pub const EVIDENCE: u8 = 3;
}

impl Encode for TxBody {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            TxBody::SensorBatch(readings) => {
                out.push(tx_tag::SENSOR_BATCH);
                put_len(out, readings.len());
                for reading in readings {
                    reading.encode(out);
                }
            }
            TxBody::FirmwareAnchor { cid, version } => {
                out.push(tx_tag::FIRMWARE_ANCHOR);
                put_bytes(out, cid);
                put_u32(out, *version);
            }
            TxBody::Membership {
                node,
                member,
                approvals,
            } => {
                out.push(tx_tag::MEMBERSHIP);
                out.extend_from_slice(&node.0);
                put_option(out, member.as_ref());
                put_signed(out, approvals);
            }
            TxBody::Evidence(evidence) => {
                out.push(tx_tag::EVIDENCE);
                evidence.encode(out);
            }
        }
    }
}

impl Decode for TxBody {
    const NAME: &'static str = "TxBody";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        match r.u8(Self::NAME)? {
            tx_tag::SENSOR_BATCH => {
                let field = "TxBody::SensorBatch.readings";
                let count = r.count(field, MAX_READINGS, READING_LEN)?;
                let mut readings = r.list(count);
                for _ in 0..count {
                    readings.push(Reading::decode_from(r)?);
                }
                Ok(TxBody::SensorBatch(readings))
            }
            tx_tag::FIRMWARE_ANCHOR => Ok(TxBody::FirmwareAnchor {
                cid: r.bytes("TxBody::FirmwareAnchor.cid")?,
                version: r.u32("TxBody::FirmwareAnchor.version")?,
            }),
            tx_tag::MEMBERSHIP => Ok(TxBody::Membership {
                node: NodeId(r.array("TxBody::Membership.node")?),
                member: r.option("TxBody::Membership.member")?,
                approvals: read_signed(r, "TxBody::Membership.approvals", MAX_APPROVALS, false)?,
            }),
            tx_tag::EVIDENCE => Evidence::decode_from(r).map(TxBody::Evidence),
            tag => Err(WireError::BadTag {
                field: Self::NAME,
                tag,
            }),
        }
    }
}

impl Transaction {
    /// Encodes the fields covered by the signature: `sender || nonce || body`.
    pub(crate) fn encode_signed_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sender.0);
        put_u64(out, self.nonce);
        self.body.encode(out);
    }
}

impl Encode for Transaction {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        self.encode_signed_fields(out);
        out.extend_from_slice(&self.signature);
    }
}

impl Decode for Transaction {
    const NAME: &'static str = "Transaction";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        Ok(Transaction {
            sender: NodeId(r.array("Transaction.sender")?),
            nonce: r.u64("Transaction.nonce")?,
            body: TxBody::decode_from(r)?,
            signature: r.array("Transaction.signature")?,
        })
    }
}

/// Tags of [`Evidence`] variants.
mod evidence_tag {
    pub const DOUBLE_VOTE: u8 = 0;
    pub const DOUBLE_BLOCK: u8 = 1;
}

impl Encode for Evidence {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        match self {
            Evidence::DoubleVote(a, b) => {
                out.push(evidence_tag::DOUBLE_VOTE);
                a.encode(out);
                b.encode(out);
            }
            Evidence::DoubleBlock(a, b) => {
                out.push(evidence_tag::DOUBLE_BLOCK);
                a.encode(out);
                b.encode(out);
            }
        }
    }
}

impl Decode for Evidence {
    const NAME: &'static str = "Evidence";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        match r.u8("Evidence tag")? {
            evidence_tag::DOUBLE_VOTE => Ok(Evidence::DoubleVote(
                Vote::decode_from(r)?,
                Vote::decode_from(r)?,
            )),
            evidence_tag::DOUBLE_BLOCK => Ok(Evidence::DoubleBlock(
                BlockHeader::decode_from(r)?,
                BlockHeader::decode_from(r)?,
            )),
            tag => Err(WireError::BadTag {
                field: Self::NAME,
                tag,
            }),
        }
    }
}

impl Encode for Block {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        self.header.encode(out);
        put_len(out, self.txs.len());
        for tx in &self.txs {
            tx.encode(out);
        }
    }
}

impl Decode for Block {
    const NAME: &'static str = "Block";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        let header = BlockHeader::decode_from(r)?;
        let count = r.count("Block.txs", MAX_TXS, MIN_TX_LEN)?;
        let mut txs = r.list(count);
        for _ in 0..count {
            txs.push(Transaction::decode_from(r)?);
        }
        Ok(Block { header, txs })
    }
}

/// Tags of [`Message`] variants.
mod message_tag {
    pub const TICKET: u8 = 0;
    pub const TX: u8 = 1;
    pub const BLOCK: u8 = 2;
    pub const SEAL: u8 = 3;
    pub const VOTE: u8 = 4;
    pub const CERTIFICATE: u8 = 5;
    pub const EVIDENCE: u8 = 6;
    pub const GET_BLOCKS: u8 = 7;
    pub const REPROPOSE: u8 = 8;
}

impl Encode for Reproposal {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        self.ticket.encode(out);
        self.block.encode(out);
        self.justify.encode(out);
    }
}

impl Decode for Reproposal {
    const NAME: &'static str = "Reproposal";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        Ok(Reproposal {
            ticket: Ticket::decode_from(r)?,
            block: Block::decode_from(r)?,
            justify: Certificate::decode_from(r)?,
        })
    }
}

impl Encode for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        match self {
            Message::Ticket(t) => {
                out.push(message_tag::TICKET);
                t.encode(out);
            }
            Message::Tx(t) => {
                out.push(message_tag::TX);
                t.encode(out);
            }
            Message::Block(b) => {
                out.push(message_tag::BLOCK);
                b.encode(out);
            }
            Message::Seal { block_id, seal } => {
                out.push(message_tag::SEAL);
                out.extend_from_slice(block_id);
                seal.encode(out);
            }
            Message::Vote(v) => {
                out.push(message_tag::VOTE);
                v.encode(out);
            }
            Message::Certificate(c) => {
                out.push(message_tag::CERTIFICATE);
                c.encode(out);
            }
            Message::Evidence(e) => {
                out.push(message_tag::EVIDENCE);
                e.encode(out);
            }
            Message::GetBlocks { from, count } => {
                out.push(message_tag::GET_BLOCKS);
                put_u64(out, *from);
                put_u32(out, *count);
            }
            Message::Repropose(p) => {
                out.push(message_tag::REPROPOSE);
                p.encode(out);
            }
        }
    }
}

impl Decode for Message {
    const NAME: &'static str = "Message";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        match r.u8("Message tag")? {
            message_tag::TICKET => Ticket::decode_from(r).map(Message::Ticket),
            message_tag::TX => Transaction::decode_from(r).map(Message::Tx),
            message_tag::BLOCK => Block::decode_from(r).map(Message::Block),
            message_tag::SEAL => {
                let block_id: Hash = r.array("Message::Seal.block_id")?;
                let seal = Seal::decode_from(r)?;
                Ok(Message::Seal { block_id, seal })
            }
            message_tag::VOTE => Vote::decode_from(r).map(Message::Vote),
            message_tag::CERTIFICATE => Certificate::decode_from(r).map(Message::Certificate),
            message_tag::EVIDENCE => Evidence::decode_from(r).map(Message::Evidence),
            message_tag::GET_BLOCKS => {
                let from = r.u64("Message::GetBlocks.from")?;
                let count = r.u32("Message::GetBlocks.count")?;
                if count > MAX_GET_BLOCKS {
                    return Err(WireError::TooLong {
                        field: "Message::GetBlocks.count",
                        len: count,
                        max: MAX_GET_BLOCKS,
                    });
                }
                Ok(Message::GetBlocks { from, count })
            }
            message_tag::REPROPOSE => Reproposal::decode_from(r).map(Message::Repropose),
            tag => Err(WireError::BadTag {
                field: Self::NAME,
                tag,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_tx_len_is_the_shortest_transaction() {
        let tx = Transaction {
            sender: NodeId([0; 32]),
            nonce: 0,
            body: TxBody::SensorBatch(Vec::new()),
            signature: [0; 64],
        };
        assert_eq!(tx.to_bytes().len(), MIN_TX_LEN);
    }

    #[test]
    fn count_rejects_more_items_than_input_can_hold() {
        // 2 readings claimed, 26 bytes left: only one could fit.
        let mut bytes = Vec::from(2u32.to_be_bytes());
        bytes.extend_from_slice(&[0; READING_LEN]);
        let r = Reader::new(&bytes);
        assert_eq!(
            r.clone().count("x", MAX_READINGS, READING_LEN),
            Err(WireError::Truncated {
                field: "x",
                needed: 2 * READING_LEN,
                remaining: READING_LEN
            })
        );
        bytes[3] = 1;
        let mut r = Reader::new(&bytes);
        assert_eq!(r.count("x", MAX_READINGS, READING_LEN), Ok(1));
    }

    #[test]
    fn list_reserves_no_more_memory_than_input_left() {
        let input = [0u8; 1000];
        let r = Reader::new(&input);
        let txs = r.list::<Transaction>(MAX_TXS as usize);
        assert!(txs.capacity() * core::mem::size_of::<Transaction>() <= input.len());
        let votes = r.list::<(NodeId, [u8; 64])>(3);
        assert!(votes.capacity() >= 3);
    }
}
