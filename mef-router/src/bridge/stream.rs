//! The MEF-stream side of a relay: a [`ByteStream`] view of one stream of a
//! `mef_transport` connection, and the per-connection control stream that carries stream
//! resets (the transport has no RESET_STREAM frame, RFC 9000 §19.4, so the bridge sends its own).
//!
//! Control stream format: the opener writes [`CONTROL_MAGIC`] first (a byte a [`SplitHeader`]
//! never starts with, since its first byte is the version 1), then messages of
//! [`CONTROL_MSG_LEN`] bytes: `type (1) | stream id (8, big endian)`. The only type is
//! [`CTRL_RESET`]: "the TCP half of this stream was reset; abort yours and discard the rest".
//!
//! [`SplitHeader`]: crate::split::SplitHeader

use mef_transport::{ConnectionHandle, Endpoint, ReadError, StreamId};

use super::error::StreamError;
use crate::split::{ByteStream, StreamRead};

/// First byte of a control stream.
pub const CONTROL_MAGIC: u8 = 0xC7;
/// Control message type: reset the named stream.
pub const CTRL_RESET: u8 = 1;
/// Length of one control message.
pub const CONTROL_MSG_LEN: usize = 9;

/// Encodes a reset message for `stream`.
pub fn encode_reset(stream: StreamId) -> [u8; CONTROL_MSG_LEN] {
    let mut m = [0u8; CONTROL_MSG_LEN];
    m[0] = CTRL_RESET;
    m[1..].copy_from_slice(&stream.0.to_be_bytes());
    m
}

/// Decodes complete control messages from the front of `buf`, removing them; returns the
/// streams to reset, or `Err(type)` on an unknown message type (the peer breaks the protocol).
pub fn decode_control(buf: &mut Vec<u8>) -> Result<Vec<StreamId>, u8> {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some(msg) = buf.get(used..used + CONTROL_MSG_LEN) {
        let (kind, id) = msg.split_first().ok_or(0u8)?;
        if *kind != CTRL_RESET {
            return Err(*kind);
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(id);
        out.push(StreamId(u64::from_be_bytes(b)));
        used += CONTROL_MSG_LEN;
    }
    buf.drain(..used);
    Ok(out)
}

/// A [`ByteStream`] over stream `stream` of connection `conn` in `endpoint`.
///
/// Writes stop (return 0) once `max_unsent` bytes are queued but not yet sent even once
/// ([`mef_transport::Connection::stream_unsent`]), so the router buffers about one pacing burst per
/// stream instead of the transport's whole send buffer; `blocked` is set then, and the bridge
/// pumps the relay again when transmissions drained the stream. [`ByteStream::reset`] only sets
/// `reset`: the bridge then sends the control-stream reset.
pub(crate) struct MefStream<'a> {
    pub endpoint: &'a mut Endpoint,
    pub conn: ConnectionHandle,
    pub stream: StreamId,
    pub max_unsent: u64,
    pub blocked: bool,
    pub reset: bool,
}

impl ByteStream for MefStream<'_> {
    type Error = StreamError;

    fn read(&mut self, buf: &mut [u8]) -> Result<StreamRead, StreamError> {
        let c = self
            .endpoint
            .connection_mut(self.conn)
            .ok_or(StreamError::ConnectionGone)?;
        match c.read(self.stream, buf) {
            Ok(Some(0)) | Err(ReadError::Blocked) => Ok(StreamRead::Blocked),
            Ok(Some(n)) => Ok(StreamRead::Data(n)),
            Ok(None) => Ok(StreamRead::Finished),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        let c = self
            .endpoint
            .connection_mut(self.conn)
            .ok_or(StreamError::ConnectionGone)?;
        let room = self.max_unsent.saturating_sub(c.stream_unsent(self.stream));
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if want == 0 {
            self.blocked = true;
            return Ok(0);
        }
        let n = c.write(self.stream, &buf[..want])?;
        if n < buf.len() {
            self.blocked = true;
        }
        Ok(n)
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        let c = self
            .endpoint
            .connection_mut(self.conn)
            .ok_or(StreamError::ConnectionGone)?;
        c.finish(self.stream)?;
        Ok(())
    }

    fn reset(&mut self) {
        self.reset = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_round_trip() {
        let mut buf = Vec::new();
        buf.extend(encode_reset(StreamId(4)));
        buf.extend(encode_reset(StreamId(9)));
        buf.extend(&encode_reset(StreamId(13))[..3]);
        assert_eq!(decode_control(&mut buf), Ok(vec![StreamId(4), StreamId(9)]));
        assert_eq!(buf.len(), 3);
        let mut bad = vec![7u8; CONTROL_MSG_LEN];
        assert_eq!(decode_control(&mut bad), Err(7));
    }
}
