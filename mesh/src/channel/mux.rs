//! [`Channels`]: the per-link channel multiplexer. Opens, accepts and closes channels, packs
//! their frames into datagrams of at most [`Config::mtu`] bytes (control frames first, then
//! each channel in round-robin order: CLOSE, ACK, OPEN, DATA, UDATA), dispatches received
//! frames, and runs every channel's timers.
//!
//! Errors stay per channel: a frame that breaks a channel's protocol (DATA on an unreliable
//! channel, an ACK of segments never sent, an OPEN reusing an id with another type, …) closes
//! that channel only with [`codes::PROTOCOL`]. Frames for unknown channels are ignored (the
//! OPEN may still be on its way, or the channel closed). A datagram that does not parse is
//! dropped whole and reported by [`Channels::handle_datagram`].
//!
//! Memory is bounded by [`Config`]: channels, per-channel send and receive buffers
//! (out-of-order bytes included), queued events and control frames, and a bounded memory of
//! recently closed peer ids (older ones fall below a floor and are treated as closed).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::frame::{Frame, FrameError, MAX_REASON_LEN};
use super::reliable::{
    AckViolation, Arrival, CongestionState, Receiver, SendParams, SendStats, Sender,
};
use super::{ChannelError, ChannelEvent, ChannelId, CloseError, Config, ConfigError, Side, codes};

/// Most recently closed peer channel ids remembered.
const CLOSED_MEMORY: usize = 4096;

/// A control frame not tied to a live channel (answers to CLOSEs, refusals).
#[derive(Debug, Clone)]
struct Control {
    id: u32,
    ack: bool,
    code: u32,
    reason: String,
}

#[derive(Debug)]
enum State {
    Open,
    /// Graceful close: send everything, then CLOSE.
    Finishing {
        code: u32,
        reason: String,
    },
    /// CLOSE sent; waiting for its ack.
    Closing {
        code: u32,
        reason: String,
        retries: u32,
        next_at: Option<Instant>,
    },
}

#[derive(Debug)]
struct Chan {
    kind: String,
    reliable: bool,
    local: bool,
    state: State,
    /// The peer has the channel (we saw a frame on it, or it opened it).
    confirmed: bool,
    open_due: bool,
    open_next_at: Option<Instant>,
    open_retries: u32,
    sender: Sender,
    receiver: Receiver,
    out_msgs: VecDeque<Vec<u8>>,
    out_bytes: usize,
    read: VecDeque<Vec<u8>>,
    read_bytes: usize,
    ack_due: bool,
    ack_at: Option<Instant>,
    unacked_segments: u32,
    advertised: u32,
    write_blocked: bool,
    read_notified: bool,
    stats: ChannelStats,
}

/// Counters of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Reliable sender counters.
    pub send: SendStats,
    /// Payload bytes delivered to the application side (in order).
    pub bytes_received: u64,
    /// Duplicate reliable segments received.
    pub duplicate_segments: u64,
    /// Segments or messages dropped for lack of buffer.
    pub dropped: u64,
    /// ACK frames sent.
    pub acks_sent: u64,
}

/// Mux-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuxStats {
    /// Datagrams that failed to parse.
    pub bad_datagrams: u64,
    /// Frames for channels this side does not have.
    pub unknown_channel_frames: u64,
    /// OPENs refused (limits).
    pub refused_opens: u64,
    /// Channels closed by this side on a protocol violation.
    pub protocol_closes: u64,
    /// Control frames dropped because the queue was full.
    pub dropped_control: u64,
    /// Datagrams produced.
    pub datagrams_sent: u64,
}

/// The channels of one link (sans-IO).
#[derive(Debug)]
pub struct Channels {
    cfg: Config,
    side: Side,
    next_local: u32,
    ids_exhausted: bool,
    /// Boxed: a B-tree node holds 11 entries, so inline channels would cost 11 × their size
    /// for the first one.
    chans: BTreeMap<u32, Box<Chan>>,
    closed_peer: BTreeSet<u32>,
    closed_floor: Option<u32>,
    control: VecDeque<Control>,
    events: VecDeque<Pending>,
    rr_after: Option<u32>,
    stats: MuxStats,
}

#[derive(Debug)]
enum Pending {
    Event(ChannelEvent),
    /// Data waiting in a channel's read buffer (materialised by `poll_event`).
    DataOf(u32),
}

impl Channels {
    /// A mux for the given side of a link.
    pub fn new(side: Side, cfg: Config) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            side,
            next_local: side.parity(),
            ids_exhausted: false,
            chans: BTreeMap::new(),
            closed_peer: BTreeSet::new(),
            closed_floor: None,
            control: VecDeque::new(),
            events: VecDeque::new(),
            rr_after: None,
            stats: MuxStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Mux-wide counters.
    pub fn stats(&self) -> MuxStats {
        self.stats
    }

    /// The congestion state of a reliable channel's sender (for instrumentation).
    pub fn congestion(&self, id: ChannelId) -> Option<CongestionState> {
        self.chans
            .get(&id.0)
            .filter(|c| c.reliable)
            .map(|c| c.sender.congestion())
    }

    /// Counters of one channel.
    pub fn channel_stats(&self, id: ChannelId) -> Option<ChannelStats> {
        self.chans.get(&id.0).map(|c| ChannelStats {
            send: c.sender.stats,
            ..c.stats
        })
    }

    /// Channels held (open, finishing or closing).
    pub fn channel_count(&self) -> usize {
        self.chans.len()
    }

    /// The channel exists and accepts sends.
    pub fn is_open(&self, id: ChannelId) -> bool {
        matches!(self.chans.get(&id.0), Some(c) if matches!(c.state, State::Open))
    }

    /// Total bytes buffered in all channels (send, receive, out of order).
    pub fn buffered_bytes(&self) -> usize {
        self.chans
            .values()
            .map(|c| c.sender.buffered() + c.out_bytes + c.read_bytes + c.receiver.ooo_bytes())
            .sum()
    }

    /// Free space in a channel's send buffer.
    pub fn send_capacity(&self, id: ChannelId) -> Option<usize> {
        let c = self.chans.get(&id.0)?;
        Some(
            self.cfg
                .max_send_buffer
                .saturating_sub(c.sender.buffered() + c.out_bytes),
        )
    }

    /// Everything written to a reliable channel has been acknowledged.
    pub fn is_flushed(&self, id: ChannelId) -> bool {
        self.chans
            .get(&id.0)
            .is_some_and(|c| c.sender.is_idle() && c.out_msgs.is_empty())
    }

    fn new_chan(&self, kind: &str, reliable: bool, local: bool) -> Chan {
        let p = SendParams {
            initial_rto: self.cfg.initial_rto,
            min_rto: self.cfg.min_rto,
            max_rto: self.cfg.max_rto,
            initial_cwnd: self.cfg.initial_cwnd,
            max_cwnd: self.cfg.max_cwnd,
            mss: self.cfg.segment_size(),
            pacing: self.cfg.pacing,
        };
        // Until the peer advertises, assume a window of the initial congestion window.
        let initial_window = (self.cfg.initial_cwnd as usize * self.cfg.segment_size())
            .min(u32::MAX as usize) as u32;
        Chan {
            kind: kind.to_owned(),
            reliable,
            local,
            state: State::Open,
            confirmed: !local,
            open_due: local,
            open_next_at: None,
            open_retries: 0,
            sender: Sender::new(p, initial_window),
            receiver: Receiver::default(),
            out_msgs: VecDeque::new(),
            out_bytes: 0,
            read: VecDeque::new(),
            read_bytes: 0,
            ack_due: !local,
            ack_at: None,
            unacked_segments: 0,
            advertised: 0,
            write_blocked: false,
            read_notified: false,
            stats: ChannelStats::default(),
        }
    }

    /// Opens a channel of type `kind` (1..=32 bytes).
    pub fn open(&mut self, kind: &str, reliable: bool) -> Result<ChannelId, ChannelError> {
        if kind.is_empty() || kind.len() > super::frame::MAX_KIND_LEN {
            return Err(ChannelError::InvalidKind);
        }
        if self.chans.len() >= self.cfg.max_channels {
            return Err(ChannelError::TooManyChannels);
        }
        if self.ids_exhausted {
            return Err(ChannelError::IdsExhausted);
        }
        let id = self.next_local;
        match self.next_local.checked_add(2) {
            Some(n) => self.next_local = n,
            None => self.ids_exhausted = true,
        }
        let chan = self.new_chan(kind, reliable, true);
        self.chans.insert(id, Box::new(chan));
        tracing::debug!(id, kind, reliable, "channel opened");
        Ok(ChannelId(id))
    }

    /// Queues bytes on a channel: appended to the stream of a reliable channel, one message on
    /// an unreliable one. All or nothing: [`ChannelError::WouldBlock`] when the send buffer
    /// cannot take them now.
    pub fn send(&mut self, id: ChannelId, data: &[u8]) -> Result<(), ChannelError> {
        let max_buf = self.cfg.max_send_buffer;
        let seg = self.cfg.segment_size();
        let max_msg = self.cfg.max_unreliable_len();
        let c = self
            .chans
            .get_mut(&id.0)
            .ok_or(ChannelError::UnknownChannel(id))?;
        if !matches!(c.state, State::Open) {
            return Err(ChannelError::Closing(id));
        }
        if c.reliable {
            if data.len() > max_buf {
                return Err(ChannelError::TooLarge {
                    len: data.len(),
                    max: max_buf,
                });
            }
            if c.sender.buffered() + data.len() > max_buf {
                c.write_blocked = true;
                return Err(ChannelError::WouldBlock);
            }
            if !c.sender.write(data, seg) {
                return Err(ChannelError::IdsExhausted);
            }
        } else {
            if data.len() > max_msg {
                return Err(ChannelError::TooLarge {
                    len: data.len(),
                    max: max_msg,
                });
            }
            if c.out_bytes + data.len() > max_buf {
                c.write_blocked = true;
                return Err(ChannelError::WouldBlock);
            }
            c.out_bytes += data.len();
            c.out_msgs.push_back(data.to_vec());
        }
        Ok(())
    }

    /// Takes up to `max` received bytes (a reliable channel's stream, or whole unreliable
    /// messages concatenated while they fit; at least one message even if larger).
    pub fn recv(&mut self, id: ChannelId, max: usize) -> Result<Vec<u8>, ChannelError> {
        let c = self
            .chans
            .get_mut(&id.0)
            .ok_or(ChannelError::UnknownChannel(id))?;
        let mut out = Vec::new();
        while let Some(front) = c.read.front_mut() {
            let room = max.saturating_sub(out.len());
            if front.len() <= room {
                out.extend_from_slice(front);
                c.read.pop_front();
            } else if c.reliable && room > 0 {
                out.extend_from_slice(&front[..room]);
                front.drain(..room);
            } else {
                if out.is_empty()
                    && !c.reliable
                    && let Some(m) = c.read.pop_front()
                {
                    out = m;
                }
                break;
            }
        }
        c.read_bytes -= out.len().min(c.read_bytes);
        if c.read.is_empty() {
            c.read_bytes = 0;
            c.read_notified = false;
        }
        Self::window_update(&self.cfg, c);
        Ok(out)
    }

    /// Schedules an ACK if reading reopened the window noticeably.
    fn window_update(cfg: &Config, c: &mut Chan) {
        if !c.reliable {
            return;
        }
        let window = Self::window(cfg, c);
        // Receiver-side silly window avoidance (RFC 1122 §4.2.3.3): announce a window that
        // grew by a quarter of the buffer or four segments, whichever is smaller.
        let step = (cfg.max_recv_buffer / 4).min(4 * cfg.segment_size()).max(1) as u32;
        if window >= c.advertised.saturating_add(step) {
            c.ack_due = true;
        }
    }

    fn window(cfg: &Config, c: &Chan) -> u32 {
        cfg.max_recv_buffer
            .saturating_sub(c.read_bytes)
            .min(u32::MAX as usize) as u32
    }

    /// Closes a channel with an error code and a reason (≤ 64 bytes). [`codes::NORMAL`] on a
    /// reliable channel sends everything already written first; any other code discards it.
    pub fn close(&mut self, id: ChannelId, code: u32, reason: &str) -> Result<(), ChannelError> {
        if reason.len() > MAX_REASON_LEN {
            return Err(ChannelError::ReasonTooLong);
        }
        let c = self
            .chans
            .get_mut(&id.0)
            .ok_or(ChannelError::UnknownChannel(id))?;
        if !matches!(c.state, State::Open) {
            return Err(ChannelError::Closing(id));
        }
        if code == codes::NORMAL && c.reliable && !c.sender.is_idle() {
            c.state = State::Finishing {
                code,
                reason: reason.to_owned(),
            };
        } else {
            Self::start_closing(c, code, reason.to_owned());
        }
        Ok(())
    }

    fn start_closing(c: &mut Chan, code: u32, reason: String) {
        c.state = State::Closing {
            code,
            reason,
            retries: 0,
            next_at: None,
        };
        c.out_msgs.clear();
        c.out_bytes = 0;
    }

    /// Closes a channel after a protocol violation by the peer and reports it.
    fn violation(&mut self, id: u32, reason: &str) {
        let Some(c) = self.chans.get_mut(&id) else {
            return;
        };
        if matches!(c.state, State::Closing { .. }) {
            return;
        }
        tracing::debug!(id, reason, "channel protocol violation");
        self.stats.protocol_closes += 1;
        Self::start_closing(c, codes::PROTOCOL, reason.to_owned());
        self.flush_data_event(id);
        self.push_event(ChannelEvent::Closed {
            id: ChannelId(id),
            error: CloseError {
                code: codes::PROTOCOL,
                reason: reason.to_owned(),
                by_peer: false,
            },
        });
    }

    fn push_event(&mut self, e: ChannelEvent) {
        if self.events.len() < self.cfg.max_queued * 2 {
            self.events.push_back(Pending::Event(e));
        } else {
            tracing::warn!("channel event queue full; event dropped");
        }
    }

    fn push_control(&mut self, ctl: Control) {
        if self.control.len() < self.cfg.max_queued {
            self.control.push_back(ctl);
        } else {
            self.stats.dropped_control += 1;
        }
    }

    /// Turns a channel's unread bytes into a `Data` event now (before it disappears).
    fn flush_data_event(&mut self, id: u32) {
        if !self.cfg.data_events {
            return;
        }
        let Some(c) = self.chans.get_mut(&id) else {
            return;
        };
        if c.read.is_empty() {
            return;
        }
        let bytes = Self::take_all(c);
        self.events.push_back(Pending::Event(ChannelEvent::Data {
            id: ChannelId(id),
            bytes,
        }));
    }

    fn take_all(c: &mut Chan) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(c.read_bytes);
        for m in c.read.drain(..) {
            bytes.extend_from_slice(&m);
        }
        c.read_bytes = 0;
        c.read_notified = false;
        bytes
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ChannelEvent> {
        while let Some(p) = self.events.pop_front() {
            match p {
                Pending::Event(e) => return Some(e),
                Pending::DataOf(id) => {
                    let Some(c) = self.chans.get_mut(&id) else {
                        continue;
                    };
                    if c.read.is_empty() {
                        c.read_notified = false;
                        continue;
                    }
                    let bytes = if c.reliable {
                        Self::take_all(c)
                    } else {
                        // One message per event; re-queue the marker for the rest.
                        let m = c.read.pop_front().unwrap_or_default();
                        c.read_bytes -= m.len().min(c.read_bytes);
                        if c.read.is_empty() {
                            c.read_notified = false;
                        } else {
                            self.events.push_front(Pending::DataOf(id));
                        }
                        m
                    };
                    Self::window_update(&self.cfg, c);
                    return Some(ChannelEvent::Data {
                        id: ChannelId(id),
                        bytes,
                    });
                }
            }
        }
        None
    }

    fn note_readable(&mut self, id: u32) {
        let Some(c) = self.chans.get_mut(&id) else {
            return;
        };
        if c.read_notified || c.read.is_empty() {
            return;
        }
        c.read_notified = true;
        if self.cfg.data_events {
            self.events.push_back(Pending::DataOf(id));
        } else {
            self.events
                .push_back(Pending::Event(ChannelEvent::Readable { id: ChannelId(id) }));
        }
    }

    fn is_peer_id(&self, id: u32) -> bool {
        id & 1 != self.side.parity()
    }

    /// The peer once had this (peer-opened) channel and it is gone now.
    fn peer_closed(&self, id: u32) -> bool {
        self.closed_peer.contains(&id) || self.closed_floor.is_some_and(|f| id <= f)
    }

    fn forget(&mut self, id: u32) {
        self.chans.remove(&id);
        if self.is_peer_id(id) {
            self.closed_peer.insert(id);
            while self.closed_peer.len() > CLOSED_MEMORY {
                if let Some(low) = self.closed_peer.pop_first() {
                    self.closed_floor = Some(self.closed_floor.map_or(low, |f| f.max(low)));
                }
            }
        }
        if self.rr_after == Some(id) {
            self.rr_after = None;
        }
    }

    /// Processes one received plaintext datagram. A datagram that does not parse is dropped
    /// whole (and the error returned); frame-level problems close only their channel.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Result<(), FrameError> {
        let frames = match Frame::parse_all(datagram) {
            Ok(f) => f,
            Err(e) => {
                self.stats.bad_datagrams += 1;
                return Err(e);
            }
        };
        for f in frames {
            self.handle_frame(now, f);
        }
        Ok(())
    }

    fn handle_frame(&mut self, now: Instant, f: Frame<'_>) {
        let id = f.channel();
        if let Frame::Close {
            ack, code, reason, ..
        } = f
        {
            self.handle_close(id, ack, code, reason);
            return;
        }
        if let Frame::Open { kind, reliable, .. } = f {
            self.handle_open(id, kind, reliable);
            return;
        }
        let cfg = &self.cfg;
        let Some(c) = self.chans.get_mut(&id) else {
            self.stats.unknown_channel_frames += 1;
            return;
        };
        if matches!(c.state, State::Closing { .. }) {
            return;
        }
        c.confirmed = true;
        match f {
            Frame::Data { seq, payload, .. } => {
                if !c.reliable {
                    return self.violation(id, "DATA on an unreliable channel");
                }
                let room = cfg.max_recv_buffer.saturating_sub(c.read_bytes);
                let mut delivered = Vec::new();
                let arrival = c.receiver.on_data(
                    seq,
                    payload,
                    room,
                    cfg.max_out_of_order_segments,
                    &mut delivered,
                );
                for d in delivered {
                    c.read_bytes += d.len();
                    c.stats.bytes_received += d.len() as u64;
                    c.read.push_back(d);
                }
                match arrival {
                    Arrival::InOrder { filled_hole: false } => {
                        c.unacked_segments += 1;
                        if c.unacked_segments >= 2 {
                            c.ack_due = true;
                        } else if c.ack_at.is_none() {
                            c.ack_at = Some(now + cfg.ack_delay);
                        }
                    }
                    Arrival::InOrder { filled_hole: true } | Arrival::OutOfOrder => {
                        c.ack_due = true
                    }
                    Arrival::Duplicate => {
                        c.stats.duplicate_segments += 1;
                        c.ack_due = true;
                    }
                    Arrival::Dropped => {
                        c.stats.dropped += 1;
                        c.ack_due = true;
                    }
                }
                self.note_readable(id);
            }
            Frame::UnreliableData { payload, .. } => {
                if c.reliable {
                    return self.violation(id, "UDATA on a reliable channel");
                }
                if c.read_bytes + payload.len() > cfg.max_recv_buffer {
                    c.stats.dropped += 1;
                    return;
                }
                c.read_bytes += payload.len();
                c.stats.bytes_received += payload.len() as u64;
                c.read.push_back(payload.to_vec());
                self.note_readable(id);
            }
            Frame::Ack {
                cum, window, sacks, ..
            } => {
                if !c.reliable {
                    return; // Only confirms the OPEN.
                }
                match c.sender.on_ack(now, cum, window, &sacks) {
                    Ok(freed) => {
                        if freed > 0 && c.write_blocked {
                            c.write_blocked = false;
                            self.push_event(ChannelEvent::Writable { id: ChannelId(id) });
                        }
                    }
                    Err(AckViolation::AckBeyondSent) => {
                        self.violation(id, "ACK of segments never sent");
                    }
                }
            }
            Frame::Open { .. } | Frame::Close { .. } => {}
        }
    }

    fn handle_open(&mut self, id: u32, kind: &str, reliable: bool) {
        if let Some(c) = self.chans.get_mut(&id) {
            if c.kind != kind || c.reliable != reliable || c.local {
                self.violation(id, "conflicting OPEN");
            } else {
                c.ack_due = true; // Our answer was lost: confirm again.
            }
            return;
        }
        if !self.is_peer_id(id) {
            self.stats.unknown_channel_frames += 1;
            return;
        }
        if self.peer_closed(id) {
            return; // A late copy of the OPEN of a channel already closed.
        }
        if self.chans.len() >= self.cfg.max_channels || self.events.len() >= self.cfg.max_queued {
            self.stats.refused_opens += 1;
            self.push_control(Control {
                id,
                ack: false,
                code: codes::REFUSED,
                reason: "too many channels".to_owned(),
            });
            return;
        }
        let chan = self.new_chan(kind, reliable, false);
        self.chans.insert(id, Box::new(chan));
        self.push_event(ChannelEvent::Opened {
            id: ChannelId(id),
            kind: kind.to_owned(),
            reliable,
        });
    }

    fn handle_close(&mut self, id: u32, ack: bool, code: u32, reason: &str) {
        let known_gone = if self.is_peer_id(id) {
            self.peer_closed(id)
        } else {
            id < self.next_local || self.ids_exhausted
        };
        match self.chans.get_mut(&id) {
            Some(c) if matches!(c.state, State::Closing { .. }) => {
                // Our CLOSE is answered (or both closed at once).
                if !ack {
                    self.push_control(Control {
                        id,
                        ack: true,
                        code,
                        reason: String::new(),
                    });
                }
                self.forget(id);
            }
            Some(_) => {
                if !ack {
                    self.push_control(Control {
                        id,
                        ack: true,
                        code,
                        reason: String::new(),
                    });
                }
                self.flush_data_event(id);
                self.forget(id);
                self.push_event(ChannelEvent::Closed {
                    id: ChannelId(id),
                    error: CloseError {
                        code,
                        reason: reason.to_owned(),
                        by_peer: true,
                    },
                });
            }
            None => {
                if !ack && known_gone {
                    self.push_control(Control {
                        id,
                        ack: true,
                        code,
                        reason: String::new(),
                    });
                } else {
                    self.stats.unknown_channel_frames += 1;
                }
            }
        }
    }

    /// Runs expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut give_up = Vec::new();
        for (&id, c) in self.chans.iter_mut() {
            if c.ack_at.is_some_and(|t| t <= now) {
                c.ack_due = true;
            }
            if !c.confirmed && c.open_next_at.is_some_and(|t| t <= now) {
                c.open_due = true;
            }
            if let State::Closing {
                retries, next_at, ..
            } = &mut c.state
                && next_at.is_some_and(|t| t <= now)
            {
                if *retries >= self.cfg.max_close_retries {
                    give_up.push(id);
                } else {
                    *next_at = None; // Due: sent by poll_transmit.
                }
                continue;
            }
            if c.reliable {
                c.sender.on_timeout(now);
            }
        }
        for id in give_up {
            self.forget(id);
        }
    }

    /// The earliest deadline of any channel.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut best: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        for c in self.chans.values() {
            if let State::Closing { next_at, .. } = &c.state {
                consider(*next_at);
                continue;
            }
            consider(c.ack_at);
            if !c.confirmed {
                consider(c.open_next_at);
            }
            if c.reliable {
                consider(c.sender.deadline());
            }
        }
        best
    }

    /// The next datagram to send (at most [`Config::mtu`] bytes), if anything is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let mtu = self.cfg.mtu;
        let mut buf = Vec::with_capacity(mtu);
        while let Some(ctl) = self.control.front() {
            let f = Frame::Close {
                id: ctl.id,
                ack: ctl.ack,
                code: ctl.code,
                reason: &ctl.reason,
            };
            if buf.len() + f.len() > mtu {
                break;
            }
            if f.emit(&mut buf).is_err() {
                tracing::warn!("unencodable control frame dropped");
            }
            self.control.pop_front();
        }
        // Round robin: start after the channel that last sent data.
        let start = self.rr_after.map_or(0, |r| r.wrapping_add(1));
        let ids: Vec<u32> = self
            .chans
            .range(start..)
            .chain(self.chans.range(..start))
            .map(|(&id, _)| id)
            .collect();
        let mut finished = Vec::new();
        for id in ids {
            let Some(c) = self.chans.get_mut(&id) else {
                continue;
            };
            let (sent_data, done) = Self::write_channel(&self.cfg, now, id, c, &mut buf);
            if sent_data
                && !c.reliable
                && c.write_blocked
                && c.out_bytes <= self.cfg.max_send_buffer / 2
            {
                c.write_blocked = false;
                self.push_event(ChannelEvent::Writable { id: ChannelId(id) });
            }
            if sent_data {
                self.rr_after = Some(id);
            }
            if done {
                finished.push(id);
            }
            if buf.len() + 16 > mtu {
                break;
            }
        }
        for id in finished {
            self.forget(id);
        }
        if buf.is_empty() {
            None
        } else {
            self.stats.datagrams_sent += 1;
            Some(buf)
        }
    }

    /// Writes a channel's due frames into `buf`; returns (wrote data, channel can be forgotten).
    fn write_channel(
        cfg: &Config,
        now: Instant,
        id: u32,
        c: &mut Chan,
        buf: &mut Vec<u8>,
    ) -> (bool, bool) {
        let mtu = cfg.mtu;
        let rto = c.sender.rto();
        if matches!(c.state, State::Finishing { .. })
            && c.sender.is_idle()
            && let State::Finishing { code, reason } = std::mem::replace(&mut c.state, State::Open)
        {
            Self::start_closing(c, code, reason);
        }
        if let State::Closing {
            code,
            reason,
            retries,
            next_at,
        } = &mut c.state
        {
            if next_at.is_none() {
                if c.local && !c.confirmed {
                    // The peer may not know the channel yet: name it before closing it.
                    let open = Frame::Open {
                        id,
                        kind: &c.kind,
                        reliable: c.reliable,
                    };
                    let close_len = 11 + reason.len();
                    if buf.len() + open.len() + close_len > mtu || open.emit(buf).is_err() {
                        return (false, false);
                    }
                }
                let f = Frame::Close {
                    id,
                    ack: false,
                    code: *code,
                    reason,
                };
                if buf.len() + f.len() <= mtu && f.emit(buf).is_ok() {
                    let backoff = rto.saturating_mul(1u32 << (*retries).min(16));
                    *next_at = Some(now + backoff.min(cfg.max_rto));
                    *retries += 1;
                }
            }
            return (false, false);
        }
        // ACK.
        if c.reliable && (c.ack_due || (c.unacked_segments > 0 && !buf.is_empty())) {
            let sacks = c.receiver.sack_ranges(cfg.max_sack_ranges);
            let window = Self::window(cfg, c);
            let f = Frame::Ack {
                id,
                cum: c.receiver.cum(),
                window,
                sacks,
            };
            if buf.len() + f.len() <= mtu && f.emit(buf).is_ok() {
                c.ack_due = false;
                c.ack_at = None;
                c.unacked_segments = 0;
                c.advertised = window;
                c.stats.acks_sent += 1;
            }
        } else if !c.reliable && c.ack_due {
            let f = Frame::Ack {
                id,
                cum: 0,
                window: 0,
                sacks: Vec::new(),
            };
            if buf.len() + f.len() <= mtu && f.emit(buf).is_ok() {
                c.ack_due = false;
                c.stats.acks_sent += 1;
            }
        }
        // OPEN, when due or in front of this channel's first data in the datagram.
        let mut open_written = false;
        let write_open = |c: &mut Chan, buf: &mut Vec<u8>, written: &mut bool| -> bool {
            if *written {
                return true;
            }
            let f = Frame::Open {
                id,
                kind: &c.kind,
                reliable: c.reliable,
            };
            if buf.len() + f.len() <= mtu && f.emit(buf).is_ok() {
                *written = true;
                c.open_due = false;
                c.open_next_at = Some(
                    now + rto
                        .saturating_mul(1u32 << c.open_retries.min(16))
                        .min(cfg.max_rto),
                );
                c.open_retries += 1;
                true
            } else {
                false
            }
        };
        if c.local && !c.confirmed && c.open_due && !write_open(c, buf, &mut open_written) {
            return (false, false);
        }
        let mut sent_data = false;
        if c.reliable {
            loop {
                let room = mtu.saturating_sub(buf.len() + super::frame::DATA_HEADER_LEN);
                if room == 0 || !c.sender.wants_to_send(now) {
                    break;
                }
                if c.local && !c.confirmed {
                    let need = super::frame::MAX_OPEN_LEN;
                    if !open_written && room < need {
                        break;
                    }
                    if !write_open(c, buf, &mut open_written) {
                        break;
                    }
                }
                let room = mtu.saturating_sub(buf.len() + super::frame::DATA_HEADER_LEN);
                let Some((seq, data)) = c.sender.next_segment(now, room) else {
                    break;
                };
                let f = Frame::Data {
                    id,
                    seq,
                    payload: data,
                };
                if f.emit(buf).is_err() {
                    break;
                }
                sent_data = true;
            }
        } else {
            while let Some(m) = c.out_msgs.front() {
                if buf.len() + super::frame::UDATA_HEADER_LEN + m.len() > mtu {
                    break;
                }
                if c.local && !c.confirmed && !write_open(c, buf, &mut open_written) {
                    break;
                }
                let Some(m) = c.out_msgs.pop_front() else {
                    break;
                };
                let f = Frame::UnreliableData { id, payload: &m };
                if buf.len() + f.len() > mtu {
                    c.out_msgs.push_front(m);
                    break;
                }
                if f.emit(buf).is_ok() {
                    c.out_bytes -= m.len().min(c.out_bytes);
                    sent_data = true;
                }
            }
        }
        (sent_data, false)
    }
}
