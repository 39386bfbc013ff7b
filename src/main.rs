//! The `mef` command: `mef demo` runs a whole simulated network in one process and prints a
//! summary; `mef bench <suite>` runs a benchmark suite and writes tables, JSON and plots.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod demo_chain;
mod demo_firmware;
mod demo_gateway;
mod demo_mesh;
mod netem_bench;

/// Counts live heap bytes for `mef bench mesh` (memory per idle link); otherwise the system
/// allocator.
#[global_allocator]
static GLOBAL: mef_benches::mesh_bench::CountingAlloc = mef_benches::mesh_bench::CountingAlloc;

/// MEF: in-network rate control, measured.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo network entirely in simulation and print a summary: two sites across a
    /// 200 ms, 1 % loss WAN (MEF vs Cubic vs BBR), then the POE chain of 7 routers and 12
    /// gateways with sensor readings landing on it and a light client checking one, then the
    /// gateways' encrypted mesh with some behind NATs, then a gateway daemon ingesting
    /// simulated BTHome and LoRa sensors, then a signed firmware image rolled out to 24
    /// gateways peer to peer and from the manufacturer alone. Takes several seconds in a
    /// release build.
    Demo {
        /// Seed of the simulation; the same seed gives the same MEF and Cubic figures.
        #[arg(long, env = "MEF_SEED", default_value_t = 1)]
        seed: u64,
    },
    /// Check a POE genesis file (docs/POE.md "Genesis file"): parse and validate it, and print
    /// its chain, members and genesis block id (the chain id nodes and light clients start
    /// from). Exits non-zero with the reason if the file is refused.
    Genesis {
        /// The `genesis.toml` to check.
        file: PathBuf,
    },
    /// Run a benchmark suite.
    Bench {
        #[command(subcommand)]
        suite: BenchSuite,
    },
}

#[derive(Debug, Subcommand)]
enum BenchSuite {
    /// MEF against quinn-proto's Cubic and BBR in the deterministic simulator: long flows over
    /// RTT × loss, convergence, fairness, parking lot, short flows, coexistence, cheater.
    Sim {
        /// CI mode: a subset of cells and shorter runs.
        #[arg(long)]
        quick: bool,
        /// Write the records as JSON to this path.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Directory for plots (SVG).
        #[arg(long, value_name = "DIR", default_value = "bench-out")]
        out: PathBuf,
        /// Base seed of every simulation.
        #[arg(long, env = "MEF_SEED", default_value_t = 1)]
        seed: u64,
        /// Run only scenarios whose name contains this text (e.g. `long-flow`, `fair`).
        #[arg(long)]
        only: Option<String>,
    },
    /// Linux kernel TCP Cubic and BBR against the same TCP applications (iperf3 and a built-in
    /// bulk/short-flow generator) through a pair of MEF routers (`mef-split`) and an application
    /// on MEF transport through them (`mef-native`), plus a two-flow fairness case with RTT and
    /// 2×RTT, over the userspace WAN emulator in network namespaces; plus the tunnel's
    /// single-core throughput. Needs root;
    /// runs cells one after the other, each with its own testbed, torn down afterwards.
    Kernel {
        /// Quick mode: RTT 50 and 200 ms, loss 0 and 1 %, 10 s runs (iperf3 omits 2 s of slow start).
        #[arg(long)]
        quick: bool,
        /// Write the records as JSON to this path (plots go next to it).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Directory for plots (SVG) when --json is not given.
        #[arg(long, value_name = "DIR", default_value = "bench-out")]
        out: PathBuf,
        /// Seed of the short-flow arrival trace.
        #[arg(long, env = "MEF_SEED", default_value_t = 1)]
        seed: u64,
        /// Run only cases whose `RTTms/LOSS% protocol/tool` contains this text (e.g. `bbr`,
        /// `iperf3`, `mef` for both `mef-split` and `mef-native`, `native`, `short`, `fair`);
        /// several texts separated by commas select the cases matching any of them.
        #[arg(long)]
        only: Option<String>,
        /// Skip the tunnel throughput benchmark.
        #[arg(long)]
        no_tunnel: bool,
    },
    /// POE consensus: VRF, ticket, signature, inclusion-proof and header checks on one core,
    /// transactions validated and durably included per second by one node, and the light
    /// client's catch-up rate and memory per 1,000 headers, on a devnet with real RSA-2048 and
    /// ed25519 keys.
    Poe {
        /// Quick mode: a 16 + 8 member devnet, 200 headers, fewer repetitions.
        #[arg(long)]
        quick: bool,
        /// Write the report as JSON to this path (and a plot next to it).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// The encrypted peer mesh (issue 5): full IK handshakes per second on one core, a
    /// reliable channel over an encrypted link over real UDP sockets on loopback (MTU 1,200,
    /// 8,192 and 60,000; sender and receiver on one core) with time per stage, and heap bytes
    /// per idle link (1,000 link pairs, counting allocator). Figures that need the mesh node
    /// (relayed throughput, connected pairs, direct upgrades, relay reach time) are reported
    /// as not measured.
    Mesh {
        /// Quick mode: 32 MiB per transfer instead of 256 MiB, 300 handshakes.
        #[arg(long)]
        quick: bool,
        /// Write the report as JSON to this path (and a plot next to it); default
        /// `bench-out/mesh.json`.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// The real `mef-gateway` daemon (built next to `mef` if missing): durable readings/s
    /// over LoRa/UDP with PUSH_ACK after the store commit, its own simulated BTHome + LoRa
    /// sensors, and its RSS and packet-to-durable latency at 1,000 readings/s.
    Gateway {
        /// Quick mode: 3 s runs and a 5 s steady run instead of 10 s and 20 s.
        #[arg(long)]
        quick: bool,
        /// Write the report as JSON to this path (and a plot next to it); default
        /// `bench-out/gateway.json`.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// Firmware distribution (issue 7): UnixFS import of a pseudo-random image with kubo's
    /// defaults (chunking, sha2-256, DAG) into memory against the 200 MB/s target, beside raw
    /// sha2-256 and CAR export, and into the on-disk blockstore with every block fsynced.
    Firmware {
        /// Quick mode: a 32 MiB image only instead of 32 and 256 MiB, fewer repetitions.
        #[arg(long)]
        quick: bool,
        /// Write the report as JSON to this path (and a plot next to it); default
        /// `bench-out/firmware.json`.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// Calibrate the userspace link emulator in network namespaces: delay error at 20 and
    /// 100 ms, rate error at 100 Mbit/s, 1 % loss, and the highest rate this machine sustains.
    /// Needs root.
    Netem {
        /// Write the report as JSON to this path.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { seed } => demo::run(seed)
            .and_then(|()| demo_chain::run(seed))
            .and_then(|()| demo_mesh::run(seed))
            .and_then(|()| demo_gateway::run(seed))
            .and_then(|()| demo_firmware::run(seed)),
        Command::Genesis { file } => check_genesis(&file),
        Command::Bench {
            suite:
                BenchSuite::Sim {
                    quick,
                    json,
                    out,
                    seed,
                    only,
                },
        } => {
            let opts = mef_benches::BenchOptions {
                quick,
                json,
                out_dir: out,
                seed,
                only,
            };
            mef_benches::run_sim(opts).map(|_| ())
        }
        Command::Bench {
            suite:
                BenchSuite::Kernel {
                    quick,
                    json,
                    out,
                    seed,
                    only,
                    no_tunnel,
                },
        } => {
            let opts = mef_benches::KernelOptions {
                common: mef_benches::BenchOptions {
                    quick,
                    json,
                    out_dir: out,
                    seed,
                    only,
                },
                tunnel: !no_tunnel,
            };
            mef_benches::run_kernel(opts).map(|_| ())
        }
        Command::Bench {
            suite: BenchSuite::Netem { json },
        } => netem_bench::run(json.as_deref()),
        Command::Bench {
            suite: BenchSuite::Mesh { quick, json },
        } => mef_benches::mesh_bench::run(quick)
            .and_then(|r| mef_benches::mesh_bench::report(&r, json.as_deref())),
        Command::Bench {
            suite: BenchSuite::Gateway { quick, json },
        } => mef_benches::gateway_bench::run(quick)
            .and_then(|r| mef_benches::gateway_bench::report(&r, json.as_deref())),
        Command::Bench {
            suite: BenchSuite::Firmware { quick, json },
        } => mef_benches::firmware_bench::run(quick)
            .and_then(|r| mef_benches::firmware_bench::report(&r, json.as_deref())),
        Command::Bench {
            suite: BenchSuite::Poe { quick, json },
        } => mef_benches::poe_bench::run(quick)
            .and_then(|r| mef_benches::poe_bench::report(&r, json.as_deref())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `mef genesis FILE`: loads and validates a genesis file and prints what nodes derive from it.
fn check_genesis(file: &std::path::Path) -> anyhow::Result<()> {
    let genesis = poe::genesis::Genesis::load(file)?;
    let (members, start, params) = genesis.start()?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    println!("chain          {}", genesis.chain);
    println!("time_ms        {}", genesis.time_ms);
    println!(
        "params         expected_candidates {}, expected_sealers {}",
        params.expected_candidates, params.expected_sealers
    );
    println!(
        "members        {} level-1, {} level-2 (quorum {})",
        members.level1_count(),
        members.level2_count(),
        members.quorum()
    );
    println!("members_root   {}", hex(&members.root()));
    println!("genesis block  {}", hex(&start.block_id));
    Ok(())
}
