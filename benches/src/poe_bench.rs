//! `mef bench poe` (issue 4): what one node and one light client can verify, on real keys.
//!
//! - **Micro-benchmarks** on one core: RSA-FDH-VRF prove and verify (RFC 9381 §4, 2048-bit),
//!   a lottery ticket check, an ed25519 transaction signature check, an RFC 6962 inclusion
//!   proof check, and a header check (full: ticket, clerk signature, seal, commit certificate
//!   of a level-1 quorum; chained: ticket, clerk signature, seal and link, as in catch-up sync).
//! - **Transactions per second per node**: decode, signature check, id, Merkle root and a
//!   durable SQLite write of the block (`poe::store`, WAL, `synchronous = FULL`), on one core and
//!   with the signature checks spread over both cores.
//! - **Light client**: headers per second (catch-up sync of 1,000 headers: every ticket, clerk
//!   signature, seal and link, the certificate of the last; and fully verified one by one) and
//!   bytes per 1,000 headers in its window.
//!
//! - **The network** ([`crate::poe_scale`]): every member's consensus node and gossip engine
//!   over `sim-netem`, 50 ms between members — 100 level-1 and 1,000 level-2 members (quick:
//!   16 + 8) — measured per final block: finality after build in RTTs, broadcasts, datagrams
//!   and bytes, blocks per minute.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use light_client::{HEADER_BYTES, LightClient};
use poe::devnet::Devnet;
use poe::gossip::LargeMessageMode;
use poe::merkle;
use poe::sig;
use poe::verify::{self, Depth, Params};
use poe::wire::{Block, Decode, Encode, Transaction};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::Serialize;

/// One micro-benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Micro {
    /// What was measured.
    pub name: String,
    /// Mean time per operation in nanoseconds.
    pub ns_per_op: f64,
    /// Operations per second on one core.
    pub ops_per_s: f64,
}

/// Everything `mef bench poe` measured.
#[derive(Debug, Clone, Serialize)]
pub struct PoeReport {
    /// Level-1 members of the devnet the headers were built with.
    pub level1: usize,
    /// Level-2 members.
    pub level2: usize,
    /// Votes in each commit certificate (the quorum).
    pub quorum: usize,
    /// Micro-benchmarks.
    pub micro: Vec<Micro>,
    /// Transactions validated and included per second by one node, one core.
    pub tx_per_s: f64,
    /// The same with signature checks on every core.
    pub tx_per_s_all_cores: f64,
    /// Light-client catch-up: headers per second (chained checks, certificate of the last).
    pub lc_headers_per_s: f64,
    /// Light client, every header fully verified.
    pub lc_headers_per_s_full: f64,
    /// Bytes the light client's window takes for 1,000 headers.
    pub lc_bytes_per_1000_headers: usize,
    /// Finality latency after build in network RTTs, mean over the level-1 members
    /// (`network.finality_rtts`).
    pub finality_rtts: Option<f64>,
    /// Network-wide broadcasts per block, transactions excluded (`network`).
    pub broadcasts_per_block: Option<f64>,
    /// The network run over sim-netem, with the gossip default (`large_message_mode`).
    pub network: Option<crate::poe_scale::NetFigures>,
    /// The same network run once per large-message mode of the gossip core (push, IDONTWANT,
    /// announce-first), the default among them: same devnet, seed and load.
    pub network_modes: Vec<crate::poe_scale::NetFigures>,
}

fn time<F: FnMut()>(n: usize, mut f: F) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed()
}

fn micro(name: &str, n: usize, d: Duration) -> Micro {
    let ns = d.as_nanos() as f64 / n as f64;
    Micro {
        name: name.to_string(),
        ns_per_op: ns,
        ops_per_s: 1e9 / ns,
    }
}

fn sensor_tx(d: &Devnet, i: usize) -> Transaction {
    crate::poe_scale::reading_tx(d, i % d.level2.len(), i as u64)
}

/// A validated transaction ready for the block: its id and encoding.
type Included = ([u8; 32], Vec<u8>);

/// Validates (decode, member check, signature) and includes (id, Merkle root, durable write)
/// `encoded` transactions as one block; returns the time taken. `threads` share the
/// signature checks.
fn validate_and_include(
    d: &Devnet,
    encoded: &[Vec<u8>],
    store: &mut poe::store::Store,
    height: u64,
    threads: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let chunk = encoded.len().div_ceil(threads.max(1));
    let checked: Vec<anyhow::Result<Vec<Included>>> = std::thread::scope(|s| {
        let handles: Vec<_> = encoded
            .chunks(chunk.max(1))
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|bytes| {
                            let tx = Transaction::decode(bytes).context("decode")?;
                            let (member, _) = d
                                .members
                                .get(&tx.sender, poe::wire::Level::Two)
                                .context("sender is not a member")?;
                            sig::verify(
                                &member.ed25519,
                                &[],
                                &[&tx.signing_bytes()],
                                &tx.signature,
                            )
                            .context("signature")?;
                            Ok((tx.id(), bytes.clone()))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect()
    });
    let mut txs = Vec::with_capacity(encoded.len());
    for part in checked {
        txs.extend(part?);
    }
    let root = merkle::root(encoded);
    let header: Vec<u8> = root.to_vec();
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&height.to_be_bytes());
    store
        .put_block(height, &id, &header, &txs, true)
        .context("store")?;
    Ok(t.elapsed())
}

/// Runs the suite (`quick`: a 16 + 8 member devnet and fewer repetitions; full: 100 + 50).
pub fn run(quick: bool) -> anyhow::Result<PoeReport> {
    let (n1, n2) = if quick { (16, 8) } else { (100, 50) };
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    eprintln!("generating {} RSA-2048 keys ...", n1 + n2);
    let d = Devnet::new(&mut rng, n1, n2, Params::default(), 2048).context("devnet")?;
    let n_headers = if quick { 200 } else { 1000 };
    eprintln!("building {n_headers} final blocks ...");
    let chain: Vec<Block> = d.chain(&d.genesis, n_headers, 4).context("chain")?;
    let headers: Vec<_> = chain.iter().map(|b| b.header.clone()).collect();
    let reps = if quick { 50 } else { 200 };
    let mut out = Vec::new();

    let node = &d.level1[0];
    let alpha = poe::lottery::ticket_alpha(1, &d.genesis.block_id, 0);
    let proof = node.vrf.prove(&alpha).context("prove")?;
    let public = node.vrf.public();
    out.push(micro(
        "vrf prove (RSA-2048)",
        reps,
        time(reps, || {
            let _ = node.vrf.prove(&alpha);
        }),
    ));
    out.push(micro(
        "vrf verify",
        reps * 10,
        time(reps * 10, || {
            let _ = public.verify(&alpha, &proof);
        }),
    ));
    let ticket = &headers[0].ticket;
    out.push(micro(
        "ticket check",
        reps * 10,
        time(reps * 10, || {
            let _ = verify::ticket(ticket, &d.members, &d.params);
        }),
    ));
    let tx = sensor_tx(&d, 1);
    let sender = d.level2[1 % d.level2.len()].member.ed25519;
    let signing = tx.signing_bytes();
    out.push(micro(
        "tx signature check (ed25519)",
        reps * 20,
        time(reps * 20, || {
            let _ = sig::verify(&sender, &[], &[&signing], &tx.signature);
        }),
    ));
    let leaves: Vec<Vec<u8>> = (0..1024).map(|i| sensor_tx(&d, i).to_bytes()).collect();
    let path = merkle::inclusion_proof(&leaves, 517).context("proof")?;
    let root = merkle::root(&leaves);
    out.push(micro(
        "inclusion proof check (1024 txs)",
        reps * 100,
        time(reps * 100, || {
            let _ = merkle::verify_inclusion(&leaves[517], 517, 1024, &path, &root);
        }),
    ));
    let parent = d.genesis;
    out.push(micro(
        "header check, full",
        reps,
        time(reps, || {
            let _ = verify::header(&headers[0], &parent, &d.members, &d.params, Depth::Full);
        }),
    ));
    out.push(micro(
        "header check, chained",
        reps * 5,
        time(reps * 5, || {
            let _ = verify::header(&headers[0], &parent, &d.members, &d.params, Depth::Chained);
        }),
    ));

    // Light client: catch-up sync of the whole chain, and one by one.
    let capacity = 1000;
    let mut lc = LightClient::from_checkpoint(d.genesis, d.members.clone(), d.params, capacity)
        .context("light client")?;
    let t = Instant::now();
    lc.sync(&headers).context("sync")?;
    let sync_rate = headers.len() as f64 / t.elapsed().as_secs_f64();
    let mut lc_full =
        LightClient::from_checkpoint(d.genesis, d.members.clone(), d.params, capacity)
            .context("light client")?;
    let t = Instant::now();
    for h in &headers {
        lc_full.push(h).context("push")?;
    }
    let full_rate = headers.len() as f64 / t.elapsed().as_secs_f64();
    let window = LightClient::from_checkpoint(d.genesis, d.members.clone(), d.params, 1000)
        .context("light client")?
        .window_bytes();

    // Transactions per node: blocks of 5,000 sensor batches, validated and written durably.
    let per_block = 5_000;
    let blocks = if quick { 2 } else { 6 };
    let encoded: Vec<Vec<Vec<u8>>> = (0..blocks)
        .map(|b| {
            (0..per_block)
                .map(|i| sensor_tx(&d, b * per_block + i).to_bytes())
                .collect()
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("mef-bench-poe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("temp dir")?;
    let mut rates = [0.0f64; 2];
    for (slot, threads) in [(0usize, 1usize), (1, 2)] {
        let path = dir.join(format!("store-{threads}.sqlite"));
        let mut store = poe::store::Store::open(&path).context("open store")?;
        let mut total = Duration::ZERO;
        for (b, txs) in encoded.iter().enumerate() {
            total += validate_and_include(&d, txs, &mut store, b as u64 + 1, threads)?;
        }
        rates[slot] = (blocks * per_block) as f64 / total.as_secs_f64();
    }
    let _ = std::fs::remove_dir_all(&dir);

    // The network: every member's node over sim-netem.
    let (m1, m2, warmup, measured) = if quick {
        (16, 8, 2, 5)
    } else {
        (100, 1000, 3, 20)
    };
    eprintln!(
        "generating {} RSA-2048 keys for the network run ...",
        m1 + m2
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let nd = crate::poe_scale::devnet_parallel(7, m1, m2, Params::default(), 2048, threads)?;
    eprintln!(
        "running {m1} + {m2} members over sim-netem for {} blocks ...",
        warmup + measured
    );
    let default_mode = poe::gossip::GossipConfig::default().large_message_mode;
    let mut network_modes = Vec::new();
    let mut net = None;
    for mode in gossip_modes(default_mode)? {
        eprintln!("gossip large-message mode {mode:?}:");
        let mut cfg = crate::poe_net::PoeNetConfig::new(1);
        cfg.gossip.large_message_mode = mode;
        let figures =
            crate::poe_scale::run(&nd, &cfg, warmup, measured, 100, Duration::from_secs(600))?;
        if mode == default_mode {
            net = Some(figures.clone());
        }
        network_modes.push(figures);
    }
    let net = net.context("the default mode was run")?;

    Ok(PoeReport {
        level1: n1,
        level2: n2,
        quorum: d.members.quorum(),
        micro: out,
        tx_per_s: rates[0],
        tx_per_s_all_cores: rates[1],
        lc_headers_per_s: sync_rate,
        lc_headers_per_s_full: full_rate,
        lc_bytes_per_1000_headers: window,
        finality_rtts: Some(net.finality_rtts),
        broadcasts_per_block: Some(net.broadcasts_per_block),
        network: Some(net),
        network_modes,
    })
}

/// The large-message modes to run: `MEF_BENCH_POE_MODES` (comma-separated `push`,
/// `idontwant`, `announce`), else all three; the default mode is always run.
fn gossip_modes(default_mode: LargeMessageMode) -> anyhow::Result<Vec<LargeMessageMode>> {
    let all = [
        LargeMessageMode::Push,
        LargeMessageMode::IDontWant,
        LargeMessageMode::AnnounceFirst,
    ];
    let Ok(list) = std::env::var("MEF_BENCH_POE_MODES") else {
        return Ok(all.to_vec());
    };
    let mut want = vec![default_mode];
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        want.push(match name {
            "push" => LargeMessageMode::Push,
            "idontwant" => LargeMessageMode::IDontWant,
            "announce" => LargeMessageMode::AnnounceFirst,
            other => anyhow::bail!("MEF_BENCH_POE_MODES: unknown mode {other:?}"),
        });
    }
    Ok(all.into_iter().filter(|m| want.contains(m)).collect())
}

/// Prints the table and writes JSON and a plot when `json` is given.
pub fn report(r: &PoeReport, json: Option<&Path>) -> anyhow::Result<()> {
    println!(
        "devnet: {} level-1, {} level-2 members, quorum {} votes, RSA-2048, one core unless said",
        r.level1, r.level2, r.quorum
    );
    println!("{:<36} {:>14} {:>14}", "operation", "µs/op", "ops/s");
    for m in &r.micro {
        println!(
            "{:<36} {:>14.1} {:>14.0}",
            m.name,
            m.ns_per_op / 1e3,
            m.ops_per_s
        );
    }
    println!();
    let target = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "tx validated+included per node: {:.0}/s one core, {:.0}/s two cores (target >= 20000: {})",
        r.tx_per_s,
        r.tx_per_s_all_cores,
        target(r.tx_per_s_all_cores >= 20_000.0)
    );
    println!(
        "light client: {:.0} headers/s catch-up, {:.0} headers/s fully verified (target >= 10000 on one core: {})",
        r.lc_headers_per_s,
        r.lc_headers_per_s_full,
        target(r.lc_headers_per_s >= 10_000.0)
    );
    println!(
        "light client window: {} bytes per 1000 headers ({} per header; target <= 262144: {})",
        r.lc_bytes_per_1000_headers,
        HEADER_BYTES,
        target(r.lc_bytes_per_1000_headers <= 256 * 1024)
    );
    if let Some(n) = &r.network {
        println!();
        println!(
            "network over sim-netem: {} level-1 + {} level-2 members, RTT {:.0} ms, loss {:.1} %, {} blocks measured ({:.0} s simulated, {:.0} s wall)",
            n.level1,
            n.level2,
            n.rtt_ms,
            n.loss * 100.0,
            n.blocks,
            n.sim_seconds,
            n.wall_seconds
        );
        println!(
            "finality after build: {:.2} RTT at level-1 (mean), {:.2} RTT all members, worst member {:.2} (target <= 3: {})",
            n.finality_rtts,
            n.finality_rtts_all,
            n.finality_rtts_max,
            target(n.finality_rtts <= 3.0)
        );
        println!(
            "blocks: {:.1}/min, one every {:.2} RTT; heights that spun {}; txs included {}",
            n.blocks_per_min, n.block_interval_rtts, n.spun_heights, n.txs_included
        );
        let kinds: Vec<String> = n
            .broadcasts_by_kind
            .iter()
            .filter(|(_, v)| *v > 0.0)
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect();
        let committee: Vec<String> = n
            .committee_by_kind
            .iter()
            .filter(|(_, v)| *v > 0.0)
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect();
        println!(
            "per block: {:.1} network-wide broadcasts without txs [{}] (seed: about 2: {}), {:.1} to the level-1 committee [{}], {:.1} direct messages, {:.0} datagrams, {:.0} KB",
            n.broadcasts_per_block,
            kinds.join(", "),
            target(n.broadcasts_per_block <= 2.5),
            n.committee_per_block,
            committee.join(", "),
            n.unicasts_per_block,
            n.datagrams_per_block,
            n.bytes_per_block / 1e3
        );
    }
    if !r.network_modes.is_empty() {
        println!();
        println!(
            "gossip large-message modes (threshold {} bytes), same network and seed:",
            r.network_modes[0].large_message_threshold
        );
        println!(
            "{:<14} {:>10} {:>10} {:>11} {:>9} {:>10} {:>10} {:>9} {:>11}",
            "mode",
            "MB/block",
            "dgrams/blk",
            "dups/block",
            "fin L1",
            "fin all",
            "fin worst",
            "blk/min",
            "all blocks"
        );
        for m in &r.network_modes {
            println!(
                "{:<14} {:>10.1} {:>10.0} {:>11.0} {:>9.2} {:>10.2} {:>10.2} {:>9.1} {:>5}/{:<5}",
                m.large_message_mode,
                m.bytes_per_block / 1e6,
                m.datagrams_per_block,
                m.gossip_duplicates_per_block,
                m.finality_rtts,
                m.finality_rtts_all,
                m.finality_rtts_max,
                m.blocks_per_min,
                m.members_with_every_block,
                m.members
            );
        }
    }
    if let Some(path) = json {
        crate::record::write_report(path, r, |svg| plot(r, svg))?;
    }
    Ok(())
}

/// A bar chart of the micro-benchmarks (µs per operation, log scale).
fn plot(r: &PoeReport, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let max = r
        .micro
        .iter()
        .map(|m| m.ns_per_op / 1e3)
        .fold(1.0f64, f64::max)
        * 2.0;
    let n = r.micro.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "POE micro-benchmarks (µs per operation, one core)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(260)
        .build_cartesian_2d((0.01f64..max).log_scale(), 0..n)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let names: Vec<String> = r.micro.iter().map(|m| m.name.clone()).collect();
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|i| names.get(*i).cloned().unwrap_or_default())
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(r.micro.iter().enumerate().map(|(i, m)| {
            Rectangle::new(
                [(0.01, i), (m.ns_per_op / 1e3, i + 1)],
                BLUE.mix(0.6).filled(),
            )
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
