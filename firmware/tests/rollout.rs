//! The firmware roll-out over the encrypted mesh over `sim-netem` (feature `sim`).

use std::time::Duration;

use firmware::sim::{RolloutConfig, run_rollout};

fn small(swarm_peers: usize) -> RolloutConfig {
    RolloutConfig {
        image_bytes: 4 << 20,
        gateways: 12,
        swarm_peers,
        manufacturer_up_bps: 20_000_000,
        manufacturer_down_bps: 20_000_000,
        gateway_up_bps: 10_000_000,
        gateway_down_bps: 50_000_000,
        access_delay: Duration::from_millis(5),
        deadline: Duration::from_secs(600),
        ..RolloutConfig::default()
    }
}

#[test]
fn swarm_rollout_beats_manufacturer_only() {
    let p2p = run_rollout(&small(4));
    let base = run_rollout(&small(0));
    println!("p2p {p2p:#?}\nbaseline {base:#?}");
    assert_eq!(p2p.completed, 12);
    assert_eq!(base.completed, 12);
}

#[test]
fn tmp_full() {
    if std::env::var("FULL").is_err() {
        return;
    }
    let k: usize = std::env::var("K")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut c = RolloutConfig {
        swarm_peers: k,
        ..RolloutConfig::default()
    };
    if let Ok(g) = std::env::var("G") {
        c.gateways = g.parse().unwrap();
    }
    if let Ok(m) = std::env::var("MB") {
        c.image_bytes = m.parse::<usize>().unwrap() << 20;
    }
    if let Ok(m) = std::env::var("DL") {
        c.deadline = Duration::from_secs(m.parse().unwrap());
    }
    if let Ok(w) = std::env::var("COPIES") {
        c.manufacturer_copies = w.parse().ok();
    }
    if let Ok(w) = std::env::var("W") {
        c.session.window = w.parse().unwrap();
    }
    if let Ok(w) = std::env::var("PW") {
        c.session.provider_window = w.parse().unwrap();
    }
    let t = std::time::Instant::now();
    let p2p = run_rollout(&c);
    println!("p2p {p2p:#?} wall {:?}", t.elapsed());
}
