//! One MEF connection: a sans-IO state machine (quinn-proto's shape).
//!
//! Methods fall into four groups, as in quinn-proto's `Connection`:
//! * getters: [`Connection::stats`], [`Connection::side`], [`Connection::remote`], ...
//! * inputs: `handle_*` (called by the [`crate::Endpoint`]), with `now` passed in;
//! * application commands: [`Connection::open_stream`], [`Connection::write`],
//!   [`Connection::read`], [`Connection::finish`], [`Connection::close`];
//! * outputs: `poll_transmit`, `poll_timeout` and events, drained by the endpoint.
//!
//! Nothing here reads a clock, opens a socket or spawns a thread.

pub(crate) mod recv;
mod send;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::config::Config;
use crate::crypto::{self, Handshake, PacketKey, ReplayWindow, StaticKeypair};
use crate::rangeset::RangeSet;
use crate::rate::{RateController, RateMode, RateParams};
use crate::recovery::{AckOutcome, Recovery};
use crate::streams::{Limits, ReadError, Side, StreamEvent, StreamId, Streams, WriteError};
use crate::wire::frame::MAX_REASON_LEN;
use crate::wire::handshake::TransportParams;
use crate::wire::header::{UNLIMITED_KBPS, bps_to_kbps};

/// Identifies a connection within its [`crate::Endpoint`]. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub u64);

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it with this code.
    Local {
        /// Error code given to [`Connection::close`].
        code: u64,
    },
    /// The peer sent CLOSE.
    Remote {
        /// The peer's error code.
        code: u64,
        /// The peer's reason text (lossy UTF-8).
        reason: String,
    },
    /// No authenticated packet for the idle timeout (RFC 9000 §10.1).
    IdleTimeout,
    /// The handshake did not complete in time (wrong server key, unreachable server, ...).
    HandshakeTimeout,
    /// The peer broke the protocol (bad frame, flow-control violation).
    ProtocolViolation(String),
}

impl core::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Local { code } => write!(f, "closed locally (code {code})"),
            Self::Remote { code, reason } => write!(f, "closed by peer (code {code}: {reason})"),
            Self::IdleTimeout => f.write_str("idle timeout"),
            Self::HandshakeTimeout => f.write_str("handshake timeout"),
            Self::ProtocolViolation(r) => write!(f, "protocol violation: {r}"),
        }
    }
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client connection completed its handshake.
    Connected(ConnectionHandle),
    /// A server accepted a new connection (after verifying the client's Noise message).
    Accepted(ConnectionHandle),
    /// The peer opened a stream.
    StreamOpened {
        /// Connection.
        conn: ConnectionHandle,
        /// The new stream.
        stream: StreamId,
    },
    /// Data or the end of a stream can be read (edge-triggered: read until `Blocked`).
    StreamReadable {
        /// Connection.
        conn: ConnectionHandle,
        /// Stream.
        stream: StreamId,
    },
    /// A stream whose `write` was short can accept more data.
    StreamWritable {
        /// Connection.
        conn: ConnectionHandle,
        /// Stream.
        stream: StreamId,
    },
    /// Everything written to the stream, and its FIN, was acknowledged by the peer.
    StreamFinished {
        /// Connection.
        conn: ConnectionHandle,
        /// Stream.
        stream: StreamId,
    },
    /// The connection ended. Data already received can still be read until it is released.
    Closed {
        /// Connection.
        conn: ConnectionHandle,
        /// Why.
        reason: CloseReason,
    },
}

/// Per-connection statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionStats {
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP payload bytes received (authenticated packets).
    pub bytes_received: u64,
    /// Stream bytes sent for the first time.
    pub stream_bytes_sent: u64,
    /// Stream bytes acknowledged by the peer (contiguous, i.e. delivered).
    pub bytes_acked: u64,
    /// Stream bytes sent again after loss or on a probe.
    pub bytes_retransmitted: u64,
    /// Stream bytes the application read.
    pub bytes_read: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Authenticated packets received.
    pub packets_received: u64,
    /// Packets declared lost (RFC 9002 §6.1).
    pub packets_lost: u64,
    /// Packets that carried retransmitted stream data.
    pub packets_retransmitted: u64,
    /// Probe timeouts (RFC 9002 §6.2).
    pub pto_count: u64,
    /// Duplicated or replayed packets dropped by the anti-replay window.
    pub replays_dropped: u64,
    /// Packets that failed authentication (corrupted or forged) and were dropped.
    pub decrypt_failures: u64,
    /// Smoothed RTT.
    pub srtt: Duration,
    /// Minimum RTT.
    pub min_rtt: Duration,
    /// RTT variation.
    pub rttvar: Duration,
    /// Current pacing rate, bit/s (on-wire bytes including IP/UDP headers).
    pub rate_bps: u64,
    /// Which controller sets the rate.
    pub mode: RateMode,
    /// The latest rate echo received from the peer, kbit/s.
    pub last_echo_kbps: Option<u32>,
    /// Fallback congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub bytes_in_flight: u64,
}

#[derive(Debug)]
enum State {
    /// Client waiting for the Handshake reply.
    Handshaking,
    /// Keys established (a server is here from its first reply on).
    Established,
    /// We sent CLOSE; resend it on incoming packets until the deadline (RFC 9000 §10.2.1).
    Closing { until: Instant },
    /// The peer sent CLOSE; stay silent until the deadline (RFC 9000 §10.2.2).
    Draining { until: Instant },
    /// Finished; the endpoint may forget the connection.
    Drained,
}

#[derive(Debug)]
struct ClientHandshake {
    noise: Handshake,
    /// The Noise message 1, re-sent verbatim on retransmission.
    msg1: Vec<u8>,
    pending: bool,
    last_sent: Option<Instant>,
    retransmit_at: Option<Instant>,
    attempts: u32,
    deadline: Instant,
}

#[derive(Debug)]
struct ServerHandshake {
    /// The whole Handshake packet, re-sent verbatim for duplicate Initials and on PTO.
    reply: Vec<u8>,
    pending: bool,
    deadline: Instant,
}

#[derive(Debug)]
struct Keys {
    send: PacketKey,
    recv: PacketKey,
}

/// Receiver-side acknowledgement state (RFC 9000 §13.2).
#[derive(Debug, Default)]
struct AckState {
    ranges: RangeSet,
    largest: Option<(u64, Instant)>,
    unacked_eliciting: u32,
    /// Something was received since the last ACK we sent.
    unacked_any: bool,
    immediate: bool,
    deadline: Option<Instant>,
    /// Stamp on the newest packet received (clamped to its demand), `None` if unstamped.
    latest_stamp: Option<u32>,
    latest_stamp_pn: Option<u64>,
}

/// The peer's transport parameters, once known.
#[derive(Debug, Clone, Copy)]
struct PeerParams {
    max_ack_delay: Duration,
    idle_timeout: Duration,
    demand_kbps: u32,
}

/// Measures the sending rate so an application-limited sender can advertise its real need.
#[derive(Debug, Default)]
struct AppMeter {
    start: Option<Instant>,
    bytes: u64,
    rate_bps: u64,
}

/// Floor of the demand an application-limited sender advertises (1 Mbit/s): enough for its
/// ACKs and small messages, so a policing router never starves the control traffic.
const APP_LIMITED_FLOOR_BPS: u64 = 1_000_000;

/// A MEF connection.
#[derive(Debug)]
pub struct Connection {
    handle: ConnectionHandle,
    side: Side,
    config: Arc<Config>,
    state: State,
    local_cid: u64,
    remote_cid: u64,
    remote: SocketAddr,
    remote_static: Option<[u8; 32]>,
    client_hs: Option<ClientHandshake>,
    server_hs: Option<ServerHandshake>,
    keys: Option<Keys>,
    replay: ReplayWindow,
    next_pn: u64,
    recovery: Recovery,
    rate: RateController,
    ack: AckState,
    streams: Streams,
    peer: PeerParams,
    mtu: usize,
    idle_deadline: Option<Instant>,
    sent_eliciting_since_recv: bool,
    close_frame: Option<(u64, Vec<u8>)>,
    close_pending: bool,
    events: VecDeque<Event>,
    stats: ConnectionStats,
    scratch: Vec<u8>,
    ack_outcome: AckOutcome,
    ack_ranges_buf: Vec<(u64, u64)>,
    largest_ack_processed: Option<u64>,
    probes: u32,
    ping_pending: bool,
    next_pacing: Option<Instant>,
    meter: AppMeter,
    wire_overhead: usize,
    handshake_done_emitted: bool,
    established_at: Option<Instant>,
}

/// Why a connection could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The Noise handshake could not be set up or the peer's message was invalid.
    #[error("handshake failed: {0}")]
    Handshake(#[from] crypto::CryptoError),
    /// The Initial's handshake payload was malformed.
    #[error("bad handshake payload: {0}")]
    Params(#[from] crate::wire::handshake::ParamsError),
    /// The header and the authenticated payload disagree on the connection id.
    #[error("connection id mismatch in Initial")]
    CidMismatch,
}

impl Connection {
    fn base(
        handle: ConnectionHandle,
        side: Side,
        config: Arc<Config>,
        local_cid: u64,
        remote: SocketAddr,
    ) -> Self {
        let mtu = config.max_udp_payload;
        let rate = RateController::new(RateParams {
            mss: mtu as u64,
            demand_bps: config.demand_bps.unwrap_or(u64::MAX),
            fixed_bps: config.ignore_rate.then_some(config.fixed_rate_bps),
            cap_rtts: config.inflight_cap_rtts,
            cap_min_packets: config.inflight_cap_min_packets,
            burst: config.pacing_burst,
            initial_window_packets: config.initial_window_packets,
        });
        let streams = Streams::new(
            side,
            Limits {
                receive_window: config.receive_window,
                stream_window: config.stream_receive_window,
                send_buffer: config.send_buffer,
                max_peer_streams: config.max_concurrent_streams,
            },
        );
        let wire_overhead = if remote.is_ipv4() { 28 } else { 48 };
        Self {
            handle,
            side,
            recovery: Recovery::new(config.initial_rtt),
            peer: PeerParams {
                max_ack_delay: config.max_ack_delay,
                idle_timeout: config.idle_timeout,
                demand_kbps: UNLIMITED_KBPS,
            },
            config,
            state: State::Handshaking,
            local_cid,
            remote_cid: 0,
            remote,
            remote_static: None,
            client_hs: None,
            server_hs: None,
            keys: None,
            replay: ReplayWindow::new(),
            next_pn: 0,
            rate,
            ack: AckState::default(),
            streams,
            mtu,
            idle_deadline: None,
            sent_eliciting_since_recv: false,
            close_frame: None,
            close_pending: false,
            events: VecDeque::new(),
            stats: ConnectionStats::default(),
            scratch: Vec::with_capacity(mtu),
            ack_outcome: AckOutcome::default(),
            ack_ranges_buf: Vec::new(),
            largest_ack_processed: None,
            probes: 0,
            ping_pending: false,
            next_pacing: None,
            meter: AppMeter::default(),
            wire_overhead,
            handshake_done_emitted: false,
            established_at: None,
        }
    }

    fn local_params(&self, initial_stamp: Option<u32>) -> TransportParams {
        TransportParams {
            cid: self.local_cid,
            demand_kbps: self.configured_demand_kbps(),
            max_data: self.config.receive_window,
            max_stream_data: self.config.stream_receive_window,
            max_streams: self.config.max_concurrent_streams,
            idle_timeout_ms: self.config.idle_timeout.as_millis() as u64,
            max_ack_delay_us: self.config.max_ack_delay.as_micros() as u64,
            max_udp_payload: self.config.max_udp_payload as u64,
            initial_stamp_kbps: initial_stamp,
        }
    }

    fn apply_peer_params(&mut self, p: &TransportParams) {
        self.remote_cid = p.cid;
        self.peer = PeerParams {
            max_ack_delay: Duration::from_micros(p.max_ack_delay_us),
            idle_timeout: Duration::from_millis(p.idle_timeout_ms),
            demand_kbps: p.demand_kbps,
        };
        self.mtu = self.config.max_udp_payload.min(p.max_udp_payload as usize);
        self.streams
            .set_peer_limits(p.max_data, p.max_stream_data, p.max_streams);
    }

    fn configured_demand_kbps(&self) -> u32 {
        self.config.demand_bps.map_or(UNLIMITED_KBPS, bps_to_kbps)
    }

    // ----- getters -----

    /// This connection's handle.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle
    }
    /// Client or server.
    pub fn side(&self) -> Side {
        self.side
    }
    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
    /// The peer's static public key (known once the handshake authenticated it).
    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.remote_static
    }
    /// Our connection id (what the peer puts in headers).
    pub fn local_cid(&self) -> u64 {
        self.local_cid
    }
    /// `true` once keys are established and the connection is not closing.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }
    /// `true` once the connection is closing, draining or drained.
    pub fn is_closed(&self) -> bool {
        matches!(
            self.state,
            State::Closing { .. } | State::Draining { .. } | State::Drained
        )
    }
    /// `true` when the endpoint may forget the connection.
    pub fn is_drained(&self) -> bool {
        matches!(self.state, State::Drained)
    }
    /// The current rate-control mode.
    pub fn rate_mode(&self) -> RateMode {
        self.rate.mode()
    }
    /// The current pacing rate, bit/s.
    pub fn rate_bps(&self) -> u64 {
        self.rate.pacing_rate(self.recovery.rtt.smoothed())
    }
    /// Statistics snapshot.
    pub fn stats(&self) -> ConnectionStats {
        let mut s = self.stats.clone();
        s.srtt = self.recovery.rtt.smoothed();
        s.min_rtt = self.recovery.rtt.min();
        s.rttvar = self.recovery.rtt.var();
        s.rate_bps = self.rate_bps();
        s.mode = self.rate.mode();
        s.cwnd = self.rate.cwnd();
        s.bytes_in_flight = self.recovery.bytes_in_flight;
        s.bytes_acked = self.streams.bytes_acked;
        s.bytes_read = self.streams.bytes_read;
        s
    }
    /// `true` if some stream has data the application has not read.
    pub fn has_unread_data(&self) -> bool {
        self.streams.has_unread()
    }

    // ----- application commands -----

    /// Opens a bidirectional stream. `None` if the peer's stream limit is reached or the
    /// connection is closed. Data written before the handshake completes is sent right after.
    pub fn open_stream(&mut self) -> Option<StreamId> {
        if self.is_closed() {
            return None;
        }
        self.streams.open()
    }

    /// Queues data on a stream; returns how much was accepted (0 when the send buffer is full:
    /// a [`Event::StreamWritable`] follows once acknowledgements free space).
    pub fn write(&mut self, stream: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        if self.is_closed() {
            return Err(WriteError::ConnectionClosed);
        }
        self.streams.write(stream, data)
    }

    /// Ends the stream's data (FIN) once everything written is sent.
    pub fn finish(&mut self, stream: StreamId) -> Result<(), WriteError> {
        if self.is_closed() {
            return Err(WriteError::ConnectionClosed);
        }
        self.streams.finish(stream)
    }

    /// Reads in order into `buf`: `Ok(Some(n))` bytes, `Ok(None)` at the end of the stream,
    /// [`ReadError::Blocked`] if nothing is available yet. Received data stays readable after
    /// the connection closed.
    pub fn read(&mut self, stream: StreamId, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        match self.streams.read(stream, buf) {
            Err(ReadError::Blocked) if self.is_closed() => Err(ReadError::ConnectionClosed),
            other => other,
        }
    }

    /// Bytes written to `stream` that have not been sent even once. Applications that produce
    /// data on demand can keep this small instead of filling the whole send buffer (which must
    /// also hold sent-but-unacknowledged data spanning a loss-recovery round trip).
    pub fn stream_unsent(&self, stream: StreamId) -> u64 {
        self.streams.send_unsent(stream)
    }

    /// `true` once everything written to `stream` and its FIN were acknowledged.
    pub fn stream_send_complete(&self, stream: StreamId) -> bool {
        self.streams.send_complete(stream)
    }

    /// `true` when everything written to any stream (and every FIN) was acknowledged by the
    /// peer, so closing now loses nothing the application wrote.
    pub fn all_acknowledged(&self) -> bool {
        self.streams.all_acknowledged()
    }

    /// Closes the connection with an application error code and reason (truncated to 256
    /// bytes). A CLOSE frame is sent with the CLOSING header flag, so MEF routers release the
    /// flow's share at once; the connection then lingers for 3·PTO (RFC 9000 §10.2).
    pub fn close(&mut self, now: Instant, code: u64, reason: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.events.push_back(Event::Closed {
            conn: self.handle,
            reason: CloseReason::Local { code },
        });
        if self.keys.is_none() {
            self.state = State::Drained;
            return;
        }
        let reason = reason[..reason.len().min(MAX_REASON_LEN)].to_vec();
        self.enter_closing(now, code, reason);
    }

    fn enter_closing(&mut self, now: Instant, code: u64, reason: Vec<u8>) {
        self.close_frame = Some((code, reason));
        self.close_pending = true;
        let until = now + self.three_pto();
        self.state = State::Closing { until };
        self.recovery.clear();
    }

    fn three_pto(&self) -> Duration {
        self.recovery.rtt.pto_base(self.peer.max_ack_delay) * 3
    }

    /// Closes because the peer broke the protocol.
    fn protocol_violation(&mut self, now: Instant, what: String) {
        if self.is_closed() {
            return;
        }
        tracing::debug!(conn = self.handle.0, %what, "protocol violation");
        self.events.push_back(Event::Closed {
            conn: self.handle,
            reason: CloseReason::ProtocolViolation(what.clone()),
        });
        let mut reason = what.into_bytes();
        reason.truncate(MAX_REASON_LEN);
        self.enter_closing(now, 1, reason);
    }

    // ----- outputs -----

    /// The next event, if any.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        let conn = self.handle;
        self.streams.events.pop_front().map(|e| match e {
            StreamEvent::Opened(stream) => Event::StreamOpened { conn, stream },
            StreamEvent::Readable(stream) => Event::StreamReadable { conn, stream },
            StreamEvent::Writable(stream) => Event::StreamWritable { conn, stream },
            StreamEvent::Finished(stream) => Event::StreamFinished { conn, stream },
        })
    }

    /// The earliest time [`Connection::handle_timeout`] should run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut add = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        match &self.state {
            State::Drained => return None,
            State::Closing { until } | State::Draining { until } => return Some(*until),
            State::Handshaking => {
                if let Some(hs) = &self.client_hs {
                    add(hs.retransmit_at);
                    add(Some(hs.deadline));
                }
                return t;
            }
            State::Established => {}
        }
        add(self.recovery.timer(self.peer.max_ack_delay));
        if self.ack.unacked_eliciting > 0 {
            add(self.ack.deadline);
        }
        add(self.next_pacing);
        add(self.idle_deadline);
        if let Some(hs) = &self.server_hs {
            add(Some(hs.deadline));
        }
        t
    }

    /// Runs expired timers: handshake retransmission, loss detection, PTO, delayed ACK, idle
    /// timeout and the end of closing/draining.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Drained => return,
            State::Closing { until } | State::Draining { until } => {
                if now >= until {
                    self.state = State::Drained;
                }
                return;
            }
            State::Handshaking => {
                let mut timed_out = false;
                if let Some(hs) = &mut self.client_hs {
                    if now >= hs.deadline {
                        timed_out = true;
                    } else if hs.retransmit_at.is_some_and(|t| now >= t) {
                        hs.pending = true;
                        hs.retransmit_at = None;
                    }
                }
                if timed_out {
                    self.client_hs = None;
                    self.state = State::Drained;
                    self.events.push_back(Event::Closed {
                        conn: self.handle,
                        reason: CloseReason::HandshakeTimeout,
                    });
                }
                return;
            }
            State::Established => {}
        }
        if self.idle_deadline.is_some_and(|t| now >= t) {
            tracing::debug!(conn = self.handle.0, "idle timeout");
            self.state = State::Drained;
            self.events.push_back(Event::Closed {
                conn: self.handle,
                reason: CloseReason::IdleTimeout,
            });
            return;
        }
        if let Some(hs) = &self.server_hs
            && now >= hs.deadline
        {
            self.server_hs = None;
            self.state = State::Drained;
            self.events.push_back(Event::Closed {
                conn: self.handle,
                reason: CloseReason::HandshakeTimeout,
            });
            return;
        }
        if self.ack.unacked_eliciting > 0 && self.ack.deadline.is_some_and(|t| now >= t) {
            self.ack.immediate = true;
        }
        if self.next_pacing.is_some_and(|t| now >= t) {
            self.next_pacing = None;
        }
        if self.recovery.loss_time.is_some_and(|t| now >= t) {
            let mut lost = std::mem::take(&mut self.ack_outcome.lost);
            lost.clear();
            self.recovery.detect_lost(now, &mut lost);
            self.on_packets_lost(now, &lost);
            lost.clear();
            self.ack_outcome.lost = lost;
        } else if self.recovery.loss_time.is_none()
            && self
                .recovery
                .pto_time(self.peer.max_ack_delay)
                .is_some_and(|t| now >= t)
        {
            self.on_pto();
        }
    }

    /// Probe timeout (RFC 9002 §6.2.4): send up to two ack-eliciting probes, bypassing the
    /// congestion controller and pacer; they carry new data, else the oldest unacknowledged data
    /// again, else a PING.
    fn on_pto(&mut self) {
        self.recovery.pto_count += 1;
        self.stats.pto_count += 1;
        self.probes = 2;
        if let Some(hs) = &mut self.server_hs {
            hs.pending = true;
        }
        if !self.streams.has_sendable() {
            let chunks: Vec<_> = self
                .recovery
                .oldest_unacked_frames()
                .map(|f| f.stream_chunks().copied().collect())
                .unwrap_or_default();
            for c in &chunks {
                self.streams.on_chunk_lost(c);
            }
            if chunks.is_empty() {
                self.ping_pending = true;
            }
        }
    }

    fn on_packets_lost(&mut self, now: Instant, lost: &[crate::recovery::SentPacket]) {
        let mut newest: Option<Instant> = None;
        for p in lost {
            self.stats.packets_lost += 1;
            for c in p.frames.stream_chunks() {
                self.streams.on_chunk_lost(c);
            }
            if p.frames.max_data {
                self.streams.max_data_lost();
            }
            for id in &p.frames.max_stream_data {
                self.streams.max_stream_data_lost(*id);
            }
            if p.in_flight {
                newest = Some(newest.map_or(p.time_sent, |n| n.max(p.time_sent)));
            }
        }
        if let Some(sent) = newest {
            // Only the fallback controller treats loss as congestion (see `rate`).
            self.rate.on_loss(now, sent);
        }
    }

    fn reset_idle(&mut self, now: Instant) {
        let idle = match (self.config.idle_timeout, self.peer.idle_timeout) {
            (a, b) if a.is_zero() => b,
            (a, b) if b.is_zero() => a,
            (a, b) => a.min(b),
        };
        if idle.is_zero() {
            self.idle_deadline = None;
        } else {
            // RFC 9000 §10.1: at least three PTOs.
            self.idle_deadline = Some(now + idle.max(self.three_pto()));
        }
    }

    /// The demand to advertise: the configured one while there is data to send, otherwise the
    /// measured need (with APP_LIMITED).
    fn advertised_demand(&mut self, now: Instant) -> (u32, bool) {
        let configured = self.configured_demand_kbps();
        if self.streams.has_pending_data() || !matches!(self.state, State::Established) {
            return (configured, false);
        }
        let srtt = self.recovery.rtt.smoothed().max(Duration::from_millis(10));
        // For the first RTT after the handshake keep the demand the Initial declared: the
        // application is typically about to write, and an early ACK must not tell routers
        // the flow needs nothing.
        let since = self.established_at.get_or_insert(now);
        if now.saturating_duration_since(*since) < srtt {
            return (configured, false);
        }
        if let Some(start) = self.meter.start
            && now.saturating_duration_since(start) >= srtt
        {
            let secs = now.saturating_duration_since(start).as_secs_f64();
            self.meter.rate_bps = (self.meter.bytes as f64 * 8.0 / secs) as u64;
            self.meter.start = Some(now);
            self.meter.bytes = 0;
        }
        let need = self
            .meter
            .rate_bps
            .saturating_mul(2)
            .max(APP_LIMITED_FLOOR_BPS);
        (bps_to_kbps(need).min(configured), true)
    }

    fn meter_sent(&mut self, now: Instant, wire_bytes: u64) {
        if self.meter.start.is_none() {
            self.meter.start = Some(now);
        }
        self.meter.bytes += wire_bytes;
    }
}

/// Creates the client side (called by [`crate::Endpoint::connect`]).
pub(crate) struct ClientInit<'a> {
    pub handle: ConnectionHandle,
    pub config: Arc<Config>,
    pub local: &'a StaticKeypair,
    pub server_public: &'a [u8; 32],
    pub local_cid: u64,
    pub remote: SocketAddr,
    pub seed: Zeroizing<[u8; 32]>,
    pub now: Instant,
}

impl Connection {
    pub(crate) fn new_client(init: ClientInit<'_>) -> Result<Self, ConnectError> {
        let mut c = Self::base(
            init.handle,
            Side::Client,
            init.config,
            init.local_cid,
            init.remote,
        );
        let header = c.initial_header(0);
        let mut hdr_buf = [0u8; crate::wire::HEADER_LEN];
        header.emit(&mut hdr_buf);
        let prologue = crypto::prologue(&send::handshake_ad(&hdr_buf));
        let mut noise =
            Handshake::initiator(init.local, init.server_public, &prologue, &init.seed)?;
        let mut params = [0u8; crate::wire::handshake::MAX_LEN];
        let n = c.local_params(None).emit(&mut params, false)?;
        let mut msg1 = vec![0u8; 256];
        let m = noise.write(&params[..n], &mut msg1)?;
        msg1.truncate(m);
        c.client_hs = Some(ClientHandshake {
            noise,
            msg1,
            pending: true,
            last_sent: None,
            retransmit_at: None,
            attempts: 0,
            deadline: init.now + c.config.handshake_timeout,
        });
        c.remote_static = Some(*init.server_public);
        Ok(c)
    }
}
