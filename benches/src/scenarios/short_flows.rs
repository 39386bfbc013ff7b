//! `short-flows`: flows with Pareto-distributed sizes (mean 25 packets of [`PACKET`] payload
//! bytes, shape 1.2, capped at [`CAP_PACKETS`]) arrive as a Poisson process at load 0.9 of the
//! bottleneck's goodput capacity (`C × 1400/1500`), over a dumbbell of [`PAIRS`] sender/receiver
//! pairs (flows assigned round-robin), RTT 50 ms, buffer 1 BDP. Arrivals for 20 s (quick 4 s),
//! then the run continues until every flow completed or 60 s more passed.
//!
//! A flow's completion time (FCT) runs from its start (connection opened) to the delivery of
//! its last byte. The ideal is processor sharing of the same arrival trace (fluid, exact;
//! [`crate::metrics::processor_sharing`]) at the goodput capacity, plus 1.5 RTT (one round trip
//! to set up and half a round trip for the data to arrive, as in RCP's evaluation).
//! `fct_ratio` = mean FCT / mean ideal; `fct_p99_ratio` = p99 FCT / p99 ideal, over completed
//! flows (incomplete flows are counted in `incomplete`).

use std::time::{Duration, Instant};

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sim_netem::Sim;

use super::{
    CAPACITY_BPS, Cell, CellOutput, NOMINAL_ETA, Params, Series, WALL_BUDGET, apply_link,
    base_record, build_dumbbell, cell_seed, link_result, run_to,
};
use crate::flow::FlowPlan;
use crate::metrics::{exp_interval, mean, pareto_packets, processor_sharing, quantile};
use crate::protocol::{self, Conduct, Protocol};

/// Scenario name.
pub const NAME: &str = "short-flows";
/// Payload bytes per "packet" of the size distribution.
pub const PACKET: u64 = 1400;
/// Mean flow size in packets.
pub const MEAN_PACKETS: f64 = 25.0;
/// Pareto shape.
pub const SHAPE: f64 = 1.2;
/// Largest flow in packets (keeps one extreme draw from dominating a short run).
pub const CAP_PACKETS: u64 = 20_000;
/// Offered load relative to the goodput capacity.
pub const LOAD: f64 = 0.9;
/// Sender/receiver pairs.
pub const PAIRS: usize = 8;
/// Round-trip propagation delay.
pub const RTT: Duration = Duration::from_millis(50);

/// One flow of the arrival trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Start time since the beginning of the run.
    pub at: Duration,
    /// Payload bytes.
    pub bytes: u64,
}

/// The arrival trace for `window` seconds of arrivals (deterministic per seed).
pub fn trace(seed: u64, window: Duration) -> Vec<Arrival> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let goodput_bytes_per_s = CAPACITY_BPS as f64 * NOMINAL_ETA / 8.0;
    let rate = LOAD * goodput_bytes_per_s / (MEAN_PACKETS * PACKET as f64);
    let mut t = Duration::ZERO;
    let mut v = Vec::new();
    loop {
        t += exp_interval(&mut rng, rate);
        if t >= window {
            break v;
        }
        let packets = pareto_packets(&mut rng, MEAN_PACKETS, SHAPE, CAP_PACKETS);
        v.push(Arrival {
            at: t,
            bytes: packets * PACKET,
        });
    }
}

/// One cell per protocol.
pub fn cells(p: Params) -> Vec<Cell> {
    let window = Duration::from_secs(if p.quick { 4 } else { 20 });
    // The same trace for every protocol.
    let trace_seed = cell_seed(p.seed, NAME);
    Protocol::ALL
        .into_iter()
        .map(|proto| {
            let label = proto.name().to_string();
            let seed = cell_seed(p.seed, &format!("{NAME} {label}"));
            Cell {
                scenario: NAME,
                label,
                run: Box::new(move || run(proto, &trace(trace_seed, window), seed)),
            }
        })
        .collect()
}

/// Runs the trace with one protocol.
pub fn run(proto: Protocol, arrivals: &[Arrival], seed: u64) -> anyhow::Result<CellOutput> {
    let mut sim = Sim::new(seed);
    let d = build_dumbbell(&mut sim, &[RTT; PAIRS], 0.0, proto.native_queue(), RTT)?;
    let mut plans: Vec<Vec<FlowPlan>> = vec![Vec::new(); PAIRS];
    for (i, a) in arrivals.iter().enumerate() {
        plans[i % PAIRS].push(FlowPlan {
            id: i as u64,
            start: sim.instant_at(a.at),
            size: Some(a.bytes),
        });
    }
    let mut ends = Vec::new();
    for (k, p) in plans.into_iter().enumerate() {
        let sink =
            protocol::attach_sink(&mut sim, d.receivers[k], proto, seed + 2 * k as u64, None)?;
        let addr = sim.endpoint_addr(sink).context("sink address")?;
        let sender = protocol::attach_sender(
            &mut sim,
            d.senders[k],
            proto,
            addr,
            p,
            seed + 2 * k as u64 + 1,
            Conduct::Honest,
        )?;
        ends.push((sender, sink));
    }
    let last = arrivals.last().map_or(Duration::ZERO, |a| a.at);
    let limit = last + Duration::from_secs(60);
    let deadline = Instant::now() + WALL_BUDGET;
    let n = arrivals.len();
    let done = |sim: &Sim| -> anyhow::Result<usize> {
        let mut c = 0;
        for &(_, sink) in &ends {
            c += protocol::sink_flows(sim, proto, sink)?
                .values()
                .filter(|f| f.finished_at.is_some())
                .count();
        }
        Ok(c)
    };
    run_to(&mut sim, last, deadline)?;
    while sim.elapsed() < limit && done(&sim)? < n {
        let t = sim.elapsed() + Duration::from_millis(500);
        run_to(&mut sim, t.min(limit), deadline)?;
    }
    let elapsed = sim.elapsed();
    // FCTs.
    let jobs: Vec<(Duration, u64)> = arrivals.iter().map(|a| (a.at, a.bytes)).collect();
    let ps = processor_sharing(&jobs, CAPACITY_BPS as f64 * NOMINAL_ETA / 8.0);
    let mut fct = Vec::new();
    let mut ideal = Vec::new();
    let mut points = Vec::new();
    let mut delivered = 0u64;
    let mut retransmits = 0;
    for &(sender, sink) in &ends {
        retransmits += protocol::sender_stats(&sim, proto, sender)?.lost_packets;
        for (id, f) in protocol::sink_flows(&sim, proto, sink)? {
            delivered += f.bytes;
            let i = id as usize;
            let (Some(fin), Some(a)) = (f.finished_at, arrivals.get(i)) else {
                continue;
            };
            let got = sim.since_start(fin).saturating_sub(a.at).as_secs_f64();
            let want = ps[i].as_secs_f64() + 1.5 * RTT.as_secs_f64();
            fct.push(got);
            ideal.push(want);
            points.push(((a.bytes / PACKET) as f64, got / want));
        }
    }
    let mut errs = Vec::new();
    for &(a, b) in &ends {
        errs.extend(protocol::endpoint_errors(&sim, proto, &[a, b]));
    }
    if !errs.is_empty() {
        anyhow::bail!(
            "{} endpoint error(s): {}",
            errs.len(),
            errs[..errs.len().min(3)].join("; ")
        );
    }
    let link = link_result(&sim, d.bottleneck, elapsed)?;
    let mut r = base_record(NAME, proto, seed, RTT, 0.0);
    r.goodput_mbps = delivered as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    r.utilization = r.goodput_mbps / r.capacity_mbps;
    r.retransmits = retransmits;
    r.flows = Some(n as u64);
    r.incomplete = Some((n - fct.len()) as u64);
    r.fct_mean_ms = mean(&fct).map(|x| x * 1e3);
    r.fct_ratio = mean(&fct).zip(mean(&ideal)).map(|(a, b)| a / b);
    r.fct_p99_ratio = quantile(&fct, 0.99)
        .zip(quantile(&ideal, 0.99))
        .map(|(a, b)| a / b);
    apply_link(&mut r, &link);
    let series = vec![Series {
        scenario: NAME.to_string(),
        protocol: proto.name().to_string(),
        cell: proto.name().to_string(),
        label: String::new(),
        points,
    }];
    Ok(CellOutput {
        records: vec![r],
        series,
    })
}
