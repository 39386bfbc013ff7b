//! The scenarios. Each module turns [`Params`] into [`Cell`]s: independent simulations, one per
//! protocol (or protocol mix) and parameter point, that the harness runs and reports.
//!
//! Shared conventions (see `docs/BENCHMARKS.md`):
//! - bottleneck 100 Mbit/s ([`CAPACITY_BPS`]), queue 1 BDP of the cell's RTT unless stated;
//!   access links 10 Gbit/s;
//! - each protocol runs on the network its users have: the MEF router's queue for MEF, a
//!   drop-tail FIFO for the quinn baselines; coexistence and cheater put the MEF router on the
//!   path for everyone;
//! - rates are measured after a warm-up of `max(2 s, 10 RTT)` (largest RTT of the cell);
//!   bottleneck statistics are reset at the end of the warm-up so drops and queueing delay
//!   cover the same window as goodput;
//! - a flow's fair share is expressed in goodput: its max-min share of the wire capacity times
//!   its protocol's payload efficiency η ([`Protocol::payload_efficiency`], payload bytes per
//!   wire byte of a full data packet), so a protocol is neither charged for its header size nor
//!   excused for wasting capacity on retransmissions when judging fairness.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sim_netem::{LinkId, Sim};

use crate::flow::SenderStats;
use crate::protocol::{self, FlowEnds, Protocol};
use crate::record::Record;

pub mod cheater;
pub mod coexistence;
pub mod convergence;
pub mod fairness;
pub mod long_flow;
pub mod parking_lot;
pub mod short_flows;

/// Bottleneck capacity of every scenario: 100 Mbit/s.
pub const CAPACITY_BPS: u64 = 100_000_000;

/// Nominal payload efficiency used before a flow has measured its own: 1400 payload bytes per
/// 1500-byte packet.
pub const NOMINAL_ETA: f64 = 1400.0 / 1500.0;

/// Wall-clock budget of one cell; a cell exceeding it fails instead of hanging the run.
pub const WALL_BUDGET: Duration = Duration::from_secs(900);

/// What every scenario gets from the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// CI mode: fewer cells, shorter runs.
    pub quick: bool,
    /// Base seed; each cell derives its own.
    pub seed: u64,
}

/// A time series for plots: `(seconds, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Scenario name.
    pub scenario: String,
    /// Protocol name.
    pub protocol: String,
    /// Which cell (e.g. `rtt=50ms`).
    pub cell: String,
    /// Which line (e.g. the flow).
    pub label: String,
    /// `(x, y)` points; x in seconds unless the scenario says otherwise.
    pub points: Vec<(f64, f64)>,
}

/// The output of one cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellOutput {
    /// Measured records.
    pub records: Vec<Record>,
    /// Extra series for plots.
    pub series: Vec<Series>,
}

/// The closure that runs a cell.
pub type CellFn = Box<dyn FnOnce() -> anyhow::Result<CellOutput> + Send>;

/// One independent simulation to run.
pub struct Cell {
    /// Scenario name (also the `--only` filter key).
    pub scenario: &'static str,
    /// Human-readable parameters, e.g. `quinn-bbr rtt=200ms loss=1%`.
    pub label: String,
    /// Runs the cell.
    pub run: CellFn,
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell")
            .field("scenario", &self.scenario)
            .field("label", &self.label)
            .finish()
    }
}

/// Every scenario's name, in run order.
pub const SCENARIOS: [&str; 8] = [
    "long-flow",
    "convergence",
    "fairness",
    "fairness-rtt",
    "parking-lot",
    "short-flows",
    "coexistence",
    "cheater",
];

/// All cells of all scenarios.
pub fn all_cells(p: Params) -> Vec<Cell> {
    let mut v = Vec::new();
    v.extend(long_flow::cells(p));
    v.extend(convergence::cells(p));
    v.extend(fairness::cells(p));
    v.extend(parking_lot::cells(p));
    v.extend(short_flows::cells(p));
    v.extend(coexistence::cells(p));
    v.extend(cheater::cells(p));
    v
}

/// A per-cell seed derived from the base seed and the cell's label (FNV-1a).
pub fn cell_seed(base: u64, label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ base;
    for b in label.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The warm-up excluded from rate measurements: `max(2 s, 10 RTT)`.
pub fn warmup(max_rtt: Duration) -> Duration {
    (10 * max_rtt).max(Duration::from_secs(2))
}

/// Runs the simulation to virtual time `t` in slices, failing if the wall-clock `deadline`
/// passes.
pub fn run_to(sim: &mut Sim, t: Duration, deadline: Instant) -> anyhow::Result<()> {
    while sim.elapsed() < t {
        let next = (sim.elapsed() + Duration::from_millis(250)).min(t);
        sim.run_until(next);
        if Instant::now() > deadline {
            bail!(
                "cell exceeded its wall-clock budget of {:?} at virtual time {:?}",
                WALL_BUDGET,
                sim.elapsed()
            );
        }
    }
    Ok(())
}

/// A point-in-time reading of every flow's delivered bytes and sender counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Payload bytes delivered per flow.
    pub bytes: Vec<u64>,
    /// Sender counters per flow.
    pub stats: Vec<SenderStats>,
}

/// Reads every flow's counters now.
pub fn snapshot(sim: &Sim, flows: &[FlowEnds]) -> anyhow::Result<Snapshot> {
    let mut s = Snapshot {
        bytes: Vec::new(),
        stats: Vec::new(),
    };
    for f in flows {
        s.bytes.push(protocol::delivered(sim, f)?);
        s.stats
            .push(protocol::sender_stats(sim, f.protocol, f.sender)?);
    }
    Ok(s)
}

/// One flow's figures over a measurement window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowResult {
    /// Goodput in Mbit/s.
    pub goodput_mbps: f64,
    /// Packets retransmitted in the window.
    pub retransmits: u64,
    /// Payload efficiency η of the flow's protocol (see
    /// [`Protocol::payload_efficiency`]).
    pub eta: f64,
}

/// Per-flow figures between two snapshots `window` apart.
pub fn flow_results(
    flows: &[FlowEnds],
    a: &Snapshot,
    b: &Snapshot,
    window: Duration,
) -> Vec<FlowResult> {
    let secs = window.as_secs_f64().max(1e-9);
    flows
        .iter()
        .zip(a.bytes.iter().zip(&b.bytes))
        .zip(a.stats.iter().zip(&b.stats))
        .map(|((f, (&x, &y)), (sa, sb))| FlowResult {
            goodput_mbps: y.saturating_sub(x) as f64 * 8.0 / secs / 1e6,
            retransmits: sb.since(sa).lost_packets,
            eta: f.protocol.payload_efficiency(),
        })
        .collect()
}

/// Bottleneck figures over the window since the last `reset_stats`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkResult {
    /// Queue drops.
    pub drops: u64,
    /// Median queueing delay, ms.
    pub p50_ms: f64,
    /// 99th-percentile queueing delay, ms.
    pub p99_ms: f64,
    /// Wire bytes transmitted / (rate × window).
    pub utilization: f64,
}

/// Reads a link's statistics (since the last reset) over `window`.
pub fn link_result(sim: &Sim, link: LinkId, window: Duration) -> anyhow::Result<LinkResult> {
    let st = sim.link_stats(link).context("bottleneck link statistics")?;
    let rate = sim
        .link_config(link)
        .context("bottleneck configuration")?
        .rate_bps as f64;
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    Ok(LinkResult {
        drops: st.queue_drops,
        p50_ms: ms(st.queue_delay.p50()),
        p99_ms: ms(st.queue_delay.p99()),
        utilization: st.transmitted_bytes as f64 * 8.0 / (rate * window.as_secs_f64().max(1e-9)),
    })
}

/// Fails with the endpoints' own error messages if any flow reported one.
pub fn check_errors(sim: &Sim, flows: &[FlowEnds]) -> anyhow::Result<()> {
    let mut errs = Vec::new();
    for f in flows {
        errs.extend(protocol::endpoint_errors(
            sim,
            f.protocol,
            &[f.sender, f.sink],
        ));
    }
    if !errs.is_empty() {
        let n = errs.len();
        errs.truncate(5);
        bail!("{n} endpoint error(s): {}", errs.join("; "));
    }
    Ok(())
}

/// A record for `protocol` pre-filled with the cell's parameters.
pub fn base_record(
    scenario: &str,
    protocol: Protocol,
    seed: u64,
    rtt: Duration,
    loss: f64,
) -> Record {
    let mut r = Record::new(scenario, protocol.name(), seed, protocol.deterministic());
    r.rtt_ms = rtt.as_secs_f64() * 1e3;
    r.loss = loss;
    r.capacity_mbps = CAPACITY_BPS as f64 / 1e6;
    r
}

/// Fills a record's link figures.
pub fn apply_link(r: &mut Record, l: &LinkResult) {
    r.drops = l.drops;
    r.queue_p50_ms = Some(l.p50_ms);
    r.queue_p99_ms = l.p99_ms;
    r.link_utilization = Some(l.utilization);
}

/// Goodput series of one flow in Mbit/s from a sink's byte bins of width `bin`.
pub fn rate_series(series: &[u64], bin: Duration) -> Vec<(f64, f64)> {
    let b = bin.as_secs_f64();
    series
        .iter()
        .enumerate()
        .map(|(i, &bytes)| ((i as f64 + 1.0) * b, bytes as f64 * 8.0 / b / 1e6))
        .collect()
}

/// Builds a dumbbell with one pair per RTT across a [`CAPACITY_BPS`] bottleneck whose data
/// direction has Bernoulli `loss` and a queue of 1 BDP of `buffer_rtt`, both directions queued
/// by `queue`. The bottleneck's one-way delay is a quarter of the smallest RTT; the rest of
/// each pair's RTT is on its sender's access link.
pub fn build_dumbbell(
    sim: &mut Sim,
    rtts: &[Duration],
    loss: f64,
    queue: protocol::QueueKind,
    buffer_rtt: Duration,
) -> anyhow::Result<sim_netem::Dumbbell> {
    queue.check()?;
    let min_rtt = rtts.iter().copied().min().context("no flows")?;
    let one_way = min_rtt / 4;
    let rev = sim_netem::LinkConfig::new(CAPACITY_BPS, one_way).with_queue_bdp(1.0, buffer_rtt);
    let fwd = rev
        .clone()
        .with_loss(sim_netem::LossModel::bernoulli(loss)?);
    let mut failed = None;
    let d = sim_netem::DumbbellBuilder::new(rtts.len(), fwd)
        .reverse_bottleneck(rev)
        .rtts(rtts.to_vec())
        .build(sim, queue.factory(&mut failed))?;
    if let Some(e) = failed {
        bail!(e);
    }
    Ok(d)
}

/// Runs to the end of the warm-up, snapshots, resets link statistics, runs to `end` and
/// returns per-flow figures and the `bottleneck`'s.
pub fn measure(
    sim: &mut Sim,
    flows: &[FlowEnds],
    bottleneck: LinkId,
    warm: Duration,
    end: Duration,
) -> anyhow::Result<(Vec<FlowResult>, LinkResult)> {
    let deadline = Instant::now() + WALL_BUDGET;
    run_to(sim, warm, deadline)?;
    let a = snapshot(sim, flows)?;
    sim.reset_stats();
    run_to(sim, end, deadline)?;
    let b = snapshot(sim, flows)?;
    check_errors(sim, flows)?;
    let window = end - warm;
    Ok((
        flow_results(flows, &a, &b, window),
        link_result(sim, bottleneck, window)?,
    ))
}

/// One flow of a shared-bottleneck scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSpec {
    /// Protocol.
    pub protocol: Protocol,
    /// Round-trip propagation delay.
    pub rtt: Duration,
    /// Start time.
    pub start: Duration,
    /// Honest or cheating (MEF only).
    pub conduct: protocol::Conduct,
    /// Label in per-flow records and plots.
    pub label: String,
}

/// What [`run_dumbbell`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedRun {
    /// Per-flow figures over the measurement window.
    pub flows: Vec<FlowResult>,
    /// Bottleneck figures over the same window.
    pub link: LinkResult,
    /// Per-flow goodput series (Mbit/s), when a bin was given.
    pub series: Vec<Vec<(f64, f64)>>,
}

/// Runs bulk flows `specs` over one dumbbell bottleneck queued by `queue` (buffer 1 BDP of
/// `buffer_rtt`), measuring from `warm` to `total`.
pub fn run_dumbbell(
    specs: &[FlowSpec],
    queue: protocol::QueueKind,
    buffer_rtt: Duration,
    warm: Duration,
    total: Duration,
    seed: u64,
    series_bin: Option<Duration>,
) -> anyhow::Result<SharedRun> {
    let mut sim = Sim::new(seed);
    let rtts: Vec<Duration> = specs.iter().map(|s| s.rtt).collect();
    let d = build_dumbbell(&mut sim, &rtts, 0.0, queue, buffer_rtt)?;
    let mut ends = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let plan = crate::flow::FlowPlan {
            id: i as u64,
            start: sim.instant_at(s.start),
            size: None,
        };
        let fseed = seed.wrapping_add(1000 * (i as u64 + 1));
        ends.push(protocol::add_flow(
            &mut sim,
            s.protocol,
            d.senders[i],
            d.receivers[i],
            plan,
            fseed,
            series_bin,
            s.conduct,
        )?);
    }
    let (flows, link) = measure(&mut sim, &ends, d.bottleneck, warm, total)?;
    let mut series = Vec::new();
    if let Some(bin) = series_bin {
        for e in &ends {
            let recv = protocol::sink_flows(&sim, e.protocol, e.sink)?;
            series.push(
                recv.get(&e.flow)
                    .map_or_else(Vec::new, |f| rate_series(&f.series, bin)),
            );
        }
    }
    Ok(SharedRun {
        flows,
        link,
        series,
    })
}
