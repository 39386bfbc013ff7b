//! `convergence`: a bulk flow runs alone; a second flow of the same protocol joins at
//! `max(2 s, 10 RTT)` (rounded to whole RTTs). Goodput of both, as delivered to the receivers,
//! is binned in quarter-RTT bins ([`BINS_PER_RTT`]). The convergence time is the end of the first
//! bin from which both flows stay within ±10 % of their fair share (half the capacity, in
//! goodput terms) for [`STABLE_RTTS`] RTTs, counted in RTTs from the joining flow's first packet
//! (its handshake). Whole-RTT bins would round every result up to the next RTT. RTT 50 and 200 ms (quick: 50 ms);
//! measured for `max(10 s, 50 RTT)` after the join (quick 4 s).

use std::time::Duration;

use super::{
    CAPACITY_BPS, Cell, CellOutput, FlowSpec, Params, Series, apply_link, base_record, cell_seed,
    run_dumbbell, warmup,
};
use crate::metrics::jain;
use crate::protocol::{Conduct, Protocol};

/// Scenario name.
pub const NAME: &str = "convergence";

/// RTTs both flows must stay within ±10 % for the time to count.
pub const STABLE_RTTS: usize = 10;

/// Goodput bins per RTT.
pub const BINS_PER_RTT: u32 = 4;

/// Cells: protocol × RTT.
pub fn cells(p: Params) -> Vec<Cell> {
    let rtts: &[u64] = if p.quick { &[50] } else { &[50, 200] };
    let mut v = Vec::new();
    for &rtt in rtts {
        for proto in Protocol::ALL {
            let label = format!("{} rtt={rtt}ms", proto.name());
            let seed = cell_seed(p.seed, &format!("{NAME} {label}"));
            let quick = p.quick;
            v.push(Cell {
                scenario: NAME,
                label,
                run: Box::new(move || run(proto, Duration::from_millis(rtt), quick, seed)),
            });
        }
    }
    v
}

/// The first bin index `k ≥ from` such that bins `k..k+stable` (or to the end, if at least
/// `min(stable, 3)` remain) all have every flow's value within `tol` of 1.
pub fn first_stable(shares: &[Vec<f64>], from: usize, stable: usize, tol: f64) -> Option<usize> {
    let len = shares.iter().map(Vec::len).min()?;
    let ok = |k: usize| shares.iter().all(|s| (s[k] - 1.0).abs() <= tol);
    (from..len).find(|&k| {
        let end = (k + stable).min(len);
        end - k >= stable.min(3) && (k..end).all(ok)
    })
}

/// Runs one convergence cell.
pub fn run(proto: Protocol, rtt: Duration, quick: bool, seed: u64) -> anyhow::Result<CellOutput> {
    let bin = rtt / BINS_PER_RTT;
    let join_bins = warmup(rtt).as_nanos().div_ceil(rtt.as_nanos()) as u32 * BINS_PER_RTT;
    let join = bin * join_bins;
    let after = if quick {
        Duration::from_secs(4)
    } else {
        (50 * rtt).max(Duration::from_secs(10))
    };
    let specs: Vec<FlowSpec> = [Duration::ZERO, join]
        .iter()
        .enumerate()
        .map(|(i, &start)| FlowSpec {
            protocol: proto,
            rtt,
            start,
            conduct: Conduct::Honest,
            label: format!("flow {i}"),
        })
        .collect();
    // Measure from the join: link statistics and goodput cover the two-flow period.
    let run = run_dumbbell(
        &specs,
        proto.native_queue(),
        rtt,
        join,
        join + after,
        seed,
        Some(bin),
    )?;
    let fair_wire = CAPACITY_BPS as f64 / 1e6 / 2.0;
    let shares: Vec<Vec<f64>> = run
        .series
        .iter()
        .zip(&run.flows)
        .map(|(s, f)| {
            s.iter()
                .map(|&(_, mbps)| mbps / (fair_wire * f.eta))
                .collect()
        })
        .collect();
    let stable = STABLE_RTTS * BINS_PER_RTT as usize;
    let k = first_stable(&shares, join_bins as usize, stable, 0.10);
    let mut r = base_record(NAME, proto, seed, rtt, 0.0);
    r.goodput_mbps = run.flows.iter().map(|f| f.goodput_mbps).sum();
    r.utilization = r.goodput_mbps / r.capacity_mbps;
    r.retransmits = run.flows.iter().map(|f| f.retransmits).sum();
    r.jain = jain(
        &run.flows
            .iter()
            .map(|f| f.goodput_mbps / (fair_wire * f.eta))
            .collect::<Vec<_>>(),
    );
    r.converged = Some(k.is_some());
    r.convergence_rtts = k.map(|k| (k + 1 - join_bins as usize) as f64 / f64::from(BINS_PER_RTT));
    r.fair_share_mbps = run.flows.get(1).map(|f| fair_wire * f.eta);
    r.flows = Some(2);
    apply_link(&mut r, &run.link);
    let series = run
        .series
        .into_iter()
        .zip(&specs)
        .map(|(points, s)| Series {
            scenario: NAME.to_string(),
            protocol: proto.name().to_string(),
            cell: format!("{} rtt={}ms", proto.name(), rtt.as_millis()),
            label: s.label.clone(),
            points,
        })
        .collect();
    Ok(CellOutput {
        records: vec![r],
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stable_needs_both_flows_to_hold() {
        let a = vec![0.0, 0.5, 0.95, 1.05, 1.0, 1.0, 1.0, 1.0];
        let b = vec![2.0, 1.5, 1.2, 1.05, 0.95, 1.0, 1.0, 1.0];
        assert_eq!(first_stable(&[a.clone(), b], 0, 3, 0.1), Some(3));
        // A later excursion resets it.
        let mut c = vec![2.0, 1.5, 1.2, 1.05, 0.95, 1.0, 1.0, 1.0];
        c[5] = 1.3;
        // Bins 6 and 7 hold, but two bins are fewer than the three required at the end.
        assert_eq!(first_stable(&[a, c], 0, 3, 0.1), None);
    }
}
