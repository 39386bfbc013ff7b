//! The exchange wire message: a wantlist update, block presences and blocks.
//!
//! Semantically this is Bitswap 1.2's `Message` (wantlist entries with `wantType`
//! WANT_HAVE / WANT_BLOCK, `cancel`, `priority` and `sendDontHave`; `blockPresences` HAVE /
//! DONT_HAVE; `payload` blocks), but **our own compact binary format, not Bitswap's protobuf**:
//! it does not interoperate with libp2p Bitswap peers. Blocks carry their full CID (not
//! Bitswap's CID prefix) so the receiver verifies them without reconstructing the CID.
//!
//! # Byte layout (all integers big-endian)
//!
//! ```text
//! magic    2  b"FX"
//! version  1  0x01
//! flags    1  bit 0 = full wantlist (replaces the previous one); other bits must be 0
//! n_want   2  number of wantlist entries (<= MAX_ENTRIES)
//!   kind     1  0 = WANT_HAVE, 1 = WANT_BLOCK, 2 = CANCEL
//!   priority 4  i32
//!   dont     1  send_dont_have: 0 or 1
//!   cid      2 + n  u16 length (1..=MAX_CID_LEN) + binary CID (canonical encoding)
//! n_pres   2  number of presences (<= MAX_PRESENCES)
//!   kind     1  0 = HAVE, 1 = DONT_HAVE
//!   cid      2 + n
//! n_block  2  number of blocks (<= MAX_BLOCKS)
//!   cid      2 + n
//!   len      4  data length (<= MAX_BLOCK_DATA = 2 MiB)
//!   data     len
//! ```
//!
//! Nothing may follow the last block. Decoding is strict: every count and length is checked
//! against its bound and the remaining input before anything is allocated, and a CID must be in
//! its canonical binary form (so decode → encode is the identity on accepted input).

use cid::Cid;
use thiserror::Error;

/// Magic bytes opening every message.
pub const MAGIC: [u8; 2] = *b"FX";
/// The only format version.
pub const VERSION: u8 = 1;
/// Flag bit: the wantlist is the full list, not an update.
pub const FLAG_FULL: u8 = 0x01;
/// Most wantlist entries in one message.
pub const MAX_ENTRIES: usize = 1024;
/// Most presences in one message.
pub const MAX_PRESENCES: usize = 1024;
/// Most blocks in one message.
pub const MAX_BLOCKS: usize = 16;
/// Longest binary CID accepted.
pub const MAX_CID_LEN: usize = 128;
/// Largest block payload (2 MiB, the blockstore's and Bitswap's limit).
pub const MAX_BLOCK_DATA: usize = 2 << 20;

/// What a wantlist entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WantKind {
    /// "Do you have it?" — answered by HAVE (or DONT_HAVE if `send_dont_have`).
    Have,
    /// "Send it" — answered by BLOCK (or DONT_HAVE if `send_dont_have`).
    Block,
    /// Withdraws an earlier want for the CID.
    Cancel,
}

/// One wantlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantEntry {
    /// The block wanted.
    pub cid: Cid,
    /// WANT_HAVE, WANT_BLOCK or CANCEL.
    pub kind: WantKind,
    /// Higher is served first.
    pub priority: i32,
    /// Ask for an explicit DONT_HAVE when the peer lacks the block.
    pub send_dont_have: bool,
}

/// Whether the sender has a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceKind {
    /// The sender has the block.
    Have,
    /// The sender does not have the block.
    DontHave,
}

/// One block presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The block.
    pub cid: Cid,
    /// HAVE or DONT_HAVE.
    pub kind: PresenceKind,
}

/// One block with its CID (unverified until the receiver checks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The CID the sender claims the data has.
    pub cid: Cid,
    /// The block bytes (at most [`MAX_BLOCK_DATA`]).
    pub data: Vec<u8>,
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The wantlist replaces the sender's previous one.
    pub full: bool,
    /// Wantlist entries.
    pub wantlist: Vec<WantEntry>,
    /// Block presences.
    pub presences: Vec<Presence>,
    /// Blocks.
    pub blocks: Vec<Block>,
}

/// A message that does not decode (or cannot be encoded).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// The input ended inside a field.
    #[error("truncated message")]
    Truncated,
    /// Wrong magic bytes.
    #[error("bad magic")]
    BadMagic,
    /// Unknown version.
    #[error("unsupported version {0}")]
    Version(u8),
    /// Unknown flag bits set.
    #[error("unknown flags {0:#x}")]
    Flags(u8),
    /// A count over its bound.
    #[error("too many {what}: {count}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// The count found.
        count: usize,
    },
    /// An entry or presence kind outside its enum, or a boolean other than 0/1.
    #[error("bad {what} value {value}")]
    BadValue {
        /// Which field.
        what: &'static str,
        /// The byte found.
        value: u8,
    },
    /// A CID length of 0 or over [`MAX_CID_LEN`].
    #[error("bad CID length {0}")]
    CidLength(usize),
    /// Bytes that are not a CID in canonical form.
    #[error("invalid CID")]
    BadCid,
    /// Block data over [`MAX_BLOCK_DATA`].
    #[error("block of {0} bytes exceeds the limit")]
    BlockTooLarge(usize),
    /// Bytes after the last block.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

impl WantKind {
    fn code(self) -> u8 {
        match self {
            WantKind::Have => 0,
            WantKind::Block => 1,
            WantKind::Cancel => 2,
        }
    }
}

impl PresenceKind {
    fn code(self) -> u8 {
        match self {
            PresenceKind::Have => 0,
            PresenceKind::DontHave => 1,
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if self.buf.len() < n {
            return Err(MessageError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, MessageError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, MessageError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, MessageError> {
        let count = usize::from(self.u16()?);
        if count > max {
            return Err(MessageError::TooMany { what, count });
        }
        Ok(count)
    }
    fn cid(&mut self) -> Result<Cid, MessageError> {
        let len = usize::from(self.u16()?);
        if len == 0 || len > MAX_CID_LEN {
            return Err(MessageError::CidLength(len));
        }
        let bytes = self.take(len)?;
        let cid = Cid::try_from(bytes).map_err(|_| MessageError::BadCid)?;
        if cid.to_bytes() != bytes {
            return Err(MessageError::BadCid);
        }
        Ok(cid)
    }
}

fn put_cid(out: &mut Vec<u8>, cid: &Cid) -> Result<(), MessageError> {
    let bytes = cid.to_bytes();
    if bytes.is_empty() || bytes.len() > MAX_CID_LEN {
        return Err(MessageError::CidLength(bytes.len()));
    }
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

fn put_count(
    out: &mut Vec<u8>,
    what: &'static str,
    count: usize,
    max: usize,
) -> Result<(), MessageError> {
    if count > max {
        return Err(MessageError::TooMany { what, count });
    }
    out.extend_from_slice(&(count as u16).to_be_bytes());
    Ok(())
}

impl Message {
    /// True when the message carries nothing.
    pub fn is_empty(&self) -> bool {
        self.wantlist.is_empty() && self.presences.is_empty() && self.blocks.is_empty()
    }

    /// Encoded size in bytes (an upper bound used for batching; exact for valid messages).
    pub fn encoded_len(&self) -> usize {
        let cid_len = |c: &Cid| 2 + c.encoded_len();
        10 + self
            .wantlist
            .iter()
            .map(|e| 6 + cid_len(&e.cid))
            .sum::<usize>()
            + self
                .presences
                .iter()
                .map(|p| 1 + cid_len(&p.cid))
                .sum::<usize>()
            + self
                .blocks
                .iter()
                .map(|b| cid_len(&b.cid) + 4 + b.data.len())
                .sum::<usize>()
    }

    /// Encodes the message; fails if a list, CID or block is over its bound.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(if self.full { FLAG_FULL } else { 0 });
        put_count(
            &mut out,
            "wantlist entries",
            self.wantlist.len(),
            MAX_ENTRIES,
        )?;
        for e in &self.wantlist {
            out.push(e.kind.code());
            out.extend_from_slice(&e.priority.to_be_bytes());
            out.push(u8::from(e.send_dont_have));
            put_cid(&mut out, &e.cid)?;
        }
        put_count(&mut out, "presences", self.presences.len(), MAX_PRESENCES)?;
        for p in &self.presences {
            out.push(p.kind.code());
            put_cid(&mut out, &p.cid)?;
        }
        put_count(&mut out, "blocks", self.blocks.len(), MAX_BLOCKS)?;
        for b in &self.blocks {
            if b.data.len() > MAX_BLOCK_DATA {
                return Err(MessageError::BlockTooLarge(b.data.len()));
            }
            put_cid(&mut out, &b.cid)?;
            out.extend_from_slice(&(b.data.len() as u32).to_be_bytes());
            out.extend_from_slice(&b.data);
        }
        Ok(out)
    }

    /// Decodes one message, strictly (see the module docs for the layout and bounds).
    pub fn decode(buf: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader { buf };
        if r.take(2)? != MAGIC {
            return Err(MessageError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(MessageError::Version(version));
        }
        let flags = r.u8()?;
        if flags & !FLAG_FULL != 0 {
            return Err(MessageError::Flags(flags));
        }
        let n = r.count("wantlist entries", MAX_ENTRIES)?;
        let mut wantlist = Vec::with_capacity(n.min(r.buf.len() / 8));
        for _ in 0..n {
            let kind = match r.u8()? {
                0 => WantKind::Have,
                1 => WantKind::Block,
                2 => WantKind::Cancel,
                value => {
                    return Err(MessageError::BadValue {
                        what: "want kind",
                        value,
                    });
                }
            };
            let priority = r.u32()? as i32;
            let send_dont_have = match r.u8()? {
                0 => false,
                1 => true,
                value => {
                    return Err(MessageError::BadValue {
                        what: "send_dont_have",
                        value,
                    });
                }
            };
            let cid = r.cid()?;
            wantlist.push(WantEntry {
                cid,
                kind,
                priority,
                send_dont_have,
            });
        }
        let n = r.count("presences", MAX_PRESENCES)?;
        let mut presences = Vec::with_capacity(n.min(r.buf.len() / 3));
        for _ in 0..n {
            let kind = match r.u8()? {
                0 => PresenceKind::Have,
                1 => PresenceKind::DontHave,
                value => {
                    return Err(MessageError::BadValue {
                        what: "presence kind",
                        value,
                    });
                }
            };
            let cid = r.cid()?;
            presences.push(Presence { cid, kind });
        }
        let n = r.count("blocks", MAX_BLOCKS)?;
        let mut blocks = Vec::with_capacity(n.min(r.buf.len() / 7));
        for _ in 0..n {
            let cid = r.cid()?;
            let len = r.u32()? as usize;
            if len > MAX_BLOCK_DATA {
                return Err(MessageError::BlockTooLarge(len));
            }
            let data = r.take(len)?.to_vec();
            blocks.push(Block { cid, data });
        }
        if !r.buf.is_empty() {
            return Err(MessageError::Trailing(r.buf.len()));
        }
        Ok(Message {
            full: flags & FLAG_FULL != 0,
            wantlist,
            presences,
            blocks,
        })
    }
}
