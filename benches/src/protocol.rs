//! The protocols under test and how scenarios create their endpoints and bottleneck queues
//! without knowing which protocol they run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use sim_netem::{DropTail, EndpointId, LinkConfig, NodeId, Qdisc, Sim};

use crate::flow::{FlowPlan, FlowRecv, SenderStats};
use crate::mef_flow;
use crate::quinn_flow::{Baseline, QuinnSender, QuinnSink};

/// A protocol under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// MEF: `mef-transport` with the MEF router on the bottleneck.
    Mef,
    /// quinn-proto with its Cubic controller.
    QuinnCubic,
    /// quinn-proto with its BBR controller.
    QuinnBbr,
}

impl Protocol {
    /// Every protocol, in table order.
    pub const ALL: [Protocol; 3] = [Protocol::Mef, Protocol::QuinnCubic, Protocol::QuinnBbr];

    /// The name used in records: `mef`, `quinn-cubic`, `quinn-bbr`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Mef => "mef",
            Protocol::QuinnCubic => Baseline::Cubic.protocol_name(),
            Protocol::QuinnBbr => Baseline::Bbr.protocol_name(),
        }
    }

    /// The quinn controller, for the baselines.
    pub fn baseline(self) -> Option<Baseline> {
        match self {
            Protocol::Mef => None,
            Protocol::QuinnCubic => Some(Baseline::Cubic),
            Protocol::QuinnBbr => Some(Baseline::Bbr),
        }
    }

    /// Whether a run repeats bit for bit for a given seed (quinn's BBR seeds its own RNG).
    pub fn deterministic(self) -> bool {
        self.baseline().is_none_or(Baseline::deterministic)
    }

    /// Payload bytes per wire byte of a full-size data packet: the factor that turns a share
    /// of the wire capacity into goodput, used for fair shares. quinn: a 1472-byte UDP payload
    /// carries a 1-RTT short header (1 flag byte, 8-byte connection id, 2-3-byte packet number),
    /// a STREAM frame header (type, stream id, 4- or 8-byte offset, length: ~8-12 bytes) and the
    /// 16-byte AEAD tag, ~40 bytes in all: 1432 payload bytes per 1500 wire bytes. MEF: the
    /// 36-byte MEF header, the 16-byte AEAD tag and a stream frame header (about 12 bytes):
    /// 1408 payload bytes per 1500 wire bytes (an estimate of the frame header, not measured).
    pub fn payload_efficiency(self) -> f64 {
        match self {
            Protocol::Mef => 1408.0 / 1500.0,
            Protocol::QuinnCubic | Protocol::QuinnBbr => 1432.0 / 1500.0,
        }
    }

    /// The network this protocol's users have: the MEF router for MEF, plain drop-tail for
    /// the quinn baselines.
    pub fn native_queue(self) -> QueueKind {
        match self {
            Protocol::Mef => QueueKind::Mef,
            _ => QueueKind::DropTail,
        }
    }
}

/// The queue discipline on bottleneck links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// A drop-tail FIFO of the link's `queue_limit_bytes` (the default: 1 BDP).
    DropTail,
    /// The MEF router's rate controller and fair queue (`mef_router::MefQdisc`).
    Mef,
}

impl QueueKind {
    /// Fails early, with the reason, if this queue cannot be built.
    pub fn check(self) -> anyhow::Result<()> {
        match self {
            QueueKind::DropTail => Ok(()),
            QueueKind::Mef => Ok(mef_flow::available()?),
        }
    }

    /// A factory for the topology builders, which call it for the forward (data) direction of
    /// each bottleneck and then its reverse (acknowledgement) direction, alternately. Forward
    /// links get this queue; reverse links always get a drop-tail FIFO (the router sits at the
    /// data direction's bottleneck, as RCP's does). Call [`check`](Self::check) first: if the
    /// MEF queue cannot be built the factory falls back to drop-tail and records the failure
    /// in `failed`, which the caller must turn into an error.
    pub fn factory<'a>(
        self,
        failed: &'a mut Option<String>,
    ) -> impl FnMut(&LinkConfig) -> Box<dyn Qdisc> + 'a {
        let mut calls = 0u64;
        move |cfg: &LinkConfig| -> Box<dyn Qdisc> {
            calls += 1;
            let forward = calls % 2 == 1;
            match self {
                _ if !forward => Box::new(DropTail::new(cfg.queue_limit_bytes)),
                QueueKind::DropTail => Box::new(DropTail::new(cfg.queue_limit_bytes)),
                QueueKind::Mef => match mef_flow::bottleneck_qdisc(cfg) {
                    Ok(q) => q,
                    Err(e) => {
                        *failed = Some(e.to_string());
                        Box::new(DropTail::new(cfg.queue_limit_bytes))
                    }
                },
            }
        }
    }
}

/// How a sender behaves; anything but `Honest` exists only for MEF.
pub use crate::mef_flow::Conduct;

/// One flow's endpoints in a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEnds {
    /// The protocol.
    pub protocol: Protocol,
    /// The sending endpoint.
    pub sender: EndpointId,
    /// The receiving endpoint.
    pub sink: EndpointId,
    /// The flow id (unique per sink).
    pub flow: u64,
}

/// The port every sink listens on.
pub const SINK_PORT: u16 = 443;

fn host_ip(sim: &Sim, host: NodeId) -> anyhow::Result<Ipv4Addr> {
    sim.host_addr(host)
        .ok_or_else(|| anyhow!("{host} is not a host"))
}

/// Attaches a sink of `protocol` to `host` at [`SINK_PORT`].
pub fn attach_sink(
    sim: &mut Sim,
    host: NodeId,
    protocol: Protocol,
    seed: u64,
    series_bin: Option<Duration>,
) -> anyhow::Result<EndpointId> {
    let local = SocketAddr::new(IpAddr::V4(host_ip(sim, host)?), SINK_PORT);
    let epoch = sim.epoch();
    let ep: Box<dyn sim_netem::Endpoint> = match protocol.baseline() {
        Some(b) => Box::new(QuinnSink::new(b, local, seed, epoch, series_bin)?),
        None => mef_flow::sink(local, seed, epoch, series_bin)?,
    };
    Ok(sim.try_attach(host, SINK_PORT, ep)?)
}

/// The port every sender binds (one sender per host).
pub const SENDER_PORT: u16 = 4000;

/// Attaches a sender of `protocol` to `host` at [`SENDER_PORT`] that runs `flows` towards the
/// sink at `sink`.
pub fn attach_sender(
    sim: &mut Sim,
    host: NodeId,
    protocol: Protocol,
    sink: SocketAddr,
    flows: Vec<FlowPlan>,
    seed: u64,
    conduct: Conduct,
) -> anyhow::Result<EndpointId> {
    let port = SENDER_PORT;
    let local = SocketAddr::new(IpAddr::V4(host_ip(sim, host)?), port);
    let ep: Box<dyn sim_netem::Endpoint> = match (protocol.baseline(), conduct) {
        (Some(b), Conduct::Honest) => Box::new(QuinnSender::new(b, local, sink, flows, seed)?),
        (Some(_), Conduct::IgnoreRate(_)) => {
            return Err(anyhow!("only MEF senders can be told to ignore their rate"));
        }
        (None, c) => mef_flow::sender(local, sink, flows, seed, c)?,
    };
    Ok(sim.try_attach(host, port, ep)?)
}

/// Creates one flow: a sink on `dst`, a sender on `src` running `plan`.
#[allow(clippy::too_many_arguments)]
pub fn add_flow(
    sim: &mut Sim,
    protocol: Protocol,
    src: NodeId,
    dst: NodeId,
    plan: FlowPlan,
    seed: u64,
    series_bin: Option<Duration>,
    conduct: Conduct,
) -> anyhow::Result<FlowEnds> {
    let sink = attach_sink(sim, dst, protocol, seed.wrapping_mul(2), series_bin)?;
    let addr = sim.endpoint_addr(sink).context("sink address")?;
    let sender = attach_sender(sim, src, protocol, addr, vec![plan], seed, conduct)?;
    Ok(FlowEnds {
        protocol,
        sender,
        sink,
        flow: plan.id,
    })
}

/// The counters of a sender.
pub fn sender_stats(sim: &Sim, protocol: Protocol, id: EndpointId) -> anyhow::Result<SenderStats> {
    match protocol.baseline() {
        Some(_) => sim.endpoint::<QuinnSender>(id).map(QuinnSender::stats),
        None => mef_flow::sender_stats(sim, id),
    }
    .ok_or_else(|| anyhow!("{id} is not a {} sender", protocol.name()))
}

/// What a sink observed, per flow id.
pub fn sink_flows(
    sim: &Sim,
    protocol: Protocol,
    id: EndpointId,
) -> anyhow::Result<BTreeMap<u64, FlowRecv>> {
    match protocol.baseline() {
        Some(_) => sim.endpoint::<QuinnSink>(id).map(|s| s.flows().clone()),
        None => mef_flow::sink_flows(sim, id),
    }
    .ok_or_else(|| anyhow!("{id} is not a {} sink", protocol.name()))
}

/// Payload bytes a sink delivered for one flow so far.
pub fn delivered(sim: &Sim, ends: &FlowEnds) -> anyhow::Result<u64> {
    match ends.protocol.baseline() {
        Some(_) => sim
            .endpoint::<QuinnSink>(ends.sink)
            .map(|s| s.flows().get(&ends.flow).map_or(0, |f| f.bytes))
            .ok_or_else(|| anyhow!("{} is not a quinn sink", ends.sink)),
        None => Ok(mef_flow::sink_flows(sim, ends.sink)
            .ok_or_else(|| anyhow!("{} is not a MEF sink", ends.sink))?
            .get(&ends.flow)
            .map_or(0, |f| f.bytes)),
    }
}

/// Errors the endpoints of a flow recorded (connection failures, refused streams).
pub fn endpoint_errors(sim: &Sim, protocol: Protocol, ids: &[EndpointId]) -> Vec<String> {
    let mut out = Vec::new();
    for &id in ids {
        match protocol.baseline() {
            Some(_) => {
                if let Some(s) = sim.endpoint::<QuinnSender>(id) {
                    out.extend_from_slice(s.errors());
                }
                if let Some(s) = sim.endpoint::<QuinnSink>(id) {
                    out.extend_from_slice(s.errors());
                }
            }
            None => out.extend(mef_flow::errors(sim, id)),
        }
    }
    out
}

/// A start instant `t` after the simulation's epoch.
pub fn at(sim: &Sim, t: Duration) -> Instant {
    sim.instant_at(t)
}
