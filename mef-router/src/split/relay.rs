//! [`Relay`]: the pump between one split TCP connection and a byte stream (in the daemon, a
//! `mef_transport` stream; in tests, an in-memory pipe), with bounded buffers in both
//! directions so neither side can make the router buffer without limit: when a buffer is full
//! the relay stops reading that side, and TCP flow control (RFC 9293 §3.8.6) or the stream's own
//! flow control pushes back to the sender.
//!
//! Close semantics (RFC 3135 §4.1, keep end-to-end meaning where possible): the TCP peer's FIN
//! becomes the stream's `finish` once every byte before it is delivered, and the stream's end
//! becomes a TCP FIN; a failed stream aborts the TCP connection (RST), and a reset TCP
//! connection resets the stream.

use std::collections::VecDeque;

use super::error::{RelayError, SplitError};
use super::header::SplitHeader;
use super::splitter::{ConnId, TcpSplitter};

/// Outcome of one [`ByteStream::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRead {
    /// This many bytes (at least 1) were read.
    Data(usize),
    /// Nothing available now; the caller will pump again when the stream becomes readable.
    Blocked,
    /// The peer finished the stream; no more bytes will come.
    Finished,
}

/// The stream side of a [`Relay`]: non-blocking byte I/O with an end-of-stream and an abort.
/// Implement it for a `mef_transport` stream in the daemon; no async runtime is assumed.
pub trait ByteStream {
    /// Error of the stream (for example "reset by peer").
    type Error: std::error::Error + 'static;
    /// Read available bytes into `buf` (never blocks).
    fn read(&mut self, buf: &mut [u8]) -> Result<StreamRead, Self::Error>;
    /// Write bytes; returns how many were taken, 0 when flow control blocks (never blocks).
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error>;
    /// Finish the sending half after everything written (the stream's FIN).
    fn finish(&mut self) -> Result<(), Self::Error>;
    /// Abandon both halves abruptly (the stream's RST); called when the TCP side was reset.
    fn reset(&mut self);
}

/// Configuration of a [`Relay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Bytes buffered per direction inside the relay (on top of the TCP socket buffers).
    pub buffer: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self { buffer: 64 * 1024 }
    }
}

/// Whether a [`Relay`] still has work to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayStatus {
    /// Data or a FIN may still move; pump again on the next event for this connection or stream.
    Open,
    /// Both directions are finished (FIN relayed each way); drop the relay. The TCP connection
    /// reports [`SplitEvent::Closed`](super::SplitEvent::Closed) when its handshake completes.
    Done,
}

/// A bounded byte buffer.
#[derive(Debug)]
struct Buffer {
    data: VecDeque<u8>,
    cap: usize,
}

impl Buffer {
    fn new(cap: usize) -> Self {
        Self {
            data: VecDeque::with_capacity(cap),
            cap,
        }
    }
    fn room(&self) -> usize {
        self.cap.saturating_sub(self.data.len())
    }
}

/// Moves bytes between split connection `id` in a [`TcpSplitter`] and a [`ByteStream`].
///
/// Call [`pump`](Self::pump) whenever the splitter reports `Readable`, `Writable` or
/// `PeerClosed` for the connection, or the stream becomes readable or writable. On the ingress
/// router build it with [`Relay::ingress`] (the [`SplitHeader`] goes first on the stream); on
/// the egress router parse the header off the stream, [`TcpSplitter::connect`], then build it
/// with [`Relay::egress`] passing any bytes read after the header.
#[derive(Debug)]
pub struct Relay {
    id: ConnId,
    to_stream: Buffer,
    to_tcp: Buffer,
    scratch: Vec<u8>,
    tcp_eof: bool,
    stream_finished: bool,
    stream_eof: bool,
    tcp_fin_sent: bool,
    failed: bool,
}

impl Relay {
    /// A relay for connection `id` with empty buffers.
    pub fn new(id: ConnId, config: RelayConfig) -> Self {
        let cap = config.buffer.max(1);
        Self {
            id,
            to_stream: Buffer::new(cap),
            to_tcp: Buffer::new(cap),
            scratch: vec![0; cap.min(16 * 1024)],
            tcp_eof: false,
            stream_finished: false,
            stream_eof: false,
            tcp_fin_sent: false,
            failed: false,
        }
    }

    /// Ingress side: the stream starts with `header` (the original end points of `id`).
    pub fn ingress(
        id: ConnId,
        header: SplitHeader,
        config: RelayConfig,
    ) -> Result<Self, super::FrameError> {
        let mut relay = Self::new(id, config);
        relay.to_stream.data.extend(header.to_bytes()?);
        Ok(relay)
    }

    /// Egress side: `already_read` are stream bytes that followed the header; they go to TCP
    /// first (the buffer grows to hold them if needed).
    pub fn egress(id: ConnId, already_read: &[u8], config: RelayConfig) -> Self {
        let mut relay = Self::new(id, config);
        relay.to_tcp.cap = relay.to_tcp.cap.max(already_read.len());
        relay.to_tcp.data.extend(already_read);
        relay
    }

    /// The split connection this relay serves.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Bytes buffered in the relay (TCP→stream, stream→TCP).
    pub fn buffered(&self) -> (usize, usize) {
        (self.to_stream.data.len(), self.to_tcp.data.len())
    }

    /// Move as many bytes as both sides accept right now, and relay FINs.
    ///
    /// On a TCP-side error (the connection was reset or is gone) the stream is reset; on a
    /// stream error the TCP connection is aborted. Either way the relay is dead afterwards and
    /// returns the error.
    pub fn pump<S: ByteStream>(
        &mut self,
        splitter: &mut TcpSplitter,
        stream: &mut S,
    ) -> Result<RelayStatus, RelayError<S::Error>> {
        if self.failed {
            return Err(RelayError::Split(SplitError::UnknownConnection(self.id)));
        }
        match self.pump_inner(splitter, stream) {
            Ok(status) => Ok(status),
            Err(e) => {
                self.failed = true;
                match &e {
                    RelayError::Split(_) => stream.reset(),
                    // The connection may already be gone; nothing more to do then.
                    RelayError::Stream(_) => {
                        let _ = splitter.abort(self.id);
                    }
                }
                Err(e)
            }
        }
    }

    fn pump_inner<S: ByteStream>(
        &mut self,
        splitter: &mut TcpSplitter,
        stream: &mut S,
    ) -> Result<RelayStatus, RelayError<S::Error>> {
        loop {
            let mut progress = false;

            // TCP -> stream.
            while !self.tcp_eof && self.to_stream.room() > 0 {
                let want = self.to_stream.room().min(self.scratch.len());
                let n = splitter.read(self.id, &mut self.scratch[..want])?;
                if n == 0 {
                    if splitter.is_peer_closed(self.id)? {
                        self.tcp_eof = true;
                        progress = true;
                    }
                    break;
                }
                self.to_stream.data.extend(&self.scratch[..n]);
                progress = true;
            }
            while !self.to_stream.data.is_empty() {
                let (front, _) = self.to_stream.data.as_slices();
                let n = stream.write(front).map_err(RelayError::Stream)?;
                if n == 0 {
                    break;
                }
                self.to_stream.data.drain(..n.min(front.len()));
                progress = true;
            }
            if self.tcp_eof && self.to_stream.data.is_empty() && !self.stream_finished {
                stream.finish().map_err(RelayError::Stream)?;
                self.stream_finished = true;
                progress = true;
            }

            // Stream -> TCP.
            while !self.stream_eof && self.to_tcp.room() > 0 {
                let want = self.to_tcp.room().min(self.scratch.len());
                match stream
                    .read(&mut self.scratch[..want])
                    .map_err(RelayError::Stream)?
                {
                    StreamRead::Data(n) => {
                        let n = n.min(want);
                        self.to_tcp.data.extend(&self.scratch[..n]);
                        progress = true;
                    }
                    StreamRead::Blocked => break,
                    StreamRead::Finished => {
                        self.stream_eof = true;
                        progress = true;
                    }
                }
            }
            while !self.to_tcp.data.is_empty() {
                let (front, _) = self.to_tcp.data.as_slices();
                let n = splitter.write(self.id, front)?;
                if n == 0 {
                    break;
                }
                self.to_tcp.data.drain(..n.min(front.len()));
                progress = true;
            }
            if self.stream_eof && self.to_tcp.data.is_empty() && !self.tcp_fin_sent {
                splitter.shutdown(self.id)?;
                self.tcp_fin_sent = true;
                progress = true;
            }

            if self.stream_finished && self.tcp_fin_sent {
                return Ok(RelayStatus::Done);
            }
            if !progress {
                return Ok(RelayStatus::Open);
            }
        }
    }
}
