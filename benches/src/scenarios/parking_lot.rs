//! `parking-lot`: three 100 Mbit/s bottlenecks in a row (R0 → R1 → R2 → R3, 5 ms each, buffer
//! 1 BDP of 70 ms). Flows: `long` crosses all three; `cross-0` crosses link 0; `cross-1a` and
//! `cross-1b` cross link 1; `cross-2` crosses link 2. Max-min shares: `long`, `cross-1a`,
//! `cross-1b` get C/3 (link 1 is their bottleneck), `cross-0` and `cross-2` get 2C/3. Every
//! host's access link has 10 ms one-way delay, so `long` has a 70 ms RTT and the cross flows
//! 50 ms. Each flow's goodput is compared with its max-min share (times its payload
//! efficiency). 30 s (quick 8 s).

use std::time::Duration;

use anyhow::{Context, bail};
use sim_netem::{LinkConfig, ParkingLotBuilder, Sim};

use super::{
    CAPACITY_BPS, Cell, CellOutput, Params, Series, apply_link, base_record, cell_seed, measure,
    warmup,
};
use crate::flow::FlowPlan;
use crate::metrics::{jain, max_min};
use crate::protocol::{self, Conduct, Protocol};

/// Scenario name.
pub const NAME: &str = "parking-lot";

/// `(label, first link, last link + 1)` of every flow.
pub const FLOWS: [(&str, usize, usize); 5] = [
    ("long", 0, 3),
    ("cross-0", 0, 1),
    ("cross-1a", 1, 2),
    ("cross-1b", 1, 2),
    ("cross-2", 2, 3),
];

/// One cell per protocol.
pub fn cells(p: Params) -> Vec<Cell> {
    Protocol::ALL
        .into_iter()
        .map(|proto| {
            let label = proto.name().to_string();
            let seed = cell_seed(p.seed, &format!("{NAME} {label}"));
            let total = Duration::from_secs(if p.quick { 8 } else { 30 });
            Cell {
                scenario: NAME,
                label,
                run: Box::new(move || run(proto, total, seed)),
            }
        })
        .collect()
}

/// Runs the parking lot for one protocol.
pub fn run(proto: Protocol, total: Duration, seed: u64) -> anyhow::Result<CellOutput> {
    let hop = Duration::from_millis(5);
    let access_delay = Duration::from_millis(10);
    let max_rtt = 2 * (2 * access_delay + 3 * hop);
    let queue = proto.native_queue();
    queue.check()?;
    let mut sim = Sim::new(seed);
    let link = LinkConfig::new(CAPACITY_BPS, hop).with_queue_bdp(1.0, max_rtt);
    let mut failed = None;
    let mut lot = ParkingLotBuilder::new(vec![link; 3])
        .access(sim_netem::topology::default_access().with_delay(access_delay))
        .build(&mut sim, queue.factory(&mut failed))?;
    if let Some(e) = failed {
        bail!(e);
    }
    let mut ends = Vec::new();
    let mut rtts = Vec::new();
    for (i, &(_, from, to)) in FLOWS.iter().enumerate() {
        let (src, _) = lot.add_host(&mut sim, from)?;
        let (dst, _) = lot.add_host(&mut sim, to)?;
        let plan = FlowPlan {
            id: i as u64,
            start: sim.instant_at(Duration::from_millis(i as u64)),
            size: None,
        };
        let fseed = seed.wrapping_add(1000 * (i as u64 + 1));
        ends.push(protocol::add_flow(
            &mut sim,
            proto,
            src,
            dst,
            plan,
            fseed,
            None,
            Conduct::Honest,
        )?);
        rtts.push(2 * (2 * access_delay + hop * (to - from) as u32));
    }
    sim.build_routes();
    let warm = warmup(max_rtt).min(total / 2);
    // Link statistics: report the middle link (the tightest), but check every link's drops.
    let middle = *lot.forward.get(1).context("parking lot has three links")?;
    let (flows, link) = measure(&mut sim, &ends, middle, warm, total)?;
    let mut drops = 0;
    for &l in &lot.forward {
        drops += sim.link_stats(l).map_or(0, |s| s.queue_drops);
    }
    let paths: Vec<Vec<usize>> = FLOWS.iter().map(|&(_, a, b)| (a..b).collect()).collect();
    let fair_wire = max_min(&[CAPACITY_BPS as f64 / 1e6; 3], &paths);
    let mut records = Vec::new();
    let mut shares = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        let fair = fair_wire[i] * f.eta;
        let share = f.goodput_mbps / fair;
        shares.push(share);
        let mut r = base_record(NAME, proto, seed, rtts[i], 0.0);
        r.flow = Some(FLOWS[i].0.to_string());
        r.goodput_mbps = f.goodput_mbps;
        r.utilization = f.goodput_mbps / fair;
        r.retransmits = f.retransmits;
        r.share = Some(share);
        r.fair_share_mbps = Some(fair);
        apply_link(&mut r, &link);
        records.push(r);
    }
    let mut agg = base_record(
        NAME,
        proto,
        seed,
        rtts.iter().copied().min().unwrap_or(max_rtt),
        0.0,
    );
    agg.goodput_mbps = flows.iter().map(|f| f.goodput_mbps).sum();
    agg.utilization = agg.goodput_mbps / (3.0 * agg.capacity_mbps);
    agg.retransmits = flows.iter().map(|f| f.retransmits).sum();
    agg.jain = jain(&shares);
    agg.flows = Some(FLOWS.len() as u64);
    apply_link(&mut agg, &link);
    agg.drops = drops;
    records.insert(0, agg);
    let series = vec![Series {
        scenario: NAME.to_string(),
        protocol: proto.name().to_string(),
        cell: "flows: long, cross-0, cross-1a, cross-1b, cross-2".to_string(),
        label: String::new(),
        points: shares
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as f64, s))
            .collect(),
    }];
    Ok(CellOutput { records, series })
}
