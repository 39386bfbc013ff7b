//! The baselines: real `quinn-proto` QUIC connections, with quinn's own Cubic and BBR congestion
//! controllers, plugged into the simulator as [`sim_netem::Endpoint`]s.
//!
//! A [`QuinnSender`] is one simulated UDP socket that opens one QUIC connection per planned flow
//! ([`FlowPlan`]) at the flow's start time, opens one unidirectional stream on it and writes
//! continuously (a bulk flow) or exactly `size` bytes (a sized flow, then `finish`es the stream and
//! closes the connection once the receiver acknowledged every byte). A [`QuinnSink`] accepts any
//! number of connections, reads every stream (unordered, reassembled in [`Reassembly`]), and records per flow the bytes delivered,
//! the completion time and (optionally) a goodput time series.
//!
//! Each stream starts with an 8-byte little-endian flow id ([`FLOW_TAG_LEN`]) so the sink can tell
//! flows apart; the tag is not counted as payload (a flow of `size` bytes delivers `size` bytes).
//!
//! Configuration, and why (see `docs/BENCHMARKS.md`):
//! - flow control never limits: stream receive window, connection receive window and send window
//!   are [`FLOW_WINDOW`] = 64 MiB, more than 2·BDP of 100 Mbit/s × 400 ms (10 MB). quinn's default
//!   1.25 MB stream window would otherwise cap one stream near 50 Mbit/s at 200 ms;
//! - UDP payloads are 1472 bytes like MEF's (1500 on the wire with IPv4 + UDP): `initial_mtu` and
//!   `min_mtu` are 1472 and path-MTU discovery is off, so the packet size never changes;
//! - `max_idle_timeout` is 30 s (longer than any loss episode in the scenarios, short enough that
//!   a dead peer is noticed);
//! - the certificate is a self-signed Ed25519 one from rcgen (Ed25519 signatures have a fixed
//!   length, so handshake sizes do not vary run to run); TLS is rustls with the ring provider.
//!
//! Determinism: every quinn endpoint gets an RNG seed (`Endpoint::new(.., rng_seed)`), so Cubic
//! runs repeat exactly for a given seed. quinn's BBR seeds its own PCG from the thread RNG
//! (`quinn-proto/src/congestion/bbr/mod.rs`), so BBR runs may differ slightly between runs:
//! [`Baseline::deterministic`] says so and the benchmark records carry it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::congestion::{BbrConfig, CubicConfig};
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, EndpointConfig, Event,
    IdleTimeout, ServerConfig, StreamEvent, StreamId, TransportConfig, VarInt,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sim_netem::{Datagram, Endpoint};

pub use crate::flow::{FLOW_TAG_LEN, FlowPlan, FlowRecv, SenderStats};
use crate::flow::{Reassembly, record_delivery};

/// UDP payload size quinn is configured to use: 1500-byte IPv4 MTU minus IP and UDP headers, the
/// same datagram size MEF uses.
pub const UDP_PAYLOAD: u16 = 1472;

/// Flow-control and send windows (bytes): 64 MiB, above 2·BDP at 100 Mbit/s × 400 ms.
pub const FLOW_WINDOW: u64 = 64 * 1024 * 1024;

/// Idle timeout of every quinn connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// ALPN token both sides offer.
const ALPN: &[u8] = b"mef-bench";

/// Server name the certificate is issued for.
const SERVER_NAME: &str = "sink.mef-bench";

/// Size of the static zero chunk the bulk writer hands quinn (shared, never copied).
const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Which of quinn's congestion controllers a baseline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Baseline {
    /// `quinn_proto::congestion::Cubic` (quinn's default).
    Cubic,
    /// `quinn_proto::congestion::Bbr` (quinn's experimental BBRv1-like controller).
    Bbr,
}

impl Baseline {
    /// Both baselines, in table order.
    pub const ALL: [Baseline; 2] = [Baseline::Cubic, Baseline::Bbr];

    /// The protocol name used in records: `quinn-cubic` or `quinn-bbr`.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Baseline::Cubic => "quinn-cubic",
            Baseline::Bbr => "quinn-bbr",
        }
    }

    /// Whether runs repeat bit for bit for a given seed. quinn's BBR seeds its own RNG from the
    /// thread RNG, so it does not.
    pub fn deterministic(self) -> bool {
        matches!(self, Baseline::Cubic)
    }
}

/// Why the quinn configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum QuinnSetupError {
    /// rcgen could not generate the self-signed certificate.
    #[error("generating the self-signed certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls rejected the certificate, key or protocol selection.
    #[error("building the rustls configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The rustls configuration has no cipher suite usable for QUIC initial packets.
    #[error("rustls configuration unusable for QUIC: {0}")]
    NoInitialCipherSuite(#[from] quinn_proto::crypto::rustls::NoInitialCipherSuite),
    /// quinn rejected an endpoint parameter.
    #[error("quinn endpoint configuration: {0}")]
    Config(#[from] quinn_proto::ConfigError),
    /// The cached configuration failed to build earlier.
    #[error("quinn configuration failed earlier: {0}")]
    Cached(String),
}

/// Adds one connection's quinn statistics to a sender's counters.
fn add_quinn_stats(acc: &mut SenderStats, s: &quinn_proto::ConnectionStats) {
    acc.sent_packets += s.udp_tx.datagrams;
    acc.sent_bytes += s.udp_tx.bytes;
    acc.lost_packets += s.path.lost_packets;
    acc.lost_bytes += s.path.lost_bytes;
    acc.congestion_events += s.path.congestion_events;
}

/// The TLS identity shared by every sink (generated once per process).
struct Identity {
    cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
}

fn identity() -> Result<&'static Identity, QuinnSetupError> {
    static ID: OnceLock<Result<Identity, String>> = OnceLock::new();
    let id = ID.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| e.to_string())?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(Identity {
            cert: cert.der().clone(),
            key_pkcs8: key.serialize_der(),
        })
    });
    id.as_ref().map_err(|e| QuinnSetupError::Cached(e.clone()))
}

/// The transport parameters every baseline connection uses (see the module docs).
pub fn transport_config(baseline: Baseline) -> TransportConfig {
    let mut t = TransportConfig::default();
    let window = VarInt::from_u64(FLOW_WINDOW).unwrap_or(VarInt::MAX);
    t.stream_receive_window(window)
        .receive_window(window)
        .send_window(FLOW_WINDOW)
        .initial_mtu(UDP_PAYLOAD)
        .min_mtu(UDP_PAYLOAD)
        .mtu_discovery_config(None)
        .max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok())
        .max_concurrent_uni_streams(VarInt::from_u32(16));
    match baseline {
        Baseline::Cubic => t.congestion_controller_factory(Arc::new(CubicConfig::default())),
        Baseline::Bbr => t.congestion_controller_factory(Arc::new(BbrConfig::default())),
    };
    t
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client configuration for a baseline: trusts exactly the sinks' self-signed certificate.
pub fn client_config(baseline: Baseline) -> Result<ClientConfig, QuinnSetupError> {
    let id = identity()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(id.cert.clone())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg = ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(Arc::new(transport_config(baseline)));
    Ok(cfg)
}

/// Server configuration for a sink (its own congestion controller only paces acknowledgements).
pub fn server_config(baseline: Baseline) -> Result<ServerConfig, QuinnSetupError> {
    let id = identity()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.clone()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![id.cert.clone()], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg = ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    cfg.transport_config(Arc::new(transport_config(baseline)));
    Ok(cfg)
}

fn endpoint_config() -> Result<Arc<EndpointConfig>, QuinnSetupError> {
    let mut cfg = EndpointConfig::default();
    cfg.max_udp_payload_size(UDP_PAYLOAD)?;
    Ok(Arc::new(cfg))
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        // splitmix64 over (seed, i): distinct, well-mixed words.
        let mut z = seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

struct SendFlow {
    plan: FlowPlan,
    conn: Connection,
    stream: Option<StreamId>,
    /// Tag plus payload bytes handed to quinn so far.
    written: u64,
    fin: bool,
    acked: bool,
    closing: bool,
}

/// A quinn client bound to one simulated address, running the planned flows towards one sink.
pub struct QuinnSender {
    local: SocketAddr,
    remote: SocketAddr,
    endpoint: quinn_proto::Endpoint,
    config: ClientConfig,
    pending: VecDeque<FlowPlan>,
    flows: BTreeMap<usize, SendFlow>,
    done: SenderStats,
    rr: usize,
    errors: Vec<String>,
    timeout: Option<Instant>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for QuinnSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuinnSender")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("pending", &self.pending.len())
            .field("active", &self.flows.len())
            .finish()
    }
}

impl QuinnSender {
    /// A sender at `local` that will run `flows` (in start order) towards the sink at `remote`.
    pub fn new(
        baseline: Baseline,
        local: SocketAddr,
        remote: SocketAddr,
        mut flows: Vec<FlowPlan>,
        seed: u64,
    ) -> Result<Self, QuinnSetupError> {
        flows.sort_by_key(|f| (f.start, f.id));
        let endpoint =
            quinn_proto::Endpoint::new(endpoint_config()?, None, false, Some(seed_bytes(seed)));
        let timeout = flows.first().map(|f| f.start);
        Ok(Self {
            local,
            remote,
            endpoint,
            config: client_config(baseline)?,
            pending: flows.into(),
            flows: BTreeMap::new(),
            done: SenderStats::default(),
            rr: 0,
            errors: Vec::new(),
            timeout,
            buf: Vec::with_capacity(usize::from(UDP_PAYLOAD)),
        })
    }

    /// Counters over all connections so far.
    pub fn stats(&self) -> SenderStats {
        let mut s = self.done;
        for f in self.flows.values() {
            add_quinn_stats(&mut s, &f.conn.stats());
        }
        s
    }

    /// Connection errors (failed connects, connections lost before their flow finished).
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Smoothed RTT and congestion window of the live connection of flow `id`, if any.
    pub fn path(&self, id: u64) -> Option<(Duration, u64)> {
        self.flows.values().find(|f| f.plan.id == id).map(|f| {
            let s = f.conn.stats();
            (s.path.rtt, s.path.cwnd)
        })
    }

    fn start_due(&mut self, now: Instant) {
        while self.pending.front().is_some_and(|f| f.start <= now) {
            let Some(plan) = self.pending.pop_front() else {
                break;
            };
            match self
                .endpoint
                .connect(now, self.config.clone(), self.remote, SERVER_NAME)
            {
                Ok((ch, conn)) => {
                    self.done.flows_started += 1;
                    self.flows.insert(
                        ch.0,
                        SendFlow {
                            plan,
                            conn,
                            stream: None,
                            written: 0,
                            fin: false,
                            acked: false,
                            closing: false,
                        },
                    );
                    self.process(now, ch.0);
                }
                Err(e) => self.errors.push(format!("flow {}: connect: {e}", plan.id)),
            }
        }
    }

    /// Processes endpoint and application events of one connection and writes stream data.
    fn process(&mut self, now: Instant, key: usize) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let ch = ConnectionHandle(key);
        while let Some(ev) = flow.conn.poll_endpoint_events() {
            if let Some(cev) = self.endpoint.handle_event(ch, ev) {
                flow.conn.handle_event(cev);
            }
        }
        while let Some(ev) = flow.conn.poll() {
            match ev {
                Event::Connected => {
                    flow.stream = flow.conn.streams().open(Dir::Uni);
                    if flow.stream.is_none() {
                        self.errors
                            .push(format!("flow {}: no stream credit", flow.plan.id));
                    }
                }
                Event::Stream(StreamEvent::Finished { .. }) => {
                    flow.acked = true;
                    self.done.flows_finished += 1;
                }
                Event::ConnectionLost { reason } if !flow.acked => {
                    self.errors
                        .push(format!("flow {}: connection lost: {reason}", flow.plan.id));
                }
                _ => {}
            }
        }
        write_flow(flow);
        if flow.acked && !flow.closing {
            flow.closing = true;
            flow.conn
                .close(now, VarInt::from_u32(0), Bytes::from_static(b"done"));
        }
        if flow.conn.is_drained() {
            while let Some(ev) = flow.conn.poll_endpoint_events() {
                let _ = self.endpoint.handle_event(ch, ev);
            }
            if let Some(f) = self.flows.remove(&key) {
                add_quinn_stats(&mut self.done, &f.conn.stats());
            }
        }
    }

    fn process_all(&mut self, now: Instant) {
        let keys: Vec<usize> = self.flows.keys().copied().collect();
        for k in keys {
            self.process(now, k);
        }
    }

    fn refresh_timeout(&mut self) {
        let mut t = self.pending.front().map(|f| f.start);
        for f in self.flows.values_mut() {
            if let Some(ct) = f.conn.poll_timeout() {
                t = Some(t.map_or(ct, |t| t.min(ct)));
            }
        }
        self.timeout = t;
    }
}

/// Hands quinn as much of the flow's stream as its send window takes (static zero chunks, so
/// nothing is copied).
fn write_flow(flow: &mut SendFlow) {
    let Some(id) = flow.stream else { return };
    if flow.fin || flow.closing {
        return;
    }
    let total = flow.plan.size.map(|s| s + FLOW_TAG_LEN as u64);
    let mut stream = flow.conn.send_stream(id);
    loop {
        let mut chunk = if flow.written == 0 {
            Bytes::copy_from_slice(&flow.plan.id.to_le_bytes())
        } else {
            let remaining = total.map_or(CHUNK as u64, |t| (t - flow.written).min(CHUNK as u64));
            if remaining == 0 {
                break;
            }
            Bytes::from_static(&ZEROS[..remaining as usize])
        };
        match stream.write_chunks(std::slice::from_mut(&mut chunk)) {
            Ok(w) if w.bytes > 0 => flow.written += w.bytes as u64,
            _ => break,
        }
    }
    if total.is_some_and(|t| flow.written >= t) && stream.finish().is_ok() {
        flow.fin = true;
    }
}

impl Endpoint for QuinnSender {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        let data = BytesMut::from(&dgram.payload[..]);
        let mut buf = Vec::new();
        match self
            .endpoint
            .handle(now, dgram.src, Some(self.local.ip()), None, data, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(f) = self.flows.get_mut(&ch.0) {
                    f.conn.handle_event(ev);
                    self.process(now, ch.0);
                }
            }
            // A client endpoint accepts nothing; stateless resets etc. are ignored.
            Some(DatagramEvent::NewConnection(_)) | Some(DatagramEvent::Response(_)) | None => {}
        }
        self.refresh_timeout();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.start_due(now);
        for f in self.flows.values_mut() {
            if f.conn.poll_timeout().is_some_and(|t| t <= now) {
                f.conn.handle_timeout(now);
            }
        }
        self.process_all(now);
        self.refresh_timeout();
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        if let Some((key, dgram)) = poll_round_robin(
            &mut self.flows,
            &mut self.rr,
            |f| &mut f.conn,
            now,
            self.local,
            &mut self.buf,
        ) {
            // Sending may have made room in the send window or finished a close.
            self.process(now, key);
            self.refresh_timeout();
            return Some(dgram);
        }
        self.refresh_timeout();
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timeout
    }
}

struct RecvConn {
    conn: Connection,
    accepted_at: Instant,
    /// Streams being read, with their tag bytes gathered so far until the id is known.
    streams: BTreeMap<StreamId, RecvStreamState>,
}

#[derive(Default)]
struct RecvStreamState {
    asm: Reassembly,
}

/// A quinn server bound to one simulated address that accepts every connection and drains every
/// stream, counting delivered bytes per flow.
pub struct QuinnSink {
    local: SocketAddr,
    endpoint: quinn_proto::Endpoint,
    conns: BTreeMap<usize, RecvConn>,
    flows: BTreeMap<u64, FlowRecv>,
    epoch: Instant,
    series_bin: Option<Duration>,
    outbound: VecDeque<Datagram>,
    rr: usize,
    errors: Vec<String>,
    timeout: Option<Instant>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for QuinnSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuinnSink")
            .field("local", &self.local)
            .field("conns", &self.conns.len())
            .field("flows", &self.flows.len())
            .finish()
    }
}

impl QuinnSink {
    /// A sink at `local`. With `series_bin`, delivered bytes are also binned per flow from `epoch`.
    pub fn new(
        baseline: Baseline,
        local: SocketAddr,
        seed: u64,
        epoch: Instant,
        series_bin: Option<Duration>,
    ) -> Result<Self, QuinnSetupError> {
        let server = Arc::new(server_config(baseline)?);
        let endpoint = quinn_proto::Endpoint::new(
            endpoint_config()?,
            Some(server),
            false,
            Some(seed_bytes(seed ^ 0x5eed_514b)),
        );
        Ok(Self {
            local,
            endpoint,
            conns: BTreeMap::new(),
            flows: BTreeMap::new(),
            epoch,
            series_bin,
            outbound: VecDeque::new(),
            rr: 0,
            errors: Vec::new(),
            timeout: None,
            buf: Vec::with_capacity(usize::from(UDP_PAYLOAD)),
        })
    }

    /// Per-flow observations, by flow id.
    pub fn flows(&self) -> &BTreeMap<u64, FlowRecv> {
        &self.flows
    }

    /// Payload bytes delivered over all flows.
    pub fn delivered(&self) -> u64 {
        self.flows.values().map(|f| f.bytes).sum()
    }

    /// Errors seen (refused connections, unreadable streams).
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    fn process(&mut self, now: Instant, key: usize) {
        let Some(rc) = self.conns.get_mut(&key) else {
            return;
        };
        let ch = ConnectionHandle(key);
        while let Some(ev) = rc.conn.poll_endpoint_events() {
            if let Some(cev) = self.endpoint.handle_event(ch, ev) {
                rc.conn.handle_event(cev);
            }
        }
        let mut readable = Vec::new();
        while let Some(ev) = rc.conn.poll() {
            match ev {
                Event::Stream(StreamEvent::Opened { dir }) => {
                    while let Some(id) = rc.conn.streams().accept(dir) {
                        rc.streams.insert(id, RecvStreamState::default());
                        readable.push(id);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => readable.push(id),
                _ => {}
            }
        }
        for id in readable {
            read_stream(
                rc,
                id,
                now,
                self.epoch,
                self.series_bin,
                &mut self.flows,
                &mut self.errors,
            );
        }
        if rc.conn.is_drained() {
            self.conns.remove(&key);
        }
    }

    fn refresh_timeout(&mut self) {
        let mut t = None;
        for rc in self.conns.values_mut() {
            if let Some(ct) = rc.conn.poll_timeout() {
                t = Some(t.map_or(ct, |t: Instant| t.min(ct)));
            }
        }
        self.timeout = t;
    }
}

fn read_stream(
    rc: &mut RecvConn,
    id: StreamId,
    now: Instant,
    epoch: Instant,
    series_bin: Option<Duration>,
    flows: &mut BTreeMap<u64, FlowRecv>,
    errors: &mut Vec<String>,
) {
    let Some(st) = rc.streams.get_mut(&id) else {
        return;
    };
    let mut stream = rc.conn.recv_stream(id);
    // Unordered reads hand over every byte as soon as it arrives; `Reassembly` turns them into
    // in-order delivery without quinn's 1024-gap limit on ordered stream buffers.
    let Ok(mut chunks) = stream.read(false) else {
        return;
    };
    let mut ended = false;
    loop {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => {
                let before = st.asm.prefix();
                let grew = st.asm.insert(chunk.offset, &chunk.bytes);
                if let (Some(fid), true) = (st.asm.flow_id(), grew > 0) {
                    let tag = FLOW_TAG_LEN as u64;
                    let payload = st.asm.prefix() - before.max(tag);
                    let f = flows.entry(fid).or_default();
                    if before < tag {
                        f.id = fid;
                        f.accepted_at = Some(rc.accepted_at);
                    }
                    record_delivery(f, payload, now, epoch, series_bin);
                }
            }
            Ok(None) => {
                ended = true;
                break;
            }
            Err(quinn_proto::ReadError::Blocked) => break,
            Err(e) => {
                errors.push(format!("stream {id}: {e}"));
                break;
            }
        }
    }
    let _ = chunks.finalize();
    if ended {
        if let Some(fid) = st.asm.flow_id() {
            flows.entry(fid).or_default().finished_at = Some(now);
        }
        rc.streams.remove(&id);
    }
}

impl Endpoint for QuinnSink {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        let data = BytesMut::from(&dgram.payload[..]);
        let mut buf = Vec::new();
        let local_ip = Some(self.local.ip());
        match self
            .endpoint
            .handle(now, dgram.src, local_ip, None, data, &mut buf)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                let mut resp = Vec::new();
                match self.endpoint.accept(incoming, now, &mut resp, None) {
                    Ok((ch, conn)) => {
                        self.conns.insert(
                            ch.0,
                            RecvConn {
                                conn,
                                accepted_at: now,
                                streams: BTreeMap::new(),
                            },
                        );
                        self.process(now, ch.0);
                    }
                    Err(e) => {
                        self.errors
                            .push(format!("accept from {}: {}", dgram.src, e.cause));
                        if let Some(t) = e.response {
                            self.outbound.push_back(Datagram {
                                src: self.local,
                                dst: t.destination,
                                payload: resp[..t.size].to_vec(),
                            });
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(rc) = self.conns.get_mut(&ch.0) {
                    rc.conn.handle_event(ev);
                    self.process(now, ch.0);
                }
            }
            Some(DatagramEvent::Response(t)) => self.outbound.push_back(Datagram {
                src: self.local,
                dst: t.destination,
                payload: buf[..t.size].to_vec(),
            }),
            None => {}
        }
        self.refresh_timeout();
    }

    fn handle_timeout(&mut self, now: Instant) {
        let keys: Vec<usize> = self.conns.keys().copied().collect();
        for k in keys {
            if let Some(rc) = self.conns.get_mut(&k)
                && rc.conn.poll_timeout().is_some_and(|t| t <= now)
            {
                rc.conn.handle_timeout(now);
            }
            self.process(now, k);
        }
        self.refresh_timeout();
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        if let Some(d) = self.outbound.pop_front() {
            return Some(d);
        }
        if let Some((key, dgram)) = poll_round_robin(
            &mut self.conns,
            &mut self.rr,
            |rc| &mut rc.conn,
            now,
            self.local,
            &mut self.buf,
        ) {
            self.process(now, key);
            self.refresh_timeout();
            return Some(dgram);
        }
        self.refresh_timeout();
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timeout
    }
}

/// Polls the connections of `conns` round robin, starting after the last one that sent, and
/// returns the first datagram any of them has, with the key of its connection.
fn poll_round_robin<V>(
    conns: &mut BTreeMap<usize, V>,
    rr: &mut usize,
    conn: impl Fn(&mut V) -> &mut quinn_proto::Connection,
    now: Instant,
    local: SocketAddr,
    buf: &mut Vec<u8>,
) -> Option<(usize, Datagram)> {
    let keys: Vec<usize> = conns.keys().copied().collect();
    let n = keys.len();
    for i in 0..n {
        let key = keys[(*rr + i) % n];
        let Some(v) = conns.get_mut(&key) else {
            continue;
        };
        buf.clear();
        if let Some(t) = conn(v).poll_transmit(now, 1, buf) {
            *rr = (*rr + i + 1) % n;
            let dgram = Datagram {
                src: local,
                dst: t.destination,
                payload: buf[..t.size].to_vec(),
            };
            return Some((key, dgram));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_netem::{DumbbellBuilder, LinkConfig, Sim};

    /// One sender/sink pair across a 100 Mbit/s sim-netem bottleneck of RTT `rtt`.
    fn pair(
        baseline: Baseline,
        rtt: Duration,
        plan_size: Option<u64>,
        seed: u64,
    ) -> (Sim, sim_netem::EndpointId, sim_netem::EndpointId) {
        let mut sim = Sim::new(seed);
        let link = LinkConfig::new(100_000_000, rtt / 4).with_queue_bdp(1.0, rtt);
        let d = DumbbellBuilder::new(1, link)
            .rtt(rtt)
            .build_droptail(&mut sim)
            .expect("topology");
        let sink_addr = SocketAddr::new(d.receiver_addrs[0].into(), 443);
        let send_addr = SocketAddr::new(d.sender_addrs[0].into(), 4000);
        let t0 = sim.epoch();
        let sink = QuinnSink::new(
            baseline,
            sink_addr,
            seed,
            t0,
            Some(Duration::from_millis(100)),
        )
        .expect("sink");
        let plan = FlowPlan {
            id: 7,
            start: t0 + Duration::from_millis(5),
            size: plan_size,
        };
        let sender =
            QuinnSender::new(baseline, send_addr, sink_addr, vec![plan], seed + 1).expect("sender");
        let rx = sim.attach(d.receivers[0], 443, Box::new(sink));
        let tx = sim.attach(d.senders[0], 4000, Box::new(sender));
        (sim, tx, rx)
    }

    #[test]
    fn sized_transfer_delivers_exact_bytes_for_both_baselines() {
        for baseline in Baseline::ALL {
            let size = 3_000_000;
            let (mut sim, tx, rx) = pair(baseline, Duration::from_millis(20), Some(size), 1);
            sim.run_until(Duration::from_secs(10));
            let tx = sim.endpoint::<QuinnSender>(tx).expect("sender");
            let rx = sim.endpoint::<QuinnSink>(rx).expect("sink");
            assert!(tx.errors().is_empty(), "{:?}", tx.errors());
            assert!(rx.errors().is_empty(), "{:?}", rx.errors());
            let f = rx.flows().get(&7).expect("flow seen");
            assert_eq!(f.bytes, size, "{baseline:?}");
            assert_eq!(f.series.iter().sum::<u64>(), size);
            let st = tx.stats();
            assert_eq!(st.flows_finished, 1);
            assert!(st.sent_packets >= size / u64::from(UDP_PAYLOAD));
            // 3 MB at 100 Mbit/s is 0.24 s; with the handshake and slow start at 20 ms RTT it
            // must finish well within 2 s.
            let fct = sim.since_start(f.finished_at.expect("finished"));
            assert!(fct < Duration::from_secs(2), "{baseline:?} fct {fct:?}");
        }
    }

    #[test]
    fn bulk_flow_fills_link_and_cubic_is_deterministic() {
        let run = || {
            let (mut sim, tx, rx) = pair(Baseline::Cubic, Duration::from_millis(50), None, 3);
            sim.run_until(Duration::from_secs(5));
            let bytes = sim.endpoint::<QuinnSink>(rx).expect("sink").delivered();
            let stats = sim.endpoint::<QuinnSender>(tx).expect("sender").stats();
            (bytes, stats)
        };
        let (bytes, stats) = run();
        let mbps = bytes as f64 * 8.0 / 5.0 / 1e6;
        assert!(mbps > 60.0, "goodput {mbps} Mbit/s");
        assert!(mbps < 100.0, "goodput {mbps} Mbit/s above capacity");
        // Same seed, same result: the Cubic baseline is deterministic.
        assert_eq!(run(), (bytes, stats));
    }
}
