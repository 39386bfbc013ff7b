//! `mef-router`: the MEF router daemon. A thin clap + tracing binary around the sans-IO cores in
//! the `mef_router` library (tunnel, rate controller, fair queue).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mef_router::daemon::{self, Config};
use mef_router::tunnel::PrivateKey;

/// MEF router: encrypts site-to-site traffic in WireGuard-style tunnels and computes fair rates
/// in the network (MEF), shaping the WAN egress to its capacity.
///
/// Typical use: `mef-router keygen --out /etc/mef-router/private.key` on each router, exchange
/// the printed public keys, write /etc/mef-router/mef-router.toml (see dist/mef-router.toml),
/// then `mef-router run --config /etc/mef-router/mef-router.toml` (or the systemd unit), and
/// `mef-router status` to see tunnels, the fair rate and flows.
#[derive(Parser, Debug)]
#[command(name = "mef-router", version, about, long_about)]
struct Cli {
    /// Log filter (tracing-subscriber syntax, e.g. `info` or `mef_router=debug`).
    #[arg(long, global = true, env = "MEF_ROUTER_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate an x25519 private key and print its public key.
    ///
    /// With --out, the base64 private key is written to that file (mode 0600, refusing to
    /// overwrite) and only the public key is printed. Without --out both are printed, private
    /// first, one per line.
    Keygen {
        /// File to write the private key to.
        #[arg(long, env = "MEF_ROUTER_KEY_OUT")]
        out: Option<PathBuf>,
    },
    /// Print the public key of a private key file.
    Pubkey {
        /// The private key file.
        #[arg(long, env = "MEF_ROUTER_KEY_FILE")]
        key_file: PathBuf,
    },
    /// Run the router with a TOML configuration (needs CAP_NET_ADMIN for the TUN device).
    ///
    /// Creates the TUN device, adds routes for every peer's prefixes, binds the tunnel UDP
    /// socket and the HTTP control endpoint (/metrics, /status), and forwards until SIGINT or
    /// SIGTERM.
    Run {
        /// Configuration file.
        #[arg(long, short, env = "MEF_ROUTER_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and exit (errors name the line and field).
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, env = "MEF_ROUTER_CONFIG")]
        config: PathBuf,
    },
    /// Show a running router's tunnels, per-link allocation, flows and drops.
    ///
    /// Queries the control endpoint (the `control` address of the configuration).
    Status {
        /// Control endpoint address.
        #[arg(long, env = "MEF_ROUTER_CONTROL", default_value = "127.0.0.1:9184")]
        control: SocketAddr,
        /// Print the raw Prometheus metrics instead.
        #[arg(long)]
        metrics: bool,
    },
}

fn keygen(out: Option<PathBuf>) -> Result<(), String> {
    let k = PrivateKey::generate();
    let private = zeroize::Zeroizing::new(k.to_base64());
    match out {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            writeln!(f, "{}", *private).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("{}", k.public_key());
        }
        None => {
            println!("{}", *private);
            println!("{}", k.public_key());
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.cmd {
        Cmd::Keygen { out } => keygen(out),
        Cmd::Pubkey { key_file } => Config::parse(
            &format!(
                "private_key_file = {:?}\n[wan]\ncapacity = \"1mbit\"\n",
                key_file.display().to_string()
            ),
            "<pubkey>",
        )
        .and_then(|c| c.private_key())
        .map(|k| println!("{}", k.public_key()))
        .map_err(|e| e.to_string()),
        Cmd::CheckConfig { config } => Config::load(&config)
            .map(|c| println!("{}: ok ({} peers)", config.display(), c.peers.len()))
            .map_err(|e| e.to_string()),
        Cmd::Run { config } => match Config::load(&config) {
            Err(e) => Err(e.to_string()),
            Ok(cfg) => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Err(e) => Err(format!("tokio runtime: {e}")),
                Ok(rt) => rt
                    .block_on(daemon::run(cfg, shutdown_signal()))
                    .map_err(|e| e.to_string()),
            },
        },
        Cmd::Status { control, metrics } => {
            daemon::fetch(control, if metrics { "/metrics" } else { "/status" })
                .map(|body| print!("{body}"))
                .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mef-router: {e}");
            ExitCode::FAILURE
        }
    }
}
