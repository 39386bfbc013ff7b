//! A testbed of network namespaces: client site — emulated WAN — server site, with or without
//! an MEF router namespace at each site edge (Linux only, root).
//!
//! ```text
//!  with routers:
//!  client ──veth── rtrA ──veth── emu ──veth── rtrB ──veth── server
//!  eth0   10.77.1/24 lan0  wan0  10.77.2/24  wan0  lan0  10.77.3/24  eth0
//!   .2               .1    .1   (wan-a|wan-b) .2   .1               .2
//!
//!  without routers:
//!  client ──veth── emu ──veth── server
//!  eth0 10.77.2.1  (wan-a|wan-b)  eth0 10.77.2.2
//! ```
//!
//! **Second client** ([`TestbedConfig::with_second_client`]): a host `cl2` (10.77.4.2/24,
//! interface `eth0`) behind its own access emulator `em2` (interfaces `acc-a`, `acc-b`), attached
//! to the client site's edge on `lan1` (10.77.4.1/24): router A when there are routers, else the
//! client host itself, which then forwards. Its traffic shares the WAN emulator with the client's
//! and adds the access emulator's delay, so two flows with different RTTs meet at one
//! bottleneck (there is no netem qdisc on the kernels this runs on).
//!
//! ```text
//!  cl2 eth0 ──veth── em2 (acc-a|acc-b) ──veth── lan1 of rtrA (routed) or of client (direct)
//!  10.77.4.2                                      10.77.4.1
//! ```
//!
//! The `emu` namespace has no addresses: the [`Emulator`] forwards frames between `wan-a` and
//! `wan-b` like a two-port bridge, so the WAN segment 10.77.2.0/24 spans it. The emulator runs
//! **in this process**, as threads whose packet sockets were opened in the `emu` namespace by a
//! helper thread ([`Emulator::start_in_netns`]); this keeps its counters readable
//! ([`Testbed::emulator`]) and needs no binary on the path. (`mef-netem` does the same job as a
//! separate process, for use outside Rust.) Router namespaces have IPv4 forwarding on and the
//! interfaces `lan0`, `wan0`; a caller starts its router there with [`Testbed::spawn_in`].
//!
//! Every veth is created directly inside its namespaces (nothing ever appears in the caller's
//! namespace), with IPv6 disabled and all offloads off (see
//! [`crate::realtime`](crate::realtime#offloads)). Namespace names are unique per process and
//! testbed (`mef<pid>-<n>-<role>`), so testbeds can run in parallel.
//!
//! **Teardown** ([`Testbed::teardown`], `Drop`, including during a panic, and Ctrl-C through a
//! `ctrlc` handler installed by the first testbed): the emulator is stopped, every process
//! living in a testbed namespace is killed (found by namespace, as `ip netns pids` does, so
//! grandchildren go too), and the namespaces are deleted, which destroys their veths.

mod netns;

use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::{io, net::Ipv4Addr};

use thiserror::Error;

use crate::realtime::{Emulator, EmulatorConfig, EmulatorError, disable_offloads};

pub use netns::{StopOnDrop, is_root};

/// A namespace of the testbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The client host (interface `eth0`).
    Client,
    /// The router at the client site's edge (`lan0` towards the client, `wan0` towards the WAN).
    RouterA,
    /// The WAN emulator (interfaces `wan-a` and `wan-b`, no addresses).
    Emu,
    /// The router at the server site's edge (`wan0` towards the WAN, `lan0` towards the server).
    RouterB,
    /// The server host (interface `eth0`).
    Server,
    /// The second client host (interface `eth0`), see [`TestbedConfig::with_second_client`].
    Client2,
    /// The second client's access-link emulator (interfaces `acc-a` and `acc-b`).
    Emu2,
}

impl Node {
    fn role(self) -> &'static str {
        match self {
            Node::Client => "cli",
            Node::RouterA => "rta",
            Node::Emu => "emu",
            Node::RouterB => "rtb",
            Node::Server => "srv",
            Node::Client2 => "cl2",
            Node::Emu2 => "em2",
        }
    }
}

/// The emulator's interface towards the client site.
pub const EMU_IFACE_A: &str = "wan-a";
/// The emulator's interface towards the server site.
pub const EMU_IFACE_B: &str = "wan-b";
/// The access emulator's interface towards the second client.
pub const ACCESS_IFACE_A: &str = "acc-a";
/// The access emulator's interface towards the client site's edge.
pub const ACCESS_IFACE_B: &str = "acc-b";

/// What to build.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// Put a router namespace at each site edge.
    pub routers: bool,
    /// Start the emulator with this configuration (A = client side); `None` leaves the WAN
    /// unbridged until [`Testbed::start_emulator`].
    pub emulator: Option<EmulatorConfig>,
    /// Install a Ctrl-C handler that tears down every live testbed and exits with status 130.
    pub handle_ctrlc: bool,
    /// Add a second client behind its own access emulator with this configuration (A = the
    /// second client's side); see the [module docs](self).
    pub second_client: Option<EmulatorConfig>,
}

impl TestbedConfig {
    /// A testbed without routers whose WAN is emulated by `emulator`.
    pub fn direct(emulator: EmulatorConfig) -> Self {
        Self {
            routers: false,
            emulator: Some(emulator),
            handle_ctrlc: true,
            second_client: None,
        }
    }

    /// A testbed with a router namespace at each edge whose WAN is emulated by `emulator`.
    pub fn with_routers(emulator: EmulatorConfig) -> Self {
        Self {
            routers: true,
            ..Self::direct(emulator)
        }
    }

    /// Adds a second client host behind an access link emulated by `access` (A = the second
    /// client's side), attached to the client site's edge.
    pub fn with_second_client(mut self, access: EmulatorConfig) -> Self {
        self.second_client = Some(access);
        self
    }
}

/// Why building or using a testbed failed.
#[derive(Debug, Error)]
pub enum TestbedError {
    /// Namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
    #[error("the testbed needs root")]
    NotRoot,
    /// A command failed.
    #[error("`{cmd}` failed: {reason}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its error output or why it could not run.
        reason: String,
    },
    /// This testbed has no such namespace (a router slot of a testbed without routers).
    #[error("this testbed has no {0:?} namespace")]
    NoSuchNode(Node),
    /// Entering a namespace or another system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The emulator did not start.
    #[error("emulator: {0}")]
    Emulator(#[from] EmulatorError),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Namespaces of live testbeds, for the Ctrl-C handler: (testbed id, namespace names).
static LIVE: Mutex<Vec<(u64, Vec<String>)>> = Mutex::new(Vec::new());

fn register(id: u64, names: &[String]) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|(i, _)| *i != id);
    live.push((id, names.to_vec()));
}

fn unregister(id: u64) {
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(i, _)| *i != id);
}

fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let r = ctrlc::set_handler(|| {
            let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|p| p.into_inner()));
            for (_, names) in live {
                netns::destroy(&names);
            }
            std::process::exit(130);
        });
        if let Err(e) = r {
            tracing::warn!("testbed: no Ctrl-C cleanup handler ({e}); Drop still cleans up");
        }
    });
}

/// A built testbed. Dropping it tears it down.
#[derive(Debug)]
pub struct Testbed {
    id: u64,
    routers: bool,
    /// Created namespaces, in creation order, with their node.
    ns: Vec<(Node, String)>,
    emulator: Option<Emulator>,
    /// The second client's access emulator.
    access: Option<Emulator>,
}

impl Testbed {
    /// Builds the namespaces, veths, addresses and routes, then starts the emulator if
    /// configured. On failure everything created so far is removed.
    pub fn create(cfg: TestbedConfig) -> Result<Self, TestbedError> {
        if !is_root() {
            return Err(TestbedError::NotRoot);
        }
        if cfg.handle_ctrlc {
            install_ctrlc();
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut tb = Self {
            id,
            routers: cfg.routers,
            ns: Vec::new(),
            emulator: None,
            access: None,
        };
        let mut nodes: Vec<Node> = if cfg.routers {
            vec![
                Node::Client,
                Node::RouterA,
                Node::Emu,
                Node::RouterB,
                Node::Server,
            ]
        } else {
            vec![Node::Client, Node::Emu, Node::Server]
        };
        if cfg.second_client.is_some() {
            nodes.extend([Node::Client2, Node::Emu2]);
        }
        for node in nodes {
            let name = format!("mef{}-{}-{}", std::process::id(), id, node.role());
            // Registered before it exists, so a Ctrl-C during creation removes it too.
            tb.ns.push((node, name.clone()));
            register(id, &tb.names());
            netns::ip(&["netns", "add", &name])?;
        }
        tb.wire()?;
        if let Some(acfg) = cfg.second_client {
            tb.wire_second_client()?;
            let ns = tb.netns(Node::Emu2)?.to_string();
            tb.access = Some(Emulator::start_in_netns(
                &ns,
                ACCESS_IFACE_A,
                ACCESS_IFACE_B,
                acfg,
            )?);
        }
        if let Some(ecfg) = cfg.emulator {
            tb.start_emulator(ecfg)?;
        }
        Ok(tb)
    }

    fn names(&self) -> Vec<String> {
        self.ns.iter().map(|(_, n)| n.clone()).collect()
    }

    /// Creates a veth pair `a_if`@`a` — `b_if`@`b` with offloads off and both ends up.
    fn veth(&self, a: Node, a_if: &str, b: Node, b_if: &str) -> Result<(), TestbedError> {
        let (na, nb) = (self.netns(a)?, self.netns(b)?);
        netns::ip(&[
            "-n", na, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", nb,
        ])?;
        for (ns, dev) in [(na, a_if), (nb, b_if)] {
            disable_offloads(Some(ns), dev)?;
            netns::ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    fn addr(&self, node: Node, dev: &str, cidr: &str) -> Result<(), TestbedError> {
        netns::ip(&["-n", self.netns(node)?, "addr", "add", cidr, "dev", dev])
    }

    fn route(&self, node: Node, dst: &str, via: &str) -> Result<(), TestbedError> {
        netns::ip(&["-n", self.netns(node)?, "route", "add", dst, "via", via])
    }

    fn wire(&self) -> Result<(), TestbedError> {
        let second = self.has_second_client();
        for (node, name) in &self.ns {
            netns::ip(&["-n", name, "link", "set", "lo", "up"])?;
            // Without routers the client host is the second client's edge and forwards.
            let forward = matches!(node, Node::RouterA | Node::RouterB)
                || (second && !self.routers && *node == Node::Client);
            netns::sysctls(name, forward)?;
        }
        if self.routers {
            self.veth(Node::Client, "eth0", Node::RouterA, "lan0")?;
            self.veth(Node::RouterA, "wan0", Node::Emu, EMU_IFACE_A)?;
            self.veth(Node::Emu, EMU_IFACE_B, Node::RouterB, "wan0")?;
            self.veth(Node::RouterB, "lan0", Node::Server, "eth0")?;
            self.addr(Node::Client, "eth0", "10.77.1.2/24")?;
            self.addr(Node::RouterA, "lan0", "10.77.1.1/24")?;
            self.addr(Node::RouterA, "wan0", "10.77.2.1/24")?;
            self.addr(Node::RouterB, "wan0", "10.77.2.2/24")?;
            self.addr(Node::RouterB, "lan0", "10.77.3.1/24")?;
            self.addr(Node::Server, "eth0", "10.77.3.2/24")?;
            self.route(Node::Client, "default", "10.77.1.1")?;
            self.route(Node::RouterA, "10.77.3.0/24", "10.77.2.2")?;
            self.route(Node::RouterB, "10.77.1.0/24", "10.77.2.1")?;
            self.route(Node::Server, "default", "10.77.3.1")?;
        } else {
            self.veth(Node::Client, "eth0", Node::Emu, EMU_IFACE_A)?;
            self.veth(Node::Emu, EMU_IFACE_B, Node::Server, "eth0")?;
            self.addr(Node::Client, "eth0", "10.77.2.1/24")?;
            self.addr(Node::Server, "eth0", "10.77.2.2/24")?;
        }
        Ok(())
    }

    /// Wires the second client: `cl2` — `em2` — `lan1` of the client site's edge (router A, or
    /// the client host without routers), addresses and routes both ways.
    fn wire_second_client(&self) -> Result<(), TestbedError> {
        let edge = if self.routers {
            Node::RouterA
        } else {
            Node::Client
        };
        self.veth(Node::Client2, "eth0", Node::Emu2, ACCESS_IFACE_A)?;
        self.veth(Node::Emu2, ACCESS_IFACE_B, edge, "lan1")?;
        self.addr(Node::Client2, "eth0", "10.77.4.2/24")?;
        self.addr(edge, "lan1", "10.77.4.1/24")?;
        self.route(Node::Client2, "default", "10.77.4.1")?;
        if self.routers {
            self.route(Node::RouterB, "10.77.4.0/24", "10.77.2.1")?;
        } else {
            self.route(Node::Server, "10.77.4.0/24", "10.77.2.1")?;
        }
        Ok(())
    }

    /// Whether the testbed has a second client ([`TestbedConfig::with_second_client`]).
    pub fn has_second_client(&self) -> bool {
        self.ns.iter().any(|(n, _)| *n == Node::Client2)
    }

    /// The second client's address, if there is one.
    pub fn client2_addr(&self) -> Option<Ipv4Addr> {
        self.has_second_client()
            .then_some(Ipv4Addr::new(10, 77, 4, 2))
    }

    /// The second client's access emulator, for its counters.
    pub fn access_emulator(&self) -> Option<&Emulator> {
        self.access.as_ref()
    }

    /// Whether the testbed has router namespaces.
    pub fn has_routers(&self) -> bool {
        self.routers
    }

    /// The network namespace name of `node` (for `ip netns exec`).
    pub fn netns(&self, node: Node) -> Result<&str, TestbedError> {
        self.ns
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, name)| name.as_str())
            .ok_or(TestbedError::NoSuchNode(node))
    }

    /// The client's address.
    pub fn client_addr(&self) -> Ipv4Addr {
        if self.routers {
            Ipv4Addr::new(10, 77, 1, 2)
        } else {
            Ipv4Addr::new(10, 77, 2, 1)
        }
    }

    /// The server's address.
    pub fn server_addr(&self) -> Ipv4Addr {
        if self.routers {
            Ipv4Addr::new(10, 77, 3, 2)
        } else {
            Ipv4Addr::new(10, 77, 2, 2)
        }
    }

    /// A router's address on the WAN (`wan0`), if there are routers.
    pub fn router_wan_addr(&self, node: Node) -> Option<Ipv4Addr> {
        match (self.routers, node) {
            (true, Node::RouterA) => Some(Ipv4Addr::new(10, 77, 2, 1)),
            (true, Node::RouterB) => Some(Ipv4Addr::new(10, 77, 2, 2)),
            _ => None,
        }
    }

    /// Starts (or restarts with a new configuration) the emulator between `wan-a` and `wan-b`.
    pub fn start_emulator(&mut self, cfg: EmulatorConfig) -> Result<&Emulator, TestbedError> {
        self.stop_emulator();
        let ns = self.netns(Node::Emu)?.to_string();
        let emu = Emulator::start_in_netns(&ns, EMU_IFACE_A, EMU_IFACE_B, cfg)?;
        Ok(self.emulator.insert(emu))
    }

    /// Stops the emulator (the WAN then carries nothing).
    pub fn stop_emulator(&mut self) {
        self.emulator = None;
    }

    /// The running emulator, for its counters.
    pub fn emulator(&self) -> Option<&Emulator> {
        self.emulator.as_ref()
    }

    /// Runs `args` (program first) in `node`'s namespace with `ip netns exec` and waits.
    pub fn exec(&self, node: Node, args: &[&str]) -> Result<Output, TestbedError> {
        let ns = self.netns(node)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(args);
        cmd.output().map_err(|e| TestbedError::Command {
            cmd: format!("ip netns exec {ns} {}", args.join(" ")),
            reason: e.to_string(),
        })
    }

    /// Spawns `cmd` inside `node`'s network namespace (forked from a helper thread that entered
    /// it, so `cmd`'s stdio and environment settings are kept). The process, and anything it
    /// starts in the namespace, is killed at teardown; the caller may wait or kill it earlier.
    pub fn spawn_in(&self, node: Node, mut cmd: Command) -> Result<Child, TestbedError> {
        self.run_in(node, move || cmd.spawn())?
            .map_err(|e| TestbedError::Io {
                what: "spawning a process in the testbed".into(),
                source: e,
            })
    }

    /// Runs `f` on a thread that has entered `node`'s network namespace (sockets it opens live
    /// there) and returns its result. A panic in `f` is resumed on the caller.
    pub fn run_in<F, R>(&self, node: Node, f: F) -> Result<R, TestbedError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let ns = self.netns(node)?;
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                crate::realtime::enter_netns(ns).map_err(|source| TestbedError::Io {
                    what: format!("entering namespace {ns}"),
                    source,
                })?;
                Ok(f())
            });
            match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Spawns a long-running thread in `node`'s namespace (for servers in tests).
    pub fn thread_in<F, R>(
        &self,
        node: Node,
        f: F,
    ) -> Result<std::thread::JoinHandle<R>, TestbedError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let ns = self.netns(node)?.to_string();
        std::thread::Builder::new()
            .name(format!("tb-{}", node.role()))
            .spawn(move || {
                if let Err(e) = crate::realtime::enter_netns(&ns) {
                    panic!("cannot enter namespace {ns}: {e}");
                }
                f()
            })
            .map_err(|e| TestbedError::Io {
                what: "spawning a thread".into(),
                source: e,
            })
    }

    /// Tears everything down now (Drop does the same).
    pub fn teardown(mut self) {
        self.cleanup();
    }

    fn cleanup(&mut self) {
        self.emulator = None;
        self.access = None;
        let names = self.names();
        self.ns.clear();
        netns::destroy(&names);
        unregister(self.id);
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// How long teardown waits for killed processes to disappear.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(2);
