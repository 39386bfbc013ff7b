//! The network half of `mef bench poe` (issue 4): the consensus nodes of every member, level-1
//! and level-2, over `sim-netem` ([`crate::poe_net`]), measured per final block: finality
//! latency in network RTTs, broadcasts, datagrams and bytes per block, blocks per minute.
//!
//! Definitions (what the JSON fields mean):
//! - **finality after build** — for each measured height, the time from the clerk's first
//!   broadcast of the block that became final (state 1, "built") to the moment a member
//!   appended it as final, in units of the configured member-to-member RTT; the mean over the
//!   level-1 members (`finality_rtts`) and over every member (`finality_rtts_all`);
//! - **broadcasts per block** — network-wide broadcasts (gossip publications to every member)
//!   originated per final block, in total and per message kind (transactions counted apart:
//!   they are not per block); committee messages (to the level-1 members only) apart;
//! - **datagrams and bytes per block** — everything every member sent (gossip frames, control
//!   traffic and direct messages), per final block;
//! - **gossip duplicates per block** — full messages a member's gossip engine received again
//!   (already seen), summed over members, per final block: what IDONTWANT and announce-first
//!   exist to cut;
//! - **delivery** — members (of all levels) that finalized every measured height 20 RTTs after
//!   the level-1 members had the last one (the other figures are taken before those 20 RTTs).

use std::time::{Duration, Instant};

use anyhow::Context;
use poe::devnet::{DevNode, Devnet};
use poe::verify::Params;
use poe::wire::{Level, Reading, TxBody};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::Serialize;

use crate::poe_net::{KIND_NAMES, KINDS, PoeNet, PoeNetConfig};

/// Members generated on `threads` threads; member `i`'s keys come from a stream seeded by
/// `(seed, i)`, so the devnet is the same whatever the thread count.
pub fn devnet_parallel(
    seed: u64,
    n1: usize,
    n2: usize,
    params: Params,
    rsa_bits: usize,
    threads: usize,
) -> anyhow::Result<Devnet> {
    let n = n1 + n2;
    let threads = threads.clamp(1, n.max(1));
    let gen_one = move |i: usize| {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
        let level = if i < n1 { Level::One } else { Level::Two };
        DevNode::generate(&mut rng, level, rsa_bits)
    };
    let mut all: Vec<Option<DevNode>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| gen_one(i).map(|d| (i, d)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        for h in handles {
            let part = h
                .join()
                .map_err(|_| anyhow::anyhow!("key generation thread panicked"))??;
            for (i, d) in part {
                all[i] = Some(d);
            }
        }
        Ok(())
    })?;
    let mut all: Vec<DevNode> = all.into_iter().flatten().collect();
    let level2 = all.split_off(n1);
    Ok(Devnet::from_nodes(all, level2, params)?)
}

/// What the network run measured.
#[derive(Debug, Clone, Serialize)]
pub struct NetFigures {
    /// Level-1 members.
    pub level1: usize,
    /// Level-2 members.
    pub level2: usize,
    /// Member-to-member round-trip time, ms.
    pub rtt_ms: f64,
    /// Random loss on every link.
    pub loss: f64,
    /// How gossip relayed large messages (`Push`, `IDontWant`, `AnnounceFirst`).
    pub large_message_mode: String,
    /// The size from which gossip treats a message as large, bytes.
    pub large_message_threshold: usize,
    /// Final blocks measured (after the warm-up ones).
    pub blocks: u64,
    /// Final blocks per minute of simulated time over the measured ones.
    pub blocks_per_min: f64,
    /// Mean time from build to final at the level-1 members, in RTTs.
    pub finality_rtts: f64,
    /// The same over every member (level-2 included).
    pub finality_rtts_all: f64,
    /// Worst member's mean, in RTTs.
    pub finality_rtts_max: f64,
    /// Mean time from one final block to the next at the level-1 members, in RTTs.
    pub block_interval_rtts: f64,
    /// Network-wide broadcasts (to every member, level-2 included) per final block,
    /// transactions excluded.
    pub broadcasts_per_block: f64,
    /// Per message kind (transactions included), per final block.
    pub broadcasts_by_kind: Vec<(String, f64)>,
    /// Committee messages (to the level-1 members only: tickets, sealed blocks, prepare
    /// certificates) originated per final block.
    pub committee_per_block: f64,
    /// Per message kind, per final block.
    pub committee_by_kind: Vec<(String, f64)>,
    /// Direct messages (votes and seals to the clerk, catch-up) per final block.
    pub unicasts_per_block: f64,
    /// Datagrams sent by all members per final block.
    pub datagrams_per_block: f64,
    /// Bytes sent by all members per final block.
    pub bytes_per_block: f64,
    /// Full gossip messages received again (already seen) over all members, per final block.
    pub gossip_duplicates_per_block: f64,
    /// IDONTWANT frames sent over all members, per final block.
    pub idontwant_per_block: f64,
    /// Mesh announcements per final block (announce-first).
    pub announced_per_block: f64,
    /// Pulls that asked a second announcer, per final block.
    pub iwant_retries_per_block: f64,
    /// Members (all levels) that finalized every measured height, 20 RTTs after the level-1
    /// members had the last.
    pub members_with_every_block: usize,
    /// Members in all.
    pub members: usize,
    /// Transactions included in the measured blocks.
    pub txs_included: u64,
    /// Spin rounds over all level-1 members during the measurement.
    pub spins: u64,
    /// Heights finalized in a round above 0.
    pub spun_heights: u64,
    /// Simulated seconds of the measurement.
    pub sim_seconds: f64,
    /// Wall-clock seconds the whole run took (setup included).
    pub wall_seconds: f64,
}

/// Snapshot of the counters of every member.
#[derive(Default, Clone)]
struct Counters {
    broadcasts: [u64; KINDS],
    committee: [u64; KINDS],
    unicasts: u64,
    datagrams: u64,
    bytes: u64,
    spins: u64,
    duplicates: u64,
    idontwant: u64,
    announced: u64,
    retries: u64,
}

fn counters(net: &PoeNet) -> Counters {
    let mut c = Counters::default();
    for i in 0..net.members.len() {
        let l = &net.member(i).log;
        for k in 0..KINDS {
            c.broadcasts[k] += l.broadcasts_by_kind[k];
            c.committee[k] += l.committee_by_kind[k];
        }
        c.unicasts += l.unicasts;
        c.datagrams += l.datagrams_sent;
        c.bytes += l.bytes_sent;
        if i < net.n1 {
            c.spins += l.spins;
        }
        let g = net.member(i).gossip_stats();
        c.duplicates += g.duplicates;
        c.idontwant += g.idontwant_sent;
        c.announced += g.announced;
        c.retries += g.iwant_retries;
    }
    c
}

/// A batch of four sensor readings from level-2 member `sender` with `nonce` (the
/// benchmark's transaction).
pub fn reading_tx(d: &Devnet, sender: usize, nonce: u64) -> poe::wire::Transaction {
    let readings = (0..4)
        .map(|k| Reading {
            device: [sender as u8, (sender >> 8) as u8, k, 0, 0, 0, 0, 1],
            time_ms: 1_700_000_000_000 + nonce,
            kind: 0x02,
            value: 2150 + i64::from(k),
        })
        .collect();
    d.level2[sender].transaction(nonce, TxBody::SensorBatch(readings))
}

/// Runs `devnet`'s members over `cfg` until `warmup + blocks` heights are final at every
/// level-1 member (or `limit` of simulated time passes), with level-2 members submitting
/// `tx_per_s` transactions per simulated second, and measures the last `blocks` heights.
pub fn run(
    devnet: &Devnet,
    cfg: &PoeNetConfig,
    warmup: u64,
    blocks: u64,
    tx_per_s: u64,
    limit: Duration,
) -> anyhow::Result<NetFigures> {
    let wall = Instant::now();
    let mut net = PoeNet::new(devnet, cfg)?;
    let n = net.members.len();
    let n1 = net.n1;
    let n2 = n - n1;
    let l1: Vec<usize> = (0..n1).collect();
    let step = cfg.rtt / 2;
    let per_step = (tx_per_s as f64 * step.as_secs_f64()).round() as u64;
    let mut nonces = vec![0u64; n2];
    let mut next_sender = 0usize;
    let end = net.sim.elapsed() + limit;
    let mut before: Option<(Counters, Instant)> = None;
    let mut shown = 0;
    loop {
        let h = net.min_height(l1.iter().copied());
        if h > shown {
            shown = h;
            eprintln!(
                "  height {h} final at every level-1 member ({:.1} s simulated, {:.0} s wall)",
                net.sim.elapsed().as_secs_f64(),
                wall.elapsed().as_secs_f64()
            );
        }
        if before.is_none() && h >= warmup {
            before = Some((counters(&net), net.sim.now()));
        }
        if h >= warmup + blocks || net.sim.elapsed() >= end {
            break;
        }
        if n2 > 0 {
            for _ in 0..per_step {
                let s = next_sender % n2;
                next_sender += 1;
                let tx = reading_tx(devnet, s, nonces[s]);
                nonces[s] += 1;
                net.with_member(n1 + s, |ep, now| ep.submit_tx(now, tx));
            }
        }
        net.sim.run_for(step);
    }
    let reached = net.min_height(l1.iter().copied());
    anyhow::ensure!(
        reached >= warmup + blocks,
        "only {reached} of {} heights final at every level-1 member within {limit:?} simulated",
        warmup + blocks
    );
    if let Some(c) = net.conflicting_finals() {
        anyhow::bail!(
            "safety violated: members {} and {} finalized different blocks at height {}",
            c.1,
            c.2,
            c.0
        );
    }
    let (c0, t0) = before.context("warm-up never ended")?;
    let c1 = counters(&net);
    let first = warmup + 1;
    let last = warmup + blocks;

    // The agreed block of each measured height and when its clerk built it.
    let reference = &net.member(0).log.finals;
    let mut built_at = std::collections::BTreeMap::new();
    for i in 0..n1 {
        for &(h, r, t) in &net.member(i).log.built {
            built_at.insert((h, r), t);
        }
    }
    let rtt = cfg.rtt.as_secs_f64();
    let mut per_member_mean = Vec::with_capacity(n);
    let (mut sum_l1, mut cnt_l1, mut sum_all, mut cnt_all) = (0.0, 0u64, 0.0, 0u64);
    for i in 0..n {
        let (mut s, mut c) = (0.0, 0u64);
        for &(h, _, r, t) in &net.member(i).log.finals {
            if h < first || h > last {
                continue;
            }
            let Some(&b) = built_at.get(&(h, r)) else {
                continue;
            };
            let d = t.saturating_duration_since(b).as_secs_f64() / rtt;
            s += d;
            c += 1;
        }
        if c > 0 {
            per_member_mean.push(s / c as f64);
        }
        sum_all += s;
        cnt_all += c;
        if i < n1 {
            sum_l1 += s;
            cnt_l1 += c;
        }
    }
    let at = |h: u64| reference.iter().find(|f| f.0 == h).map(|f| f.3);
    let t_first = at(first).context("first measured height")?;
    let t_last = at(last).context("last measured height")?;
    let span = t_last.saturating_duration_since(t_first).as_secs_f64();
    let spun_heights = reference
        .iter()
        .filter(|f| f.0 >= first && f.0 <= last && f.2 > 0)
        .count() as u64;
    let txs_included = net
        .member(0)
        .node()
        .finalized()
        .filter(|b| b.header.height >= first && b.header.height <= last)
        .map(|b| b.txs.len() as u64)
        .sum();
    let per = |a: u64, b: u64| (a - b) as f64 / blocks as f64;
    let by_kind: Vec<(String, f64)> = (0..KINDS)
        .map(|k| {
            (
                KIND_NAMES[k].to_string(),
                per(c1.broadcasts[k], c0.broadcasts[k]),
            )
        })
        .collect();
    let committee_by_kind: Vec<(String, f64)> = (0..KINDS)
        .map(|k| {
            (
                KIND_NAMES[k].to_string(),
                per(c1.committee[k], c0.committee[k]),
            )
        })
        .collect();
    let committee_per_block = committee_by_kind.iter().map(|(_, v)| v).sum();
    let broadcasts_per_block = by_kind
        .iter()
        .filter(|(k, _)| k != "tx")
        .map(|(_, v)| v)
        .sum();
    let sim_seconds = net.sim.now().saturating_duration_since(t0).as_secs_f64();
    // Delivery: the run stops when the level-1 members have the last height; the gateways get
    // it a hop or two later, so give them 20 RTTs (after every other figure was taken).
    net.sim.run_for(cfg.rtt * 20);
    let members_with_every_block = (0..n)
        .filter(|&i| {
            let finals: std::collections::BTreeSet<u64> =
                net.member(i).log.finals.iter().map(|f| f.0).collect();
            (first..=last).all(|h| finals.contains(&h))
        })
        .count();
    Ok(NetFigures {
        level1: n1,
        level2: n2,
        rtt_ms: cfg.rtt.as_secs_f64() * 1e3,
        loss: cfg.loss,
        large_message_mode: format!("{:?}", cfg.gossip.large_message_mode),
        large_message_threshold: cfg.gossip.large_message_threshold,
        blocks,
        blocks_per_min: if span > 0.0 {
            (blocks - 1) as f64 * 60.0 / span
        } else {
            0.0
        },
        finality_rtts: sum_l1 / cnt_l1.max(1) as f64,
        finality_rtts_all: sum_all / cnt_all.max(1) as f64,
        finality_rtts_max: per_member_mean.iter().copied().fold(0.0, f64::max),
        block_interval_rtts: if blocks > 1 {
            span / (blocks - 1) as f64 / rtt
        } else {
            0.0
        },
        broadcasts_per_block,
        broadcasts_by_kind: by_kind,
        committee_per_block,
        committee_by_kind,
        unicasts_per_block: per(c1.unicasts, c0.unicasts),
        datagrams_per_block: per(c1.datagrams, c0.datagrams),
        bytes_per_block: per(c1.bytes, c0.bytes),
        gossip_duplicates_per_block: per(c1.duplicates, c0.duplicates),
        idontwant_per_block: per(c1.idontwant, c0.idontwant),
        announced_per_block: per(c1.announced, c0.announced),
        iwant_retries_per_block: per(c1.retries, c0.retries),
        members_with_every_block,
        members: n,
        txs_included,
        spins: c1.spins - c0.spins,
        spun_heights,
        sim_seconds,
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}
