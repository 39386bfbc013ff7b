//! The endpoint: demultiplexes datagrams to connections by connection id, accepts Initials and
//! creates client connections. Sans-IO: the caller moves datagrams and time in and out.
//!
//! Polling discipline (as quinn-proto and `sim-netem` expect): after every input
//! ([`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`] or an application command),
//! drain [`Endpoint::poll_transmit`] until `None` and [`Endpoint::poll_event`] until `None`,
//! then sleep until [`Endpoint::poll_timeout`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::connection::recv::ServerInit;
use crate::connection::{ClientInit, ConnectError, Connection, ConnectionHandle, Event};
use crate::crypto::StaticKeypair;
use crate::wire::{Header, PacketType};

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination address.
    pub dst: SocketAddr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// Endpoint-wide counters (packets that never reached a connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that are not MEF packets (bad magic, version, type or length).
    pub malformed: u64,
    /// Packets for an unknown connection id.
    pub unknown_connection: u64,
    /// Initials whose Noise message failed (wrong server key, forged or corrupted).
    pub handshake_failures: u64,
    /// Retransmitted Initials answered from the cached reply.
    pub duplicate_initials: u64,
    /// Initials refused because the endpoint does not accept connections.
    pub refused: u64,
    /// Connections accepted.
    pub accepted: u64,
}

/// Transport counters summed over an endpoint's connections, live and released (for metrics:
/// how much was sent, lost and sent again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportTotals {
    /// Packets sent.
    pub packets_sent: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// Stream bytes sent for the first time.
    pub stream_bytes_sent: u64,
    /// Packets declared lost (RFC 9002 §6.1).
    pub packets_lost: u64,
    /// Stream bytes sent again after loss or on a probe.
    pub bytes_retransmitted: u64,
    /// Probe timeouts (RFC 9002 §6.2).
    pub pto_count: u64,
}

impl TransportTotals {
    fn add(&mut self, s: &crate::connection::ConnectionStats) {
        self.packets_sent += s.packets_sent;
        self.bytes_sent += s.bytes_sent;
        self.stream_bytes_sent += s.stream_bytes_sent;
        self.packets_lost += s.packets_lost;
        self.bytes_retransmitted += s.bytes_retransmitted;
        self.pto_count += s.pto_count;
    }
}

/// A MEF endpoint: one UDP socket's worth of connections.
#[derive(Debug)]
pub struct Endpoint {
    config: Arc<Config>,
    keypair: StaticKeypair,
    rng: ChaCha20Rng,
    accept: bool,
    next_handle: u64,
    conns: BTreeMap<ConnectionHandle, Connection>,
    by_cid: HashMap<u64, ConnectionHandle>,
    by_initial: HashMap<(SocketAddr, u64), ConnectionHandle>,
    events: VecDeque<Event>,
    /// Each connection's next deadline, ordered (so `poll_timeout` is O(1)).
    timers: BTreeSet<(Instant, ConnectionHandle)>,
    timer_of: HashMap<ConnectionHandle, Instant>,
    /// Connections touched since their events and timer were last collected.
    dirty: BTreeSet<ConnectionHandle>,
    /// Connections that may have something to send, served round robin.
    ready: VecDeque<ConnectionHandle>,
    in_ready: HashSet<ConnectionHandle>,
    spare: Vec<u8>,
    stats: EndpointStats,
    /// Totals of released connections.
    retired: TransportTotals,
}

impl Endpoint {
    /// Creates an endpoint with its static key pair. `seed` drives every random choice
    /// (connection ids, Noise ephemeral keys): a fixed seed makes a simulation repeat bit for bit;
    /// real deployments pass 32 bytes from the OS RNG. Accepts incoming connections by default.
    pub fn new(config: Config, keypair: StaticKeypair, seed: [u8; 32]) -> Self {
        Self {
            spare: Vec::with_capacity(config.max_udp_payload),
            config: Arc::new(config),
            keypair,
            rng: ChaCha20Rng::from_seed(seed),
            accept: true,
            next_handle: 0,
            conns: BTreeMap::new(),
            by_cid: HashMap::new(),
            by_initial: HashMap::new(),
            events: VecDeque::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            dirty: BTreeSet::new(),
            ready: VecDeque::new(),
            in_ready: HashSet::new(),
            stats: EndpointStats::default(),
            retired: TransportTotals::default(),
        }
    }

    /// Whether Initials from unknown clients create connections.
    pub fn set_accept(&mut self, accept: bool) {
        self.accept = accept;
    }

    /// This endpoint's static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.keypair.public()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Endpoint counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Transport counters of every connection this endpoint has had.
    pub fn transport_totals(&self) -> TransportTotals {
        let mut t = self.retired;
        for c in self.conns.values() {
            t.add(&c.stats());
        }
        t
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// A connection, for getters and stream calls.
    pub fn connection(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.conns.get(&h)
    }

    /// A connection, for application commands (`open_stream`, `write`, `read`, ...). After
    /// commands, poll the endpoint for transmits.
    pub fn connection_mut(&mut self, h: ConnectionHandle) -> Option<&mut Connection> {
        if self.conns.contains_key(&h) {
            self.touch(h);
        }
        self.conns.get_mut(&h)
    }

    /// Marks a connection as changed: its events, timer and transmit queue are looked at again.
    fn touch(&mut self, h: ConnectionHandle) {
        self.dirty.insert(h);
        if self.in_ready.insert(h) {
            self.ready.push_back(h);
        }
    }

    /// Handles of live connections, in creation order.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionHandle> + '_ {
        self.conns.keys().copied()
    }

    fn fresh_cid(&mut self) -> u64 {
        loop {
            let c = self.rng.next_u64();
            if c != 0 && !self.by_cid.contains_key(&c) {
                return c;
            }
        }
    }

    fn fresh_seed(&mut self) -> Zeroizing<[u8; 32]> {
        let mut s = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(&mut s[..]);
        s
    }

    fn alloc_handle(&mut self) -> ConnectionHandle {
        let h = ConnectionHandle(self.next_handle);
        self.next_handle += 1;
        h
    }

    /// Starts a connection to `remote`, whose static public key must be known in advance
    /// (Noise IK, like WireGuard). The Initial goes out on the next `poll_transmit`;
    /// [`Event::Connected`] follows one round trip later, or [`Event::Closed`] with
    /// `HandshakeTimeout`.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        server_static_pub: [u8; 32],
    ) -> Result<ConnectionHandle, ConnectError> {
        let handle = self.alloc_handle();
        let local_cid = self.fresh_cid();
        let seed = self.fresh_seed();
        let conn = Connection::new_client(ClientInit {
            handle,
            config: self.config.clone(),
            local: &self.keypair,
            server_public: &server_static_pub,
            local_cid,
            remote,
            seed,
            now,
        })?;
        self.by_cid.insert(local_cid, handle);
        self.conns.insert(handle, conn);
        self.touch(handle);
        Ok(handle)
    }

    /// Feeds a received datagram. Garbage, forgeries and replays are counted and dropped;
    /// nothing here panics on any input.
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, data: &[u8]) {
        let header = match Header::decode(data) {
            Ok(h) => h,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        match header.packet_type {
            PacketType::Initial => self.handle_initial(now, remote, &header, data),
            PacketType::Handshake => match self.by_cid.get(&header.conn_id).copied() {
                Some(h) => {
                    if let Some(c) = self.conns.get_mut(&h) {
                        c.handle_handshake(now, data);
                        self.touch(h);
                    }
                }
                None => self.stats.unknown_connection += 1,
            },
            PacketType::Data => match self.by_cid.get(&header.conn_id).copied() {
                Some(h) => {
                    if let Some(c) = self.conns.get_mut(&h) {
                        c.handle_data(now, remote, data);
                        self.touch(h);
                    }
                }
                None => self.stats.unknown_connection += 1,
            },
            // Resets are unauthenticated; acting on them would let anyone kill connections.
            PacketType::Reset => {}
        }
    }

    fn handle_initial(&mut self, now: Instant, remote: SocketAddr, header: &Header, data: &[u8]) {
        if let Some(h) = self.by_initial.get(&(remote, header.conn_id)).copied() {
            // A retransmitted (or replayed) Initial: never a second connection.
            self.stats.duplicate_initials += 1;
            if let Some(c) = self.conns.get_mut(&h) {
                c.on_duplicate_initial();
                self.touch(h);
            }
            return;
        }
        if !self.accept {
            self.stats.refused += 1;
            return;
        }
        let handle = ConnectionHandle(self.next_handle);
        let local_cid = self.fresh_cid();
        let seed = self.fresh_seed();
        let init = ServerInit {
            handle,
            config: self.config.clone(),
            local: &self.keypair,
            local_cid,
            remote,
            seed,
            now,
        };
        match Connection::new_server(init, data) {
            Ok(conn) => {
                self.next_handle += 1;
                self.stats.accepted += 1;
                self.by_cid.insert(local_cid, handle);
                self.by_initial.insert((remote, header.conn_id), handle);
                self.conns.insert(handle, conn);
                self.touch(handle);
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "Initial rejected");
                self.stats.handshake_failures += 1;
            }
        }
    }

    /// Moves events of touched connections to the endpoint queue, refreshes their deadlines,
    /// and forgets drained connections whose data was all read.
    fn collect(&mut self) {
        while let Some(h) = self.dirty.pop_first() {
            let Some(c) = self.conns.get_mut(&h) else {
                continue;
            };
            while let Some(e) = c.poll_event() {
                self.events.push_back(e);
            }
            if c.is_drained() && !c.has_unread_data() {
                self.release(h);
                continue;
            }
            let next = c.poll_timeout();
            if let Some(old) = self.timer_of.remove(&h) {
                self.timers.remove(&(old, h));
            }
            if let Some(t) = next {
                self.timers.insert((t, h));
                self.timer_of.insert(h, t);
            }
        }
    }

    /// Forgets a connection at once (even with unread data). Drained connections whose data
    /// was read are forgotten automatically.
    pub fn release(&mut self, h: ConnectionHandle) {
        if let Some(c) = self.conns.remove(&h) {
            self.retired.add(&c.stats());
            self.by_cid.remove(&c.local_cid());
            self.by_initial.retain(|_, v| *v != h);
        }
        if let Some(old) = self.timer_of.remove(&h) {
            self.timers.remove(&(old, h));
        }
        self.dirty.remove(&h);
        if self.in_ready.remove(&h) {
            self.ready.retain(|r| *r != h);
        }
    }

    /// The next datagram to send, if any. Connections with something to send take turns
    /// (round robin), so many flows on one endpoint share it fairly.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let mut buf = std::mem::take(&mut self.spare);
        while let Some(h) = self.ready.pop_front() {
            let Some(c) = self.conns.get_mut(&h) else {
                self.in_ready.remove(&h);
                continue;
            };
            self.dirty.insert(h);
            if c.poll_transmit(now, &mut buf) {
                // Back of the queue: it may have more, after the others had a turn.
                self.ready.push_back(h);
                let dst = c.remote();
                let payload =
                    std::mem::replace(&mut buf, Vec::with_capacity(self.config.max_udp_payload));
                self.spare = buf;
                return Some(Transmit { dst, payload });
            }
            self.in_ready.remove(&h);
        }
        self.spare = buf;
        self.collect();
        None
    }

    /// The earliest deadline of any connection.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cached = self.timers.first().map(|(t, _)| *t);
        // Connections touched since the last collection may have new deadlines.
        let fresh = self
            .dirty
            .iter()
            .filter_map(|h| self.conns.get(h)?.poll_timeout())
            .min();
        match (cached, fresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the expired timers of every connection.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.collect();
        while let Some(&(t, h)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            self.timer_of.remove(&h);
            if let Some(c) = self.conns.get_mut(&h) {
                c.handle_timeout(now);
                self.touch(h);
            }
        }
        self.collect();
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.events.is_empty() {
            self.collect();
        }
        self.events.pop_front()
    }
}
