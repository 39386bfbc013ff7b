//! Simulates a 60-second 100 Mbit/s constant-bit-rate flow across a dumbbell and prints the
//! wall-clock time it took. Run with `cargo run --release -p sim-netem --example speed`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sim_netem::{DumbbellBuilder, LinkConfig, ProbeConfig, ProbeSender, ProbeSink, Sim};

fn main() {
    let wall = Instant::now();
    let mut sim = Sim::new(7);
    let bottleneck = LinkConfig::new(100_000_000, Duration::from_millis(25));
    let Ok(d) = DumbbellBuilder::new(1, bottleneck).build_droptail(&mut sim) else {
        eprintln!("failed to build the topology");
        std::process::exit(1);
    };
    let dst = SocketAddr::new(d.receiver_addrs[0].into(), 9000);
    let sink = sim.attach(
        d.receivers[0],
        9000,
        Box::new(ProbeSink::summary_only(sim.epoch())),
    );
    let cfg = ProbeConfig::new(dst, 100_000_000);
    sim.attach(
        d.senders[0],
        0,
        Box::new(ProbeSender::new(sim.epoch(), cfg)),
    );
    sim.run_until(Duration::from_secs(60));
    let elapsed = wall.elapsed();
    let Some(sink) = sim.endpoint::<ProbeSink>(sink) else {
        return;
    };
    let rate = sink.throughput_bps().unwrap_or(0.0);
    println!(
        "simulated 60 s: {} packets delivered at {:.3} Mbit/s, {} events, wall time {:.3} s",
        sink.received(),
        rate / 1e6,
        sim.stats().events,
        elapsed.as_secs_f64()
    );
}
