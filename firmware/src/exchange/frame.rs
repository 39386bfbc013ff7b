//! Framing of exchange messages on a reliable, ordered byte stream (a mesh reliable channel).
//!
//! Each message is preceded by its length as a big-endian `u32`. The receiver refuses a frame
//! longer than [`MAX_FRAME`] before buffering it, so a peer cannot make it hold more than one
//! frame's worth of bytes.

use thiserror::Error;

/// Largest frame accepted: the largest message a [`super::Server`] sends with its default
/// limits (1 MiB of blocks, or one 2 MiB block) with ample room for wantlists.
pub const MAX_FRAME: usize = 4 << 20;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// A stream that does not frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A frame announced more bytes than [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero-length frame (no message is empty on the wire).
    #[error("empty frame")]
    Empty,
}

/// Appends `msg` as one frame to `out`; a message over [`MAX_FRAME`] is refused (the peer
/// would refuse it too).
pub fn frame_into(out: &mut Vec<u8>, msg: &[u8]) -> Result<(), FrameError> {
    if msg.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = u32::try_from(msg.len())
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME)
        .ok_or(FrameError::TooLarge {
            len: msg.len(),
            max: MAX_FRAME,
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    Ok(())
}

/// Splits a byte stream back into frames.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    start: usize,
    failed: Option<FrameError>,
}

impl Deframer {
    /// An empty deframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends stream bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `None` if more bytes are needed. After an error the stream is
    /// unusable and every call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let avail = &self.buf[self.start..];
        let Some(header) = avail.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let err = if len > MAX_FRAME {
            Some(FrameError::TooLarge {
                len,
                max: MAX_FRAME,
            })
        } else if len == 0 {
            Some(FrameError::Empty)
        } else {
            None
        };
        if let Some(e) = err {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
            self.start = 0;
            return Err(e);
        }
        let Some(body) = avail.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let frame = body.to_vec();
        self.start += HEADER_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }
}
