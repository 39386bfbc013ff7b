//! Simulation speed check (ignored by default; run with
//! `cargo test -p mef-transport --release --test perf -- --ignored --nocapture`).

mod util;

use std::time::Duration;

use mef_transport::Config;
use util::{LinkConfig, Pair, Transfer, data};

#[test]
#[ignore = "performance measurement, run in release"]
fn simulate_100mbit_for_60s() {
    let l = LinkConfig {
        delay: Duration::from_millis(25),
        rate_bps: Some(100_000_000),
        queue_bytes: 625_000,
        stamp_kbps: Some(99_000),
        loss: 0.01,
        ..LinkConfig::default()
    };
    let back = LinkConfig {
        delay: Duration::from_millis(25),
        ..LinkConfig::default()
    };
    let mut p = Pair::new(1, Config::default(), Config::default(), l, back);
    let h = p.connect();
    let payload = data(800_000_000, 1);
    let mut t = Transfer::new(h);
    let wall = std::time::Instant::now();
    p.drive_until(Duration::from_secs(60), |p| {
        t.pump(p, &payload);
        false
    });
    let el = wall.elapsed();
    let s = p.client.connection(h).expect("conn").stats();
    let goodput = t.received.len() as f64 * 8.0 / 60.0 / 1e6;
    println!(
        "wall {el:?}, goodput {goodput:.2} Mbit/s, stats {s:?}, link {:?}",
        p.c2s.stats
    );
}
