//! Frames carried inside the encrypted payload of `Data` packets.
//!
//! Each frame starts with a type encoded as a QUIC varint (RFC 9000 §16; every type here fits in
//! one byte). Layouts follow RFC 9000 §19 where a QUIC frame does the same job, with one MEF
//! addition: the ACK frame carries `rate_echo`, the router stamp the receiver last saw.
//!
//! | type | frame | fields (all varints unless noted) |
//! |---|---|---|
//! | 0x00 | PADDING | a run of zero bytes |
//! | 0x01 | PING | — |
//! | 0x02 | ACK | largest, ack delay µs, rate echo (0 = none, else kbit/s + 1), range count, first range, (gap, range length)\* |
//! | 0x08–0x0f | STREAM | stream id, \[offset if 0x04\], \[length if 0x02\], data; 0x01 = FIN |
//! | 0x10 | MAX_DATA | maximum connection data |
//! | 0x11 | MAX_STREAM_DATA | stream id, maximum stream data |
//! | 0x1c | CLOSE | error code, reason length, reason bytes |
//!
//! Parsing never panics; `emit` functions return [`FrameError::BufferTooSmall`] instead of
//! writing past the buffer.

use super::varint::{self, Reader, VarIntError, Writer};

/// Frame type codes.
pub mod types {
    /// PADDING (RFC 9000 §19.1).
    pub const PADDING: u8 = 0x00;
    /// PING (RFC 9000 §19.2).
    pub const PING: u8 = 0x01;
    /// ACK with rate echo (RFC 9000 §19.3 plus the MEF rate echo).
    pub const ACK: u8 = 0x02;
    /// STREAM base type (RFC 9000 §19.8); the low three bits are OFF, LEN, FIN.
    pub const STREAM: u8 = 0x08;
    /// STREAM bit: an offset field is present.
    pub const STREAM_OFF: u8 = 0x04;
    /// STREAM bit: a length field is present (otherwise data runs to the end of the packet).
    pub const STREAM_LEN: u8 = 0x02;
    /// STREAM bit: this frame ends the stream.
    pub const STREAM_FIN: u8 = 0x01;
    /// MAX_DATA (RFC 9000 §19.9).
    pub const MAX_DATA: u8 = 0x10;
    /// MAX_STREAM_DATA (RFC 9000 §19.10).
    pub const MAX_STREAM_DATA: u8 = 0x11;
    /// CLOSE (RFC 9000 §19.19, application variant).
    pub const CLOSE: u8 = 0x1c;
}

/// Maximum length of a CLOSE reason we emit or accept.
pub const MAX_REASON_LEN: usize = 256;

/// Why a frame could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload ended inside a frame.
    #[error("frame truncated (type {0:#04x})")]
    Truncated(u64),
    /// An unknown frame type.
    #[error("unknown frame type {0:#x}")]
    UnknownType(u64),
    /// ACK ranges that run below packet number zero (RFC 9000 §19.3.1).
    #[error("ACK frame ranges underflow packet number zero")]
    InvalidAckRange,
    /// A stream frame whose end offset exceeds 2^62 − 1 (RFC 9000 §19.8).
    #[error("STREAM frame end offset exceeds 2^62-1")]
    StreamTooLong,
    /// A CLOSE reason longer than [`MAX_REASON_LEN`].
    #[error("CLOSE reason of {0} bytes is too long")]
    ReasonTooLong(u64),
    /// The output buffer is too small for the frame.
    #[error("buffer too small to emit frame")]
    BufferTooSmall,
    /// A value too large for a varint was given to `emit`.
    #[error("value too large for a varint")]
    ValueTooLarge,
}

impl FrameError {
    fn from_read(ty: u64) -> impl Fn(VarIntError) -> Self {
        move |_| Self::Truncated(ty)
    }
}

impl From<VarIntError> for FrameError {
    fn from(e: VarIntError) -> Self {
        match e {
            VarIntError::Truncated => Self::BufferTooSmall,
            VarIntError::TooLarge(_) => Self::ValueTooLarge,
        }
    }
}

/// A parsed ACK frame. Its ranges were validated at parse time, so [`Ack::ranges`] cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack<'a> {
    /// Largest packet number acknowledged.
    pub largest: u64,
    /// Time the receiver held the ACK for the largest packet, µs (RFC 9000 §19.3 "ACK Delay").
    pub delay_us: u64,
    /// The router stamp (kbit/s) on the most recent packet received with the STAMPED flag set,
    /// already clamped to that packet's authenticated demand; `None` if no router stamped it.
    pub rate_echo_kbps: Option<u32>,
    first_range: u64,
    range_count: u64,
    raw_ranges: &'a [u8],
}

impl<'a> Ack<'a> {
    /// Iterates the acknowledged packet-number ranges, largest first, as inclusive
    /// `(smallest, largest)` pairs (RFC 9000 §19.3.1).
    pub fn ranges(&self) -> AckRanges<'a> {
        AckRanges {
            reader: Reader::new(self.raw_ranges),
            next: Some((self.largest - self.first_range, self.largest)),
            left: self.range_count,
        }
    }

    /// Emits an ACK frame. `ranges` are inclusive `(smallest, largest)` pairs, sorted descending,
    /// disjoint and not adjacent (as a receiver's range set produces them); it must be non-empty.
    /// Returns the bytes written.
    pub fn emit(
        buf: &mut [u8],
        delay_us: u64,
        rate_echo_kbps: Option<u32>,
        ranges: &[(u64, u64)],
    ) -> Result<usize, FrameError> {
        let Some(&(lo0, hi0)) = ranges.first() else {
            return Err(FrameError::InvalidAckRange);
        };
        if lo0 > hi0 {
            return Err(FrameError::InvalidAckRange);
        }
        let mut w = Writer::new(buf);
        w.u8(types::ACK)?;
        w.varint(hi0)?;
        w.varint(delay_us.min(varint::MAX))?;
        w.varint(rate_echo_kbps.map_or(0, |r| u64::from(r) + 1))?;
        w.varint(ranges.len() as u64 - 1)?;
        w.varint(hi0 - lo0)?;
        let mut prev_lo = lo0;
        for &(lo, hi) in &ranges[1..] {
            // gap = previous smallest - this largest - 2 (RFC 9000 §19.3.1).
            if lo > hi || hi.checked_add(2).is_none_or(|h| h > prev_lo) {
                return Err(FrameError::InvalidAckRange);
            }
            w.varint(prev_lo - hi - 2)?;
            w.varint(hi - lo)?;
            prev_lo = lo;
        }
        Ok(w.position())
    }
}

/// Iterator over the ranges of an [`Ack`].
#[derive(Debug, Clone)]
pub struct AckRanges<'a> {
    reader: Reader<'a>,
    next: Option<(u64, u64)>,
    left: u64,
}

impl Iterator for AckRanges<'_> {
    type Item = (u64, u64);
    fn next(&mut self) -> Option<(u64, u64)> {
        let cur = self.next.take()?;
        if self.left > 0 {
            self.left -= 1;
            // Validated in `parse_ack`, so these reads and subtractions cannot fail.
            let gap = self.reader.varint().ok()?;
            let len = self.reader.varint().ok()?;
            let hi = cur.0.checked_sub(gap)?.checked_sub(2)?;
            let lo = hi.checked_sub(len)?;
            self.next = Some((lo, hi));
        }
        Some(cur)
    }
}

/// A parsed STREAM frame (RFC 9000 §19.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFrame<'a> {
    /// Stream id; bit 0 says who opened it (0 = client, 1 = server).
    pub id: u64,
    /// Offset of `data` in the stream.
    pub offset: u64,
    /// This frame carries the last byte of the stream.
    pub fin: bool,
    /// The bytes.
    pub data: &'a [u8],
}

impl StreamFrame<'_> {
    /// Length of the frame header (type, id, offset, optional length) for these values.
    pub const fn header_len(id: u64, offset: u64, data_len: usize, explicit_len: bool) -> usize {
        1 + varint::size(id)
            + if offset > 0 { varint::size(offset) } else { 0 }
            + if explicit_len {
                varint::size(data_len as u64)
            } else {
                0
            }
    }

    /// Writes only the frame header; the caller copies `data_len` bytes right after it. With
    /// `explicit_len == false` the data must run to the end of the packet payload.
    pub fn emit_header(
        buf: &mut [u8],
        id: u64,
        offset: u64,
        data_len: usize,
        fin: bool,
        explicit_len: bool,
    ) -> Result<usize, FrameError> {
        if offset
            .checked_add(data_len as u64)
            .is_none_or(|end| end > varint::MAX)
        {
            return Err(FrameError::StreamTooLong);
        }
        let mut ty = types::STREAM;
        if offset > 0 {
            ty |= types::STREAM_OFF;
        }
        if explicit_len {
            ty |= types::STREAM_LEN;
        }
        if fin {
            ty |= types::STREAM_FIN;
        }
        let mut w = Writer::new(buf);
        w.u8(ty)?;
        w.varint(id)?;
        if offset > 0 {
            w.varint(offset)?;
        }
        if explicit_len {
            w.varint(data_len as u64)?;
        }
        Ok(w.position())
    }

    /// Writes the whole frame (header and data) and returns its length.
    pub fn emit(&self, buf: &mut [u8], explicit_len: bool) -> Result<usize, FrameError> {
        let n = Self::emit_header(
            buf,
            self.id,
            self.offset,
            self.data.len(),
            self.fin,
            explicit_len,
        )?;
        let out = buf
            .get_mut(n..n + self.data.len())
            .ok_or(FrameError::BufferTooSmall)?;
        out.copy_from_slice(self.data);
        Ok(n + self.data.len())
    }
}

/// One frame, borrowing from the decrypted payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A run of this many PADDING bytes.
    Padding(usize),
    /// PING: elicits an acknowledgement.
    Ping,
    /// Acknowledgement with SACK ranges and the rate echo.
    Ack(Ack<'a>),
    /// Stream data.
    Stream(StreamFrame<'a>),
    /// Connection-level flow-control limit (RFC 9000 §4.1).
    MaxData(u64),
    /// Stream-level flow-control limit.
    MaxStreamData {
        /// Stream id.
        id: u64,
        /// Maximum offset the peer may send on the stream.
        max: u64,
    },
    /// The sender closes the connection.
    Close {
        /// Application error code (0 = no error).
        code: u64,
        /// Human-readable reason (UTF-8 by convention, not checked).
        reason: &'a [u8],
    },
}

impl<'a> Frame<'a> {
    /// Parses one frame at the start of `buf`, returning it and the bytes consumed.
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), FrameError> {
        let mut r = Reader::new(buf);
        let ty = r.varint().map_err(FrameError::from_read(0))?;
        let frame = match ty {
            0x00 => {
                let n = buf.iter().take_while(|b| **b == 0).count();
                return Ok((Frame::Padding(n), n));
            }
            0x01 => Frame::Ping,
            0x02 => Frame::Ack(parse_ack(&mut r)?),
            0x08..=0x0f => {
                let e = FrameError::from_read(ty);
                let id = r.varint().map_err(&e)?;
                let offset = if ty as u8 & types::STREAM_OFF != 0 {
                    r.varint().map_err(&e)?
                } else {
                    0
                };
                let len = if ty as u8 & types::STREAM_LEN != 0 {
                    usize::try_from(r.varint().map_err(&e)?)
                        .map_err(|_| FrameError::Truncated(ty))?
                } else {
                    r.remaining().len()
                };
                let data = r.bytes(len).map_err(&e)?;
                if offset
                    .checked_add(len as u64)
                    .is_none_or(|end| end > varint::MAX)
                {
                    return Err(FrameError::StreamTooLong);
                }
                Frame::Stream(StreamFrame {
                    id,
                    offset,
                    fin: ty as u8 & types::STREAM_FIN != 0,
                    data,
                })
            }
            0x10 => Frame::MaxData(r.varint().map_err(FrameError::from_read(ty))?),
            0x11 => {
                let e = FrameError::from_read(ty);
                let id = r.varint().map_err(&e)?;
                let max = r.varint().map_err(&e)?;
                Frame::MaxStreamData { id, max }
            }
            0x1c => {
                let e = FrameError::from_read(ty);
                let code = r.varint().map_err(&e)?;
                let len = r.varint().map_err(&e)?;
                if len > MAX_REASON_LEN as u64 {
                    return Err(FrameError::ReasonTooLong(len));
                }
                let reason = r.bytes(len as usize).map_err(&e)?;
                Frame::Close { code, reason }
            }
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok((frame, r.position()))
    }

    /// Writes the frame and returns its length. STREAM frames are written with an explicit
    /// length so any frame may follow; ACK frames re-emit their validated ranges.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, FrameError> {
        let mut w = Writer::new(buf);
        match *self {
            Frame::Padding(n) => {
                w.bytes(&[])?;
                let b = buf.get_mut(..n).ok_or(FrameError::BufferTooSmall)?;
                b.fill(0);
                return Ok(n);
            }
            Frame::Ping => w.u8(types::PING)?,
            Frame::Ack(ack) => {
                let mut tmp = [(0u64, 0u64); 64];
                let mut n = 0;
                for r in ack.ranges() {
                    if n == tmp.len() {
                        return Err(FrameError::BufferTooSmall);
                    }
                    tmp[n] = r;
                    n += 1;
                }
                return Ack::emit(buf, ack.delay_us, ack.rate_echo_kbps, &tmp[..n]);
            }
            Frame::Stream(s) => return s.emit(buf, true),
            Frame::MaxData(m) => {
                w.u8(types::MAX_DATA)?;
                w.varint(m)?;
            }
            Frame::MaxStreamData { id, max } => {
                w.u8(types::MAX_STREAM_DATA)?;
                w.varint(id)?;
                w.varint(max)?;
            }
            Frame::Close { code, reason } => {
                if reason.len() > MAX_REASON_LEN {
                    return Err(FrameError::ReasonTooLong(reason.len() as u64));
                }
                w.u8(types::CLOSE)?;
                w.varint(code)?;
                w.varint(reason.len() as u64)?;
                w.bytes(reason)?;
            }
        }
        Ok(w.position())
    }
}

fn parse_ack<'a>(r: &mut Reader<'a>) -> Result<Ack<'a>, FrameError> {
    let e = FrameError::from_read(u64::from(types::ACK));
    let largest = r.varint().map_err(&e)?;
    let delay_us = r.varint().map_err(&e)?;
    let echo = r.varint().map_err(&e)?;
    // An echo that does not fit in u32 is saturated to "unlimited"; it is clamped to the demand
    // anyway before use.
    let rate_echo_kbps = echo
        .checked_sub(1)
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    let range_count = r.varint().map_err(&e)?;
    let first_range = r.varint().map_err(&e)?;
    let mut lo = largest
        .checked_sub(first_range)
        .ok_or(FrameError::InvalidAckRange)?;
    let start = r.position();
    let all = r.remaining();
    let mut sub = Reader::new(all);
    for _ in 0..range_count {
        let gap = sub.varint().map_err(&e)?;
        let len = sub.varint().map_err(&e)?;
        let hi = lo
            .checked_sub(gap)
            .and_then(|v| v.checked_sub(2))
            .ok_or(FrameError::InvalidAckRange)?;
        lo = hi.checked_sub(len).ok_or(FrameError::InvalidAckRange)?;
    }
    let used = sub.position();
    let raw_ranges = r.bytes(used).map_err(&e)?;
    debug_assert_eq!(r.position(), start + used);
    Ok(Ack {
        largest,
        delay_us,
        rate_echo_kbps,
        first_range,
        range_count,
        raw_ranges,
    })
}

/// Iterator over the frames of a decrypted payload. After the first error it yields nothing.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    buf: &'a [u8],
    failed: bool,
}

impl<'a> Frames<'a> {
    /// Iterates the frames in `payload`.
    pub const fn new(payload: &'a [u8]) -> Self {
        Self {
            buf: payload,
            failed: false,
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        match Frame::parse(self.buf) {
            Ok((f, n)) => {
                self.buf = &self.buf[n..];
                Some(Ok(f))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(f: Frame<'_>) {
        let mut buf = [0u8; 2048];
        let n = f.emit(&mut buf).expect("emit");
        let (g, m) = Frame::parse(&buf[..n]).expect("parse");
        assert_eq!(m, n);
        match (f, g) {
            (Frame::Ack(a), Frame::Ack(b)) => {
                assert_eq!(a.largest, b.largest);
                assert_eq!(a.delay_us, b.delay_us);
                assert_eq!(a.rate_echo_kbps, b.rate_echo_kbps);
                assert_eq!(
                    a.ranges().collect::<Vec<_>>(),
                    b.ranges().collect::<Vec<_>>()
                );
            }
            (f, g) => assert_eq!(f, g),
        }
    }

    #[test]
    fn simple_frames() {
        round_trip(Frame::Ping);
        round_trip(Frame::Padding(7));
        round_trip(Frame::MaxData(16 << 20));
        round_trip(Frame::MaxStreamData {
            id: 4,
            max: 1 << 40,
        });
        round_trip(Frame::Close {
            code: 3,
            reason: b"bye",
        });
        round_trip(Frame::Stream(StreamFrame {
            id: 0,
            offset: 0,
            fin: true,
            data: b"",
        }));
    }

    #[test]
    fn ack_layout_matches_rfc9000() {
        // Packets 10..=12 and 5..=7 acked: gap = 5 - 7 - 2... i.e. prev_lo(10) - hi(7) - 2 = 1.
        let mut buf = [0u8; 64];
        let n = Ack::emit(&mut buf, 25, Some(1000), &[(10, 12), (5, 7)]).expect("emit");
        assert_eq!(&buf[..n], &[0x02, 12, 25, 0x43, 0xe9, 1, 2, 1, 2]);
        let (f, _) = Frame::parse(&buf[..n]).expect("parse");
        let Frame::Ack(a) = f else {
            panic!("not an ack")
        };
        assert_eq!(a.ranges().collect::<Vec<_>>(), vec![(10, 12), (5, 7)]);
        assert_eq!(a.rate_echo_kbps, Some(1000));
    }

    #[test]
    fn ack_rejects_underflow_and_bad_input() {
        // largest 3, first range 5: underflows.
        assert_eq!(
            Frame::parse(&[0x02, 3, 0, 0, 0, 5]),
            Err(FrameError::InvalidAckRange)
        );
        // gap runs below zero.
        assert_eq!(
            Frame::parse(&[0x02, 3, 0, 0, 1, 0, 5, 0]),
            Err(FrameError::InvalidAckRange)
        );
        let mut buf = [0u8; 64];
        assert_eq!(
            Ack::emit(&mut buf, 0, None, &[]),
            Err(FrameError::InvalidAckRange)
        );
        assert_eq!(
            Ack::emit(&mut buf, 0, None, &[(5, 7), (4, 6)]),
            Err(FrameError::InvalidAckRange)
        );
    }

    #[test]
    fn stream_without_length_runs_to_end() {
        let mut buf = [0u8; 32];
        let n = StreamFrame::emit_header(&mut buf, 4, 1000, 5, false, false).expect("hdr");
        assert_eq!(n, StreamFrame::header_len(4, 1000, 5, false));
        buf[n..n + 5].copy_from_slice(b"hello");
        let frames: Vec<_> = Frames::new(&buf[..n + 5]).collect();
        assert_eq!(
            frames,
            vec![Ok(Frame::Stream(StreamFrame {
                id: 4,
                offset: 1000,
                fin: false,
                data: b"hello"
            }))]
        );
    }

    #[test]
    fn errors_are_reported() {
        assert_eq!(Frame::parse(&[0x3f]), Err(FrameError::UnknownType(0x3f)));
        assert_eq!(
            Frame::parse(&[0x0a, 0, 5, 1]),
            Err(FrameError::Truncated(0x0a))
        );
        assert_eq!(
            Frame::parse(&[0x1c, 0, 0x44, 0]),
            Err(FrameError::ReasonTooLong(1024))
        );
        assert_eq!(Frame::Ping.emit(&mut []), Err(FrameError::BufferTooSmall));
    }

    fn arb_ranges() -> impl Strategy<Value = Vec<(u64, u64)>> {
        (
            0u64..1 << 40,
            proptest::collection::vec((0u64..300, 0u64..300), 1..40),
        )
            .prop_map(|(mut top, steps)| {
                let mut out = Vec::new();
                for (len, gap) in steps {
                    let lo = top.saturating_sub(len);
                    out.push((lo, top));
                    match lo.checked_sub(gap + 2) {
                        Some(next) => top = next,
                        None => break,
                    }
                }
                out
            })
    }

    proptest! {
        #[test]
        fn ack_round_trip(ranges in arb_ranges(), delay in 0u64..1 << 30,
                          echo in proptest::option::of(any::<u32>())) {
            let mut buf = [0u8; 2048];
            let n = Ack::emit(&mut buf, delay, echo, &ranges).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (f, m) = Frame::parse(&buf[..n]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(m, n);
            let Frame::Ack(a) = f else { return Err(TestCaseError::fail("not ack")) };
            prop_assert_eq!(a.delay_us, delay);
            prop_assert_eq!(a.rate_echo_kbps, echo);
            prop_assert_eq!(a.ranges().collect::<Vec<_>>(), ranges);
        }

        #[test]
        fn stream_round_trip(id in 0u64..1 << 62, offset in 0u64..1 << 50, fin: bool,
                             data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let f = StreamFrame { id, offset, fin, data: &data };
            let mut buf = [0u8; 400];
            for explicit in [true, false] {
                let n = f.emit(&mut buf, explicit).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(n, StreamFrame::header_len(id, offset, data.len(), explicit) + data.len());
                let (g, m) = Frame::parse(&buf[..n]).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(m, n);
                prop_assert_eq!(g, Frame::Stream(f));
            }
        }

        #[test]
        fn control_round_trip(a in 0u64..1 << 62, b in 0u64..1 << 62,
                              reason in proptest::collection::vec(any::<u8>(), 0..MAX_REASON_LEN)) {
            round_trip(Frame::MaxData(a));
            round_trip(Frame::MaxStreamData { id: a, max: b });
            round_trip(Frame::Close { code: a, reason: &reason });
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for f in Frames::new(&bytes) {
                if let Ok(Frame::Ack(a)) = f {
                    let _ = a.ranges().count();
                }
            }
        }
    }
}
