//! The testbed of one cell, built with [`sim_netem::testbed`]: client ns — emulator — server
//! ns (direct), or client ns — router A — emulator — router B — server ns (routed), torn down
//! on drop (the testbed kills every process in its namespaces and deletes them; its Ctrl-C
//! handler does the same and exits with status 130).
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

use super::{CAPACITY_MBPS, CellSpec};

/// Largest TCP buffer of the end hosts.
pub const TCP_BUF_MAX: usize = 32 << 20;

/// A built testbed; dropping it tears every namespace, device and process down.
#[derive(Debug)]
pub struct Bed {
    tb: Testbed,
    client_ns: String,
    server_ns: String,
    path: &'static str,
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

/// The `mef-router` daemon binary: `$MEF_ROUTER_BIN`, else next to the running executable.
/// Errors say why the routed cases cannot run.
pub fn router_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("MEF_ROUTER_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .context("locating the running executable")?
            .parent()
            .map(|d| d.join("mef-router"))
            .context("the running executable has no directory")?,
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
    if !help.status.success() || !text.contains("run") {
        bail!(
            "{} has no `run` subcommand yet (the mef-router daemon is not implemented in this \
             build), so the routed cases cannot run",
            path.display()
        );
    }
    Ok(path)
}

impl Bed {
    /// Builds the testbed for `spec`, with MEF routers at both site edges when `routed`.
    pub fn build(spec: &CellSpec, routed: bool, seed: u64) -> anyhow::Result<Self> {
        if routed {
            let bin = router_binary()?;
            bail!(
                "starting {} in the router namespaces is not wired into the benchmark yet",
                bin.display()
            );
        }
        let tb = Testbed::create(TestbedConfig::direct(emulator_config(spec, seed)))
            .context("building the namespace testbed")?;
        for node in [Node::Client, Node::Server] {
            tb.run_in(node, tune_tcp_buffers)
                .context("entering an end-host namespace")?
                .context("raising the TCP buffer limits")?;
        }
        let client_ns = tb.netns(Node::Client)?.to_string();
        let server_ns = tb.netns(Node::Server)?.to_string();
        Ok(Self {
            tb,
            client_ns,
            server_ns,
            path: "direct",
        })
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

    /// `direct`, `split` or `tunnel`.
    pub fn path_label(&self) -> &'static str {
        self.path
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
