//! The firmware part of `mef demo` (issue 7, seed 004): the manufacturer publishes a signed
//! manifest for a new image; 24 gateways check it, fetch the image over the encrypted mesh
//! (Noise links, reliable channels) on `sim-netem` links, from the manufacturer and from each
//! other, and rebuild and verify it; then the same with every gateway fetching from the
//! manufacturer alone.

use std::time::{Duration, Instant};

use firmware::sim::{RolloutConfig, RolloutReport, run_rollout};

/// Runs the firmware part and prints its summary.
pub fn run(seed: u64) -> anyhow::Result<()> {
    let cfg = RolloutConfig {
        image_bytes: 8 << 20,
        gateways: 24,
        swarm_peers: 6,
        manufacturer_up_bps: 20_000_000,
        manufacturer_down_bps: 20_000_000,
        seed,
        deadline: Duration::from_secs(600),
        ..RolloutConfig::default()
    };
    println!(
        "\nFirmware: a signed 8 MiB image (UnixFS, kubo's CIDs) to {} gateways over the mesh; \
         manufacturer uplink {} Mbit/s, gateways {} up / {} down Mbit/s",
        cfg.gateways,
        cfg.manufacturer_up_bps / 1_000_000,
        cfg.gateway_up_bps / 1_000_000,
        cfg.gateway_down_bps / 1_000_000
    );
    let wall = Instant::now();
    let p2p = run_rollout(&cfg);
    let base = run_rollout(&RolloutConfig {
        swarm_peers: 0,
        ..cfg.clone()
    });
    line("gateways exchanging with 6 others", &p2p);
    line("manufacturer alone (baseline)", &base);
    let bound = cfg.gateways as f64 * cfg.image_bytes as f64 * 8.0 / cfg.manufacturer_up_bps as f64;
    println!(
        "  (the baseline can be no faster than {bound:.1} s, every copy through the manufacturer's \
         uplink at line rate; the rest is retransmissions of {} flows sharing it)",
        cfg.gateways
    );
    println!(
        "  every image rebuilt block by block and checked: {} + {} of {}; simulated in {:.1} s",
        p2p.images_verified,
        base.images_verified,
        2 * cfg.gateways,
        wall.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        p2p.images_verified == cfg.gateways && base.images_verified == cfg.gateways,
        "firmware roll-out incomplete: {:?} / {:?}",
        p2p.failures,
        base.failures
    );
    Ok(())
}

fn line(what: &str, r: &RolloutReport) {
    let image = r.image_bytes.max(1) as f64;
    println!(
        "  {what:<36} all done at {:>5.1} s (median {:>5.1} s); manufacturer sent {:.1}× the image, gateways {:.1}×",
        r.time_s,
        r.median_s,
        r.manufacturer_wire_bytes as f64 / image,
        r.peer_wire_bytes as f64 / image
    );
}
