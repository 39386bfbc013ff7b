//! Channel frames: typed views of the frames packed into one link plaintext datagram, with
//! `parse`/`emit` in the smoltcp style. Parsing never panics; every malformed input is a typed
//! [`FrameError`].
//!
//! A datagram is a concatenation of frames (no padding, no count); each frame starts with a
//! one-byte type. All integers are big-endian. (Telehash v3 channels,
//! <https://telehash.github.io/v3/channels/>, carry `c`/`seq`/`ack`/`miss`/`end`/`err` in a JSON
//! head; here the same fields are fixed binary for a small, fuzzable parser.)
//!
//! ```text
//! OPEN   0x01 | id u32 | flags u8 (bit 0: reliable) | kind_len u8 (1..=32) | kind (UTF-8)
//! DATA   0x02 | id u32 | seq u32 | len u16 | payload          (reliable segment)
//! UDATA  0x03 | id u32 | len u16 | payload                    (unreliable message)
//! ACK    0x04 | id u32 | cum u32 | window u32 | n u8 (0..=32) | n × (start u32 | end u32)
//! CLOSE  0x05 | id u32 | flags u8 (bit 0: ack) | code u32 | reason_len u8 (0..=64) | reason
//! ```
//!
//! - `seq` numbers reliable segments (not bytes) from 0 per channel and direction.
//! - ACK `cum` is the next segment expected (every `seq < cum` arrived); `window` is the
//!   receiver's free buffer in bytes beyond `cum`; each SACK range (RFC 2018 §3) is the
//!   half-open `[start, end)` of segments held above `cum`, with `cum < start < end`, in
//!   ascending order and disjoint.
//! - A CLOSE with the ack flag answers a CLOSE (and is itself never answered).
//! - Unknown flag bits must be zero.

use thiserror::Error;

/// Frame type byte of [`Frame::Open`].
pub const TYPE_OPEN: u8 = 0x01;
/// Frame type byte of [`Frame::Data`].
pub const TYPE_DATA: u8 = 0x02;
/// Frame type byte of [`Frame::UnreliableData`].
pub const TYPE_UDATA: u8 = 0x03;
/// Frame type byte of [`Frame::Ack`].
pub const TYPE_ACK: u8 = 0x04;
/// Frame type byte of [`Frame::Close`].
pub const TYPE_CLOSE: u8 = 0x05;

/// Longest channel type string, in bytes.
pub const MAX_KIND_LEN: usize = 32;
/// Longest close reason, in bytes.
pub const MAX_REASON_LEN: usize = 64;
/// Most SACK ranges in one ACK frame.
pub const MAX_SACK_RANGES: usize = 32;
/// Header bytes of a DATA frame before its payload.
pub const DATA_HEADER_LEN: usize = 11;
/// Header bytes of a UDATA frame before its payload.
pub const UDATA_HEADER_LEN: usize = 7;
/// Largest OPEN frame.
pub const MAX_OPEN_LEN: usize = 7 + MAX_KIND_LEN;
/// Largest ACK frame.
pub const MAX_ACK_LEN: usize = 14 + 8 * MAX_SACK_RANGES;

/// A malformed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The buffer ends inside a frame.
    #[error("truncated frame")]
    Truncated,
    /// The frame type byte is not one of the known types.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// A flags byte has bits set that this version does not define.
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// The channel type string is empty or longer than [`MAX_KIND_LEN`].
    #[error("channel type of {0} bytes (1..={MAX_KIND_LEN})")]
    KindLength(usize),
    /// The close reason is longer than [`MAX_REASON_LEN`].
    #[error("close reason of {0} bytes (at most {MAX_REASON_LEN})")]
    ReasonLength(usize),
    /// A string field is not UTF-8.
    #[error("string field is not UTF-8")]
    NotUtf8,
    /// An ACK has more than [`MAX_SACK_RANGES`] ranges.
    #[error("{0} SACK ranges (at most {MAX_SACK_RANGES})")]
    TooManySackRanges(usize),
    /// SACK ranges are empty, not above `cum`, overlapping or out of order.
    #[error("invalid SACK range")]
    BadSackRange,
    /// A payload is longer than a `u16` length can say (emit only).
    #[error("payload of {0} bytes is too long for one frame")]
    PayloadTooLong(usize),
}

/// A selectively acknowledged half-open range of segments `[start, end)` (RFC 2018).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackRange {
    /// First segment held.
    pub start: u32,
    /// One past the last segment held.
    pub end: u32,
}

/// One channel frame, borrowing its variable-length fields from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Opens channel `id` of type `kind`.
    Open {
        /// Channel id (its low bit names the opening side).
        id: u32,
        /// Channel type, e.g. `"chain"`, `"readings"`, `"blocks"`.
        kind: &'a str,
        /// Reliable (ordered, exactly-once) or unreliable (datagram) channel.
        reliable: bool,
    },
    /// A reliable segment.
    Data {
        /// Channel id.
        id: u32,
        /// Segment number.
        seq: u32,
        /// Segment bytes.
        payload: &'a [u8],
    },
    /// An unreliable message.
    UnreliableData {
        /// Channel id.
        id: u32,
        /// Message bytes.
        payload: &'a [u8],
    },
    /// Acknowledgement of reliable segments (also confirms an OPEN).
    Ack {
        /// Channel id.
        id: u32,
        /// Next segment expected: every segment below arrived.
        cum: u32,
        /// Free receive buffer in bytes beyond `cum`.
        window: u32,
        /// Segments held above `cum` (at most [`MAX_SACK_RANGES`]).
        sacks: Vec<SackRange>,
    },
    /// Closes a channel with an error code, or answers such a close (`ack`).
    Close {
        /// Channel id.
        id: u32,
        /// This CLOSE answers the peer's CLOSE.
        ack: bool,
        /// Error code (see [`crate::channel::codes`]).
        code: u32,
        /// Human-readable reason.
        reason: &'a str,
    },
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.pos.checked_add(n).ok_or(FrameError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(FrameError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn str(&mut self, n: usize) -> Result<&'a str, FrameError> {
        core::str::from_utf8(self.take(n)?).map_err(|_| FrameError::NotUtf8)
    }
}

impl<'a> Frame<'a> {
    /// The channel this frame belongs to.
    pub fn channel(&self) -> u32 {
        match *self {
            Frame::Open { id, .. }
            | Frame::Data { id, .. }
            | Frame::UnreliableData { id, .. }
            | Frame::Ack { id, .. }
            | Frame::Close { id, .. } => id,
        }
    }

    /// Parses one frame from the start of `buf`; returns it and the bytes it used.
    pub fn parse(buf: &'a [u8]) -> Result<(Frame<'a>, usize), FrameError> {
        let mut r = Reader { buf, pos: 0 };
        let ty = r.u8()?;
        let frame = match ty {
            TYPE_OPEN => {
                let id = r.u32()?;
                let flags = r.u8()?;
                if flags & !1 != 0 {
                    return Err(FrameError::UnknownFlags(flags));
                }
                let n = usize::from(r.u8()?);
                if n == 0 || n > MAX_KIND_LEN {
                    return Err(FrameError::KindLength(n));
                }
                let kind = r.str(n)?;
                Frame::Open {
                    id,
                    kind,
                    reliable: flags & 1 == 1,
                }
            }
            TYPE_DATA => {
                let id = r.u32()?;
                let seq = r.u32()?;
                let n = usize::from(r.u16()?);
                Frame::Data {
                    id,
                    seq,
                    payload: r.take(n)?,
                }
            }
            TYPE_UDATA => {
                let id = r.u32()?;
                let n = usize::from(r.u16()?);
                Frame::UnreliableData {
                    id,
                    payload: r.take(n)?,
                }
            }
            TYPE_ACK => {
                let id = r.u32()?;
                let cum = r.u32()?;
                let window = r.u32()?;
                let n = usize::from(r.u8()?);
                if n > MAX_SACK_RANGES {
                    return Err(FrameError::TooManySackRanges(n));
                }
                let mut sacks = Vec::with_capacity(n);
                let mut floor = cum;
                for _ in 0..n {
                    let start = r.u32()?;
                    let end = r.u32()?;
                    if start <= floor || end <= start {
                        return Err(FrameError::BadSackRange);
                    }
                    floor = end;
                    sacks.push(SackRange { start, end });
                }
                Frame::Ack {
                    id,
                    cum,
                    window,
                    sacks,
                }
            }
            TYPE_CLOSE => {
                let id = r.u32()?;
                let flags = r.u8()?;
                if flags & !1 != 0 {
                    return Err(FrameError::UnknownFlags(flags));
                }
                let code = r.u32()?;
                let n = usize::from(r.u8()?);
                if n > MAX_REASON_LEN {
                    return Err(FrameError::ReasonLength(n));
                }
                let reason = r.str(n)?;
                Frame::Close {
                    id,
                    ack: flags & 1 == 1,
                    code,
                    reason,
                }
            }
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok((frame, r.pos))
    }

    /// Parses a whole datagram into its frames (all or nothing).
    pub fn parse_all(mut buf: &'a [u8]) -> Result<Vec<Frame<'a>>, FrameError> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (f, n) = Frame::parse(buf)?;
            out.push(f);
            buf = buf.get(n..).ok_or(FrameError::Truncated)?;
        }
        Ok(out)
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Frame::Open { kind, .. } => 7 + kind.len(),
            Frame::Data { payload, .. } => DATA_HEADER_LEN + payload.len(),
            Frame::UnreliableData { payload, .. } => UDATA_HEADER_LEN + payload.len(),
            Frame::Ack { sacks, .. } => 14 + 8 * sacks.len(),
            Frame::Close { reason, .. } => 11 + reason.len(),
        }
    }

    /// Always false: every frame has at least a type byte (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Checks that the frame can be emitted (the field limits [`Frame::parse`] enforces).
    pub fn check(&self) -> Result<(), FrameError> {
        match self {
            Frame::Open { kind, .. } if kind.is_empty() || kind.len() > MAX_KIND_LEN => {
                Err(FrameError::KindLength(kind.len()))
            }
            Frame::Data { payload, .. } | Frame::UnreliableData { payload, .. }
                if payload.len() > usize::from(u16::MAX) =>
            {
                Err(FrameError::PayloadTooLong(payload.len()))
            }
            Frame::Ack { cum, sacks, .. } => {
                if sacks.len() > MAX_SACK_RANGES {
                    return Err(FrameError::TooManySackRanges(sacks.len()));
                }
                let mut floor = *cum;
                for s in sacks {
                    if s.start <= floor || s.end <= s.start {
                        return Err(FrameError::BadSackRange);
                    }
                    floor = s.end;
                }
                Ok(())
            }
            Frame::Close { reason, .. } if reason.len() > MAX_REASON_LEN => {
                Err(FrameError::ReasonLength(reason.len()))
            }
            _ => Ok(()),
        }
    }

    /// Appends the encoding to `out` after [`check`](Self::check)ing it.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.check()?;
        match self {
            Frame::Open { id, kind, reliable } => {
                out.push(TYPE_OPEN);
                out.extend_from_slice(&id.to_be_bytes());
                out.push(u8::from(*reliable));
                out.push(kind.len() as u8); // checked above: ≤ 32
                out.extend_from_slice(kind.as_bytes());
            }
            Frame::Data { id, seq, payload } => {
                out.push(TYPE_DATA);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                out.extend_from_slice(payload);
            }
            Frame::UnreliableData { id, payload } => {
                out.push(TYPE_UDATA);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                out.extend_from_slice(payload);
            }
            Frame::Ack {
                id,
                cum,
                window,
                sacks,
            } => {
                out.push(TYPE_ACK);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&cum.to_be_bytes());
                out.extend_from_slice(&window.to_be_bytes());
                out.push(sacks.len() as u8);
                for s in sacks {
                    out.extend_from_slice(&s.start.to_be_bytes());
                    out.extend_from_slice(&s.end.to_be_bytes());
                }
            }
            Frame::Close {
                id,
                ack,
                code,
                reason,
            } => {
                out.push(TYPE_CLOSE);
                out.extend_from_slice(&id.to_be_bytes());
                out.push(u8::from(*ack));
                out.extend_from_slice(&code.to_be_bytes());
                out.push(reason.len() as u8);
                out.extend_from_slice(reason.as_bytes());
            }
        }
        Ok(())
    }
}
