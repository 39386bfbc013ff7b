//! The endpoint: demultiplexes datagrams to connections by connection id, accepts Initials and
//! creates client connections. Sans-IO: the caller moves datagrams and time in and out.
//!
//! Polling discipline (as quinn-proto and `sim-netem` expect): after every input
//! ([`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`] or an application command),
//! drain [`Endpoint::poll_transmit`] until `None` and [`Endpoint::poll_event`] until `None`,
//! then sleep until [`Endpoint::poll_timeout`].

use std::collections::{BTreeMap, HashMap, VecDeque};
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
    rr: ConnectionHandle,
    spare: Vec<u8>,
    stats: EndpointStats,
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
            rr: ConnectionHandle(0),
            stats: EndpointStats::default(),
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
        self.conns.get_mut(&h)
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
            PacketType::Handshake => match self.by_cid.get(&header.conn_id) {
                Some(h) => {
                    if let Some(c) = self.conns.get_mut(h) {
                        c.handle_handshake(now, data);
                    }
                }
                None => self.stats.unknown_connection += 1,
            },
            PacketType::Data => match self.by_cid.get(&header.conn_id) {
                Some(h) => {
                    if let Some(c) = self.conns.get_mut(h) {
                        c.handle_data(now, remote, data);
                    }
                }
                None => self.stats.unknown_connection += 1,
            },
            // Resets are unauthenticated; acting on them would let anyone kill connections.
            PacketType::Reset => {}
        }
        self.collect();
    }

    fn handle_initial(&mut self, now: Instant, remote: SocketAddr, header: &Header, data: &[u8]) {
        if let Some(h) = self.by_initial.get(&(remote, header.conn_id)) {
            // A retransmitted (or replayed) Initial: never a second connection.
            self.stats.duplicate_initials += 1;
            if let Some(c) = self.conns.get_mut(h) {
                c.on_duplicate_initial();
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
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "Initial rejected");
                self.stats.handshake_failures += 1;
            }
        }
    }

    /// Moves connection events to the endpoint queue and forgets drained connections whose
    /// data was all read.
    fn collect(&mut self) {
        let mut dead = Vec::new();
        for (h, c) in self.conns.iter_mut() {
            while let Some(e) = c.poll_event() {
                self.events.push_back(e);
            }
            if c.is_drained() && !c.has_unread_data() {
                dead.push(*h);
            }
        }
        for h in dead {
            self.release(h);
        }
    }

    /// Forgets a connection at once (even with unread data). Drained connections whose data
    /// was read are forgotten automatically.
    pub fn release(&mut self, h: ConnectionHandle) {
        if let Some(c) = self.conns.remove(&h) {
            self.by_cid.remove(&c.local_cid());
            self.by_initial.retain(|_, v| *v != h);
        }
    }

    /// The next datagram to send, if any (round robin over connections).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let mut buf = std::mem::take(&mut self.spare);
        let start = self.rr;
        let order = self
            .conns
            .range(start..)
            .map(|(h, _)| *h)
            .chain(self.conns.range(..start).map(|(h, _)| *h))
            .collect::<SmallHandles>();
        for h in order.iter() {
            if let Some(c) = self.conns.get_mut(&h)
                && c.poll_transmit(now, &mut buf)
            {
                self.rr = ConnectionHandle(h.0 + 1);
                let dst = c.remote();
                let payload =
                    std::mem::replace(&mut buf, Vec::with_capacity(self.config.max_udp_payload));
                self.spare = buf;
                return Some(Transmit { dst, payload });
            }
        }
        self.spare = buf;
        self.collect();
        None
    }

    /// The earliest deadline of any connection.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.poll_timeout()).min()
    }

    /// Runs every connection's expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for c in self.conns.values_mut() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
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

/// Connection handles collected for one round-robin pass, without a heap allocation for the
/// common case of few connections.
struct SmallHandles {
    inline: [ConnectionHandle; 16],
    len: usize,
    spill: Vec<ConnectionHandle>,
}

impl FromIterator<ConnectionHandle> for SmallHandles {
    fn from_iter<I: IntoIterator<Item = ConnectionHandle>>(iter: I) -> Self {
        let mut s = Self {
            inline: [ConnectionHandle(0); 16],
            len: 0,
            spill: Vec::new(),
        };
        for h in iter {
            if s.len < s.inline.len() {
                s.inline[s.len] = h;
                s.len += 1;
            } else {
                s.spill.push(h);
            }
        }
        s
    }
}

impl SmallHandles {
    fn iter(&self) -> impl Iterator<Item = ConnectionHandle> + '_ {
        self.inline[..self.len]
            .iter()
            .copied()
            .chain(self.spill.iter().copied())
    }
}
