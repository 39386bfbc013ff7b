//! `long-flow`: one bulk flow per protocol across the bottleneck, RTT {10, 50, 100, 200, 400}
//! ms × random loss {0, 0.1, 1, 2} % on the data direction (quick: RTT {50, 200} × loss
//! {0, 1} %). Runs 30 s (quick 8 s) including the warm-up.

use std::time::Duration;

use sim_netem::Sim;

use super::{Cell, CellOutput, Params, apply_link, base_record, build_dumbbell, cell_seed};
use crate::flow::FlowPlan;
use crate::protocol::{Conduct, Protocol, add_flow};

/// Scenario name.
pub const NAME: &str = "long-flow";

/// The (RTT ms, loss) grid.
pub fn grid(quick: bool) -> (Vec<u64>, Vec<f64>) {
    if quick {
        (vec![50, 200], vec![0.0, 0.01])
    } else {
        (vec![10, 50, 100, 200, 400], vec![0.0, 0.001, 0.01, 0.02])
    }
}

/// Total simulated time of a cell.
pub fn duration(quick: bool) -> Duration {
    Duration::from_secs(if quick { 8 } else { 30 })
}

/// One cell per protocol × RTT × loss.
pub fn cells(p: Params) -> Vec<Cell> {
    let (rtts, losses) = grid(p.quick);
    let mut v = Vec::new();
    for &rtt in &rtts {
        for &loss in &losses {
            for proto in Protocol::ALL {
                let label = format!("{} rtt={rtt}ms loss={}%", proto.name(), loss * 100.0);
                let seed = cell_seed(p.seed, &format!("{NAME} {label}"));
                let total = duration(p.quick);
                v.push(Cell {
                    scenario: NAME,
                    label,
                    run: Box::new(move || {
                        run(proto, Duration::from_millis(rtt), loss, total, seed)
                    }),
                });
            }
        }
    }
    v
}

/// Runs one long flow and measures it.
pub fn run(
    proto: Protocol,
    rtt: Duration,
    loss: f64,
    total: Duration,
    seed: u64,
) -> anyhow::Result<CellOutput> {
    let mut sim = Sim::new(seed);
    let d = build_dumbbell(&mut sim, &[rtt], loss, proto.native_queue(), rtt)?;
    let plan = FlowPlan {
        id: 0,
        start: sim.instant_at(Duration::ZERO),
        size: None,
    };
    let f = add_flow(
        &mut sim,
        proto,
        d.senders[0],
        d.receivers[0],
        plan,
        seed,
        None,
        Conduct::Honest,
    )?;
    let warm = super::warmup(rtt).min(total / 2);
    let (flows, link) = super::measure(&mut sim, &[f], d.bottleneck, warm, total)?;
    let mut r = base_record(NAME, proto, seed, rtt, loss);
    r.goodput_mbps = flows[0].goodput_mbps;
    r.utilization = r.goodput_mbps / (r.capacity_mbps * (1.0 - loss));
    r.retransmits = flows[0].retransmits;
    apply_link(&mut r, &link);
    Ok(CellOutput {
        records: vec![r],
        series: Vec::new(),
    })
}
