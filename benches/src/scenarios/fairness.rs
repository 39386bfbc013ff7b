//! `fairness`: N ∈ {2, 8, 64} bulk flows of one protocol with equal RTTs (50 ms), and
//! `fairness-rtt`: 30 flows with RTTs spread evenly over 40–330 ms (buffer 1 BDP of the mean
//! RTT, 185 ms). Jain's index over each flow's goodput / fair share. Flow `i` starts at
//! `i` ms to avoid artificial synchronisation. 30 s (quick 8 s; `fairness-rtt` 40 s, quick
//! 10 s, because its warm-up is 10 × 330 ms).

use std::time::Duration;

use super::{
    CAPACITY_BPS, Cell, CellOutput, FlowSpec, Params, Series, apply_link, base_record, cell_seed,
    run_dumbbell, warmup,
};
use crate::metrics::jain;
use crate::protocol::{Conduct, Protocol};

/// Equal-RTT scenario name.
pub const NAME: &str = "fairness";
/// RTT-spread scenario name.
pub const NAME_RTT: &str = "fairness-rtt";

/// Flow counts of the equal-RTT scenario.
pub const COUNTS: [usize; 3] = [2, 8, 64];

/// The RTT of the equal-RTT scenario.
pub const RTT: Duration = Duration::from_millis(50);

/// RTTs of the spread scenario: 30 flows, 40 to 330 ms in 10 ms steps.
pub fn spread_rtts() -> Vec<Duration> {
    (0..30)
        .map(|i| Duration::from_millis(40 + 10 * i))
        .collect()
}

/// Cells: one per protocol × N, and one per protocol for the RTT spread.
pub fn cells(p: Params) -> Vec<Cell> {
    let mut v = Vec::new();
    for n in COUNTS {
        for proto in Protocol::ALL {
            let label = format!("{} n={n}", proto.name());
            let seed = cell_seed(p.seed, &format!("{NAME} {label}"));
            let total = Duration::from_secs(if p.quick { 8 } else { 30 });
            let rtts = vec![RTT; n];
            v.push(Cell {
                scenario: NAME,
                label: label.clone(),
                run: Box::new(move || run(NAME, proto, &rtts, RTT, total, seed)),
            });
        }
    }
    for proto in Protocol::ALL {
        let label = proto.name().to_string();
        let seed = cell_seed(p.seed, &format!("{NAME_RTT} {label}"));
        let total = Duration::from_secs(if p.quick { 10 } else { 40 });
        v.push(Cell {
            scenario: NAME_RTT,
            label,
            run: Box::new(move || {
                run(
                    NAME_RTT,
                    proto,
                    &spread_rtts(),
                    Duration::from_millis(185),
                    total,
                    seed,
                )
            }),
        });
    }
    v
}

/// Runs `rtts.len()` flows of `proto` and reports the aggregate with Jain's index.
pub fn run(
    scenario: &str,
    proto: Protocol,
    rtts: &[Duration],
    buffer_rtt: Duration,
    total: Duration,
    seed: u64,
) -> anyhow::Result<CellOutput> {
    let specs: Vec<FlowSpec> = rtts
        .iter()
        .enumerate()
        .map(|(i, &rtt)| FlowSpec {
            protocol: proto,
            rtt,
            start: Duration::from_millis(i as u64),
            conduct: Conduct::Honest,
            label: i.to_string(),
        })
        .collect();
    let max_rtt = rtts.iter().copied().max().unwrap_or(RTT);
    let warm = warmup(max_rtt).min(total / 2);
    let run = run_dumbbell(
        &specs,
        proto.native_queue(),
        buffer_rtt,
        warm,
        total,
        seed,
        None,
    )?;
    let n = rtts.len() as f64;
    let fair_wire = CAPACITY_BPS as f64 / 1e6 / n;
    let shares: Vec<f64> = run
        .flows
        .iter()
        .map(|f| f.goodput_mbps / (fair_wire * f.eta))
        .collect();
    let min_rtt = rtts.iter().copied().min().unwrap_or(RTT);
    let mut r = base_record(scenario, proto, seed, min_rtt, 0.0);
    r.goodput_mbps = run.flows.iter().map(|f| f.goodput_mbps).sum();
    r.utilization = r.goodput_mbps / r.capacity_mbps;
    r.retransmits = run.flows.iter().map(|f| f.retransmits).sum();
    r.jain = jain(&shares);
    r.flows = Some(rtts.len() as u64);
    apply_link(&mut r, &run.link);
    let cell = if scenario == NAME_RTT {
        "RTT 40-330 ms".to_string()
    } else {
        format!("n={}", rtts.len())
    };
    let points: Vec<(f64, f64)> = if scenario == NAME_RTT {
        rtts.iter()
            .zip(&run.flows)
            .map(|(r, f)| (r.as_secs_f64() * 1e3, f.goodput_mbps))
            .collect()
    } else {
        shares
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as f64, s))
            .collect()
    };
    let series = vec![Series {
        scenario: scenario.to_string(),
        protocol: proto.name().to_string(),
        cell,
        label: String::new(),
        points,
    }];
    Ok(CellOutput {
        records: vec![r],
        series,
    })
}
