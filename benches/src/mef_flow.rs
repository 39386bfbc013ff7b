//! The MEF side of the benchmark: `mef-transport` connections wrapped as
//! [`sim_netem::Endpoint`]s (bulk sender, sized flows, sink), the same way
//! [`crate::quinn_flow`] wraps quinn and with the same [`crate::flow`] types, and the MEF
//! router's scheduler `mef_router::MefQdisc` for bottleneck links.
//!
//! Keys: MEF uses Noise IK, so a client must know its server's static public key. In the
//! benchmark every sink's key pair is derived from its socket address ([`sink_keypair`]), so
//! senders can compute it; this is a benchmark convenience, never a way to make keys.
//!
//! Windows: the same 64 MiB flow-control windows as the quinn baselines, and a 64 MiB send
//! buffer ([`SEND_BUFFER`]): at 400 ms and 1–2 % loss the sent-but-unacknowledged span covers
//! several round trips of loss recovery (an 8 MiB buffer capped goodput at 60 Mbit/s there).
//! Bulk senders keep only [`UNSENT_TARGET`] unsent bytes queued, so memory follows what
//! recovery needs rather than the cap (64 senders). UDP payloads are 1472 bytes (the
//! transport's default).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mef_transport::{Config, ConnectionHandle, Event, ReadError, StaticKeypair, StreamId};
use sim_netem::{Datagram, EndpointId, LinkConfig, Qdisc, Sim};

use crate::flow::{FLOW_TAG_LEN, FlowPlan, FlowRecv, SenderStats, TagReader, record_delivery};

/// Why MEF cells cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MEF adapter not available: {0}")]
pub struct MefUnavailable(pub &'static str);

/// Checks that the MEF transport and router are available to the harness (they are).
pub fn available() -> Result<(), MefUnavailable> {
    Ok(())
}

/// Why the MEF router's queue could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the MEF router's queue: {0}")]
pub struct QdiscError(#[from] pub mef_router::ConfigError);

/// The MEF router's scheduler (`mef_router::MefQdisc`: rate controller, policer, DRR fair
/// queue) for a bottleneck link of configuration `cfg`: its capacity is the link rate and its
/// shared buffer the link's `queue_limit_bytes` (1 BDP in the scenarios).
pub fn bottleneck_qdisc(cfg: &LinkConfig) -> Result<Box<dyn Qdisc>, QdiscError> {
    let q = mef_router::MefQdisc::new(mef_router::MefQdiscConfig::new(
        cfg.rate_bps,
        cfg.queue_limit_bytes,
    ))?;
    Ok(Box::new(q))
}

/// Per-stream send buffer of benchmark senders.
pub const SEND_BUFFER: u64 = 64 * 1024 * 1024;

/// Unsent bytes a bulk sender keeps queued on its stream (≈ 84 ms at 100 Mbit/s; the sender is
/// polled on every acknowledgement, far more often than that).
pub const UNSENT_TARGET: u64 = 1 << 20;

/// How a MEF sender treats the rate the network allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduct {
    /// Paces at the allocated rate (the protocol).
    Honest,
    /// Ignores the allocation and sends at this rate (bits per second): the cheater scenario
    /// (`mef_transport::Config::ignore_rate`).
    IgnoreRate(u64),
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed32(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, c) in out.chunks_mut(8).enumerate() {
        c.copy_from_slice(&splitmix(seed ^ (i as u64).wrapping_mul(0xA5A5_5A5A)).to_le_bytes());
    }
    out
}

/// The static key pair of the sink bound to `addr` (derived from the address: benchmark only).
pub fn sink_keypair(addr: SocketAddr) -> StaticKeypair {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in addr.to_string().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    StaticKeypair::from_secret(seed32(h))
}

fn config(conduct: Conduct) -> Config {
    // The same flow-control windows as the quinn baselines get, so neither is window-limited.
    let window = crate::quinn_flow::FLOW_WINDOW;
    let mut c = Config {
        send_buffer: SEND_BUFFER,
        stream_receive_window: window,
        receive_window: window,
        ..Config::default()
    };
    if let Conduct::IgnoreRate(bps) = conduct {
        c.ignore_rate = true;
        c.fixed_rate_bps = bps;
    }
    c
}

fn add_mef_stats(acc: &mut SenderStats, s: &mef_transport::ConnectionStats) {
    acc.sent_packets += s.packets_sent;
    acc.sent_bytes += s.bytes_sent;
    acc.lost_packets += s.packets_lost;
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

struct SendFlow {
    plan: FlowPlan,
    stream: Option<StreamId>,
    written: u64,
    fin: bool,
    acked: bool,
    last: mef_transport::ConnectionStats,
}

/// A MEF client bound to one simulated address, running the planned flows towards one sink.
#[derive(Debug)]
pub struct MefSender {
    local: SocketAddr,
    remote: SocketAddr,
    server_key: [u8; 32],
    endpoint: mef_transport::Endpoint,
    pending: VecDeque<FlowPlan>,
    flows: BTreeMap<ConnectionHandle, SendFlowDebug>,
    /// Flows with an open stream still being written (topped up on every input).
    writing: BTreeSet<ConnectionHandle>,
    started: u64,
    finished: u64,
    errors: Vec<String>,
}

/// [`SendFlow`] with a `Debug` that prints only the plan.
struct SendFlowDebug(SendFlow);

impl std::fmt::Debug for SendFlowDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendFlow")
            .field("plan", &self.0.plan)
            .finish()
    }
}

impl MefSender {
    /// A sender at `local` running `flows` towards the sink at `remote`.
    pub fn new(
        local: SocketAddr,
        remote: SocketAddr,
        mut flows: Vec<FlowPlan>,
        seed: u64,
        conduct: Conduct,
    ) -> Self {
        flows.sort_by_key(|f| (f.start, f.id));
        let key = StaticKeypair::from_secret(seed32(seed ^ 0x11));
        Self {
            local,
            remote,
            server_key: sink_keypair(remote).public(),
            endpoint: mef_transport::Endpoint::new(config(conduct), key, seed32(seed)),
            pending: flows.into(),
            flows: BTreeMap::new(),
            writing: BTreeSet::new(),
            started: 0,
            finished: 0,
            errors: Vec::new(),
        }
    }

    /// Counters over all connections so far.
    pub fn stats(&self) -> SenderStats {
        let mut s = SenderStats {
            flows_started: self.started,
            flows_finished: self.finished,
            ..SenderStats::default()
        };
        for (h, f) in &self.flows {
            match self.endpoint.connection(*h) {
                Some(c) => add_mef_stats(&mut s, &c.stats()),
                None => add_mef_stats(&mut s, &f.0.last),
            }
        }
        s
    }

    /// Connection errors (failed connects, connections closed before their flow finished).
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    fn write(&mut self, h: ConnectionHandle) {
        let Some(f) = self.flows.get_mut(&h) else {
            return;
        };
        let f = &mut f.0;
        let (Some(stream), false) = (f.stream, f.fin) else {
            return;
        };
        let Some(conn) = self.endpoint.connection_mut(h) else {
            return;
        };
        let total = f.plan.size.map(|s| s + FLOW_TAG_LEN as u64);
        // Keep at most UNSENT_TARGET bytes written but not yet sent: the send buffer then grows
        // only to what loss recovery needs (sent-but-unacknowledged data), not to SEND_BUFFER
        // for every one of 64 flows.
        while conn.stream_unsent(stream) < UNSENT_TARGET {
            let res = if f.written < FLOW_TAG_LEN as u64 {
                let tag = f.plan.id.to_le_bytes();
                conn.write(stream, &tag[f.written as usize..])
            } else {
                let rem = total.map_or(ZEROS.len() as u64, |t| {
                    (t - f.written).min(ZEROS.len() as u64)
                });
                if rem == 0 {
                    break;
                }
                conn.write(stream, &ZEROS[..rem as usize])
            };
            match res {
                Ok(n) if n > 0 => f.written += n as u64,
                _ => break,
            }
        }
        if total.is_some_and(|t| f.written >= t) && conn.finish(stream).is_ok() {
            f.fin = true;
        }
    }

    fn process(&mut self, now: Instant) {
        while self.pending.front().is_some_and(|p| p.start <= now) {
            let Some(plan) = self.pending.pop_front() else {
                break;
            };
            match self.endpoint.connect(now, self.remote, self.server_key) {
                Ok(h) => {
                    self.started += 1;
                    let flow = SendFlow {
                        plan,
                        stream: None,
                        written: 0,
                        fin: false,
                        acked: false,
                        last: Default::default(),
                    };
                    self.flows.insert(h, SendFlowDebug(flow));
                }
                Err(e) => self.errors.push(format!("flow {}: connect: {e}", plan.id)),
            }
        }
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                Event::Connected(h) => {
                    let stream = self
                        .endpoint
                        .connection_mut(h)
                        .and_then(|c| c.open_stream());
                    if let Some(f) = self.flows.get_mut(&h) {
                        f.0.stream = stream;
                        self.writing.insert(h);
                        if stream.is_none() {
                            self.errors.push(format!("flow {}: no stream", f.0.plan.id));
                        }
                    }
                    self.write(h);
                }
                Event::StreamWritable { conn, .. } => self.write(conn),
                Event::StreamFinished { conn, .. } => {
                    if let (Some(f), Some(c)) = (
                        self.flows.get_mut(&conn),
                        self.endpoint.connection_mut(conn),
                    ) {
                        f.0.acked = true;
                        f.0.last = c.stats();
                        self.finished += 1;
                        c.close(now, 0, b"done");
                    }
                }
                Event::Closed { conn, reason } => {
                    if let Some(f) = self.flows.get_mut(&conn) {
                        if let Some(c) = self.endpoint.connection(conn) {
                            f.0.last = c.stats();
                        }
                        if !f.0.acked {
                            self.errors.push(format!(
                                "flow {}: connection closed: {reason:?}",
                                f.0.plan.id
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        let writing: Vec<ConnectionHandle> = self.writing.iter().copied().collect();
        for h in writing {
            self.write(h);
        }
        let flows = &self.flows;
        self.writing.retain(|h| {
            flows
                .get(h)
                .is_some_and(|f| f.0.stream.is_some() && !f.0.fin)
        });
    }
}

impl sim_netem::Endpoint for MefSender {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        self.endpoint
            .handle_datagram(now, dgram.src, &dgram.payload);
        self.process(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.process(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        // Start due flows and write first, so their packets go out in this drain.
        self.process(now);
        let t = self.endpoint.poll_transmit(now);
        self.process(now);
        t.map(|t| Datagram {
            src: self.local,
            dst: t.dst,
            payload: t.payload,
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let next_start = self.pending.front().map(|p| p.start);
        match (self.endpoint.poll_timeout(), next_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A MEF server bound to one simulated address that accepts every connection and reads every
/// stream in order, counting delivered bytes per flow.
#[derive(Debug)]
pub struct MefSink {
    endpoint: mef_transport::Endpoint,
    local: SocketAddr,
    accepted: BTreeMap<ConnectionHandle, Instant>,
    streams: BTreeMap<(ConnectionHandle, StreamId), TagReader>,
    flows: BTreeMap<u64, FlowRecv>,
    epoch: Instant,
    series_bin: Option<Duration>,
    buf: Vec<u8>,
    errors: Vec<String>,
}

impl MefSink {
    /// A sink at `local`; with `series_bin`, delivered bytes are binned per flow from `epoch`.
    pub fn new(local: SocketAddr, seed: u64, epoch: Instant, series_bin: Option<Duration>) -> Self {
        Self {
            endpoint: mef_transport::Endpoint::new(
                config(Conduct::Honest),
                sink_keypair(local),
                seed32(seed ^ 0x5eed),
            ),
            local,
            accepted: BTreeMap::new(),
            streams: BTreeMap::new(),
            flows: BTreeMap::new(),
            epoch,
            series_bin,
            buf: vec![0; 64 * 1024],
            errors: Vec::new(),
        }
    }

    /// Per-flow observations, by flow id.
    pub fn flows(&self) -> &BTreeMap<u64, FlowRecv> {
        &self.flows
    }

    /// Errors seen.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    fn read(&mut self, now: Instant, h: ConnectionHandle, s: StreamId) {
        let Some(conn) = self.endpoint.connection_mut(h) else {
            return;
        };
        let tag = self.streams.entry((h, s)).or_default();
        loop {
            match conn.read(s, &mut self.buf) {
                Ok(Some(n)) => {
                    let had = tag.id().is_some();
                    let data = tag.feed(&self.buf[..n]);
                    if let Some(fid) = tag.id() {
                        let f = self.flows.entry(fid).or_default();
                        if !had {
                            f.id = fid;
                            f.accepted_at = self.accepted.get(&h).copied();
                        }
                        record_delivery(f, data.len() as u64, now, self.epoch, self.series_bin);
                    }
                }
                Ok(None) => {
                    if let Some(fid) = tag.id() {
                        self.flows
                            .entry(fid)
                            .or_default()
                            .finished_at
                            .get_or_insert(now);
                    }
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(e) => {
                    if !matches!(e, ReadError::ConnectionClosed) {
                        self.errors.push(format!("stream read: {e}"));
                    }
                    break;
                }
            }
        }
    }

    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                Event::Accepted(h) => {
                    self.accepted.insert(h, now);
                }
                Event::StreamOpened { conn, stream } | Event::StreamReadable { conn, stream } => {
                    self.read(now, conn, stream);
                }
                Event::Closed { conn, .. } => {
                    self.accepted.remove(&conn);
                    self.streams.retain(|(h, _), _| *h != conn);
                }
                _ => {}
            }
        }
    }
}

impl sim_netem::Endpoint for MefSink {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        self.endpoint
            .handle_datagram(now, dgram.src, &dgram.payload);
        self.process(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.process(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let t = self.endpoint.poll_transmit(now);
        self.process(now);
        t.map(|t| Datagram {
            src: self.local,
            dst: t.dst,
            payload: t.payload,
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }
}

/// A MEF sender endpoint at `local` running `flows` towards the sink at `remote`.
pub fn sender(
    local: SocketAddr,
    remote: SocketAddr,
    flows: Vec<FlowPlan>,
    seed: u64,
    conduct: Conduct,
) -> Result<Box<dyn sim_netem::Endpoint>, MefUnavailable> {
    Ok(Box::new(MefSender::new(
        local, remote, flows, seed, conduct,
    )))
}

/// A MEF sink endpoint at `local` (goodput series binned by `series_bin` from `epoch`).
pub fn sink(
    local: SocketAddr,
    seed: u64,
    epoch: Instant,
    series_bin: Option<Duration>,
) -> Result<Box<dyn sim_netem::Endpoint>, MefUnavailable> {
    Ok(Box::new(MefSink::new(local, seed, epoch, series_bin)))
}

/// The counters of the MEF sender attached as `id`, if it is one.
pub fn sender_stats(sim: &Sim, id: EndpointId) -> Option<SenderStats> {
    sim.endpoint::<MefSender>(id).map(MefSender::stats)
}

/// The per-flow observations of the MEF sink attached as `id`, if it is one.
pub fn sink_flows(sim: &Sim, id: EndpointId) -> Option<BTreeMap<u64, FlowRecv>> {
    sim.endpoint::<MefSink>(id).map(|s| s.flows().clone())
}

/// Errors recorded by the MEF endpoint attached as `id` (empty if none or not MEF).
pub fn errors(sim: &Sim, id: EndpointId) -> Vec<String> {
    if let Some(s) = sim.endpoint::<MefSender>(id) {
        return s.errors().to_vec();
    }
    sim.endpoint::<MefSink>(id)
        .map_or_else(Vec::new, |s| s.errors().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_netem::{DumbbellBuilder, Endpoint as _};

    #[test]
    fn mef_sized_transfer_through_mef_router() {
        let mut sim = Sim::new(5);
        let rtt = Duration::from_millis(20);
        let link = LinkConfig::new(100_000_000, rtt / 4).with_queue_bdp(1.0, rtt);
        let d = DumbbellBuilder::new(1, link)
            .rtt(rtt)
            .build(&mut sim, |c| bottleneck_qdisc(c).expect("MefQdisc"))
            .expect("topology");
        let sink_addr = SocketAddr::new(d.receiver_addrs[0].into(), 443);
        let send_addr = SocketAddr::new(d.sender_addrs[0].into(), 4000);
        let t0 = sim.epoch();
        let size = 2_000_000;
        let plan = FlowPlan {
            id: 3,
            start: t0,
            size: Some(size),
        };
        let rx = sim.attach(
            d.receivers[0],
            443,
            Box::new(MefSink::new(sink_addr, 1, t0, None)),
        );
        let tx = sim.attach(
            d.senders[0],
            4000,
            Box::new(MefSender::new(
                send_addr,
                sink_addr,
                vec![plan],
                2,
                Conduct::Honest,
            )),
        );
        sim.run_until(Duration::from_secs(5));
        let s = sim.endpoint::<MefSink>(rx).expect("sink");
        let t = sim.endpoint::<MefSender>(tx).expect("sender");
        assert!(s.errors().is_empty(), "{:?}", s.errors());
        assert!(
            s.flows().contains_key(&3),
            "sink {:?} sender {:?} {:?} sim {:?}",
            s.endpoint.stats(),
            t.stats(),
            t.errors(),
            sim.stats()
        );
        let f = s.flows().get(&3).expect("flow seen");
        assert_eq!(f.bytes, size);
        assert!(f.finished_at.is_some());
        let t = sim.endpoint::<MefSender>(tx).expect("sender");
        assert!(t.errors().is_empty(), "{:?}", t.errors());
        assert_eq!(t.stats().flows_finished, 1);
        assert!(t.poll_timeout().is_none() || t.stats().flows_started == 1);
    }
}
