//! `mef demo`: a whole network in one process, on the embedded default scenario.
//!
//! Two sites joined by a 100 Mbit/s WAN with 200 ms round-trip time and 1 % random loss — the
//! seed's "Beijing to Los Angeles" path (seed 003, "MEF 示例"). The same path is simulated once
//! per protocol: MEF through the MEF router at the WAN edge, and quinn-proto's Cubic and BBR
//! through a plain drop-tail router, each protocol on the network its users would have. The
//! three simulations run in parallel and the summary compares them.

use std::time::{Duration, Instant};

use anyhow::Context;
use mef_benches::Record;
use mef_benches::protocol::Protocol;
use mef_benches::scenarios::long_flow;

/// Round-trip propagation delay of the demo WAN.
const RTT: Duration = Duration::from_millis(200);
/// Random loss on the WAN.
const LOSS: f64 = 0.01;
/// Simulated time per protocol.
const DURATION: Duration = Duration::from_secs(12);

/// Runs the demo and prints the summary.
pub fn run(seed: u64) -> anyhow::Result<()> {
    let wall = Instant::now();
    println!(
        "MEF demo: site A ⇄ WAN (100 Mbit/s, RTT {} ms, {} % random loss, 1 BDP buffer) ⇄ site B",
        RTT.as_millis(),
        LOSS * 100.0
    );
    println!(
        "one bulk flow A→B per protocol, {} s simulated each; goodput measured after warm-up\n",
        DURATION.as_secs()
    );
    let handles: Vec<_> = Protocol::ALL
        .into_iter()
        .map(|p| std::thread::spawn(move || (p, long_flow::run(p, RTT, LOSS, DURATION, seed))))
        .collect();
    let mut rows: Vec<Record> = Vec::new();
    for h in handles {
        let (p, out) = h
            .join()
            .map_err(|_| anyhow::anyhow!("simulation thread panicked"))?;
        let out = out.with_context(|| format!("{} simulation", p.name()))?;
        rows.extend(out.records);
    }
    println!(
        "{:<12} {:>14} {:>12} {:>12} {:>14} {:>14}",
        "protocol", "goodput Mbit/s", "of C·(1−p)", "retransmits", "router drops", "queue p99 ms"
    );
    for r in &rows {
        println!(
            "{:<12} {:>14.2} {:>11.1}% {:>12} {:>14} {:>14.2}",
            r.protocol,
            r.goodput_mbps,
            r.utilization * 100.0,
            r.retransmits,
            r.drops,
            r.queue_p99_ms
        );
    }
    let goodput = |name: &str| {
        rows.iter()
            .find(|r| r.protocol == name)
            .map(|r| r.goodput_mbps)
    };
    if let (Some(m), Some(c), Some(b)) =
        (goodput("mef"), goodput("quinn-cubic"), goodput("quinn-bbr"))
    {
        let ratio = |x: f64| {
            if x > 0.0 {
                format!("{:.1}×", m / x)
            } else {
                "∞".into()
            }
        };
        println!(
            "\nMEF goodput is {} quinn-Cubic's and {} quinn-BBR's on this path \
             (seed 003 claims 20× Cubic and 2× BBR at 200 ms).",
            ratio(c),
            ratio(b)
        );
    }
    if rows.iter().any(|r| !r.deterministic) {
        println!("note: quinn's BBR seeds its own RNG, so its figures can differ between runs.");
    }
    println!(
        "transport simulations finished in {:.1} s wall time",
        wall.elapsed().as_secs_f64()
    );
    Ok(())
}
