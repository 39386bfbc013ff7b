//! The chain part of `mef demo`: the POE chain the routers carry and the gateways witness, with
//! sensor readings landing on it and a sensor's light client checking one.
//!
//! 7 level-1 members (routers) and 12 level-2 members (gateways), real RSA-2048 and ed25519
//! keys, each running `poe::node` and `poe::gossip` on its own `sim-netem` host, 50 ms apart
//! with 1 % random loss. Once the gossip meshes have formed (half a second), each gateway submits
//! a batch of sensor readings; the run stops when every member has 6 final blocks. A light client then syncs the headers from genesis and checks an
//! RFC 6962 inclusion proof for one reading batch.

use std::time::Duration;

use anyhow::Context;
use light_client::LightClient;
use mef_benches::poe_net::{PoeNet, PoeNetConfig};
use mef_benches::poe_scale::devnet_parallel;
use poe::genesis::Genesis;
use poe::verify::Params;
use poe::wire::{Encode, Reading, TxBody};

const ROUTERS: usize = 7;
const GATEWAYS: usize = 12;
const HEIGHTS: u64 = 6;

/// Runs the chain part and prints its summary.
pub fn run(seed: u64) -> anyhow::Result<()> {
    println!(
        "\nPOE chain: {ROUTERS} routers (level 1) and {GATEWAYS} gateways (level 2), 50 ms apart, 1 % loss, \
         each running the consensus node over sim-netem"
    );
    let params = Params {
        expected_candidates: 2,
        expected_sealers: 2,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let devnet = devnet_parallel(seed, ROUTERS, GATEWAYS, params, 2048, threads)
        .context("generating member keys")?;
    let mut cfg = PoeNetConfig::new(seed);
    cfg.loss = 0.01;
    cfg.l2_peers = 4;
    let mut net = PoeNet::new(&devnet, &cfg)?;

    // Let the gossip meshes form (the first heartbeats) before the sensors report.
    net.sim.run_for(Duration::from_millis(500));
    // Sensors report through their gateways: one batch of readings per gateway.
    let mut submitted = 0;
    for g in 0..GATEWAYS {
        let readings = (0..3u8)
            .map(|k| Reading {
                device: [0x5e, g as u8, k, 0, 0, 0, 0, 1],
                time_ms: 1_700_000_000_000 + u64::from(k) * 1_000,
                kind: 0x02, // temperature, 0.01 °C
                value: 2_150 + i64::from(k) * 7,
            })
            .collect();
        let tx = devnet.level2[g].transaction(0, TxBody::SensorBatch(readings));
        if net.with_member(ROUTERS + g, |ep, now| ep.submit_tx(now, tx)) {
            submitted += 1;
        }
    }
    let everyone: Vec<usize> = (0..ROUTERS + GATEWAYS).collect();
    let done = net.run_until_height(
        &everyone,
        HEIGHTS,
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    anyhow::ensure!(
        done,
        "the chain did not reach {HEIGHTS} final blocks in 60 s"
    );
    if let Some((h, a, b)) = net.conflicting_finals() {
        anyhow::bail!("members {a} and {b} finalized different blocks at height {h}");
    }
    let blocks: Vec<_> = net.member(0).node().finalized().cloned().collect();
    let included: usize = blocks.iter().map(|b| b.txs.len()).sum();
    let secs = net.sim.elapsed().as_secs_f64();
    println!(
        "{} final blocks in {secs:.1} s simulated, identical at all {} members; {included} of {submitted} reading batches on chain",
        blocks.len(),
        everyone.len()
    );
    for b in &blocks {
        let id = b.header.block_id();
        println!(
            "  height {}  block {}…  round {}  {} txs",
            b.header.height,
            hex8(&id),
            b.header.ticket.round,
            b.txs.len()
        );
    }

    // A sensor's light client, provisioned with the chain's genesis file (its text, as an
    // integrator would copy it onto the device): headers from genesis, then proof that its
    // batch is on chain.
    let file = devnet.genesis_file().to_toml();
    let genesis = Genesis::from_toml(&file).context("genesis file")?;
    let (members, start, lc_params) = genesis.start().context("genesis file")?;
    anyhow::ensure!(
        start == devnet.genesis,
        "the genesis file gives another genesis block"
    );
    println!(
        "genesis file: chain {:?}, {} members, {} bytes of TOML, genesis block {}…",
        genesis.chain,
        genesis.members.len(),
        file.len(),
        hex8(&start.block_id)
    );
    let mut lc =
        LightClient::from_checkpoint(start, members, lc_params, 64).context("light client")?;
    let headers: Vec<_> = blocks.iter().map(|b| b.header.clone()).collect();
    lc.sync(&headers).context("light client sync")?;
    if let Some(b) = blocks.iter().find(|b| !b.txs.is_empty()) {
        let leaves: Vec<Vec<u8>> = b.txs.iter().map(|t| t.to_bytes()).collect();
        let proof = poe::merkle::inclusion_proof(&leaves, 0).context("inclusion proof")?;
        lc.verify_inclusion(b.header.height, &leaves[0], 0, &proof)
            .context("inclusion proof check")?;
        println!(
            "light client: {} headers verified from genesis (its 64-header window: {} bytes); the first reading batch of height {} checked by an RFC 6962 proof of {} hashes",
            headers.len(),
            lc.window_bytes(),
            b.header.height,
            proof.len()
        );
    }
    Ok(())
}

fn hex8(id: &[u8; 32]) -> String {
    id[..4].iter().map(|b| format!("{b:02x}")).collect()
}
