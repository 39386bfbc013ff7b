//! `mef-gateway`: the IoT edge gateway daemon (issue 6). A thin clap + tracing binary around
//! `gateway::daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Parser, Subcommand};
use gateway::daemon::{self, Config, RunOptions, Simulate};
use gateway::{firmware_cli, firmware_net};

/// MEF gateway: receives BLE (BTHome) and LoRa (Semtech UDP packet forwarder, Cayenne LPP)
/// sensor readings, stores every reading durably before acknowledging it, and forwards signed
/// batches to an uplink.
///
/// Typical use: `mef-gateway keygen --out /etc/mef-gateway/gateway.key`, write
/// /etc/mef-gateway/mef-gateway.toml (see dist/mef-gateway.toml), then
/// `mef-gateway run --config /etc/mef-gateway/mef-gateway.toml` (or the systemd unit), and
/// `mef-gateway status --config ...` for the queue.
#[derive(Parser, Debug)]
#[command(name = "mef-gateway", version, about, long_about)]
struct Cli {
    /// Log filter (tracing-subscriber syntax, e.g. `info` or `gateway=debug`).
    #[arg(long, global = true, env = "MEF_GATEWAY_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate the ed25519 key that signs uplink batches; print its public key (base64).
    ///
    /// The base64 secret key is written to --out (mode 0600, refusing to overwrite). With
    /// --mesh, generate a mesh identity (X25519, for `firmware serve` / `get --peer`) instead;
    /// print its public key (base64) and its hashname.
    Keygen {
        /// File to write the secret key to.
        #[arg(long, env = "MEF_GATEWAY_KEY_OUT")]
        out: PathBuf,
        /// A mesh identity key instead of a batch-signing key.
        #[arg(long)]
        mesh: bool,
    },
    /// Run the gateway with a TOML configuration until SIGINT or SIGTERM.
    Run {
        /// Configuration file.
        #[arg(long, short, env = "MEF_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Simulate N sensors (half BLE BTHome, half encrypted; half LoRa LPP sent over UDP to
        /// the daemon's own LoRa listener).
        #[arg(long, value_name = "N")]
        simulate: Option<usize>,
        /// Total simulated readings per second (with --simulate).
        #[arg(long, value_name = "R", default_value_t = 100.0, requires = "simulate")]
        rate: f64,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, env = "MEF_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Show queue depth, in flight, per-source counts, last seen devices, full flags.
    ///
    /// Asks the running daemon (`[metrics] listen`); if none answers, opens the store directly.
    Status {
        /// Configuration file.
        #[arg(long, short, env = "MEF_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Print the raw Prometheus metrics of the running daemon instead.
        #[arg(long)]
        metrics: bool,
    },
    /// Firmware images (issue 7): add, import-car, export, get, serve, publish, verify, stage,
    /// pins, unpin, gc.
    ///
    /// Images live in a content-addressed blockstore (--store, default ./mef-firmware); CIDs are
    /// those `ipfs add --cid-version=1` gives. Manifests are signed with a `keygen` key.
    Firmware {
        #[command(subcommand)]
        cmd: Box<firmware_cli::FirmwareCmd>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The typed errors already name their cause; `{e}` avoids printing it twice.
            eprintln!("mef-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Keygen { out, mesh: true } => {
            let id = firmware_net::generate_identity()?;
            firmware_net::write_mesh_key(&out, &id)?;
            println!("{}", STANDARD.encode(id.public_key()));
            println!("hashname: {}", id.hashname());
        }
        Cmd::Keygen { out, mesh: false } => {
            let key = daemon::key::generate()?;
            daemon::key::write(&out, &key)?;
            println!("{}", daemon::key::public_base64(&key));
        }
        Cmd::CheckConfig { config } => {
            Config::load(&config)?;
            println!("{}: ok", config.display());
        }
        Cmd::Run {
            config,
            simulate,
            rate,
        } => {
            let cfg = Config::load(&config)?;
            if !(rate.is_finite() && rate > 0.0) {
                anyhow::bail!("--rate must be a positive number of readings per second");
            }
            let opts = RunOptions {
                simulate: simulate.map(|sensors| Simulate { sensors, rate }),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| anyhow::anyhow!("tokio runtime: {e}"))?;
            rt.block_on(daemon::run(cfg, opts, daemon::shutdown_signal()))?;
        }
        Cmd::Status { config, metrics } => {
            let cfg = Config::load(&config)?;
            if metrics {
                let mut addr = cfg.metrics.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                print!("{}", daemon::fetch(addr, "/metrics")?);
            } else {
                print!("{}", daemon::status(&cfg)?);
            }
        }
        Cmd::Firmware { cmd } => firmware_cli::run(*cmd)?,
    }
    Ok(())
}
