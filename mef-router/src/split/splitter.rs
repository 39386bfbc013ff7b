//! [`TcpSplitter`]: a smoltcp TCP/IP stack that terminates LAN TCP connections to any address and
//! originates TCP connections on behalf of remote clients (RFC 3135 §2.3 "split connection" PEP).
//!
//! # How terminating connections to arbitrary addresses works
//!
//! The smoltcp [`Interface`] runs on [`Medium::Ip`](smoltcp::phy::Medium::Ip) over an in-memory
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
//! Packets that match no socket (for example an ACK for a connection the splitter forgot) are
//! answered by smoltcp with a RST (RFC 9293 §3.10.7.1), as a host would.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, RecvError, State};
use smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, IpProtocol, Ipv4Packet,
    TcpPacket,
};

use super::device::QueueDevice;
use super::error::{MalformedReason, SplitError};
use super::header::usable;

/// Identifies one split connection within a [`TcpSplitter`]. Never reused by that splitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What to do with a new connection's SYN when [`SplitConfig::max_connections`] is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Answer with a RST (RFC 9293 §3.10.7.1): the client fails fast ("connection refused").
    Reset,
    /// Drop the SYN silently: the client retransmits it and may succeed once a slot frees.
    Drop,
}

/// Configuration of a [`TcpSplitter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitConfig {
    /// The splitter's own address (a /32 on the smoltcp interface, and the gateway of its
    /// default route). Never seen by LAN hosts when splitting; pick an unused link-local address.
    pub local_addr: Ipv4Addr,
    /// Maximum number of connections held at once (including ones lingering in TIME-WAIT, which
    /// are evicted first when a new connection needs the slot).
    pub max_connections: usize,
    /// Receive buffer per connection in bytes (also the advertised window; smoltcp uses window
    /// scaling, RFC 7323, above 64 KiB).
    pub rx_buffer: usize,
    /// Send buffer per connection in bytes ([`TcpSplitter::write`] returns 0 when it is full).
    pub tx_buffer: usize,
    /// MTU of the LAN side (the TUN device), which bounds the MSS smoltcp announces and uses.
    pub mtu: usize,
    /// What to do with a SYN when the connection limit is reached.
    pub when_full: WhenFull,
    /// How long a cleanly closed connection lingers in TIME-WAIT before its socket is freed
    /// (smoltcp's own timer is 10 s). Every held socket costs work on every packet, and at a few
    /// hundred connections per second smoltcp's 10 s would keep `max_connections` sockets
    /// lingering; on a LAN a few seconds still answer a retransmitted FIN (RFC 9293 §3.6.1
    /// only needs the last ACK repeatable while the peer may retransmit its FIN).
    pub time_wait: Duration,
    /// Abort a connection whose unacknowledged data (or SYN) stays unacknowledged this long
    /// (RFC 9293 §3.8.3 USER TIMEOUT); `None` retries forever.
    pub user_timeout: Option<Duration>,
    /// Send TCP keep-alives after this much idle time (RFC 9293 §3.8.4); `None` disables them.
    pub keep_alive: Option<Duration>,
    /// Nagle's algorithm (RFC 9293 §3.7.4). Off by default: the relay writes whatever arrives,
    /// and the LAN end points run their own Nagle.
    pub nagle: bool,
    /// Soft bound on packets waiting in [`TcpSplitter::poll_ip_packet`]; when reached smoltcp
    /// stops transmitting until the caller drains packets.
    pub max_queued_packets: usize,
    /// Seed for smoltcp's initial sequence numbers and ephemeral choices. Use a fresh random value
    /// per process (RFC 6528: predictable ISNs permit blind injection).
    pub random_seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            local_addr: Ipv4Addr::new(169, 254, 77, 1),
            max_connections: 1024,
            rx_buffer: 256 * 1024,
            tx_buffer: 256 * 1024,
            mtu: 1500,
            when_full: WhenFull::Reset,
            time_wait: Duration::from_secs(2),
            user_timeout: Some(Duration::from_secs(60)),
            keep_alive: None,
            nagle: false,
            max_queued_packets: 4096,
            random_seed: 0x5eed_0f5e_11e7,
        }
    }
}

impl SplitConfig {
    fn validate(&self) -> Result<(), SplitError> {
        if !usable(SocketAddrV4::new(self.local_addr, 1)) {
            return Err(SplitError::InvalidConfig(
                "local_addr must be a unicast address",
            ));
        }
        if self.max_connections == 0 {
            return Err(SplitError::InvalidConfig(
                "max_connections must be at least 1",
            ));
        }
        // smoltcp's window scale is at most 14 (RFC 7323 §2.3), i.e. a 1 GiB window.
        let buf_ok = |b: usize| (1024..=1 << 30).contains(&b);
        if !buf_ok(self.rx_buffer) || !buf_ok(self.tx_buffer) {
            return Err(SplitError::InvalidConfig(
                "rx_buffer and tx_buffer must be between 1 KiB and 1 GiB",
            ));
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(SplitError::InvalidConfig(
                "mtu must be between 576 and 65535",
            ));
        }
        if self.max_queued_packets == 0 {
            return Err(SplitError::InvalidConfig(
                "max_queued_packets must be at least 1",
            ));
        }
        Ok(())
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

#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
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
pub struct TcpSplitter {
    config: SplitConfig,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    conns: BTreeMap<ConnId, Conn>,
    by_tuple: BTreeMap<(SocketAddrV4, SocketAddrV4), ConnId>,
    /// Ids that reported [`SplitEvent::Closed`] recently (at most `max_connections`, oldest
    /// forgotten first): `read` returns 0 and `is_peer_closed` true for them, so a relay pumped
    /// after the clean close still sees a clean end of stream rather than an unknown id.
    closed_ids: BTreeSet<ConnId>,
    closed_order: VecDeque<ConnId>,
    events: VecDeque<SplitEvent>,
    next_id: u64,
    epoch: Instant,
    last_now: Instant,
    dirty: bool,
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
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = config.random_seed;
        let mut iface = Interface::new(iface_config, &mut device, SmolInstant::from_micros(0));
        let mut pushed = Ok(());
        iface.update_ip_addrs(|addrs| {
            pushed = addrs.push(IpCidr::new(IpAddress::Ipv4(config.local_addr), 32));
        });
        pushed.map_err(|_| SplitError::InvalidConfig("interface address table full"))?;
        iface
            .routes_mut()
            .add_default_ipv4_route(config.local_addr)
            .map_err(|_| SplitError::InvalidConfig("interface route table full"))?;
        iface.set_any_ip(true);
        Ok(Self {
            config,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            conns: BTreeMap::new(),
            by_tuple: BTreeMap::new(),
            closed_ids: BTreeSet::new(),
            closed_order: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
            epoch: now,
            last_now: now,
            dirty: false,
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
        let sock = self.sockets.get::<tcp::Socket>(c.handle);
        Ok(c.fin_received && sock.recv_queue() == 0)
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
        let mut new_listener = None;
        if meta.syn && !meta.ack {
            let key = (meta.src, meta.dst);
            let existing = self.by_tuple.get(&key).copied();
            if let Some(old) = existing {
                // A new SYN for a pair whose old connection is finished (TIME-WAIT or aborted):
                // the client reuses the port; make room (as RFC 6191 allows for TIME-WAIT).
                if self.conns.get(&old).is_some_and(|c| c.finished) {
                    self.remove(old);
                }
            }
            if !self.by_tuple.contains_key(&key) {
                if self.conns.len() >= self.config.max_connections && !self.evict_time_wait() {
                    self.stats.rejected_full += 1;
                    let limit = self.config.max_connections;
                    if self.config.when_full == WhenFull::Reset {
                        // No socket matches, so smoltcp answers with a RST.
                        self.device.rx.push_back(packet.to_vec());
                        self.poll();
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
                let id = self.insert(socket, meta.src, meta.dst, Origin::Accepted, State::Listen);
                new_listener = Some(id);
            }
        }
        self.device.rx.push_back(packet.to_vec());
        self.poll();
        if let Some(id) = new_listener {
            let still_listening = self
                .conns
                .get(&id)
                .is_some_and(|c| self.sockets.get::<tcp::Socket>(c.handle).is_listening());
            if still_listening {
                self.stats.handshake_failed += 1;
                self.remove(id);
            }
        }
        Ok(())
    }

    /// Run smoltcp's timers (retransmission, delayed ACK, TIME-WAIT, keep-alive) and transmit
    /// what commands queued. Call when [`poll_timeout`](Self::poll_timeout) has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.poll();
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called, if any. Returns the
    /// latest `now` seen when work is pending right away (after commands, or after the caller
    /// drained a full packet queue).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.dirty {
            return Some(self.last_now);
        }
        let ts = self.smol(self.last_now);
        self.iface.poll_at(ts, &self.sockets).map(|t| {
            self.epoch + Duration::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
        })
    }

    /// Next IPv4 packet to write to the LAN side (TUN device), if any.
    pub fn poll_ip_packet(&mut self) -> Option<Vec<u8>> {
        let packet = self.device.tx.pop_front()?;
        self.stats.packets_out += 1;
        if self.device.tx_blocked && self.device.tx.len() < self.config.max_queued_packets {
            self.device.tx_blocked = false;
            self.dirty = true;
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
        let mut socket = self.new_socket();
        let remote = IpEndpoint::new(IpAddress::Ipv4(*server.ip()), server.port());
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*client.ip())),
            port: client.port(),
        };
        socket
            .connect(self.iface.context(), remote, local)
            .map_err(|_| SplitError::Unaddressable { client, server })?;
        let id = self.insert(socket, client, server, Origin::Connected, State::SynSent);
        self.poll();
        Ok(id)
    }

    /// Read received bytes into `buf`. `Ok(0)` means nothing is available now (including before
    /// the connection is established and after the peer's FIN: see
    /// [`SplitEvent::PeerClosed`] and [`is_peer_closed`](Self::is_peer_closed)).
    pub fn read(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, SplitError> {
        if self.closed_ids.contains(&id) {
            return Ok(0);
        }
        let c = self.live(id)?;
        let handle = c.handle;
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
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
        if n > 0 {
            // The window opened: let smoltcp send a window update.
            self.dirty = true;
        }
        if drained {
            if let Some(c) = self.conns.get_mut(&id) {
                c.readable_pending = false;
            }
            self.refresh(id);
        }
        Ok(n)
    }

    /// Queue bytes for sending; returns how many were accepted, 0 when the send buffer is full
    /// (or the connection is not established yet): wait for [`SplitEvent::Writable`].
    pub fn write(&mut self, id: ConnId, buf: &[u8]) -> Result<usize, SplitError> {
        let c = self.live(id)?;
        let handle = c.handle;
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
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
        if n > 0 {
            self.dirty = true;
        }
        if n < buf.len()
            && let Some(c) = self.conns.get_mut(&id)
        {
            c.want_writable = true;
        }
        Ok(n)
    }

    /// Close the sending half: a FIN follows the queued bytes (RFC 9293 §3.10.4). Reading
    /// continues until [`SplitEvent::PeerClosed`]. Before establishment this aborts instead.
    pub fn shutdown(&mut self, id: ConnId) -> Result<(), SplitError> {
        if self.closed_ids.contains(&id) {
            return Ok(());
        }
        let c = self.live(id)?;
        if !c.established {
            return self.abort(id);
        }
        let handle = c.handle;
        self.sockets.get_mut::<tcp::Socket>(handle).close();
        self.dirty = true;
        Ok(())
    }

    /// Abort the connection with a RST (RFC 9293 §3.10.5); no further event is emitted for it.
    pub fn abort(&mut self, id: ConnId) -> Result<(), SplitError> {
        let c = self.live(id)?;
        let handle = c.handle;
        self.sockets.get_mut::<tcp::Socket>(handle).abort();
        if let Some(c) = self.conns.get_mut(&id) {
            c.finished = true;
        }
        self.stats.aborted += 1;
        self.dirty = true;
        Ok(())
    }

    fn live(&self, id: ConnId) -> Result<&Conn, SplitError> {
        match self.conns.get(&id) {
            Some(c) if !c.finished => Ok(c),
            _ => Err(SplitError::UnknownConnection(id)),
        }
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

    fn insert(
        &mut self,
        socket: tcp::Socket<'static>,
        client: SocketAddrV4,
        server: SocketAddrV4,
        origin: Origin,
        state: State,
    ) -> ConnId {
        let handle = self.sockets.add(socket);
        let id = ConnId(self.next_id);
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                handle,
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
            },
        );
        self.by_tuple.insert((client, server), id);
        id
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            self.sockets.remove(c.handle);
            if self.by_tuple.get(&(c.client, c.server)) == Some(&id) {
                self.by_tuple.remove(&(c.client, c.server));
            }
        }
    }

    /// Drop the oldest connection that lingers in TIME-WAIT (already reported `Closed`).
    fn evict_time_wait(&mut self) -> bool {
        let victim = self.conns.iter().find_map(|(id, c)| {
            let state = self.sockets.get::<tcp::Socket>(c.handle).state();
            (c.finished && state == State::TimeWait).then_some(*id)
        });
        match victim {
            Some(id) => {
                self.remove(id);
                self.stats.time_wait_evicted += 1;
                true
            }
            None => false,
        }
    }

    fn poll(&mut self) {
        let ts = self.smol(self.last_now);
        self.iface.poll(ts, &mut self.device, &mut self.sockets);
        self.dirty = false;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.refresh(id);
        }
    }

    /// Turn the socket's state into events (edge-triggered) and drop finished sockets.
    fn refresh(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let sock = self.sockets.get::<tcp::Socket>(c.handle);
        let state = sock.state();
        let prev = std::mem::replace(&mut c.state, state);
        if c.finished {
            if state == State::Closed {
                self.remove(id);
            } else if state == State::TimeWait {
                let since = *c.time_wait_since.get_or_insert(self.last_now);
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
        let recv_queue = sock.recv_queue();
        if recv_queue > 0 && !c.readable_pending {
            c.readable_pending = true;
            self.events.push_back(SplitEvent::Readable { id });
        }
        if c.fin_received && recv_queue == 0 && !c.peer_closed_reported {
            c.peer_closed_reported = true;
            self.events.push_back(SplitEvent::PeerClosed { id });
        }
        if c.want_writable && sock.may_send() && sock.send_queue() < sock.send_capacity() {
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
            }
        }
    }
}
