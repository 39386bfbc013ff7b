//! The MEF side of the benchmark: `mef-transport` connections wrapped as
//! [`sim_netem::Endpoint`]s (bulk sender, sized flows, sink) and the MEF router's fair queue
//! `mef_router::MefQdisc` for bottleneck links.
//!
//! **Transport not yet available.** `mef_router::MefQdisc` is wired ([`bottleneck_qdisc`]), but
//! `mef-transport`'s sans-IO `Endpoint`/`Connection` API has not been committed yet. The
//! endpoint constructors return [`MefUnavailable`] so MEF cells are reported as skipped with
//! that reason; the harness never invents MEF figures. When the API lands, this module wraps it
//! exactly like [`crate::quinn_flow`] wraps quinn (same [`crate::flow`] types).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sim_netem::{LinkConfig, Qdisc};

use crate::flow::{FlowPlan, FlowRecv, SenderStats};

/// Why MEF cells cannot run (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MEF adapter not yet available: {0}")]
pub struct MefUnavailable(pub &'static str);

const REASON: &str = "mef-transport's sans-IO connection API has not landed in the workspace";

/// Checks that the MEF transport and router are available to the harness.
pub fn available() -> Result<(), MefUnavailable> {
    Err(MefUnavailable(REASON))
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

/// How a MEF sender treats the rate the network allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduct {
    /// Paces at the allocated rate (the protocol).
    Honest,
    /// Ignores the allocation and sends at this rate (bits per second): the cheater scenario.
    IgnoreRate(u64),
}

/// A MEF sender endpoint at `local` running `flows` towards the sink at `remote`.
pub fn sender(
    _local: SocketAddr,
    _remote: SocketAddr,
    _flows: Vec<FlowPlan>,
    _seed: u64,
    _conduct: Conduct,
) -> Result<Box<dyn sim_netem::Endpoint>, MefUnavailable> {
    Err(MefUnavailable(REASON))
}

/// A MEF sink endpoint at `local` (goodput series binned by `series_bin` from `epoch`).
pub fn sink(
    _local: SocketAddr,
    _seed: u64,
    _epoch: Instant,
    _series_bin: Option<Duration>,
) -> Result<Box<dyn sim_netem::Endpoint>, MefUnavailable> {
    Err(MefUnavailable(REASON))
}

/// The counters of the MEF sender attached as `id`, if it is one.
pub fn sender_stats(_sim: &sim_netem::Sim, _id: sim_netem::EndpointId) -> Option<SenderStats> {
    None
}

/// The per-flow observations of the MEF sink attached as `id`, if it is one.
pub fn sink_flows(
    _sim: &sim_netem::Sim,
    _id: sim_netem::EndpointId,
) -> Option<std::collections::BTreeMap<u64, FlowRecv>> {
    None
}

/// Errors recorded by the MEF endpoint attached as `id` (empty if none or not MEF).
pub fn errors(_sim: &sim_netem::Sim, _id: sim_netem::EndpointId) -> Vec<String> {
    Vec::new()
}
