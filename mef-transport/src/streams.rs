//! Reliable ordered byte streams and flow control (RFC 9000 §2–§4 semantics, simplified to
//! bidirectional streams only).
//!
//! Stream ids: bit 0 says who opened the stream (0 = client, 1 = server) and ids step by 4, as
//! in QUIC's client/server-initiated bidirectional streams (RFC 9000 §2.1).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::rangeset::RangeSet;
use crate::recovery::StreamChunk;

/// Which end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Sent the Initial.
    Client,
    /// Answered it.
    Server,
}

/// A stream identifier (RFC 9000 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// The side that opened the stream.
    pub fn initiator(self) -> Side {
        if self.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        }
    }
    /// The stream's sequence number among those its initiator opened.
    pub fn index(self) -> u64 {
        self.0 >> 2
    }
    fn new(side: Side, index: u64) -> Self {
        Self((index << 2) | if side == Side::Server { 1 } else { 0 })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// Why a stream write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// No such stream (never opened or already closed in both directions).
    #[error("unknown stream")]
    UnknownStream,
    /// `finish` was already called.
    #[error("stream already finished")]
    Finished,
    /// The connection is closed.
    #[error("connection closed")]
    ConnectionClosed,
}

/// Why a stream read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Nothing to read yet; a `StreamReadable` event follows when data arrives.
    #[error("no data available yet")]
    Blocked,
    /// No such stream.
    #[error("unknown stream")]
    UnknownStream,
    /// The connection closed before the stream finished.
    #[error("connection closed")]
    ConnectionClosed,
}

/// A peer violated stream rules; the connection closes with this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Data beyond the flow-control limit we granted (RFC 9000 §4.1).
    #[error("flow control limit exceeded")]
    FlowControl,
    /// Data beyond or a FIN inconsistent with the stream's final size (RFC 9000 §4.5).
    #[error("final size violation")]
    FinalSize,
    /// A stream id the peer may not open (our own unopened id, or beyond the limit).
    #[error("stream limit or id violation")]
    StreamLimit,
}

#[derive(Debug, Default)]
struct SendStream {
    /// Unacknowledged bytes from `base` to `end`.
    buf: VecDeque<u8>,
    base: u64,
    end: u64,
    next: u64,
    acked: RangeSet,
    lost: RangeSet,
    fin: bool,
    fin_sent: bool,
    fin_acked: bool,
    max_data: u64,
    blocked_writer: bool,
}

impl SendStream {
    fn has_lost(&self) -> bool {
        !self.lost.is_empty()
    }
    fn complete(&self) -> bool {
        self.fin_acked && self.base == self.end
    }
    fn copy_out(&self, offset: u64, dst: &mut [u8]) {
        let start = (offset - self.base) as usize;
        let (a, b) = self.buf.as_slices();
        let mut n = 0;
        if start < a.len() {
            let take = (a.len() - start).min(dst.len());
            dst[..take].copy_from_slice(&a[start..start + take]);
            n = take;
        }
        if n < dst.len() {
            let bstart = start + n - a.len();
            let want = dst.len() - n;
            dst[n..].copy_from_slice(&b[bstart..bstart + want]);
        }
    }
    fn on_acked(&mut self, c: &StreamChunk) {
        let r = c.offset..c.offset + u64::from(c.len);
        if c.fin {
            self.fin_acked = true;
        }
        if r.end > self.base {
            self.acked.insert(r.start.max(self.base)..r.end);
            self.lost.remove(r);
        }
        while let Some(end) = self.acked.range_end_containing(self.base) {
            let n = (end - self.base) as usize;
            self.buf.drain(..n.min(self.buf.len()));
            self.acked.remove(self.base..end);
            self.base = end;
        }
    }
    fn on_lost(&mut self, c: &StreamChunk) {
        let end = c.offset + u64::from(c.len);
        if c.fin && !self.fin_acked {
            self.fin_sent = false;
        }
        if end > self.base {
            self.lost.insert(c.offset.max(self.base)..end);
        }
    }
}

#[derive(Debug, Default)]
struct RecvStream {
    ready: VecDeque<u8>,
    read: u64,
    contig: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    final_size: Option<u64>,
    highest: u64,
    max_data: u64,
    window: u64,
    need_update: bool,
    fin_delivered: bool,
}

impl RecvStream {
    /// Accepts a STREAM frame; returns how far the stream's highest offset advanced.
    fn on_frame(&mut self, offset: u64, data: &[u8], fin: bool) -> Result<u64, StreamError> {
        let end = offset + data.len() as u64;
        if end > self.max_data {
            return Err(StreamError::FlowControl);
        }
        if let Some(fs) = self.final_size
            && (end > fs || (fin && end != fs))
        {
            return Err(StreamError::FinalSize);
        }
        if fin {
            if self.highest > end {
                return Err(StreamError::FinalSize);
            }
            self.final_size = Some(end);
        }
        let grew = end.saturating_sub(self.highest);
        self.highest = self.highest.max(end);
        if end <= self.contig {
            return Ok(grew);
        }
        if offset <= self.contig {
            let skip = (self.contig - offset) as usize;
            self.ready.extend(&data[skip..]);
            self.contig = end;
            while let Some(entry) = self.pending.first_entry() {
                let off = *entry.key();
                if off > self.contig {
                    break;
                }
                let chunk = entry.remove();
                let cend = off + chunk.len() as u64;
                if cend > self.contig {
                    self.ready.extend(&chunk[(self.contig - off) as usize..]);
                    self.contig = cend;
                }
            }
        } else {
            match self.pending.get(&offset) {
                Some(existing) if existing.len() >= data.len() => {}
                _ => {
                    self.pending.insert(offset, data.to_vec());
                }
            }
        }
        Ok(grew)
    }

    fn finished(&self) -> bool {
        self.final_size.is_some_and(|fs| self.read == fs)
    }
}

#[derive(Debug, Default)]
struct Stream {
    send: SendStream,
    recv: RecvStream,
}

/// What happened to streams, for the connection to turn into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer opened a stream.
    Opened(StreamId),
    /// Data (or the end of the stream) can be read.
    Readable(StreamId),
    /// A writer that was refused can write again.
    Writable(StreamId),
    /// Everything written, including FIN, was acknowledged.
    Finished(StreamId),
}

/// Flow-control limits for one side.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connection receive window.
    pub receive_window: u64,
    /// Stream receive window.
    pub stream_window: u64,
    /// Send buffer per stream.
    pub send_buffer: u64,
    /// Streams the peer may open.
    pub max_peer_streams: u64,
}

/// All streams of a connection plus connection-level flow control.
#[derive(Debug)]
pub struct Streams {
    side: Side,
    limits: Limits,
    map: BTreeMap<StreamId, Stream>,
    next_local: u64,
    peer_opened: u64,
    /// Streams with something to send, round robin.
    send_queue: VecDeque<StreamId>,
    max_data_remote: u64,
    data_sent: u64,
    peer_stream_window: u64,
    peer_max_streams: u64,
    max_data_local: u64,
    data_recvd: u64,
    data_read: u64,
    need_max_data: bool,
    /// Pending events.
    pub events: VecDeque<StreamEvent>,
    /// Stream bytes newly acknowledged (statistics).
    pub bytes_acked: u64,
    /// Stream bytes delivered to the application.
    pub bytes_read: u64,
}

/// A chunk chosen for the next STREAM frame.
#[derive(Debug, Clone, Copy)]
pub struct Chunk {
    /// Stream.
    pub id: StreamId,
    /// Offset.
    pub offset: u64,
    /// Length.
    pub len: usize,
    /// Carries FIN.
    pub fin: bool,
    /// A retransmission.
    pub retransmit: bool,
}

impl Streams {
    /// New state; peer limits are set once the handshake delivers them.
    pub fn new(side: Side, limits: Limits) -> Self {
        Self {
            side,
            limits,
            map: BTreeMap::new(),
            next_local: 0,
            peer_opened: 0,
            send_queue: VecDeque::new(),
            max_data_remote: 0,
            data_sent: 0,
            peer_stream_window: 0,
            peer_max_streams: 0,
            max_data_local: limits.receive_window,
            data_recvd: 0,
            data_read: 0,
            need_max_data: false,
            events: VecDeque::new(),
            bytes_acked: 0,
            bytes_read: 0,
        }
    }

    /// Applies the peer's transport parameters.
    pub fn set_peer_limits(&mut self, max_data: u64, stream_window: u64, max_streams: u64) {
        self.max_data_remote = max_data;
        self.peer_stream_window = stream_window;
        self.peer_max_streams = max_streams;
        for s in self.map.values_mut() {
            s.send.max_data = s.send.max_data.max(stream_window);
        }
    }

    fn new_stream(&self) -> Stream {
        let mut s = Stream::default();
        s.send.max_data = self.peer_stream_window;
        s.recv.max_data = self.limits.stream_window;
        s.recv.window = self.limits.stream_window;
        s
    }

    /// Opens a stream; `None` if the peer's stream limit is reached.
    pub fn open(&mut self) -> Option<StreamId> {
        if self.next_local >= self.peer_max_streams {
            return None;
        }
        let id = StreamId::new(self.side, self.next_local);
        self.next_local += 1;
        let s = self.new_stream();
        self.map.insert(id, s);
        Some(id)
    }

    /// Buffers data; returns how much was accepted (0 = send buffer full).
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        let s = self.map.get_mut(&id).ok_or(WriteError::UnknownStream)?;
        if s.send.fin {
            return Err(WriteError::Finished);
        }
        let space = self
            .limits
            .send_buffer
            .saturating_sub(s.send.buf.len() as u64);
        let n = (data.len() as u64).min(space) as usize;
        if n < data.len() {
            s.send.blocked_writer = true;
        }
        if n > 0 {
            s.send.buf.extend(&data[..n]);
            s.send.end += n as u64;
            if !self.send_queue.contains(&id) {
                self.send_queue.push_back(id);
            }
        }
        Ok(n)
    }

    /// Marks the end of the stream's data (FIN).
    pub fn finish(&mut self, id: StreamId) -> Result<(), WriteError> {
        let s = self.map.get_mut(&id).ok_or(WriteError::UnknownStream)?;
        if s.send.fin {
            return Err(WriteError::Finished);
        }
        s.send.fin = true;
        if !self.send_queue.contains(&id) {
            self.send_queue.push_back(id);
        }
        Ok(())
    }

    /// Reads in order; `Ok(None)` at the end of the stream.
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        let s = self.map.get_mut(&id).ok_or(ReadError::UnknownStream)?;
        let r = &mut s.recv;
        if r.ready.is_empty() {
            if r.finished() {
                r.fin_delivered = true;
                self.maybe_remove(id);
                return Ok(None);
            }
            return Err(ReadError::Blocked);
        }
        let n = buf.len().min(r.ready.len());
        let (a, b) = r.ready.as_slices();
        let na = n.min(a.len());
        buf[..na].copy_from_slice(&a[..na]);
        if n > na {
            buf[na..n].copy_from_slice(&b[..n - na]);
        }
        r.ready.drain(..n);
        r.read += n as u64;
        self.data_read += n as u64;
        self.bytes_read += n as u64;
        // Flow-control credit (RFC 9000 §4.2): re-advertise once half the window is used.
        if r.max_data.saturating_sub(r.read) < r.window / 2 && r.final_size.is_none() {
            r.max_data = r.read + r.window;
            r.need_update = true;
        }
        if self.max_data_local.saturating_sub(self.data_read) < self.limits.receive_window / 2 {
            self.max_data_local = self.data_read + self.limits.receive_window;
            self.need_max_data = true;
        }
        Ok(Some(n))
    }

    /// Bytes ready to read on a stream.
    pub fn readable_bytes(&self, id: StreamId) -> usize {
        self.map.get(&id).map_or(0, |s| s.recv.ready.len())
    }

    /// `true` if some stream holds data the application has not read.
    pub fn has_unread(&self) -> bool {
        self.map
            .values()
            .any(|s| !s.recv.ready.is_empty() || (s.recv.finished() && !s.recv.fin_delivered))
    }

    /// `true` once everything written on `id`, and its FIN, was acknowledged.
    pub fn send_complete(&self, id: StreamId) -> bool {
        self.map.get(&id).is_none_or(|s| s.send.complete())
    }

    /// `true` when every byte written on any stream, and every FIN sent, was acknowledged.
    pub fn all_acknowledged(&self) -> bool {
        self.map
            .values()
            .all(|s| s.send.base == s.send.end && (!s.send.fin || s.send.fin_acked))
    }

    /// Unacknowledged bytes buffered on `id`.
    pub fn send_buffered(&self, id: StreamId) -> u64 {
        self.map.get(&id).map_or(0, |s| s.send.buf.len() as u64)
    }

    /// Bytes written on `id` that have not been sent even once.
    pub fn send_unsent(&self, id: StreamId) -> u64 {
        self.map
            .get(&id)
            .map_or(0, |s| s.send.end.saturating_sub(s.send.next))
    }

    /// Open streams.
    pub fn ids(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.map.keys().copied()
    }

    fn maybe_remove(&mut self, id: StreamId) {
        if let Some(s) = self.map.get(&id)
            && s.send.complete()
            && s.recv.fin_delivered
        {
            self.map.remove(&id);
        }
    }

    /// Handles a STREAM frame from the peer.
    pub fn on_stream_frame(
        &mut self,
        id: u64,
        offset: u64,
        data: &[u8],
        fin: bool,
    ) -> Result<(), StreamError> {
        let id = StreamId(id);
        if id.0 & 2 != 0 {
            // Unidirectional ids are not used by MEF.
            return Err(StreamError::StreamLimit);
        }
        if !self.map.contains_key(&id) {
            if id.initiator() == self.side {
                if id.index() >= self.next_local {
                    return Err(StreamError::StreamLimit);
                }
                return Ok(()); // a stream we already closed: late retransmission
            }
            if id.index() < self.peer_opened {
                return Ok(()); // closed peer stream
            }
            if id.index() >= self.limits.max_peer_streams {
                return Err(StreamError::StreamLimit);
            }
            // Opening stream n implicitly opens the lower ones (RFC 9000 §2.1).
            for idx in self.peer_opened..=id.index() {
                let sid = StreamId::new(id.initiator(), idx);
                let s = self.new_stream();
                self.map.insert(sid, s);
                self.events.push_back(StreamEvent::Opened(sid));
            }
            self.peer_opened = id.index() + 1;
        }
        let conn_limit = self.max_data_local;
        let Some(s) = self.map.get_mut(&id) else {
            return Ok(());
        };
        let was_readable = !s.recv.ready.is_empty() || s.recv.finished();
        let grew = s.recv.on_frame(offset, data, fin)?;
        self.data_recvd += grew;
        if self.data_recvd > conn_limit {
            return Err(StreamError::FlowControl);
        }
        let now_readable = !s.recv.ready.is_empty() || s.recv.finished();
        if now_readable && !was_readable {
            self.events.push_back(StreamEvent::Readable(id));
        }
        Ok(())
    }

    /// Handles MAX_DATA.
    pub fn on_max_data(&mut self, max: u64) {
        if max > self.max_data_remote {
            self.max_data_remote = max;
            self.requeue_all();
        }
    }

    /// Handles MAX_STREAM_DATA.
    pub fn on_max_stream_data(&mut self, id: u64, max: u64) {
        let id = StreamId(id);
        if let Some(s) = self.map.get_mut(&id)
            && max > s.send.max_data
        {
            s.send.max_data = max;
            if !self.send_queue.contains(&id) {
                self.send_queue.push_back(id);
            }
        }
    }

    fn requeue_all(&mut self) {
        let ids: Vec<StreamId> = self
            .map
            .iter()
            .filter(|(_, s)| s.send.next < s.send.end)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if !self.send_queue.contains(&id) {
                self.send_queue.push_back(id);
            }
        }
    }

    /// A sent chunk was acknowledged.
    pub fn on_chunk_acked(&mut self, c: &StreamChunk) {
        let id = StreamId(c.id);
        let space = self.limits.send_buffer;
        if let Some(s) = self.map.get_mut(&id) {
            let before = s.send.base;
            let was_complete = s.send.complete();
            s.send.on_acked(c);
            self.bytes_acked += s.send.base - before;
            if s.send.blocked_writer && (s.send.buf.len() as u64) < space {
                s.send.blocked_writer = false;
                self.events.push_back(StreamEvent::Writable(id));
            }
            if !was_complete && s.send.complete() {
                self.events.push_back(StreamEvent::Finished(id));
                self.maybe_remove(id);
            }
        }
    }

    /// A sent chunk was lost: queue it for retransmission.
    pub fn on_chunk_lost(&mut self, c: &StreamChunk) {
        let id = StreamId(c.id);
        if let Some(s) = self.map.get_mut(&id) {
            s.send.on_lost(c);
            if !self.send_queue.contains(&id) {
                self.send_queue.push_back(id);
            }
        }
    }

    /// `true` if a STREAM frame could be sent now.
    pub fn has_sendable(&self) -> bool {
        let credit = self.max_data_remote.saturating_sub(self.data_sent);
        self.send_queue.iter().any(|id| {
            self.map.get(id).is_some_and(|s| {
                let st = &s.send;
                st.has_lost()
                    || (st.next < st.end && credit > 0 && st.next < st.max_data)
                    || (st.fin && !st.fin_sent && st.next == st.end)
            })
        })
    }

    /// `true` if any stream holds unsent or unacknowledged data (the sender is not app-limited).
    pub fn has_pending_data(&self) -> bool {
        self.map
            .values()
            .any(|s| s.send.next < s.send.end || s.send.has_lost())
    }

    /// Picks the next chunk (round robin over streams; lost data first). `budget(id, offset)`
    /// says how many payload bytes fit after a frame header for that stream and offset, or
    /// `None` if not even the header fits.
    pub fn next_chunk(&mut self, budget: impl Fn(StreamId, u64) -> Option<usize>) -> Option<Chunk> {
        let mut tries = self.send_queue.len();
        while tries > 0 {
            tries -= 1;
            let id = self.send_queue.pop_front()?;
            let credit = self.max_data_remote.saturating_sub(self.data_sent);
            let Some(s) = self.map.get_mut(&id) else {
                continue;
            };
            let st = &mut s.send;
            let mut chunk = None;
            let mut out_of_room = false;
            // Retransmissions first, skipping anything acknowledged since it was declared lost.
            while chunk.is_none() {
                let Some(r) = st.lost.pop_min(u64::MAX) else {
                    break;
                };
                let mut start = r.start.max(st.base);
                if let Some(e) = st.acked.range_end_containing(start) {
                    start = e;
                }
                if start >= r.end {
                    continue;
                }
                let Some(room) = budget(id, start).filter(|b| *b > 0) else {
                    st.lost.insert(start..r.end);
                    out_of_room = true;
                    break;
                };
                let mut end = r.end.min(start + room as u64);
                if let Some(next_acked) = st.acked.iter().find(|a| a.start > start).map(|a| a.start)
                {
                    end = end.min(next_acked);
                }
                if end < r.end {
                    st.lost.insert(end..r.end);
                }
                let fin = st.fin && end == st.end && !st.fin_acked;
                if fin {
                    st.fin_sent = true;
                }
                chunk = Some(Chunk {
                    id,
                    offset: start,
                    len: (end - start) as usize,
                    fin,
                    retransmit: true,
                });
            }
            if chunk.is_none() && !out_of_room {
                let avail = (st.end - st.next)
                    .min(credit)
                    .min(st.max_data.saturating_sub(st.next));
                let fin_possible = st.fin && !st.fin_sent;
                if avail > 0 || (fin_possible && st.next == st.end) {
                    match budget(id, st.next) {
                        Some(room) if room > 0 || avail == 0 => {
                            let len = (avail as usize).min(room);
                            let fin_ready = fin_possible && st.next + len as u64 == st.end;
                            if len > 0 || fin_ready {
                                let c = Chunk {
                                    id,
                                    offset: st.next,
                                    len,
                                    fin: fin_ready,
                                    retransmit: false,
                                };
                                st.next += len as u64;
                                self.data_sent += len as u64;
                                if fin_ready {
                                    st.fin_sent = true;
                                }
                                chunk = Some(c);
                            }
                        }
                        _ => out_of_room = true,
                    }
                }
            }
            let more = st.has_lost()
                || (st.next < st.end && st.next < st.max_data)
                || (st.fin && !st.fin_sent);
            if more {
                if out_of_room {
                    self.send_queue.push_front(id);
                    return None;
                }
                self.send_queue.push_back(id);
            }
            if chunk.is_some() {
                return chunk;
            }
        }
        None
    }

    /// Copies a chunk's bytes into `dst` (its length must equal the chunk's).
    pub fn copy_chunk(&self, c: &Chunk, dst: &mut [u8]) {
        if let Some(s) = self.map.get(&c.id) {
            s.send.copy_out(c.offset, dst);
        }
    }

    /// A pending MAX_DATA value to advertise, if any (clears the flag).
    pub fn take_max_data(&mut self) -> Option<u64> {
        if self.need_max_data {
            self.need_max_data = false;
            Some(self.max_data_local)
        } else {
            None
        }
    }

    /// Re-arm MAX_DATA after the packet carrying it was lost.
    pub fn max_data_lost(&mut self) {
        self.need_max_data = true;
    }

    /// A stream with a pending MAX_STREAM_DATA (clears its flag).
    pub fn take_max_stream_data(&mut self) -> Option<(StreamId, u64)> {
        for (id, s) in self.map.iter_mut() {
            if s.recv.need_update {
                s.recv.need_update = false;
                return Some((*id, s.recv.max_data));
            }
        }
        None
    }

    /// Re-arm MAX_STREAM_DATA for a stream after loss.
    pub fn max_stream_data_lost(&mut self, id: u64) {
        if let Some(s) = self.map.get_mut(&StreamId(id))
            && s.recv.final_size.is_none()
        {
            s.recv.need_update = true;
        }
    }

    /// `true` if MAX_DATA or MAX_STREAM_DATA is waiting to be sent.
    pub fn has_flow_updates(&self) -> bool {
        self.need_max_data || self.map.values().any(|s| s.recv.need_update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(w: u64) -> Limits {
        Limits {
            receive_window: w,
            stream_window: w,
            send_buffer: 1 << 20,
            max_peer_streams: 8,
        }
    }

    fn b1000(_: StreamId, _: u64) -> Option<usize> {
        Some(1000)
    }
    fn b400(_: StreamId, _: u64) -> Option<usize> {
        Some(400)
    }

    #[test]
    fn send_ack_lose_retransmit() {
        let mut s = Streams::new(Side::Client, limits(1000));
        s.set_peer_limits(1 << 20, 1 << 20, 4);
        let id = s.open().expect("open");
        assert_eq!(s.write(id, &[7u8; 3000]), Ok(3000));
        s.finish(id).expect("finish");
        let a = s.next_chunk(b1000).expect("a");
        let b = s.next_chunk(b1000).expect("b");
        let c = s.next_chunk(b1000).expect("c");
        assert!(c.fin && !a.fin && c.offset == 2000);
        assert!(s.next_chunk(b1000).is_none());
        let sc = |c: &Chunk| StreamChunk {
            id: c.id.0,
            offset: c.offset,
            len: c.len as u32,
            fin: c.fin,
        };
        s.on_chunk_acked(&sc(&c));
        s.on_chunk_lost(&sc(&a));
        s.on_chunk_acked(&sc(&b));
        let r = s.next_chunk(b1000).expect("retransmit");
        assert!(r.retransmit && r.offset == 0 && r.len == 1000);
        assert!(!s.send_complete(id));
        s.on_chunk_acked(&sc(&r));
        assert!(s.send_complete(id));
        assert_eq!(s.bytes_acked, 3000);
    }

    #[test]
    fn receive_reorders_and_enforces_limits() {
        let mut s = Streams::new(Side::Server, limits(100));
        s.set_peer_limits(1000, 1000, 4);
        let whole: Vec<u8> = (0..20u8).collect();
        s.on_stream_frame(0, 10, &whole[10..], true)
            .expect("late part");
        assert_eq!(s.events.pop_front(), Some(StreamEvent::Opened(StreamId(0))));
        assert!(s.events.is_empty());
        let mut buf = [0u8; 64];
        assert_eq!(s.read(StreamId(0), &mut buf), Err(ReadError::Blocked));
        s.on_stream_frame(0, 0, &whole[..12], false)
            .expect("first part, overlapping");
        assert_eq!(
            s.events.pop_front(),
            Some(StreamEvent::Readable(StreamId(0)))
        );
        assert_eq!(s.read(StreamId(0), &mut buf), Ok(Some(20)));
        assert_eq!(&buf[..20], &whole[..]);
        assert_eq!(s.read(StreamId(0), &mut buf), Ok(None));
        assert_eq!(
            s.on_stream_frame(4, 90, &[0; 20], false),
            Err(StreamError::FlowControl)
        );
        assert_eq!(
            s.on_stream_frame(1, 0, &[0; 1], false),
            Err(StreamError::StreamLimit)
        );
        assert_eq!(s.on_stream_frame(8, 5, &[0; 1], true), Ok(()));
        assert_eq!(
            s.on_stream_frame(8, 0, &[0; 10], false),
            Err(StreamError::FinalSize)
        );
    }

    #[test]
    fn flow_control_blocks_and_resumes() {
        let mut s = Streams::new(Side::Client, limits(1000));
        s.set_peer_limits(1500, 1000, 4);
        let id = s.open().expect("open");
        s.write(id, &[0; 5000]).expect("write");
        let mut sent = 0;
        while let Some(c) = s.next_chunk(b400) {
            sent += c.len;
        }
        assert_eq!(sent, 1000, "stream window");
        assert!(!s.has_sendable());
        s.on_max_stream_data(id.0, 4000);
        while let Some(c) = s.next_chunk(b400) {
            sent += c.len;
        }
        assert_eq!(sent, 1500, "connection window");
        s.on_max_data(10_000);
        while let Some(c) = s.next_chunk(b400) {
            sent += c.len;
        }
        assert_eq!(sent, 4000);
    }
}
