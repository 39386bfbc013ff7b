//! `mef bench firmware` (issue 7): what importing a firmware image costs on this machine, and
//! (filled in by the roll-out simulation) what distributing it costs the manufacturer.
//!
//! The import part ([`run`]) times [`firmware::unixfs::import`] with kubo's defaults
//! (`ipfs add --cid-version=1`: 256 KiB fixed-size chunks, raw leaves, sha2-256, balanced DAG
//! of up to 174 links per node) on deterministic pseudo-random images (ChaCha8, seeded),
//! generated before any timing. Per image size, each repetition runs the following, interleaved
//! (and in a rotating order) so load from other processes spreads evenly over them:
//!
//! - **sha2-256 alone** (`sha256`): the image hashed in 256 KiB chunks, each copied first into
//!   one 256 KiB buffer and hashed there, as the importer does (its chunk buffer stays in
//!   cache; hashing straight out of a large buffer can be slower, memory-bound) — the floor of
//!   what import can reach, so the importer's own overhead is visible;
//! - **import, blocks discarded** (`import_discard`): chunking, hashing and DAG building, each
//!   block handed to a sink that drops it;
//! - **import into memory** (`import_memory`): the same into [`MemoryBlocks`] (every block
//!   copied into a map) — **the figure the "import ≥ 200 MB/s" target applies to**
//!   (`import_mb_per_s`, the median at the largest image measured);
//! - **CAR export** (`car_export`): the imported blocks written, in import order, as a CARv1
//!   into a `Vec` (pre-sized).
//!
//! Then **import into the on-disk [`Blockstore`]** (`blockstore`) in a fresh temp directory per
//! repetition: each block hashed, written to a temp file, fsynced, re-read and checked, renamed
//! into place and its directory fsynced — what a gateway does to keep an image across a crash.
//! It is bounded by the disk's fsync latency, not by the CPU, and reported as it is.
//!
//! MB/s is 10⁶ bytes per second. Each rate is the median of the repetitions, with the min and
//! max beside it. The `/proc/loadavg` before and after is recorded: the machine is shared.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use cid::Cid;
use firmware::blockstore::Blockstore;
use firmware::car::write_car;
use firmware::sim::{RolloutConfig, run_rollout};
use firmware::unixfs::importer::CHUNK_SIZE;
use firmware::unixfs::{MemoryBlocks, import};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The import target, MB/s (in-memory import).
pub const IMPORT_TARGET_MB_PER_S: f64 = 200.0;
/// The roll-out target: bytes the manufacturer uploads, over the image size, at most this.
pub const MANUFACTURER_BYTES_TARGET: f64 = 3.0;
/// The roll-out target: peer-to-peer roll-out time over the baseline's, at most this.
pub const ROLLOUT_TIME_TARGET: f64 = 0.5;
/// Seed of the image generator.
const SEED: u64 = 0x4d45_465f_4657;
/// 1 MiB.
const MIB: usize = 1 << 20;

/// A rate over repetitions, MB/s (10⁶ bytes per second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Median of the repetitions.
    pub median_mb_per_s: f64,
    /// Slowest repetition.
    pub min_mb_per_s: f64,
    /// Fastest repetition.
    pub max_mb_per_s: f64,
    /// Repetitions.
    pub runs: usize,
}

impl Rate {
    /// The rate of `bytes` processed in each of `seconds`.
    fn of(bytes: u64, seconds: &[f64]) -> Self {
        let mut r: Vec<f64> = seconds
            .iter()
            .map(|s| bytes as f64 / 1e6 / s.max(1e-9))
            .collect();
        r.sort_by(f64::total_cmp);
        let n = r.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => r[n / 2],
            _ => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        };
        Rate {
            median_mb_per_s: median,
            min_mb_per_s: r.first().copied().unwrap_or(0.0),
            max_mb_per_s: r.last().copied().unwrap_or(0.0),
            runs: n,
        }
    }
}

/// The in-memory measures at one image size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeReport {
    /// Image size in bytes.
    pub image_bytes: u64,
    /// Blocks of its DAG (leaves and internal nodes).
    pub blocks: usize,
    /// Its root CID (the same in every measure and repetition; checked).
    pub root_cid: String,
    /// sha2-256 over the image in 256 KiB chunks (each copied into one buffer first, as the
    /// importer does), nothing else.
    pub sha256: Rate,
    /// Import with every block discarded.
    pub import_discard: Rate,
    /// Import into [`MemoryBlocks`] (the target's figure).
    pub import_memory: Rate,
    /// CARv1 export of the imported blocks into a `Vec`.
    pub car_export: Rate,
    /// Size of that CAR file in bytes.
    pub car_bytes: u64,
}

/// Import into the on-disk [`Blockstore`], every block fsynced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockstoreRun {
    /// Image size in bytes.
    pub image_bytes: u64,
    /// Blocks written per repetition.
    pub blocks: usize,
    /// The rate.
    pub rate: Rate,
    /// Median milliseconds per block (hash, write, fsync, re-read, rename, directory fsync).
    pub ms_per_block: f64,
}

/// Everything the import part measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Quick mode.
    pub quick: bool,
    /// `/proc/loadavg` before the run.
    pub load_before: Option<[f64; 3]>,
    /// `/proc/loadavg` after the run.
    pub load_after: Option<[f64; 3]>,
    /// Median in-memory import rate at the largest image, MB/s: the figure the target applies
    /// to.
    pub import_mb_per_s: f64,
    /// The target, MB/s.
    pub import_target_mb_per_s: f64,
    /// Whether `import_mb_per_s` meets it.
    pub import_target_met: bool,
    /// Per image size, smallest first.
    pub sizes: Vec<SizeReport>,
    /// Import into the on-disk blockstore.
    pub blockstore: BlockstoreRun,
}

/// The roll-out simulation's figures (filled in by the roll-out benchmark): one image from
/// the manufacturer to every gateway, peer to peer against the baseline where every gateway
/// downloads from the manufacturer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutReport {
    /// Image size in bytes.
    pub image_bytes: u64,
    /// Gateways receiving it.
    pub gateways: u64,
    /// Manufacturer's uplink, bit/s.
    pub manufacturer_uplink_bps: f64,
    /// Each gateway's uplink, bit/s.
    pub gateway_uplink_bps: f64,
    /// Each gateway's downlink, bit/s.
    pub gateway_downlink_bps: f64,
    /// Time until every gateway holds the verified image, peer to peer, seconds.
    pub p2p_time_s: f64,
    /// The same with every gateway downloading from the manufacturer, seconds.
    pub baseline_time_s: f64,
    /// Bytes the manufacturer uploaded, peer to peer.
    pub manufacturer_bytes_p2p: u64,
    /// Bytes gateways uploaded to each other, peer to peer.
    pub peer_bytes_p2p: u64,
    /// Bytes the manufacturer uploaded in the baseline.
    pub manufacturer_bytes_baseline: u64,
    /// `manufacturer_bytes_p2p / image_bytes` (target at most [`MANUFACTURER_BYTES_TARGET`]).
    pub manufacturer_bytes_over_image: f64,
    /// `p2p_time_s / baseline_time_s` (target at most [`ROLLOUT_TIME_TARGET`]).
    pub rollout_time_over_baseline: f64,
    /// Gateways holding the verified image at the end, peer to peer.
    pub completed_p2p: u64,
    /// Gateways holding it at the end of the baseline.
    pub completed_baseline: u64,
    /// Other gateways each gateway exchanges with, peer to peer.
    pub swarm_peers: u64,
    /// Median gateway completion, peer to peer, seconds.
    pub p2p_median_s: f64,
    /// Median gateway completion in the baseline, seconds.
    pub baseline_median_s: f64,
    /// Block payload bytes the manufacturer served, peer to peer (`manufacturer_bytes_p2p`
    /// counts its whole uplink: packet headers, encryption, acknowledgements, retransmits).
    pub manufacturer_block_bytes_p2p: u64,
    /// Block payload bytes gateways served each other (more than `gateways × image` when
    /// blocks were sent twice after a timeout).
    pub peer_block_bytes_p2p: u64,
    /// Blocks gateways got from the manufacturer / from each other, peer to peer.
    pub blocks_from_manufacturer_p2p: u64,
    /// See `blocks_from_manufacturer_p2p`.
    pub blocks_from_peers_p2p: u64,
    /// Wants that timed out (re-requested elsewhere), peer to peer.
    pub timeouts_p2p: u64,
    /// Urgent wants the manufacturer served past its budget, peer to peer.
    pub urgent_wants_p2p: u64,
    /// Wall-clock seconds the two simulations took.
    pub sim_wall_s: f64,
    /// Block payload bytes the manufacturer served in the baseline.
    pub manufacturer_block_bytes_baseline: u64,
    /// The baseline's lower bound: every gateway's copy through the manufacturer's uplink at
    /// its line rate, `gateways × image × 8 / uplink`, seconds (no protocol could beat it).
    pub baseline_bound_s: f64,
    /// `p2p_time_s / baseline_bound_s`: the conservative comparison, against a baseline with
    /// no overhead at all.
    pub rollout_time_over_baseline_bound: f64,
    /// Packets dropped at link queues, peer to peer / baseline.
    pub queue_drops_p2p: u64,
    /// See `queue_drops_p2p`.
    pub queue_drops_baseline: u64,
}

/// Everything `mef bench firmware` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirmwareReport {
    /// The import part.
    pub import: ImportReport,
    /// The roll-out part; `None` when not measured.
    pub rollout: Option<RolloutReport>,
}

/// The JSON written by [`report`]: the headline figures at the top level.
#[derive(Serialize)]
struct JsonOut<'a> {
    import_mb_per_s: f64,
    manufacturer_bytes_over_image: Option<f64>,
    rollout_time_over_baseline: Option<f64>,
    import: &'a ImportReport,
    rollout: Option<&'a RolloutReport>,
}

/// `len` pseudo-random bytes from the seeded generator.
fn image(len: usize) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED ^ len as u64);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Seconds `f` takes, and its result.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

/// The in-memory measures of one image, `reps` repetitions each, interleaved.
fn measure_size(data: &[u8], reps: usize) -> anyhow::Result<SizeReport> {
    let n = data.len() as u64;
    let (mut sha, mut discard, mut memory, mut car) = (vec![], vec![], vec![], vec![]);
    let mut root: Option<Cid> = None;
    let (mut blocks, mut car_bytes) = (0, 0);
    let mut check = |cid: Cid| -> anyhow::Result<()> {
        match root {
            Some(r) if r != cid => bail!("import gave root {cid}, earlier {r}"),
            _ => root = Some(cid),
        }
        Ok(())
    };
    let mut chunk = vec![0u8; CHUNK_SIZE];
    for rep in 0..reps {
        // Rotate which measure goes first, so none always runs right after the big frees.
        for k in 0..3 {
            match (rep + k) % 3 {
                0 => {
                    let (s, ()) = timed(|| {
                        for c in data.chunks(CHUNK_SIZE) {
                            let b = chunk.get_mut(..c.len()).unwrap_or_default();
                            b.copy_from_slice(c);
                            black_box(Sha256::digest(black_box(&*b)));
                        }
                    });
                    sha.push(s);
                }
                1 => {
                    let (s, out) = timed(|| {
                        import(data, |_: &Cid, b: &[u8]| {
                            black_box(b);
                            Ok(())
                        })
                    });
                    let (cid, _) = out.context("import (blocks discarded)")?;
                    check(cid)?;
                    discard.push(s);
                }
                _ => {
                    let (s, out) = timed(|| import(data, MemoryBlocks::default()));
                    let (cid, mem) = out.context("import into memory")?;
                    check(cid)?;
                    memory.push(s);
                    blocks = mem.order.len();
                    let capacity = data.len() + blocks * 48 + 128;
                    let (s, out) = timed(|| {
                        write_car(
                            Vec::with_capacity(capacity),
                            &cid,
                            mem.order
                                .iter()
                                .filter_map(|c| mem.blocks.get(c).map(|b| (c, b.as_slice()))),
                        )
                    });
                    let bytes = out.context("CAR export")?;
                    car.push(s);
                    car_bytes = bytes.len() as u64;
                    if car_bytes < n {
                        bail!("CAR of {car_bytes} bytes for a {n}-byte image");
                    }
                    // Free the copies outside the timed sections.
                    drop((mem, bytes));
                }
            }
        }
    }
    Ok(SizeReport {
        image_bytes: n,
        blocks,
        root_cid: root.map(|c| c.to_string()).unwrap_or_default(),
        sha256: Rate::of(n, &sha),
        import_discard: Rate::of(n, &discard),
        import_memory: Rate::of(n, &memory),
        car_export: Rate::of(n, &car),
        car_bytes,
    })
}

/// Import into a fresh on-disk blockstore per repetition; checks the root against `want`.
fn measure_blockstore(data: &[u8], reps: usize, want: &str) -> anyhow::Result<BlockstoreRun> {
    let mut secs = Vec::with_capacity(reps);
    let mut blocks = 0usize;
    for _ in 0..reps {
        let dir = tempfile::Builder::new()
            .prefix("mef-bench-firmware-")
            .tempdir()
            .context("creating a temp dir")?;
        let store = Blockstore::open(dir.path().join("store")).context("opening the blockstore")?;
        let mut puts = 0usize;
        let (s, out) = timed(|| {
            import(data, |cid: &Cid, b: &[u8]| {
                puts += 1;
                store.put(cid, b).map(|_| ()).map_err(std::io::Error::other)
            })
        });
        let (cid, _) = out.context("import into the blockstore")?;
        if cid.to_string() != want {
            bail!("blockstore import gave root {cid}, in memory {want}");
        }
        let stats = store.stats().context("blockstore stats")?;
        if stats.bytes < data.len() as u64 {
            bail!(
                "the blockstore holds {} bytes after importing {}",
                stats.bytes,
                data.len()
            );
        }
        secs.push(s);
        blocks = puts;
        drop(store);
        dir.close().context("removing the temp dir")?;
    }
    let rate = Rate::of(data.len() as u64, &secs);
    let ms_per_block = if blocks > 0 && rate.median_mb_per_s > 0.0 {
        data.len() as f64 / 1e6 / rate.median_mb_per_s * 1e3 / blocks as f64
    } else {
        0.0
    };
    Ok(BlockstoreRun {
        image_bytes: data.len() as u64,
        blocks,
        rate,
        ms_per_block,
    })
}

/// Runs the import part: images of 32 MiB (21 repetitions) and 256 MiB (9) — quick: 32 MiB
/// only, 15 repetitions — and the blockstore import of the 32 MiB image (9 repetitions, quick
/// 5). The roll-out part is left `None`.
pub fn run(quick: bool) -> anyhow::Result<FirmwareReport> {
    let load_before = crate::metrics::load_avg();
    let sizes: &[(usize, usize)] = if quick {
        &[(32 * MIB, 15)]
    } else {
        &[(32 * MIB, 21), (256 * MIB, 9)]
    };
    let mut out = Vec::new();
    let mut small: Option<(Vec<u8>, String)> = None;
    for &(len, reps) in sizes {
        eprintln!(
            "firmware: {} MiB image, {reps} repetitions of sha2-256 / import / CAR …",
            len / MIB
        );
        let data = image(len);
        let r = measure_size(&data, reps)?;
        if small.is_none() {
            small = Some((data, r.root_cid.clone()));
        }
        out.push(r);
    }
    let Some((data, root)) = small else {
        bail!("no image size measured");
    };
    let reps = if quick { 5 } else { 9 };
    eprintln!(
        "firmware: {} MiB image into the on-disk blockstore (fsync per block), {reps} repetitions …",
        data.len() / MIB
    );
    let blockstore = measure_blockstore(&data, reps, &root)?;
    let import_mb_per_s = out.last().map_or(0.0, |s| s.import_memory.median_mb_per_s);
    Ok(FirmwareReport {
        import: ImportReport {
            quick,
            load_before,
            load_after: crate::metrics::load_avg(),
            import_mb_per_s,
            import_target_mb_per_s: IMPORT_TARGET_MB_PER_S,
            import_target_met: import_mb_per_s >= IMPORT_TARGET_MB_PER_S,
            sizes: out,
            blockstore,
        },
        rollout: Some(rollout(quick)),
    })
}

/// The roll-out scenario: `quick` is 30 gateways and an 8 MiB image, the full run the issue's
/// 100 gateways and 32 MiB.
pub fn rollout_config(quick: bool) -> RolloutConfig {
    let mut cfg = RolloutConfig::default();
    if quick {
        cfg.gateways = 30;
        cfg.image_bytes = 8 * MIB;
    }
    cfg
}

/// Runs the roll-out peer to peer and the manufacturer-only baseline on the same links.
pub fn rollout(quick: bool) -> RolloutReport {
    let cfg = rollout_config(quick);
    let t0 = std::time::Instant::now();
    eprintln!(
        "firmware: roll-out of {} MiB to {} gateways over the mesh on sim-netem, peer to peer …",
        cfg.image_bytes / MIB,
        cfg.gateways
    );
    let p2p = run_rollout(&cfg);
    eprintln!("firmware: the same, every gateway from the manufacturer alone (baseline) …");
    let base = run_rollout(&RolloutConfig {
        swarm_peers: 0,
        ..cfg.clone()
    });
    let image = cfg.image_bytes as f64;
    let bound = cfg.gateways as f64 * image * 8.0 / cfg.manufacturer_up_bps as f64;
    RolloutReport {
        image_bytes: cfg.image_bytes as u64,
        gateways: cfg.gateways as u64,
        manufacturer_uplink_bps: cfg.manufacturer_up_bps as f64,
        gateway_uplink_bps: cfg.gateway_up_bps as f64,
        gateway_downlink_bps: cfg.gateway_down_bps as f64,
        p2p_time_s: p2p.time_s,
        baseline_time_s: base.time_s,
        manufacturer_bytes_p2p: p2p.manufacturer_wire_bytes,
        peer_bytes_p2p: p2p.peer_wire_bytes,
        manufacturer_bytes_baseline: base.manufacturer_wire_bytes,
        manufacturer_bytes_over_image: p2p.manufacturer_wire_bytes as f64 / image,
        rollout_time_over_baseline: if base.time_s > 0.0 {
            p2p.time_s / base.time_s
        } else {
            f64::NAN
        },
        completed_p2p: p2p.completed as u64,
        completed_baseline: base.completed as u64,
        swarm_peers: cfg.swarm_peers as u64,
        p2p_median_s: p2p.median_s,
        baseline_median_s: base.median_s,
        manufacturer_block_bytes_p2p: p2p.manufacturer_block_bytes,
        peer_block_bytes_p2p: p2p.peer_block_bytes,
        blocks_from_manufacturer_p2p: p2p.blocks_from_manufacturer,
        blocks_from_peers_p2p: p2p.blocks_from_peers,
        timeouts_p2p: p2p.timeouts,
        urgent_wants_p2p: p2p.urgent_wants,
        sim_wall_s: t0.elapsed().as_secs_f64(),
        manufacturer_block_bytes_baseline: base.manufacturer_block_bytes,
        baseline_bound_s: bound,
        rollout_time_over_baseline_bound: p2p.time_s / bound,
        queue_drops_p2p: p2p.queue_drops,
        queue_drops_baseline: base.queue_drops,
    }
}

/// `median (min–max)` of a rate.
fn rate_cell(r: &Rate) -> String {
    format!(
        "{:.0} ({:.0}-{:.0})",
        r.median_mb_per_s, r.min_mb_per_s, r.max_mb_per_s
    )
}

/// Prints the table (and the roll-out rows when present) and writes the JSON and a plot
/// (default `bench-out/firmware.json`, the SVG next to it).
pub fn report(r: &FirmwareReport, json: Option<&Path>) -> anyhow::Result<()> {
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let load = |l: Option<[f64; 3]>| {
        l.map_or("unknown".into(), |l| {
            format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
        })
    };
    let im = &r.import;
    println!(
        "firmware bench{}: UnixFS import with kubo defaults (256 KiB chunks, raw leaves, sha2-256, 174 links); MB/s = 10^6 B/s, median (min-max) of the repetitions; load average before {}, after {}",
        if im.quick { " (quick)" } else { "" },
        load(im.load_before),
        load(im.load_after)
    );
    println!("{:<50} {:>22}  target", "measure", "value");
    for s in &im.sizes {
        let mib = s.image_bytes as f64 / MIB as f64;
        println!(
            "{:<50} {:>22}  (floor of import)",
            format!("sha2-256 alone, {mib:.0} MiB, MB/s"),
            rate_cell(&s.sha256)
        );
        println!(
            "{:<50} {:>22}",
            format!("import, blocks discarded, {mib:.0} MiB, MB/s"),
            rate_cell(&s.import_discard)
        );
        println!(
            "{:<50} {:>22}  >= {IMPORT_TARGET_MB_PER_S:.0}: {}",
            format!("import into memory, {mib:.0} MiB, MB/s"),
            rate_cell(&s.import_memory),
            met(s.import_memory.median_mb_per_s >= IMPORT_TARGET_MB_PER_S)
        );
        println!(
            "{:<50} {:>22}",
            "  import time over sha2-256 alone",
            format!(
                "{:.2}x",
                s.sha256.median_mb_per_s / s.import_memory.median_mb_per_s.max(1e-9)
            )
        );
        println!(
            "{:<50} {:>22}",
            format!("CAR export to a Vec, {mib:.0} MiB, MB/s"),
            rate_cell(&s.car_export)
        );
        println!(
            "{:<50} {:>22}",
            "  blocks / CAR bytes",
            format!("{} / {}", s.blocks, s.car_bytes)
        );
    }
    let b = &im.blockstore;
    println!(
        "{:<50} {:>22}  (none; fsync-bound)",
        format!(
            "import into on-disk blockstore, {:.0} MiB, MB/s",
            b.image_bytes as f64 / MIB as f64
        ),
        rate_cell(&b.rate)
    );
    println!(
        "{:<50} {:>22}",
        "  blocks / ms per block (write+fsync+verify)",
        format!("{} / {:.2}", b.blocks, b.ms_per_block)
    );
    println!(
        "{:<50} {:>22.0}  >= {IMPORT_TARGET_MB_PER_S:.0}: {}",
        "import_mb_per_s (in memory, largest image)",
        im.import_mb_per_s,
        met(im.import_target_met)
    );
    println!(
        "  the target applies to the in-memory import; the blockstore figure is what durable storage adds"
    );
    match &r.rollout {
        Some(x) => {
            println!(
                "roll-out: {} bytes to {} gateways; manufacturer up {:.1} Mbit/s, gateway up {:.1} / down {:.1} Mbit/s",
                x.image_bytes,
                x.gateways,
                x.manufacturer_uplink_bps / 1e6,
                x.gateway_uplink_bps / 1e6,
                x.gateway_downlink_bps / 1e6
            );
            println!(
                "{:<50} {:>22}",
                "roll-out time p2p / baseline, s",
                format!("{:.1} / {:.1}", x.p2p_time_s, x.baseline_time_s)
            );
            println!(
                "{:<50} {:>22.3}  <= {ROLLOUT_TIME_TARGET}: {}",
                "rollout_time_over_baseline",
                x.rollout_time_over_baseline,
                met(x.rollout_time_over_baseline <= ROLLOUT_TIME_TARGET)
            );
            println!(
                "{:<50} {:>22}",
                "  baseline at line rate (bound), s; p2p over it",
                format!(
                    "{:.1}; {:.3}",
                    x.baseline_bound_s, x.rollout_time_over_baseline_bound
                )
            );
            println!(
                "{:<50} {:>22}",
                "baseline: manufacturer block payload / uplink bytes",
                format!(
                    "{} / {}",
                    x.manufacturer_block_bytes_baseline, x.manufacturer_bytes_baseline
                )
            );
            println!(
                "{:<50} {:>22}",
                "queue drops p2p / baseline",
                format!("{} / {}", x.queue_drops_p2p, x.queue_drops_baseline)
            );
            println!(
                "{:<50} {:>22}",
                "manufacturer bytes p2p / baseline",
                format!(
                    "{} / {}",
                    x.manufacturer_bytes_p2p, x.manufacturer_bytes_baseline
                )
            );
            println!(
                "{:<50} {:>22}",
                "  of which block payload, manufacturer", x.manufacturer_block_bytes_p2p
            );
            println!(
                "{:<50} {:>22}",
                "peer bytes p2p (uplinks)", x.peer_bytes_p2p
            );
            println!(
                "{:<50} {:>22}",
                "  of which block payload", x.peer_block_bytes_p2p
            );
            println!(
                "{:<50} {:>22}",
                "median completion p2p / baseline, s",
                format!("{:.1} / {:.1}", x.p2p_median_s, x.baseline_median_s)
            );
            println!(
                "{:<50} {:>22}",
                "blocks from manufacturer / from peers",
                format!(
                    "{} / {}",
                    x.blocks_from_manufacturer_p2p, x.blocks_from_peers_p2p
                )
            );
            println!(
                "{:<50} {:>22}",
                "want timeouts / urgent wants (p2p)",
                format!("{} / {}", x.timeouts_p2p, x.urgent_wants_p2p)
            );
            println!("{:<50} {:>22.1}", "simulation wall time, s", x.sim_wall_s);
            println!(
                "{:<50} {:>22.3}  <= {MANUFACTURER_BYTES_TARGET}: {}",
                "manufacturer_bytes_over_image",
                x.manufacturer_bytes_over_image,
                met(x.manufacturer_bytes_over_image <= MANUFACTURER_BYTES_TARGET)
            );
            println!(
                "{:<50} {:>22}",
                "gateways completed p2p / baseline",
                format!(
                    "{}/{} / {}/{}",
                    x.completed_p2p, x.gateways, x.completed_baseline, x.gateways
                )
            );
        }
        None => {
            println!(
                "{:<50} {:>22}  <= {ROLLOUT_TIME_TARGET}",
                "rollout_time_over_baseline", "not measured"
            );
            println!(
                "{:<50} {:>22}  <= {MANUFACTURER_BYTES_TARGET}",
                "manufacturer_bytes_over_image", "not measured"
            );
        }
    }
    let out = JsonOut {
        import_mb_per_s: im.import_mb_per_s,
        manufacturer_bytes_over_image: r.rollout.map(|x| x.manufacturer_bytes_over_image),
        rollout_time_over_baseline: r.rollout.map(|x| x.rollout_time_over_baseline),
        import: im,
        rollout: r.rollout.as_ref(),
    };
    crate::record::write_report(&crate::record::report_path(json, "firmware"), &out, |svg| {
        plot(r, svg)
    })
}

/// Bars of the MB/s figures against the target; with a roll-out, a second panel of the two
/// roll-out times against half the baseline.
fn plot(r: &FirmwareReport, path: &Path) -> anyhow::Result<()> {
    use crate::plot::{BarPanel, bar_chart};
    let mut bars = Vec::new();
    for s in &r.import.sizes {
        let mib = s.image_bytes / MIB as u64;
        bars.push((format!("sha2-256 {mib}M"), s.sha256.median_mb_per_s));
        bars.push((format!("import {mib}M"), s.import_memory.median_mb_per_s));
        bars.push((format!("CAR {mib}M"), s.car_export.median_mb_per_s));
    }
    let b = &r.import.blockstore;
    bars.push((
        format!("blockstore {}M", b.image_bytes / MIB as u64),
        b.rate.median_mb_per_s,
    ));
    let mut panels = vec![BarPanel {
        title: "import (in memory unless noted), median MB/s".into(),
        y_desc: "MB/s".into(),
        bars,
        target: Some((
            format!("target: import >= {IMPORT_TARGET_MB_PER_S:.0}"),
            IMPORT_TARGET_MB_PER_S,
        )),
    }];
    if let Some(x) = &r.rollout {
        panels.push(BarPanel {
            title: format!("roll-out to {} gateways", x.gateways),
            y_desc: "seconds".into(),
            bars: vec![
                ("peer to peer".into(), x.p2p_time_s),
                ("baseline".into(), x.baseline_time_s),
            ],
            target: Some((
                format!("target: {ROLLOUT_TIME_TARGET} x baseline"),
                ROLLOUT_TIME_TARGET * x.baseline_time_s,
            )),
        });
    }
    bar_chart(path, "mef bench firmware", &panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_median_min_max() {
        // 10 MB in 1, 2, 4, 5 s: 10, 5, 2.5, 2 MB/s.
        let r = Rate::of(10_000_000, &[2.0, 1.0, 5.0, 4.0]);
        assert_eq!(r.runs, 4);
        assert!((r.median_mb_per_s - 3.75).abs() < 1e-9, "{r:?}");
        assert!((r.min_mb_per_s - 2.0).abs() < 1e-9);
        assert!((r.max_mb_per_s - 10.0).abs() < 1e-9);
        assert_eq!(Rate::of(1, &[]).median_mb_per_s, 0.0);
    }

    #[test]
    fn small_image_measures_and_reports() {
        let data = image(3 * CHUNK_SIZE + 17);
        assert_eq!(data, image(3 * CHUNK_SIZE + 17), "deterministic");
        let s = measure_size(&data, 2).expect("measure");
        // 4 raw leaves and one dag-pb root.
        assert_eq!(s.blocks, 5);
        assert!(s.root_cid.starts_with("bafybei"), "{}", s.root_cid);
        assert!(s.import_memory.median_mb_per_s > 0.0 && s.car_bytes > data.len() as u64);
        let b = measure_blockstore(&data, 1, &s.root_cid).expect("blockstore");
        assert_eq!(b.blocks, 5);
        let mut r = FirmwareReport {
            import: ImportReport {
                quick: true,
                load_before: None,
                load_after: None,
                import_mb_per_s: s.import_memory.median_mb_per_s,
                import_target_mb_per_s: IMPORT_TARGET_MB_PER_S,
                import_target_met: false,
                sizes: vec![s],
                blockstore: b,
            },
            rollout: None,
        };
        let dir = tempfile::tempdir().expect("tmp");
        let json = dir.path().join("firmware.json");
        report(&r, Some(&json)).expect("report");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
        assert!(v["import_mb_per_s"].as_f64().is_some());
        assert!(v["manufacturer_bytes_over_image"].is_null());
        assert!(v["rollout_time_over_baseline"].is_null());
        assert!(json.with_extension("svg").exists());
        r.rollout = Some(RolloutReport {
            image_bytes: 1 << 20,
            gateways: 12,
            p2p_time_s: 10.0,
            baseline_time_s: 40.0,
            manufacturer_bytes_over_image: 1.5,
            rollout_time_over_baseline: 0.25,
            ..RolloutReport::default()
        });
        report(&r, Some(&json)).expect("report with roll-out");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
        assert_eq!(v["manufacturer_bytes_over_image"].as_f64(), Some(1.5));
        assert_eq!(v["rollout_time_over_baseline"].as_f64(), Some(0.25));
        assert_eq!(v["rollout"]["gateways"].as_u64(), Some(12));
    }
}
