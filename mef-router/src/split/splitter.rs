//! [`TcpSplitter`]: a smoltcp TCP/IP stack that terminates LAN TCP connections to any address and
//! originates TCP connections on behalf of remote clients (RFC 3135 §2.3 "split connection" PEP).
//!
//! # How terminating connections to arbitrary addresses works
//!
//! Each connection has its own smoltcp [`Interface`] (module `split::stack`: one socket per
//! interface keeps the cost of a packet independent of the number of connections). Every
//! interface runs on [`Medium::Ip`](smoltcp::phy::Medium::Ip) over the splitter's in-memory
//! `QueueDevice` with one configured address ([`SplitConfig::local_addr`], a /32) and
//! [`Interface::set_any_ip`] enabled. In smoltcp 0.14, `any_ip` makes `has_ip_addr()` true for
//! every destination, so every unicast IPv4 packet is delivered to the sockets whatever its
//! destination (no route is needed for *receiving*). For *sending*, smoltcp looks up a route for
//! the remote address; a default route whose gateway is `local_addr` makes every destination
//! reachable, and on an IP medium there is no neighbour (ARP) resolution to satisfy.
//!
//! smoltcp has no listen backlog: one socket accepts one connection, and a listening socket
//! bound to an endpoint `(addr, port)` takes the first SYN to that endpoint. So when a SYN for a
//! (client, server) pair that has no socket arrives, the splitter first creates a socket
//! listening on exactly the server endpoint (the packet's *destination*), then feeds that single
//! packet to smoltcp, which moves the socket to SYN-RECEIVED with the client as remote end and
//! answers with a SYN-ACK whose source is the original server address. If the socket did not
//! take the SYN it is removed at once, so no stray listener can capture another client's SYN.
//! Packets are fed one at a time for that reason.
//!
//! For origination ([`TcpSplitter::connect`]) the socket's *local* end point is the original
//! client address, which smoltcp accepts because of `any_ip`; the server's replies, addressed to
//! the client, are accepted for the same reason. The router must therefore route the server's
//! replies to that client address back into the splitter (the TUN device), not onward.
//!
//! Packets that match no connection (for example an ACK for a connection the splitter forgot) go
//! to an interface without sockets, which answers with a RST (RFC 9293 §3.10.7.1), as a host would.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use smoltcp::iface::{Interface, SocketSet};
use smoltcp::socket::tcp::{self, RecvError, State};
use smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint, IpProtocol, Ipv4Packet, TcpPacket};

use super::config::{SplitConfig, WhenFull};
use super::device::QueueDevice;
use super::error::{MalformedReason, SplitError};
use super::header::usable;
use super::stack::{self, Stack, stack_seed};

/// Identifies one split connection within a [`TcpSplitter`]. Never reused by that splitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Something the application (the router daemon) must react to. Polled with
/// [`TcpSplitter::poll_event`]. Events are edge-triggered: after `Readable`, call
/// [`TcpSplitter::read`] until it returns 0; after a short [`TcpSplitter::write`], wait for
/// `Writable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitEvent {
    /// A LAN client completed the three-way handshake with the splitter (which answered in the
    /// name of `server`). Addresses are the originals from the client's SYN.
    Accepted {
        /// The new connection.
        id: ConnId,
        /// The LAN client (source of the SYN).
        client: SocketAddrV4,
        /// The server the client asked for (destination of the SYN).
        server: SocketAddrV4,
    },
    /// A connection opened with [`TcpSplitter::connect`] is established (the server answered).
    Connected {
        /// The connection.
        id: ConnId,
    },
    /// Bytes are waiting to be [`read`](TcpSplitter::read).
    Readable {
        /// The connection.
        id: ConnId,
    },
    /// The send buffer has room again (also emitted once when a connection is established).
    Writable {
        /// The connection.
        id: ConnId,
    },
    /// The LAN peer sent FIN and every byte before it has been read: finish the stream's
    /// sending half. Emitted once.
    PeerClosed {
        /// The connection.
        id: ConnId,
    },
    /// Both directions finished cleanly (FIN sent and acknowledged, FIN received and read). The
    /// id is dead afterwards.
    Closed {
        /// The connection.
        id: ConnId,
    },
    /// The connection failed: RST received, connection refused, or user timeout. Unread data is
    /// lost; the id is dead afterwards. Reset the MEF stream.
    Reset {
        /// The connection.
        id: ConnId,
    },
}

/// Counters of a [`TcpSplitter`], for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitStats {
    /// Packets given to [`TcpSplitter::handle_ip_packet`].
    pub packets_in: u64,
    /// Packets returned by [`TcpSplitter::poll_ip_packet`].
    pub packets_out: u64,
    /// Packets dropped as malformed ([`MalformedReason`]).
    pub malformed: u64,
    /// Valid IPv4 packets dropped because they are not TCP.
    pub non_tcp: u64,
    /// SYNs refused because the connection limit was reached.
    pub rejected_full: u64,
    /// Incoming handshakes that did not complete (SYN not taken, RST or timeout before ACK).
    pub handshake_failed: u64,
    /// Connections accepted from the LAN.
    pub accepted: u64,
    /// Connections originated by [`TcpSplitter::connect`] that got established.
    pub connected: u64,
    /// Connections ended by [`SplitEvent::Closed`].
    pub closed: u64,
    /// Connections ended by [`SplitEvent::Reset`].
    pub reset: u64,
    /// Connections ended by [`TcpSplitter::abort`].
    pub aborted: u64,
    /// Connections in TIME-WAIT evicted to make room for a new one.
    pub time_wait_evicted: u64,
    /// Connections freed when their [`SplitConfig::time_wait`] ran out.
    pub time_wait_expired: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Accepted,
    Connected,
}

struct Conn {
    stack: Stack,
    client: SocketAddrV4,
    server: SocketAddrV4,
    origin: Origin,
    /// State seen at the last refresh.
    state: State,
    established: bool,
    fin_received: bool,
    readable_pending: bool,
    want_writable: bool,
    peer_closed_reported: bool,
    /// `Closed`/`Reset` reported or aborted: the id is dead for the user; the socket may linger
    /// (TIME-WAIT, or until an abort's RST has been sent).
    finished: bool,
    /// When the socket was first seen in TIME-WAIT after `finished`.
    time_wait_since: Option<Instant>,
    /// The entry of this connection in [`TcpSplitter::timers`], if any.
    deadline: Option<Instant>,
}

/// A sans-IO TCP splitter (performance-enhancing proxy, RFC 3135) built on smoltcp.
///
/// Inputs: [`handle_ip_packet`](Self::handle_ip_packet) (IPv4 packets read from the LAN TUN
/// device) and [`handle_timeout`](Self::handle_timeout). Commands: [`connect`](Self::connect),
/// [`read`](Self::read), [`write`](Self::write), [`shutdown`](Self::shutdown),
/// [`abort`](Self::abort). Outputs, to poll after every input or command in this order:
/// [`poll_ip_packet`](Self::poll_ip_packet) until `None` (write them to the TUN device),
/// [`poll_event`](Self::poll_event) until `None`, then [`poll_timeout`](Self::poll_timeout) for
/// the next deadline. Commands do not transmit by themselves: they make `poll_timeout` return
/// the current time, so the loop calls `handle_timeout`, which sends.
///
/// Every connection has its own smoltcp stack (module `split::stack`): a packet, a command or
/// a timer touches only its connection, so the cost per packet does not grow with the number of
/// connections held.
pub struct TcpSplitter {
    config: SplitConfig,
    device: QueueDevice,
    /// Answers packets that match no connection (with a RST, as smoltcp does for a host).
    responder: Interface,
    no_sockets: SocketSet<'static>,
    conns: BTreeMap<ConnId, Conn>,
    by_tuple: BTreeMap<(SocketAddrV4, SocketAddrV4), ConnId>,
    /// Each connection's next smoltcp deadline (or end of its TIME-WAIT), earliest first.
    timers: BTreeSet<(Instant, ConnId)>,
    /// Connections a command changed: to poll at the next `handle_timeout`.
    dirty: BTreeSet<ConnId>,
    /// Connections that wanted to transmit while the packet queue was full: polled again once
    /// the caller drained it.
    blocked: BTreeSet<ConnId>,
    /// Finished connections lingering in TIME-WAIT, oldest id first (evicted first when full).
    lingering: BTreeSet<ConnId>,
    /// Ids that reported [`SplitEvent::Closed`] recently (at most `max_connections`, oldest
    /// forgotten first): `read` returns 0 and `is_peer_closed` true for them, so a relay pumped
    /// after the clean close still sees a clean end of stream rather than an unknown id.
    closed_ids: BTreeSet<ConnId>,
    closed_order: VecDeque<ConnId>,
    events: VecDeque<SplitEvent>,
    next_id: u64,
    epoch: Instant,
    last_now: Instant,
    stats: SplitStats,
}

impl fmt::Debug for TcpSplitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpSplitter")
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// What the splitter needs from an incoming packet before smoltcp sees it.
struct TcpMeta {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    syn: bool,
    ack: bool,
}

/// Validate an IPv4/TCP packet completely (lengths and both checksums) so that smoltcp only
/// ever sees well-formed TCP, and every drop has a counted reason.
fn inspect(buf: &[u8]) -> Result<TcpMeta, SplitError> {
    let first = *buf.first().ok_or(MalformedReason::BadIpv4Header)?;
    if first >> 4 != 4 {
        return Err(MalformedReason::NotIpv4(first >> 4).into());
    }
    let ip = Ipv4Packet::new_checked(buf).map_err(|_| MalformedReason::BadIpv4Header)?;
    if !ip.verify_checksum() {
        return Err(MalformedReason::BadIpv4Checksum.into());
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(MalformedReason::Fragment.into());
    }
    let protocol = ip.next_header();
    if protocol != IpProtocol::Tcp {
        return Err(SplitError::NotTcp {
            protocol: protocol.into(),
        });
    }
    let (src_ip, dst_ip) = (ip.src_addr(), ip.dst_addr());
    let tcp = TcpPacket::new_checked(ip.payload()).map_err(|_| MalformedReason::BadTcpHeader)?;
    if !tcp.verify_checksum(&IpAddress::Ipv4(src_ip), &IpAddress::Ipv4(dst_ip)) {
        return Err(MalformedReason::BadTcpChecksum.into());
    }
    let src = SocketAddrV4::new(src_ip, tcp.src_port());
    let dst = SocketAddrV4::new(dst_ip, tcp.dst_port());
    if !usable(src) || !usable(dst) {
        return Err(MalformedReason::BadAddress.into());
    }
    Ok(TcpMeta {
        src,
        dst,
        syn: tcp.syn(),
        ack: tcp.ack(),
    })
}

fn to_smol_duration(d: Duration) -> SmolDuration {
    SmolDuration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl TcpSplitter {
    /// Create a splitter; `now` becomes its time origin.
    pub fn new(config: SplitConfig, now: Instant) -> Result<Self, SplitError> {
        config.validate()?;
        let mut device = QueueDevice::new(config.mtu, config.max_queued_packets);
        let responder = stack::interface(
            config.local_addr,
            stack_seed(config.random_seed, u64::MAX),
            &mut device,
            SmolInstant::from_micros(0),
        )?;
        Ok(Self {
            config,
            device,
            responder,
            no_sockets: SocketSet::new(Vec::new()),
            conns: BTreeMap::new(),
            by_tuple: BTreeMap::new(),
            timers: BTreeSet::new(),
            dirty: BTreeSet::new(),
            blocked: BTreeSet::new(),
            lingering: BTreeSet::new(),
            closed_ids: BTreeSet::new(),
            closed_order: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
            epoch: now,
            last_now: now,
            stats: SplitStats::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SplitConfig {
        &self.config
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &SplitStats {
        &self.stats
    }

    /// Number of connections held (live ones and ones lingering in TIME-WAIT).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The original (client, server) end points of a live connection.
    pub fn endpoints(&self, id: ConnId) -> Result<(SocketAddrV4, SocketAddrV4), SplitError> {
        let c = self.live(id)?;
        Ok((c.client, c.server))
    }

    /// Whether the peer's FIN has arrived and every byte before it has been read
    /// ([`SplitEvent::PeerClosed`] has been or is about to be emitted). Also true for a while
    /// after [`SplitEvent::Closed`].
    pub fn is_peer_closed(&self, id: ConnId) -> Result<bool, SplitError> {
        if self.closed_ids.contains(&id) {
            return Ok(true);
        }
        let c = self.live(id)?;
        Ok(c.fin_received && c.stack.socket().recv_queue() == 0)
    }

    /// Feed one IPv4 packet read from the LAN side (TUN). Only TCP is handled; an `Err` means the
    /// packet was dropped for the reason given (and counted in [`stats`](Self::stats)); it is
    /// never fatal. A SYN to any address opens a new split connection
    /// ([`SplitEvent::Accepted`] follows once the handshake completes).
    pub fn handle_ip_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), SplitError> {
        self.advance(now);
        self.stats.packets_in += 1;
        let meta = match inspect(packet) {
            Ok(meta) => meta,
            Err(e) => {
                match e {
                    SplitError::NotTcp { .. } => self.stats.non_tcp += 1,
                    _ => self.stats.malformed += 1,
                }
                return Err(e);
            }
        };
        let mut target = self.lookup(meta.src, meta.dst);
        let mut new_listener = None;
        if meta.syn && !meta.ack {
            let key = (meta.src, meta.dst);
            if let Some(old) = self.by_tuple.get(&key).copied() {
                // A new SYN for a pair whose old connection is finished (TIME-WAIT or aborted):
                // the client reuses the port; make room (as RFC 6191 allows for TIME-WAIT).
                if self.conns.get(&old).is_some_and(|c| c.finished) {
                    self.remove(old);
                    target = None;
                }
            }
            if !self.by_tuple.contains_key(&key) {
                if self.conns.len() >= self.config.max_connections && !self.evict_time_wait() {
                    self.stats.rejected_full += 1;
                    let limit = self.config.max_connections;
                    if self.config.when_full == WhenFull::Reset {
                        self.respond(packet);
                    }
                    return Err(SplitError::TooManyConnections { limit });
                }
                let mut socket = self.new_socket();
                let listen = IpListenEndpoint {
                    addr: Some(IpAddress::Ipv4(*meta.dst.ip())),
                    port: meta.dst.port(),
                };
                if socket.listen(listen).is_err() {
                    // Unreachable after `inspect` (port is non-zero), but never panic.
                    self.stats.malformed += 1;
                    return Err(MalformedReason::BadAddress.into());
                }
                let id =
                    self.insert(socket, meta.src, meta.dst, Origin::Accepted, State::Listen)?;
                new_listener = Some(id);
                target = Some(id);
            }
        }
        let Some(id) = target else {
            // No connection: smoltcp answers as a host would (RST unless it was one).
            self.respond(packet);
            return Ok(());
        };
        self.device.rx.push_back(packet.to_vec());
        self.poll_conn(id);
        if let Some(id) = new_listener {
            let still_listening = self
                .conns
                .get(&id)
                .is_some_and(|c| c.stack.socket().is_listening());
            if still_listening {
                self.stats.handshake_failed += 1;
                self.remove(id);
            }
        }
        Ok(())
    }

    /// Run smoltcp's timers (retransmission, delayed ACK, TIME-WAIT, keep-alive) that are due
    /// and transmit what commands queued. Call when [`poll_timeout`](Self::poll_timeout) has
    /// passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let mut due: BTreeSet<ConnId> = std::mem::take(&mut self.dirty);
        while let Some(&(t, id)) = self.timers.first() {
            if t > self.last_now {
                break;
            }
            self.timers.pop_first();
            if let Some(c) = self.conns.get_mut(&id) {
                c.deadline = None;
            }
            due.insert(id);
        }
        for id in due {
            self.poll_conn(id);
        }
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called, if any. Returns the
    /// latest `now` seen when work is pending right away (after commands, or after the caller
    /// drained a full packet queue).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if !self.dirty.is_empty() {
            return Some(self.last_now);
        }
        self.timers.first().map(|&(t, _)| t)
    }

    /// Next IPv4 packet to write to the LAN side (TUN device), if any.
    pub fn poll_ip_packet(&mut self) -> Option<Vec<u8>> {
        let packet = self.device.tx.pop_front()?;
        self.stats.packets_out += 1;
        if !self.blocked.is_empty() && self.device.tx.len() < self.config.max_queued_packets {
            let blocked = std::mem::take(&mut self.blocked);
            self.dirty.extend(blocked);
        }
        Some(packet)
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<SplitEvent> {
        self.events.pop_front()
    }

    /// Open a TCP connection to `server` on the LAN, with the original `client` address and port
    /// as its source, so the server sees the real client (RFC 3135 §2.3; the splitter answers
    /// for `client` through `any_ip`). The SYN is queued at once; [`SplitEvent::Connected`] (and
    /// `Writable`) follow on success, [`SplitEvent::Reset`] on refusal or timeout. Bytes may be
    /// written once `Writable` arrives.
    pub fn connect(
        &mut self,
        now: Instant,
        client: SocketAddrV4,
        server: SocketAddrV4,
    ) -> Result<ConnId, SplitError> {
        self.advance(now);
        if !usable(client) || !usable(server) {
            return Err(SplitError::Unaddressable { client, server });
        }
        if let Some(old) = self.by_tuple.get(&(client, server)).copied() {
            if self.conns.get(&old).is_some_and(|c| c.finished) {
                self.remove(old);
            } else {
                return Err(SplitError::AlreadyExists { client, server });
            }
        }
        if self.conns.len() >= self.config.max_connections && !self.evict_time_wait() {
            return Err(SplitError::TooManyConnections {
                limit: self.config.max_connections,
            });
        }
        let socket = self.new_socket();
        let id = self.insert(socket, client, server, Origin::Connected, State::SynSent)?;
        let remote = IpEndpoint::new(IpAddress::Ipv4(*server.ip()), server.port());
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*client.ip())),
            port: client.port(),
        };
        let connected = match self.conns.get_mut(&id) {
            Some(c) => {
                let (socket, cx) = c.stack.socket_and_context();
                socket.connect(cx, remote, local).is_ok()
            }
            None => false,
        };
        if !connected {
            self.remove(id);
            return Err(SplitError::Unaddressable { client, server });
        }
        self.poll_conn(id);
        Ok(id)
    }

    /// Read received bytes into `buf`. `Ok(0)` means nothing is available now (including before
    /// the connection is established and after the peer's FIN: see
    /// [`SplitEvent::PeerClosed`] and [`is_peer_closed`](Self::is_peer_closed)).
    pub fn read(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, SplitError> {
        if self.closed_ids.contains(&id) {
            return Ok(0);
        }
        let c = self.live_mut(id)?;
        let sock = c.stack.socket_mut();
        let n = match sock.recv_slice(buf) {
            Ok(n) => n,
            Err(RecvError::Finished) => 0,
            Err(RecvError::InvalidState) => match sock.state() {
                State::SynSent | State::SynReceived | State::Listen => 0,
                state => {
                    return Err(SplitError::InvalidState {
                        id,
                        state: state.to_string(),
                    });
                }
            },
        };
        let drained = sock.recv_queue() == 0;
        if drained {
            c.readable_pending = false;
        }
        if n > 0 {
            // The window opened: let smoltcp send a window update.
            self.dirty.insert(id);
        }
        if drained {
            self.refresh(id);
        }
        Ok(n)
    }

    /// Queue bytes for sending; returns how many were accepted, 0 when the send buffer is full
    /// (or the connection is not established yet): wait for [`SplitEvent::Writable`].
    pub fn write(&mut self, id: ConnId, buf: &[u8]) -> Result<usize, SplitError> {
        let c = self.live_mut(id)?;
        let sock = c.stack.socket_mut();
        let n = match sock.state() {
            State::SynSent | State::SynReceived => 0,
            State::Established | State::CloseWait => sock.send_slice(buf).unwrap_or(0),
            state => {
                return Err(SplitError::InvalidState {
                    id,
                    state: state.to_string(),
                });
            }
        };
        if n < buf.len() {
            c.want_writable = true;
        }
        if n > 0 {
            self.dirty.insert(id);
        }
        Ok(n)
    }

    /// Close the sending half: a FIN follows the queued bytes (RFC 9293 §3.10.4). Reading
    /// continues until [`SplitEvent::PeerClosed`]. Before establishment this aborts instead.
    pub fn shutdown(&mut self, id: ConnId) -> Result<(), SplitError> {
        if self.closed_ids.contains(&id) {
            return Ok(());
        }
        let c = self.live_mut(id)?;
        if !c.established {
            return self.abort(id);
        }
        c.stack.socket_mut().close();
        self.dirty.insert(id);
        Ok(())
    }

    /// Abort the connection with a RST (RFC 9293 §3.10.5); no further event is emitted for it.
    pub fn abort(&mut self, id: ConnId) -> Result<(), SplitError> {
        let c = self.live_mut(id)?;
        c.stack.socket_mut().abort();
        c.finished = true;
        self.stats.aborted += 1;
        self.dirty.insert(id);
        Ok(())
    }

    fn live(&self, id: ConnId) -> Result<&Conn, SplitError> {
        match self.conns.get(&id) {
            Some(c) if !c.finished => Ok(c),
            _ => Err(SplitError::UnknownConnection(id)),
        }
    }

    fn live_mut(&mut self, id: ConnId) -> Result<&mut Conn, SplitError> {
        match self.conns.get_mut(&id) {
            Some(c) if !c.finished => Ok(c),
            _ => Err(SplitError::UnknownConnection(id)),
        }
    }

    /// The connection a packet from `src` to `dst` belongs to: one accepted from `src`, or one
    /// originated towards `src` as the server.
    fn lookup(&self, src: SocketAddrV4, dst: SocketAddrV4) -> Option<ConnId> {
        let of = |key, origin| {
            self.by_tuple
                .get(&key)
                .copied()
                .filter(|id| self.conns.get(id).is_some_and(|c| c.origin == origin))
        };
        of((src, dst), Origin::Accepted).or_else(|| of((dst, src), Origin::Connected))
    }

    fn advance(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn smol(&self, now: Instant) -> SmolInstant {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        SmolInstant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(vec![0u8; self.config.rx_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0u8; self.config.tx_buffer]);
        let mut socket = tcp::Socket::new(rx, tx);
        socket.set_timeout(self.config.user_timeout.map(to_smol_duration));
        socket.set_keep_alive(self.config.keep_alive.map(to_smol_duration));
        socket.set_nagle_enabled(self.config.nagle);
        socket
    }

    /// Lets the responder (no sockets) answer a packet that belongs to no connection.
    fn respond(&mut self, packet: &[u8]) {
        self.device.rx.push_back(packet.to_vec());
        let ts = self.smol(self.last_now);
        self.responder
            .poll(ts, &mut self.device, &mut self.no_sockets);
        // A reply that found the queue full is simply not sent: the peer retransmits.
        self.device.rx.clear();
    }

    fn insert(
        &mut self,
        socket: tcp::Socket<'static>,
        client: SocketAddrV4,
        server: SocketAddrV4,
        origin: Origin,
        state: State,
    ) -> Result<ConnId, SplitError> {
        let id = ConnId(self.next_id);
        let ts = self.smol(self.last_now);
        let seed = stack_seed(self.config.random_seed, id.0);
        let stack = Stack::new(self.config.local_addr, seed, &mut self.device, ts, socket)?;
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                stack,
                client,
                server,
                origin,
                state,
                established: false,
                fin_received: false,
                readable_pending: false,
                want_writable: true,
                peer_closed_reported: false,
                finished: false,
                time_wait_since: None,
                deadline: None,
            },
        );
        self.by_tuple.insert((client, server), id);
        Ok(id)
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            if self.by_tuple.get(&(c.client, c.server)) == Some(&id) {
                self.by_tuple.remove(&(c.client, c.server));
            }
            if let Some(t) = c.deadline {
                self.timers.remove(&(t, id));
            }
            self.dirty.remove(&id);
            self.blocked.remove(&id);
            self.lingering.remove(&id);
        }
    }

    /// Drop the oldest connection that lingers in TIME-WAIT (already reported `Closed`).
    fn evict_time_wait(&mut self) -> bool {
        match self.lingering.first().copied() {
            Some(id) => {
                self.remove(id);
                self.stats.time_wait_evicted += 1;
                true
            }
            None => false,
        }
    }

    /// Polls one connection's stack, turns its state into events and re-arms its timer.
    fn poll_conn(&mut self, id: ConnId) {
        let ts = self.smol(self.last_now);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        self.device.tx_blocked = false;
        c.stack.poll(ts, &mut self.device);
        // A packet fed for this connection and not consumed (cannot happen: the interface
        // always receives what the device offers) must not reach another connection.
        self.device.rx.clear();
        if self.device.tx_blocked {
            self.blocked.insert(id);
        }
        self.dirty.remove(&id);
        self.refresh(id);
        self.rearm(id);
    }

    /// Puts the connection's next deadline (smoltcp's, or the end of its TIME-WAIT) in the
    /// timer set.
    fn rearm(&mut self, id: ConnId) {
        let ts = self.smol(self.last_now);
        let time_wait = self.config.time_wait;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let smol_at = c.stack.poll_at(ts);
        let mut next = smol_at.map(|t| {
            self.epoch + Duration::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
        });
        if let Some(since) = c.time_wait_since {
            let end = since + time_wait;
            next = Some(next.map_or(end, |n| n.min(end)));
        }
        if c.deadline == next {
            return;
        }
        if let Some(old) = c.deadline.take() {
            self.timers.remove(&(old, id));
        }
        if let Some(t) = next {
            c.deadline = Some(t);
            self.timers.insert((t, id));
        }
    }

    /// Turn the socket's state into events (edge-triggered) and drop finished sockets.
    fn refresh(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let sock = c.stack.socket();
        let state = sock.state();
        let recv_queue = sock.recv_queue();
        let can_write = sock.may_send() && sock.send_queue() < sock.send_capacity();
        let prev = std::mem::replace(&mut c.state, state);
        if c.finished {
            if state == State::Closed {
                self.remove(id);
            } else if state == State::TimeWait {
                let since = *c.time_wait_since.get_or_insert(self.last_now);
                self.lingering.insert(id);
                if self.last_now.saturating_duration_since(since) >= self.config.time_wait {
                    self.stats.time_wait_expired += 1;
                    self.remove(id);
                }
            }
            return;
        }
        if !c.established {
            match state {
                State::Listen if prev != State::Listen => {
                    // RST in SYN-RECEIVED returns a passive socket to LISTEN (RFC 9293
                    // §3.10.7.4); it must not wait for someone else's SYN.
                    self.stats.handshake_failed += 1;
                    self.remove(id);
                    return;
                }
                State::Listen | State::SynSent | State::SynReceived => return,
                State::Closed => {
                    if c.origin == Origin::Connected {
                        self.stats.reset += 1;
                        self.events.push_back(SplitEvent::Reset { id });
                    } else {
                        self.stats.handshake_failed += 1;
                    }
                    self.remove(id);
                    return;
                }
                _ => {
                    c.established = true;
                    match c.origin {
                        Origin::Accepted => {
                            self.stats.accepted += 1;
                            self.events.push_back(SplitEvent::Accepted {
                                id,
                                client: c.client,
                                server: c.server,
                            });
                        }
                        Origin::Connected => {
                            self.stats.connected += 1;
                            self.events.push_back(SplitEvent::Connected { id });
                        }
                    }
                }
            }
        }
        if matches!(
            state,
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait
        ) {
            c.fin_received = true;
        }
        let normal_close = state == State::TimeWait
            || (state == State::Closed
                && matches!(prev, State::LastAck | State::TimeWait | State::Closing));
        if state == State::Closed && !normal_close {
            c.finished = true;
            self.stats.reset += 1;
            self.events.push_back(SplitEvent::Reset { id });
            self.remove(id);
            return;
        }
        if recv_queue > 0 && !c.readable_pending {
            c.readable_pending = true;
            self.events.push_back(SplitEvent::Readable { id });
        }
        if c.fin_received && recv_queue == 0 && !c.peer_closed_reported {
            c.peer_closed_reported = true;
            self.events.push_back(SplitEvent::PeerClosed { id });
        }
        if c.want_writable && can_write {
            c.want_writable = false;
            self.events.push_back(SplitEvent::Writable { id });
        }
        if normal_close && c.peer_closed_reported {
            c.finished = true;
            self.stats.closed += 1;
            self.events.push_back(SplitEvent::Closed { id });
            self.closed_ids.insert(id);
            self.closed_order.push_back(id);
            if self.closed_order.len() > self.config.max_connections
                && let Some(old) = self.closed_order.pop_front()
            {
                self.closed_ids.remove(&old);
            }
            if state == State::Closed {
                self.remove(id);
            } else {
                c.time_wait_since.get_or_insert(self.last_now);
                self.lingering.insert(id);
            }
        }
    }
}
