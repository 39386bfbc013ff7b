//! The mesh part of `mef demo`: the gateways' encrypted peer mesh (issue 5) over `sim-netem`,
//! with some gateways behind NATs reached through relays until their NATs open.

use std::time::{Duration, Instant};

use mesh::node::sim::{MeshSimConfig, run_mesh_sim};

const GATEWAYS: usize = 12;

/// Runs the mesh part and prints its summary.
pub fn run(seed: u64) -> anyhow::Result<()> {
    let cfg = MeshSimConfig {
        nodes: GATEWAYS,
        unreachable_fraction: 0.4,
        seed,
        open_at: Duration::from_secs(20),
        end_at: Duration::from_secs(40),
        ..MeshSimConfig::default()
    };
    println!(
        "\nGateway mesh: {GATEWAYS} gateways, Noise-encrypted links named by telehash hashnames, \
         40 % behind NATs (reachable only through two relay gateways until their NATs open at 20 s)"
    );
    let wall = Instant::now();
    let r = run_mesh_sim(&cfg);
    anyhow::ensure!(
        r.pairs_connected == r.pairs,
        "only {} of {} gateway pairs connected",
        r.pairs_connected,
        r.pairs
    );
    println!(
        "{} of {} pairs connected ({} first through a relay, reached in {:.0} ms median); \
         {} of {} relayed pairs switched to a direct path when it opened; {} packets relayed; \
         {:.0} ms wall",
        r.pairs_connected,
        r.pairs,
        r.pairs_relayed,
        r.relay_connect_median_s * 1e3,
        r.upgraded_after_open,
        r.relayed_at_open,
        r.relayed_packets,
        wall.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
