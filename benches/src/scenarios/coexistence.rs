//! `coexistence`: two MEF flows and two quinn-Cubic flows share one bottleneck with the MEF
//! router on it (RTT 50 ms, buffer 1 BDP): each flow's goodput against its fair share (C/4
//! in goodput terms). 30 s (quick 8 s).

use std::time::Duration;

use super::{
    CAPACITY_BPS, Cell, CellOutput, FlowSpec, Params, Series, apply_link, base_record, cell_seed,
    run_dumbbell, warmup,
};
use crate::metrics::jain;
use crate::protocol::{Conduct, Protocol, QueueKind};
use crate::record::Record;

/// Scenario name.
pub const NAME: &str = "coexistence";
/// Round-trip propagation delay.
pub const RTT: Duration = Duration::from_millis(50);

/// The single cell.
pub fn cells(p: Params) -> Vec<Cell> {
    let seed = cell_seed(p.seed, NAME);
    let total = Duration::from_secs(if p.quick { 8 } else { 30 });
    let specs = vec![
        spec(Protocol::Mef, 0, Conduct::Honest, "mef-0"),
        spec(Protocol::QuinnCubic, 1, Conduct::Honest, "cubic-0"),
        spec(Protocol::Mef, 2, Conduct::Honest, "mef-1"),
        spec(Protocol::QuinnCubic, 3, Conduct::Honest, "cubic-1"),
    ];
    vec![Cell {
        scenario: NAME,
        label: "2 mef + 2 quinn-cubic".to_string(),
        run: Box::new(move || run_mixed(NAME, &specs, total, seed)),
    }]
}

/// A bulk flow starting at `start_ms`.
pub fn spec(protocol: Protocol, start_ms: u64, conduct: Conduct, label: &str) -> FlowSpec {
    FlowSpec {
        protocol,
        rtt: RTT,
        start: Duration::from_millis(start_ms),
        conduct,
        label: label.to_string(),
    }
}

/// Runs mixed flows over the MEF router and reports each flow's share plus an aggregate (with
/// `protocol` = `mef`, the router's protocol).
pub fn run_mixed(
    scenario: &str,
    specs: &[FlowSpec],
    total: Duration,
    seed: u64,
) -> anyhow::Result<CellOutput> {
    let warm = warmup(RTT).min(total / 2);
    let run = run_dumbbell(specs, QueueKind::Mef, RTT, warm, total, seed, None)?;
    let fair_wire = CAPACITY_BPS as f64 / 1e6 / specs.len() as f64;
    let mut records: Vec<Record> = Vec::new();
    let mut shares = Vec::new();
    for (s, f) in specs.iter().zip(&run.flows) {
        let fair = fair_wire * f.eta;
        let share = f.goodput_mbps / fair;
        shares.push(share);
        let mut r = base_record(scenario, s.protocol, seed, s.rtt, 0.0);
        r.flow = Some(s.label.clone());
        r.goodput_mbps = f.goodput_mbps;
        r.utilization = f.goodput_mbps / fair;
        r.retransmits = f.retransmits;
        r.share = Some(share);
        r.fair_share_mbps = Some(fair);
        r.deterministic = specs.iter().all(|s| s.protocol.deterministic());
        apply_link(&mut r, &run.link);
        records.push(r);
    }
    let mut agg = base_record(scenario, Protocol::Mef, seed, RTT, 0.0);
    agg.goodput_mbps = run.flows.iter().map(|f| f.goodput_mbps).sum();
    agg.utilization = agg.goodput_mbps / agg.capacity_mbps;
    agg.retransmits = run.flows.iter().map(|f| f.retransmits).sum();
    agg.jain = jain(&shares);
    agg.flows = Some(specs.len() as u64);
    agg.deterministic = specs.iter().all(|s| s.protocol.deterministic());
    apply_link(&mut agg, &run.link);
    records.insert(0, agg);
    let series = vec![Series {
        scenario: scenario.to_string(),
        protocol: "mixed".to_string(),
        cell: specs
            .iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        label: String::new(),
        points: shares
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as f64, s))
            .collect(),
    }];
    Ok(CellOutput { records, series })
}
