//! The testbed of one cell, built with [`sim_netem::testbed`]: client ns — emulator — server
//! ns (direct), or client ns — router A — emulator — router B — server ns (routed), torn down
//! on drop (the router daemons first get SIGTERM, then the testbed kills every process in its
//! namespaces and deletes them; its Ctrl-C handler does the same and exits with status 130).
//! Routed cells start two `mef-router` daemons, see [`super::routers`].
//!
//! With a second client (for the two-flow fairness case, see [`super::fairness`]) the testbed
//! adds a host behind its own access emulator that adds [`second_client_extra_rtt`] (one more
//! cell RTT: the second flow's RTT is twice the first's) at 10 Gbit/s with a 64 MB queue, so
//! the access link adds delay and never queues or drops.
//!
//! The WAN: 100 Mbit/s each way, one-way delay RTT/2 each way, a drop-tail queue of 1 BDP,
//! random (Bernoulli) loss on the data direction only (client → server, as on the simulator's
//! bottleneck; ACKs are not lost). The end hosts' TCP buffer limits (`net.ipv4.tcp_rmem`,
//! `tcp_wmem`, per namespace) are raised to 32 MiB so that a window of 2 BDP at 400 ms fits.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use sim_netem::realtime::EmulatorConfig;
use sim_netem::testbed::{Node, Testbed, TestbedConfig};
use sim_netem::{LinkConfig, LossModel};

use super::routers::{PathCounters, PathMode, Routers};
use super::{CAPACITY_MBPS, CellSpec};

/// Largest TCP buffer of the end hosts.
pub const TCP_BUF_MAX: usize = 32 << 20;

/// A built testbed; dropping it stops the routers, then tears every namespace, device and
/// process down.
#[derive(Debug)]
pub struct Bed {
    // Declared before `tb`: the daemons get SIGTERM before the testbed kills what is left.
    routers: Option<Routers>,
    tb: Testbed,
    client_ns: String,
    server_ns: String,
    client2_ns: Option<String>,
}

/// The round-trip delay the second client's access link adds: the cell's RTT, so the second
/// client's flow has twice the first's RTT.
pub fn second_client_extra_rtt(spec: &CellSpec) -> Duration {
    Duration::from_millis(spec.rtt_ms)
}

/// The access emulator of the second client: [`second_client_extra_rtt`] split evenly over
/// both directions, 10 Gbit/s, a 64 MB queue, no loss.
pub fn access_config(spec: &CellSpec, seed: u64) -> EmulatorConfig {
    let link = LinkConfig::new(10_000_000_000, second_client_extra_rtt(spec) / 2)
        .with_queue_limit(64 << 20);
    EmulatorConfig::symmetric(link).with_seed(seed.wrapping_add(1))
}

/// The emulator configuration of a cell.
pub fn emulator_config(spec: &CellSpec, seed: u64) -> EmulatorConfig {
    let rtt = Duration::from_millis(spec.rtt_ms);
    let base = LinkConfig::new((CAPACITY_MBPS * 1e6) as u64, rtt / 2).with_queue_bdp(1.0, rtt);
    let data = if spec.loss > 0.0 {
        base.clone().with_loss(LossModel::Bernoulli(spec.loss))
    } else {
        base.clone()
    };
    let mut cfg = EmulatorConfig::symmetric(base).with_seed(seed);
    cfg.a_to_b = data;
    cfg
}

/// The `mef-router` daemon binary: `$MEF_ROUTER_BIN`, else next to the running executable
/// (for a test binary in `target/<profile>/deps/`, in `target/<profile>/`). Errors say why
/// the routed cases cannot run.
pub fn router_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("MEF_ROUTER_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().context("locating the running executable")?;
            let dir = exe
                .parent()
                .context("the running executable has no directory")?;
            let beside = dir.join("mef-router");
            match dir.parent() {
                Some(up) if !beside.is_file() && dir.ends_with("deps") => up.join("mef-router"),
                _ => beside,
            }
        }
    };
    if !path.is_file() {
        bail!(
            "mef-router daemon binary not found at {} (build it with `cargo build --release -p \
             mef-router` or set MEF_ROUTER_BIN)",
            path.display()
        );
    }
    let help = std::process::Command::new(&path)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", path.display()))?;
    let text = String::from_utf8_lossy(&help.stdout);
    if !help.status.success() || !text.contains("run") || !text.contains("status") {
        bail!(
            "{} has no `run`/`status` subcommands (not the mef-router daemon of this tree), \
             so the routed cases cannot run",
            path.display()
        );
    }
    Ok(path)
}

impl Bed {
    /// Builds the testbed for `spec`, with MEF routers at both site edges when `routed`: the
    /// two `mef-router` daemons are started in the router namespaces and the tunnel is up
    /// when this returns (see [`Routers::start`]; WAN capacity = the cell's bottleneck rate).
    /// With `second_client`, a second client host with a longer RTT is added (see
    /// [`access_config`]).
    pub fn build(
        spec: &CellSpec,
        routed: bool,
        seed: u64,
        second_client: bool,
    ) -> anyhow::Result<Self> {
        // The second client sits one cell RTT behind router A: its split TCP leg needs a window
        // of a BDP to fill the link (`[split] window_bytes`, as an operator would set it for
        // clients behind long access links; the daemon's 256 KiB default caps such a client at
        // 256 KiB per access RTT).
        // `MEF_BENCH_SPLIT_WINDOW=BYTES` sets it for every routed testbed instead.
        let split_window = match std::env::var("MEF_BENCH_SPLIT_WINDOW") {
            Ok(v) => Some(
                v.parse::<usize>()
                    .with_context(|| format!("MEF_BENCH_SPLIT_WINDOW={v:?} is not a byte count"))?,
            ),
            Err(_) => second_client.then(|| spec.bdp_bytes().next_power_of_two() as usize),
        };
        // Checked before any namespace exists, so a missing binary costs nothing.
        let router = if routed {
            Some((router_binary()?, PathMode::from_env()?))
        } else {
            None
        };
        let ecfg = emulator_config(spec, seed);
        let mut cfg = if routed {
            TestbedConfig::with_routers(ecfg)
        } else {
            TestbedConfig::direct(ecfg)
        };
        if second_client {
            cfg = cfg.with_second_client(access_config(spec, seed));
        }
        let tb = Testbed::create(cfg).context("building the namespace testbed")?;
        let mut hosts = vec![Node::Client, Node::Server];
        if second_client {
            hosts.push(Node::Client2);
        }
        for node in hosts {
            tb.run_in(node, tune_tcp_buffers)
                .context("entering an end-host namespace")?
                .context("raising the TCP buffer limits")?;
        }
        let client_ns = tb.netns(Node::Client)?.to_string();
        let server_ns = tb.netns(Node::Server)?.to_string();
        let client2_ns = if second_client {
            Some(tb.netns(Node::Client2)?.to_string())
        } else {
            None
        };
        let routers = match router {
            Some((bin, mode)) => Some(
                Routers::start(&tb, &bin, CAPACITY_MBPS, mode, split_window)
                    .context("starting the mef-router daemons")?,
            ),
            None => None,
        };
        Ok(Self {
            routers,
            tb,
            client_ns,
            server_ns,
            client2_ns,
        })
    }

    /// Name of the second client's namespace, if the testbed has one.
    pub fn client2_ns(&self) -> Option<&str> {
        self.client2_ns.as_deref()
    }

    /// Router A's path counters, if routed.
    pub fn router_counters(&self) -> Option<anyhow::Result<PathCounters>> {
        self.routers.as_ref().map(|r| r.counters(&self.tb))
    }

    /// Whether the routers were configured to split TCP (`None` without routers).
    pub fn split_configured(&self) -> Option<bool> {
        self.routers.as_ref().map(Routers::split_configured)
    }

    /// Whether both router daemons still run (`true` without routers).
    pub fn routers_alive(&mut self) -> bool {
        self.routers.as_mut().is_none_or(Routers::alive)
    }

    /// Name of the client namespace (as `ip netns` knows it).
    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    /// Name of the server namespace.
    pub fn server_ns(&self) -> &str {
        &self.server_ns
    }

    /// The server's address as the client reaches it.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.tb.server_addr()
    }

    /// `direct` without routers; with routers, the configured path (`split` or `tunnel`),
    /// which [`super::run_cells`] confirms per case from the router's counters.
    pub fn path_label(&self) -> &'static str {
        match self.split_configured() {
            None => "direct",
            Some(true) => "split",
            Some(false) => "tunnel",
        }
    }

    /// Packets the emulator's data direction dropped (queue, random loss) so far.
    pub fn wan_drops(&self) -> Option<(u64, u64)> {
        self.tb.emulator().map(|e| {
            let s = e.stats(sim_netem::realtime::Direction::AtoB);
            (s.queue_drops, s.lost)
        })
    }
}

fn tune_tcp_buffers() -> std::io::Result<()> {
    for key in ["tcp_rmem", "tcp_wmem"] {
        std::fs::write(
            format!("/proc/sys/net/ipv4/{key}"),
            format!("4096 131072 {TCP_BUF_MAX}"),
        )?;
    }
    Ok(())
}
