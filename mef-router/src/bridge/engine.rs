//! The [`SplitBridge`] state machine: inputs, outputs, and the event handlers joining the
//! splitter's and the endpoint's events (RFC 3135 §2.3 split connections).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use mef_transport::{CloseReason, ConnectionHandle, Endpoint, Event, StaticKeypair};

use super::{
    BridgeConfig, BridgeError, BridgeEvent, BridgeStats, CLOSE_BAD_CONTROL, CLOSE_UNKNOWN_PEER,
    CONTROL_MAGIC, ConnState, Direction, Flow, FlowId, Key, MAX_HEADER, MefStream, RefuseReason,
    ResetReason, SplitBridge, decode_control, encode_reset,
};
use crate::split::{
    FrameError, Relay, RelayError, RelayStatus, SplitError, SplitEvent, SplitHeader, TcpSplitter,
};

/// Bound on the event-processing rounds of one input, so a misbehaving peer cannot keep one
/// call busy forever.
const MAX_ROUNDS: usize = 64;

const UNSPECIFIED: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);

impl SplitBridge {
    /// A bridge with its WAN identity `keypair`. `seed` drives the transport's random choices
    /// (connection ids, Noise ephemerals): pass 32 bytes from the OS RNG in the daemon, a fixed
    /// value in simulations. Set [`SplitConfig::random_seed`](crate::split::SplitConfig) freshly
    /// too (RFC 6528).
    pub fn new(
        config: BridgeConfig,
        keypair: StaticKeypair,
        seed: [u8; 32],
        now: Instant,
    ) -> Result<Self, BridgeError> {
        let own = keypair.public();
        for (index, p) in config.peers.iter().enumerate() {
            if p.public_key == own {
                return Err(BridgeError::OwnKey { index });
            }
            if config.peers[..index]
                .iter()
                .any(|q| q.public_key == p.public_key)
            {
                return Err(BridgeError::DuplicatePeerKey { index });
            }
            if p.prefixes.is_empty() {
                return Err(BridgeError::NoPrefix {
                    index,
                    wan_addr: p.wan_addr,
                });
            }
        }
        if config.max_unsent < 2048 {
            return Err(BridgeError::MaxUnsent(config.max_unsent));
        }
        let splitter = TcpSplitter::new(config.split.clone(), now)?;
        let endpoint = Endpoint::new(config.transport.clone(), keypair, seed);
        Ok(Self {
            peer_conn: vec![None; config.peers.len()],
            config,
            splitter,
            endpoint,
            flows: Default::default(),
            by_tcp: Default::default(),
            by_stream: Default::default(),
            pending: Default::default(),
            discard: Default::default(),
            conns: Default::default(),
            zombies: Default::default(),
            blocked: Default::default(),
            events: Default::default(),
            to_close: Vec::new(),
            next_flow: 0,
            stats: BridgeStats::default(),
            scratch: vec![0; 16 * 1024],
        })
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// This router's static public key (what peers configure for it).
    pub fn public_key(&self) -> [u8; 32] {
        self.endpoint.public_key()
    }

    /// The LAN-side splitter (read-only, for metrics).
    pub fn splitter(&self) -> &TcpSplitter {
        &self.splitter
    }

    /// The WAN-side MEF endpoint (read-only, for per-connection statistics).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Split connections relaying now.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Counters snapshot.
    pub fn stats(&self) -> BridgeStats {
        let mut s = self.stats.clone();
        s.split = *self.splitter.stats();
        s.endpoint = self.endpoint.stats().clone();
        s.flows_active = self.flows.len() as u64;
        s.connections = self.conns.len() as u64;
        s.transport = self.endpoint.transport_totals();
        s
    }

    /// The peer whose prefixes hold `ip` (longest prefix match), if any.
    pub fn route(&self, ip: Ipv4Addr) -> Option<usize> {
        self.config
            .peers
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.prefixes.iter().map(move |q| (i, q)))
            .filter(|(_, q)| q.contains(ip))
            .max_by_key(|(_, q)| q.len())
            .map(|(i, _)| i)
    }

    // ----- inputs -----

    /// Feeds one IPv4 packet read from the LAN (TCP to a server behind a peer, or a LAN server's
    /// reply to a remote client). An `Err` means the packet was dropped for the reason given and
    /// counted in [`BridgeStats::split`]; it is never fatal.
    pub fn handle_lan_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), SplitError> {
        let r = self.splitter.handle_ip_packet(now, packet);
        self.drive(now);
        r
    }

    /// Feeds one UDP payload received on the WAN socket from `from`. Garbage, forgeries and
    /// replays are counted in [`BridgeStats::endpoint`] and dropped.
    pub fn handle_wan_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.endpoint.handle_datagram(now, from, data);
        self.drive(now);
    }

    /// Runs expired timers of both halves (TCP retransmission, MEF loss recovery and pacing,
    /// idle timeouts). Call when [`poll_timeout`](Self::poll_timeout) has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.splitter.handle_timeout(now);
        let endpoint = &mut self.endpoint;
        self.zombies
            .retain(|h| match endpoint.connection(*h).map(|c| c.is_drained()) {
                Some(true) => {
                    endpoint.release(*h);
                    false
                }
                Some(false) => true,
                None => false,
            });
        self.drive(now);
    }

    // ----- outputs -----

    /// The next IPv4 packet to write to the LAN (TUN device).
    pub fn poll_lan_packet(&mut self) -> Option<Vec<u8>> {
        self.splitter.poll_ip_packet()
    }

    /// The next UDP datagram for the WAN: `(destination, payload)`. The daemon passes it through
    /// its WAN egress rate controller and shaper, where MEF routers stamp it.
    pub fn poll_wan_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        for _ in 0..2 {
            self.refill_blocked(now);
            if let Some(t) = self.endpoint.poll_transmit(now) {
                return Some((t.dst, t.payload));
            }
            // poll_transmit collected events (StreamWritable, acknowledgements); act on them.
            if !self.drive(now) && self.blocked.is_empty() {
                break;
            }
        }
        None
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must run.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.splitter.poll_timeout(), self.endpoint.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event for logs and metrics.
    pub fn poll_event(&mut self) -> Option<BridgeEvent> {
        self.events.pop_front()
    }

    // ----- the engine -----

    /// Processes every pending event of both halves; returns whether anything happened.
    fn drive(&mut self, now: Instant) -> bool {
        let mut any = false;
        for _ in 0..MAX_ROUNDS {
            let mut progress = false;
            while let Some(ev) = self.splitter.poll_event() {
                progress = true;
                self.on_split_event(now, ev);
            }
            while let Some(ev) = self.endpoint.poll_event() {
                progress = true;
                self.on_mef_event(now, ev);
            }
            // Retired connections close once the peer acknowledged everything written to them:
            // closing earlier would discard a last flow's final bytes or FIN in flight, and
            // the peer would reset that flow (RFC 9000 §10.2: closing discards stream data).
            let endpoint = &mut self.endpoint;
            self.to_close.retain(|h| match endpoint.connection_mut(*h) {
                Some(c) if c.is_closed() => false,
                Some(c) if c.all_acknowledged() => {
                    c.close(now, 0, b"retired");
                    progress = true;
                    false
                }
                Some(_) => true,
                None => false,
            });
            if self.splitter.poll_timeout().is_some_and(|t| t <= now) {
                // Commands (reads, writes, aborts) queued work: let smoltcp send it now.
                self.splitter.handle_timeout(now);
            }
            any |= progress;
            if !progress {
                break;
            }
        }
        any
    }

    /// Pumps flows that stopped at `max_unsent` once the pacer sent half of it.
    fn refill_blocked(&mut self, now: Instant) {
        if self.blocked.is_empty() {
            return;
        }
        let half = self.config.max_unsent / 2;
        let ready: Vec<FlowId> = self
            .blocked
            .iter()
            .copied()
            .filter(|f| {
                self.flows.get(f).is_none_or(|fl| {
                    fl.stream.is_none_or(|s| {
                        self.endpoint
                            .connection(fl.conn)
                            .is_none_or(|c| c.stream_unsent(s) <= half)
                    })
                })
            })
            .collect();
        for f in ready {
            self.blocked.remove(&f);
            self.pump(now, f);
        }
    }

    fn on_split_event(&mut self, now: Instant, ev: SplitEvent) {
        match ev {
            SplitEvent::Accepted { id, client, server } => {
                self.on_accepted(now, id, client, server)
            }
            SplitEvent::Connected { id } => {
                if let Some(f) = self.by_tcp.get(&id).copied() {
                    if let Some(flow) = self.flows.get_mut(&f) {
                        flow.ready = true;
                    }
                    self.pump(now, f);
                }
            }
            SplitEvent::Readable { id }
            | SplitEvent::Writable { id }
            | SplitEvent::PeerClosed { id }
            | SplitEvent::Closed { id } => {
                if let Some(f) = self.by_tcp.get(&id).copied() {
                    self.pump(now, f);
                }
            }
            SplitEvent::Reset { id } => {
                if let Some(f) = self.by_tcp.get(&id).copied() {
                    self.reset_flow(f, ResetReason::LanReset, true);
                }
            }
        }
    }

    fn on_accepted(
        &mut self,
        now: Instant,
        id: crate::split::ConnId,
        client: SocketAddrV4,
        server: SocketAddrV4,
    ) {
        let refuse = |this: &mut Self, reason| {
            // The id was just accepted, so abort cannot fail; ignore it if it did.
            let _ = this.splitter.abort(id);
            if reason == RefuseReason::NoRoute {
                this.stats.no_route += 1;
            } else {
                this.stats.refused += 1;
            }
            this.events.push_back(BridgeEvent::FlowRefused {
                client,
                server,
                reason,
            });
        };
        let Some(peer) = self.route(*server.ip()) else {
            return refuse(self, RefuseReason::NoRoute);
        };
        let Ok(relay) = Relay::ingress(id, SplitHeader { client, server }, self.config.relay)
        else {
            return refuse(self, RefuseReason::Unavailable);
        };
        let Some(conn) = self.conn_for(now, peer) else {
            return refuse(self, RefuseReason::Unavailable);
        };
        let f = self.new_flow(Flow {
            tcp: id,
            direction: Direction::Ingress,
            peer,
            client,
            server,
            conn,
            stream: None,
            relay,
            ready: true,
        });
        self.stats.flows_ingress += 1;
        self.attach_stream(now, f);
    }

    fn new_flow(&mut self, flow: Flow) -> FlowId {
        let f = FlowId(self.next_flow);
        self.next_flow += 1;
        self.events.push_back(BridgeEvent::FlowOpened {
            flow: f,
            direction: flow.direction,
            peer: flow.peer,
            client: flow.client,
            server: flow.server,
        });
        self.by_tcp.insert(flow.tcp, f);
        if let Some(s) = flow.stream {
            self.by_stream.insert((flow.conn, s), f);
        }
        if let Some(c) = self.conns.get_mut(&flow.conn) {
            c.flows += 1;
        }
        self.flows.insert(f, flow);
        f
    }

    /// The MEF connection new flows to `peer` use, opening one if needed.
    fn conn_for(&mut self, now: Instant, peer: usize) -> Option<ConnectionHandle> {
        if let Some(h) = self.peer_conn.get(peer).copied().flatten() {
            let usable = self.conns.get(&h).is_some_and(|c| !c.retiring)
                && self.endpoint.connection(h).is_some_and(|c| !c.is_closed());
            if usable {
                return Some(h);
            }
        }
        let p = self.config.peers.get(peer)?;
        match self.endpoint.connect(now, p.wan_addr, p.public_key) {
            Ok(h) => {
                self.conns.insert(
                    h,
                    ConnState {
                        peer,
                        ..ConnState::default()
                    },
                );
                if let Some(slot) = self.peer_conn.get_mut(peer) {
                    *slot = Some(h);
                }
                Some(h)
            }
            Err(e) => {
                tracing::warn!(peer, error = %e, "cannot start MEF connection");
                None
            }
        }
    }

    /// Gives an ingress flow its stream once its connection is established.
    fn attach_stream(&mut self, now: Instant, f: FlowId) {
        let Some(flow) = self.flows.get(&f) else {
            return;
        };
        let (h, peer) = (flow.conn, flow.peer);
        if flow.stream.is_some() || !self.conns.get(&h).is_some_and(|c| c.established) {
            return;
        }
        let sid = self
            .endpoint
            .connection_mut(h)
            .and_then(|c| c.open_stream());
        let Some(sid) = sid else {
            // Stream ids of this connection are used up: move the flow to a fresh connection
            // (unless this one never opened any, then the peer allows none).
            let fresh = self.conns.get(&h).is_some_and(|c| c.streams_opened == 0);
            if let Some(c) = self.conns.get_mut(&h) {
                c.retiring = true;
            }
            let next = if fresh {
                None
            } else {
                self.conn_for(now, peer)
            };
            match next {
                Some(n) if n != h => {
                    self.move_flow(f, n);
                    self.attach_stream(now, f);
                }
                _ => self.reset_flow(f, ResetReason::StreamFailed, false),
            }
            return;
        };
        if let Some(c) = self.conns.get_mut(&h) {
            c.streams_opened += 1;
        }
        if let Some(flow) = self.flows.get_mut(&f) {
            flow.stream = Some(sid);
        }
        self.by_stream.insert((h, sid), f);
        self.pump(now, f);
    }

    fn move_flow(&mut self, f: FlowId, to: ConnectionHandle) {
        let Some(flow) = self.flows.get_mut(&f) else {
            return;
        };
        let from = std::mem::replace(&mut flow.conn, to);
        if let Some(c) = self.conns.get_mut(&from) {
            c.flows = c.flows.saturating_sub(1);
        }
        if let Some(c) = self.conns.get_mut(&to) {
            c.flows += 1;
        }
        self.maybe_retire(from);
    }

    fn on_mef_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::Connected(h) => {
                let Some(c) = self.conns.get_mut(&h) else {
                    return;
                };
                c.established = true;
                let peer = c.peer;
                self.events
                    .push_back(BridgeEvent::PeerConnected { peer, conn: h });
                let waiting: Vec<FlowId> = self
                    .flows
                    .iter()
                    .filter(|(_, fl)| fl.conn == h && fl.stream.is_none())
                    .map(|(f, _)| *f)
                    .collect();
                for f in waiting {
                    self.attach_stream(now, f);
                }
                self.flush_control(h);
            }
            Event::Accepted(h) => self.on_mef_accepted(now, h),
            Event::StreamOpened { conn, stream } => {
                if self.conns.contains_key(&conn) && !self.by_stream.contains_key(&(conn, stream)) {
                    self.pending.insert((conn, stream), Vec::new());
                    self.on_readable(now, (conn, stream));
                }
            }
            Event::StreamReadable { conn, stream } => self.on_readable(now, (conn, stream)),
            Event::StreamWritable { conn, stream } => {
                if let Some(f) = self.by_stream.get(&(conn, stream)).copied() {
                    self.pump(now, f);
                } else {
                    self.flush_control(conn);
                }
            }
            Event::StreamFinished { .. } => {}
            Event::Closed { conn, reason } => self.on_conn_closed(conn, reason),
        }
    }

    /// Egress admission: only configured peers' keys (Noise IK authenticated the client's
    /// static key; we decide whether it is welcome).
    fn on_mef_accepted(&mut self, now: Instant, h: ConnectionHandle) {
        let Some(c) = self.endpoint.connection(h) else {
            return;
        };
        let key = c.remote_static();
        let addr = c.remote();
        let peer = key.and_then(|k| self.config.peers.iter().position(|p| p.public_key == k));
        let Some(peer) = peer else {
            self.stats.peers_refused += 1;
            if let Some(c) = self.endpoint.connection_mut(h) {
                c.close(now, CLOSE_UNKNOWN_PEER, b"unknown peer key");
            }
            self.zombies.insert(h);
            self.events.push_back(BridgeEvent::PeerRefused { addr });
            return;
        };
        self.conns.insert(
            h,
            ConnState {
                peer,
                established: true,
                ..ConnState::default()
            },
        );
        if let Some(slot) = self.peer_conn.get_mut(peer)
            && slot.is_none()
        {
            *slot = Some(h);
        }
        self.events
            .push_back(BridgeEvent::PeerConnected { peer, conn: h });
    }

    fn on_readable(&mut self, now: Instant, key: Key) {
        if let Some(f) = self.by_stream.get(&key).copied() {
            self.pump(now, f);
        } else if self.pending.contains_key(&key) {
            self.read_header(now, key);
        } else if self
            .conns
            .get(&key.0)
            .is_some_and(|c| c.ctrl_in.contains_key(&key.1))
        {
            self.read_control(now, key);
        } else if self.discard.contains(&key) {
            self.drain_discard(key);
        }
    }

    /// Reads the first bytes of a new incoming stream: a control stream or a [`SplitHeader`].
    fn read_header(&mut self, now: Instant, key: Key) {
        let mut finished = false;
        loop {
            let Some(buf) = self.pending.get_mut(&key) else {
                return;
            };
            let room = MAX_HEADER + 1 - buf.len().min(MAX_HEADER);
            if room == 0 || (!buf.is_empty() && buf[0] == CONTROL_MAGIC) {
                break;
            }
            let Some(c) = self.endpoint.connection_mut(key.0) else {
                return;
            };
            let mut tmp = [0u8; MAX_HEADER + 1];
            match c.read(key.1, &mut tmp[..room]) {
                Ok(Some(n)) if n > 0 => {
                    buf.extend_from_slice(&tmp[..n]);
                    if SplitHeader::parse(buf).is_ok() {
                        break;
                    }
                }
                Ok(None) => {
                    finished = true;
                    break;
                }
                Ok(Some(_)) | Err(_) => break,
            }
        }
        let Some(buf) = self.pending.get(&key) else {
            return;
        };
        if buf.first() == Some(&CONTROL_MAGIC) {
            let rest = buf[1..].to_vec();
            self.pending.remove(&key);
            if let Some(c) = self.conns.get_mut(&key.0) {
                c.ctrl_in.insert(key.1, rest);
            }
            self.read_control(now, key);
            return;
        }
        match SplitHeader::parse(buf) {
            Ok((hdr, used)) => {
                let rest = buf[used..].to_vec();
                self.pending.remove(&key);
                self.open_egress(now, key, hdr, &rest);
            }
            Err(FrameError::Truncated { .. }) if !finished && buf.len() <= MAX_HEADER => {}
            Err(e) => {
                tracing::debug!(conn = key.0.0, stream = key.1.0, error = %e, "bad split header");
                self.pending.remove(&key);
                self.refuse_stream(key, UNSPECIFIED, UNSPECIFIED, RefuseReason::BadHeader);
            }
        }
    }

    fn refuse_stream(
        &mut self,
        key: Key,
        client: SocketAddrV4,
        server: SocketAddrV4,
        reason: RefuseReason,
    ) {
        self.stats.refused += 1;
        self.events.push_back(BridgeEvent::FlowRefused {
            client,
            server,
            reason,
        });
        self.reset_stream(key);
    }

    /// Egress: re-originate the TCP connection a peer asked for, after checking it may.
    fn open_egress(&mut self, now: Instant, key: Key, hdr: SplitHeader, rest: &[u8]) {
        let Some(peer) = self.conns.get(&key.0).map(|c| c.peer) else {
            return;
        };
        let client_ok = self
            .config
            .peers
            .get(peer)
            .is_some_and(|p| p.prefixes.iter().any(|q| q.contains(*hdr.client.ip())));
        let server_ok = self.route(*hdr.server.ip()).is_none()
            && (self.config.local_prefixes.is_empty()
                || self
                    .config
                    .local_prefixes
                    .iter()
                    .any(|q| q.contains(*hdr.server.ip())));
        if !client_ok || !server_ok {
            return self.refuse_stream(key, hdr.client, hdr.server, RefuseReason::NotAllowed);
        }
        let id = match self.splitter.connect(now, hdr.client, hdr.server) {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(client = %hdr.client, server = %hdr.server, error = %e, "re-origination refused");
                return self.refuse_stream(key, hdr.client, hdr.server, RefuseReason::Unavailable);
            }
        };
        let relay = Relay::egress(id, rest, self.config.relay);
        self.stats.flows_egress += 1;
        self.new_flow(Flow {
            tcp: id,
            direction: Direction::Egress,
            peer,
            client: hdr.client,
            server: hdr.server,
            conn: key.0,
            stream: Some(key.1),
            relay,
            ready: false,
        });
    }

    fn read_control(&mut self, now: Instant, key: Key) {
        let mut ended = false;
        loop {
            let Some(c) = self.endpoint.connection_mut(key.0) else {
                return;
            };
            match c.read(key.1, &mut self.scratch) {
                Ok(Some(n)) if n > 0 => {
                    if let Some(st) = self.conns.get_mut(&key.0)
                        && let Some(buf) = st.ctrl_in.get_mut(&key.1)
                    {
                        buf.extend_from_slice(&self.scratch[..n]);
                    }
                }
                Ok(None) | Err(mef_transport::ReadError::UnknownStream) => {
                    ended = true;
                    break;
                }
                _ => break,
            }
        }
        let Some(buf) = self
            .conns
            .get_mut(&key.0)
            .and_then(|st| st.ctrl_in.get_mut(&key.1))
        else {
            return;
        };
        let decoded = decode_control(buf);
        if ended && let Some(st) = self.conns.get_mut(&key.0) {
            st.ctrl_in.remove(&key.1);
        }
        match decoded {
            Ok(resets) => {
                for sid in resets {
                    self.on_peer_reset((key.0, sid));
                }
            }
            Err(kind) => {
                tracing::debug!(conn = key.0.0, kind, "bad control message");
                if let Some(c) = self.endpoint.connection_mut(key.0) {
                    c.close(now, CLOSE_BAD_CONTROL, b"bad control message");
                }
            }
        }
    }

    fn on_peer_reset(&mut self, key: Key) {
        self.stats.resets_received += 1;
        if let Some(f) = self.by_stream.get(&key).copied() {
            if let Some(flow) = self.flows.get(&f) {
                // The TCP half may already be gone; nothing more to do then.
                let _ = self.splitter.abort(flow.tcp);
            }
            self.end_flow(f, Some(ResetReason::PeerReset));
            self.discard_stream(key);
        } else if self.pending.remove(&key).is_some() {
            self.discard_stream(key);
        }
    }

    /// Moves bytes of one flow; handles its end.
    fn pump(&mut self, now: Instant, f: FlowId) {
        let _ = now;
        let Some(flow) = self.flows.get_mut(&f) else {
            return;
        };
        let Some(stream) = flow.stream else {
            return;
        };
        if !flow.ready {
            return;
        }
        let mut view = MefStream {
            endpoint: &mut self.endpoint,
            conn: flow.conn,
            stream,
            max_unsent: self.config.max_unsent,
            blocked: false,
            reset: false,
        };
        let result = flow.relay.pump(&mut self.splitter, &mut view);
        let blocked = view.blocked;
        if blocked {
            self.blocked.insert(f);
        } else {
            self.blocked.remove(&f);
        }
        match result {
            Ok(RelayStatus::Open) => {}
            Ok(RelayStatus::Done) => self.end_flow(f, None),
            Err(RelayError::Split(e)) => {
                tracing::debug!(flow = %f, error = %e, "TCP half failed");
                self.reset_flow(f, ResetReason::LanReset, true);
            }
            Err(RelayError::Stream(e)) => {
                tracing::debug!(flow = %f, error = %e, "MEF stream failed");
                // The relay aborted the TCP half; tell the peer if the connection still lives.
                self.reset_flow(f, ResetReason::StreamFailed, true);
            }
        }
    }

    /// Ends a flow with a reset: aborts its TCP half and, if `tell_peer`, resets its stream.
    fn reset_flow(&mut self, f: FlowId, reason: ResetReason, tell_peer: bool) {
        let Some(flow) = self.flows.get(&f) else {
            return;
        };
        // Already aborted or reset by the splitter in most paths; ignore "unknown connection".
        let _ = self.splitter.abort(flow.tcp);
        let key = flow.stream.map(|s| (flow.conn, s));
        self.end_flow(f, Some(reason));
        if tell_peer && let Some(key) = key {
            self.reset_stream(key);
        }
    }

    /// Forgets a flow and reports its end (`None`: clean close).
    fn end_flow(&mut self, f: FlowId, reset: Option<ResetReason>) {
        let Some(flow) = self.flows.remove(&f) else {
            return;
        };
        self.by_tcp.remove(&flow.tcp);
        if let Some(s) = flow.stream {
            self.by_stream.remove(&(flow.conn, s));
        }
        self.blocked.remove(&f);
        let (client, server) = (flow.client, flow.server);
        self.events.push_back(match reset {
            None => {
                self.stats.flows_closed += 1;
                BridgeEvent::FlowClosed {
                    flow: f,
                    client,
                    server,
                }
            }
            Some(reason) => {
                self.stats.flows_reset += 1;
                BridgeEvent::FlowReset {
                    flow: f,
                    client,
                    server,
                    reason,
                }
            }
        });
        if let Some(c) = self.conns.get_mut(&flow.conn) {
            c.flows = c.flows.saturating_sub(1);
        }
        self.maybe_retire(flow.conn);
    }

    /// Closes a retiring connection once its last flow ended.
    fn maybe_retire(&mut self, h: ConnectionHandle) {
        if self
            .conns
            .get(&h)
            .is_some_and(|c| c.retiring && c.flows == 0)
        {
            self.conns.remove(&h);
            self.zombies.insert(h);
            self.to_close.push(h);
        }
    }

    /// Tells the peer that stream `key` was reset, ends our sending half, and drops whatever
    /// still arrives on it.
    fn reset_stream(&mut self, key: Key) {
        if self
            .endpoint
            .connection(key.0)
            .is_none_or(|c| c.is_closed())
        {
            return;
        }
        self.stats.resets_sent += 1;
        if let Some(c) = self.conns.get_mut(&key.0) {
            c.ctrl_out.extend_from_slice(&encode_reset(key.1));
        }
        self.flush_control(key.0);
        self.discard_stream(key);
    }

    fn discard_stream(&mut self, key: Key) {
        if let Some(c) = self.endpoint.connection_mut(key.0) {
            // Already finished or unknown: nothing to end.
            let _ = c.finish(key.1);
        }
        self.discard.insert(key);
        self.drain_discard(key);
    }

    fn drain_discard(&mut self, key: Key) {
        loop {
            let Some(c) = self.endpoint.connection_mut(key.0) else {
                self.discard.remove(&key);
                return;
            };
            match c.read(key.1, &mut self.scratch) {
                Ok(Some(n)) if n > 0 => {}
                Err(mef_transport::ReadError::Blocked) | Ok(Some(_)) => return,
                Ok(None) | Err(_) => {
                    self.discard.remove(&key);
                    return;
                }
            }
        }
    }

    /// Writes queued control messages, opening our control stream first if needed.
    fn flush_control(&mut self, h: ConnectionHandle) {
        let Some(st) = self.conns.get_mut(&h) else {
            return;
        };
        if st.ctrl_out.is_empty() || !st.established {
            return;
        }
        let Some(c) = self.endpoint.connection_mut(h) else {
            return;
        };
        let sid = match st.ctrl_tx {
            Some(s) => s,
            None => match c.open_stream() {
                Some(s) => {
                    st.ctrl_tx = Some(s);
                    st.streams_opened += 1;
                    st.ctrl_out.insert(0, CONTROL_MAGIC);
                    s
                }
                None => {
                    // No stream credit: the far halves learn of the reset when this
                    // connection ends (a retiring connection always ends).
                    st.retiring = true;
                    return;
                }
            },
        };
        match c.write(sid, &st.ctrl_out) {
            Ok(n) => {
                st.ctrl_out.drain(..n);
            }
            Err(e) => tracing::debug!(conn = h.0, error = %e, "control stream write failed"),
        }
    }

    fn on_conn_closed(&mut self, h: ConnectionHandle, reason: CloseReason) {
        self.zombies.insert(h);
        let Some(st) = self.conns.remove(&h) else {
            return;
        };
        if let Some(slot) = self.peer_conn.get_mut(st.peer)
            && *slot == Some(h)
        {
            *slot = None;
        }
        let dead: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, fl)| fl.conn == h)
            .map(|(f, _)| *f)
            .collect();
        for f in dead {
            self.reset_flow(f, ResetReason::ConnectionClosed, false);
        }
        self.pending.retain(|k, _| k.0 != h);
        self.discard.retain(|k| k.0 != h);
        self.events.push_back(BridgeEvent::PeerDisconnected {
            peer: st.peer,
            conn: h,
            reason,
        });
    }
}
