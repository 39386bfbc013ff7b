//! The two `mef-router` daemons of a routed cell, started in the testbed's router namespaces
//! the way `mef-router/tests/e2e_netns.rs` does it: fresh x25519 keys (the library's
//! [`PrivateKey::generate`]), one TOML configuration per router in a private temporary
//! directory, `mef-router run --config FILE` under [`Testbed::spawn_in`], ready when
//! `mef-router status` answers in its namespace, and the tunnel up when a ping from the client
//! reaches the server and router A reports `state established`.
//!
//! Each configuration: the tunnel on the router's WAN address (`wan0`, port 51820), the peer's
//! endpoint its WAN address, this site's LAN prefix and the peer's, both /24 of the testbed's
//! end-host addresses, and the WAN capacity equal to the cell's bottleneck rate.
//!
//! **TCP splitting** (`[split] enabled = true`, RFC 3135 PEP over MEF transport) is asked for
//! when the daemon binary accepts a `[split]` section (probed with `mef-router check-config`),
//! unless `MEF_BENCH_ROUTER_PATH=tunnel` (`split` demands it, `auto`, the default, probes).
//! `MEF_BENCH_ROUTER_BUFFER=BYTES` sets `[wan] buffer_bytes` (default: the daemon's).
//! Which path a case's traffic really took is read from router A's metrics afterwards (see
//! [`Routers::counters`]), not assumed from the configuration.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mef_router::tunnel::PrivateKey;
use sim_netem::testbed::{Node, Testbed};

/// UDP port of the tunnel socket on both routers.
pub const TUNNEL_PORT: u16 = 51820;
/// Environment variable choosing the routed path: `auto` (default), `split` or `tunnel`.
pub const PATH_ENV: &str = "MEF_BENCH_ROUTER_PATH";
/// Environment variable setting the routers' WAN egress buffer in bytes (`[wan]
/// buffer_bytes`); unset, the daemon's default applies. For diagnostics.
pub const BUFFER_ENV: &str = "MEF_BENCH_ROUTER_BUFFER";

/// Reads [`BUFFER_ENV`]: `None` when unset, an error when not a positive integer.
pub fn buffer_from_env() -> anyhow::Result<Option<usize>> {
    match std::env::var(BUFFER_ENV) {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => bail!("{BUFFER_ENV}={v:?}: expected a positive number of bytes"),
        },
    }
}

/// How the routers carry the end hosts' TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMode {
    /// Split when the daemon supports it, else tunnel.
    Auto,
    /// TCP carried end to end inside the encrypted tunnel.
    Tunnel,
    /// TCP terminated at the routers and carried as MEF transport streams.
    Split,
}

impl PathMode {
    /// Reads [`PATH_ENV`]; an unknown value is an error naming the accepted ones.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var(PATH_ENV) {
            Err(_) => Ok(Self::Auto),
            Ok(v) => match v.trim() {
                "" | "auto" => Ok(Self::Auto),
                "tunnel" => Ok(Self::Tunnel),
                "split" => Ok(Self::Split),
                other => bail!("{PATH_ENV}={other:?}: expected `auto`, `split` or `tunnel`"),
            },
        }
    }
}

/// A daemon process, stopped gracefully when dropped.
type Daemon = sim_netem::testbed::StopOnDrop;

/// A private temporary directory, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("mef-bench-kernel-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Router A's counters that tell which path traffic took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathCounters {
    /// `mef_router_split_flows_total{side="ingress"}` (0 when the daemon has no splitting).
    pub split_ingress: f64,
    /// `mef_router_tunnel_tx_bytes_total`, summed over peers.
    pub tunnel_tx_bytes: f64,
    /// `mef_router_split_flows_ended_total{how="reset"}`: split connections that ended with a
    /// reset.
    pub split_resets: f64,
    /// `mef_router_split_lan_events_total{kind="rejected_full"}`: SYNs the splitter refused
    /// because it held its maximum number of connections.
    pub split_rejected_full: f64,
    /// `mef_router_split_lan_events_total{kind="handshake_failed"}`: LAN handshakes with the
    /// splitter that did not complete.
    pub split_handshake_failed: f64,
    /// `mef_router_drops_total`, summed over reasons (egress overflow, policing, malformed,
    /// no route, ...).
    pub drops: f64,
    /// `mef_router_drops_total` by its `reason` label.
    pub drops_by_reason: std::collections::BTreeMap<String, f64>,
    /// `mef_router_mef_packets_total{kind="stamped"}`: MEF packets router A's egress stamped
    /// (MEF-native packets from its LAN and the split connections' MEF packets).
    pub mef_stamped: f64,
}

impl PathCounters {
    /// The path of the traffic between `before` and `self`: `split` when router A split at
    /// least one connection, `tunnel` when it sent at least `min_bytes` into the tunnel, else
    /// `None` (the traffic did not visibly cross the routers).
    pub fn path_since(&self, before: &PathCounters, min_bytes: f64) -> Option<&'static str> {
        if self.split_ingress > before.split_ingress {
            Some("split")
        } else if self.tunnel_tx_bytes - before.tunnel_tx_bytes >= min_bytes {
            Some("tunnel")
        } else {
            None
        }
    }
}

/// Sums the samples of metric `name` (exact name, any labels) in Prometheus text; `label`
/// restricts to samples whose label set contains it.
pub fn metric_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (n, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (head, ""),
            };
            if n != name || label.is_some_and(|want| !labels.contains(want)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// The two running daemons and their configuration directory.
#[derive(Debug)]
pub struct Routers {
    // Daemons stop before the directory goes (field order is drop order).
    a: Daemon,
    b: Daemon,
    _dir: TempDir,
    bin: PathBuf,
    split: bool,
}

/// What one router's configuration says (the format of `dist/mef-router.toml`).
#[derive(Debug)]
pub struct SiteConfig<'a> {
    /// The router's private key (written inline; the file is in a 0700 directory).
    pub key: &'a PrivateKey,
    /// The peer's public key, base64.
    pub peer_pub: &'a str,
    /// This site's LAN prefixes.
    pub lan: &'a [String],
    /// The peer site's LAN prefixes.
    pub remote: &'a [String],
    /// The peer router's tunnel endpoint (its WAN address).
    pub endpoint: SocketAddr,
    /// WAN capacity in Mbit/s.
    pub capacity_mbps: f64,
    /// Whether to enable TCP splitting (`[split] enabled = true`).
    pub split: bool,
    /// `[wan] buffer_bytes`, when not the daemon's default.
    pub buffer_bytes: Option<usize>,
    /// `[split] window_bytes`, when not the daemon's default.
    pub split_window: Option<usize>,
}

impl SiteConfig<'_> {
    /// The TOML text: tunnel on `0.0.0.0:51820`, control on `127.0.0.1:9184` (each router has
    /// its own namespace), TUN `mef0` with routes for the peer prefix.
    pub fn to_toml(&self) -> String {
        let split_section = match (self.split, self.split_window) {
            (false, _) => String::new(),
            (true, None) => "[split]\nenabled = true\n".to_string(),
            (true, Some(w)) => format!("[split]\nenabled = true\nwindow_bytes = {w}\n"),
        };
        let buffer = self
            .buffer_bytes
            .map_or_else(String::new, |b| format!("buffer_bytes = {b}\n"));
        format!(
            r#"listen = "0.0.0.0:{TUNNEL_PORT}"
private_key = "{}"
control = "127.0.0.1:9184"
[tun]
name = "mef0"
[lan]
prefixes = [{}]
[wan]
capacity = "{}kbit"
{buffer}{split_section}[[peer]]
name = "peer"
public_key = "{}"
endpoint = "{}"
prefixes = [{}]
"#,
            self.key.to_base64(),
            toml_list(self.lan),
            (self.capacity_mbps * 1000.0).round() as u64,
            self.peer_pub,
            self.endpoint,
            toml_list(self.remote),
        )
    }
}

/// `"a", "b"` (the inside of a TOML array of strings; prefixes need no escaping).
fn toml_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn slash24(ip: Ipv4Addr) -> String {
    let [a, b, c, _] = ip.octets();
    format!("{a}.{b}.{c}.0/24")
}

/// Whether `bin` accepts a `[split]` section (its `check-config` passes on such a file).
fn supports_split(bin: &Path, dir: &Path) -> anyhow::Result<bool> {
    let k = PrivateKey::generate();
    let peer = PrivateKey::generate().public_key().to_base64();
    let text = SiteConfig {
        key: &k,
        peer_pub: &peer,
        lan: &["10.0.1.0/24".to_string()],
        remote: &["10.0.2.0/24".to_string()],
        endpoint: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, TUNNEL_PORT)),
        capacity_mbps: 100.0,
        split: true,
        buffer_bytes: None,
        split_window: None,
    }
    .to_toml();
    let p = dir.join("probe.toml");
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&p)
        .output()
        .with_context(|| format!("running {} check-config", bin.display()))?;
    Ok(out.status.success())
}

fn start(tb: &Testbed, bin: &Path, node: Node, config: &Path) -> anyhow::Result<Daemon> {
    let log = std::fs::File::create(config.with_extension("log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--config"])
        .arg(config)
        .env("MEF_ROUTER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let child = tb
        .spawn_in(node, cmd)
        .with_context(|| format!("starting {} in {node:?}", bin.display()))?;
    let mut d = sim_netem::testbed::StopOnDrop(child);
    let bin_s = bin.to_string_lossy().into_owned();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(status)) = d.0.try_wait() {
            let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
            bail!(
                "mef-router in {node:?} exited ({status}) at start: {}",
                log.trim()
            );
        }
        let out = tb.exec(node, &[&bin_s, "status"])?;
        if out.status.success() {
            return Ok(d);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("mef-router in {node:?} did not answer `status` within 10 s")
}

impl Routers {
    /// Generates keys, writes both configurations, starts router A and B in `tb` (which must
    /// have router namespaces) with WAN capacity `capacity_mbps`, and waits until a ping from
    /// the client reaches the server through the tunnel.
    pub fn start(
        tb: &Testbed,
        bin: &Path,
        capacity_mbps: f64,
        mode: PathMode,
        split_window: Option<usize>,
    ) -> anyhow::Result<Self> {
        let (Some(a_wan), Some(b_wan)) = (
            tb.router_wan_addr(Node::RouterA),
            tb.router_wan_addr(Node::RouterB),
        ) else {
            bail!("the testbed has no router namespaces");
        };
        let buffer_bytes = buffer_from_env()?;
        let dir = TempDir::new()?;
        let split = match mode {
            PathMode::Tunnel => false,
            PathMode::Auto => supports_split(bin, &dir.0)?,
            PathMode::Split => {
                if !supports_split(bin, &dir.0)? {
                    bail!(
                        "{PATH_ENV}=split but {} does not accept a [split] section",
                        bin.display()
                    );
                }
                true
            }
        };
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        // The second client (if any) sits behind router A too.
        let lan_a: Vec<String> = std::iter::once(tb.client_addr())
            .chain(tb.client2_addr())
            .map(slash24)
            .collect();
        let lan_b = vec![slash24(tb.server_addr())];
        let ep = |ip| SocketAddr::V4(SocketAddrV4::new(ip, TUNNEL_PORT));
        let write = |name: &str, text: String| -> anyhow::Result<PathBuf> {
            let p = dir.0.join(format!("{name}.toml"));
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        let (pa, pb) = (ka.public_key().to_base64(), kb.public_key().to_base64());
        // The two sites differ only in whose key, LAN and peer endpoint they hold.
        let site = |key, peer_pub, lan, remote, endpoint| {
            SiteConfig {
                key,
                peer_pub,
                lan,
                remote,
                endpoint,
                capacity_mbps,
                split,
                buffer_bytes,
                split_window,
            }
            .to_toml()
        };
        let cfg_a = write("a", site(&ka, &pb, &lan_a, &lan_b, ep(b_wan)))?;
        let cfg_b = write("b", site(&kb, &pa, &lan_b, &lan_a, ep(a_wan)))?;
        let a = start(tb, bin, Node::RouterA, &cfg_a)?;
        let b = start(tb, bin, Node::RouterB, &cfg_b)?;
        let r = Self {
            a,
            b,
            _dir: dir,
            bin: bin.to_path_buf(),
            split,
        };
        r.wait_tunnel(tb)?;
        Ok(r)
    }

    /// Pings the server from the client until one answer (at most 15 s), then checks that
    /// router A reports the tunnel `established`.
    fn wait_tunnel(&self, tb: &Testbed) -> anyhow::Result<()> {
        let server = tb.server_addr().to_string();
        let t = Instant::now();
        loop {
            let out = tb.exec(Node::Client, &["ping", "-c", "1", "-W", "1", "-q", &server])?;
            if out.status.success() {
                break;
            }
            if t.elapsed() > Duration::from_secs(15) {
                bail!(
                    "no ping from the client reached the server through the routers within 15 s \
                     (router A status: {})",
                    self.status(tb).unwrap_or_else(|e| format!("{e:#}"))
                );
            }
        }
        // The status is refreshed about once a second: poll it for a few seconds.
        let t = Instant::now();
        loop {
            let st = self.status(tb)?;
            if st.contains("state established") {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(5) {
                let routes = tb
                    .exec(Node::RouterA, &["ip", "route"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                bail!(
                    "ping passed but router A does not report an established tunnel:\n{st}\n\
                     router A routes:\n{routes}"
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Router A's human-readable status (`mef-router status`).
    pub fn status(&self, tb: &Testbed) -> anyhow::Result<String> {
        self.query(tb, Node::RouterA, false)
    }

    fn query(&self, tb: &Testbed, node: Node, metrics: bool) -> anyhow::Result<String> {
        let bin = self.bin.to_string_lossy().into_owned();
        let mut args = vec![bin.as_str(), "status"];
        if metrics {
            args.push("--metrics");
        }
        let out = tb.exec(node, &args)?;
        if !out.status.success() {
            bail!(
                "`mef-router status` in {node:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Router A's path counters now (its metrics refresh about once a second).
    pub fn counters(&self, tb: &Testbed) -> anyhow::Result<PathCounters> {
        let m = self.query(tb, Node::RouterA, true)?;
        Ok(PathCounters {
            split_ingress: metric_sum(&m, "mef_router_split_flows_total", Some("side=\"ingress\"")),
            tunnel_tx_bytes: metric_sum(&m, "mef_router_tunnel_tx_bytes_total", None),
            split_resets: metric_sum(
                &m,
                "mef_router_split_flows_ended_total",
                Some("how=\"reset\""),
            ),
            split_rejected_full: metric_sum(
                &m,
                "mef_router_split_lan_events_total",
                Some("kind=\"rejected_full\""),
            ),
            split_handshake_failed: metric_sum(
                &m,
                "mef_router_split_lan_events_total",
                Some("kind=\"handshake_failed\""),
            ),
            drops: metric_sum(&m, "mef_router_drops_total", None),
            drops_by_reason: drops_by_reason(&m),
            mef_stamped: metric_sum(&m, "mef_router_mef_packets_total", Some("kind=\"stamped\"")),
        })
    }

    /// Whether splitting was configured.
    pub fn split_configured(&self) -> bool {
        self.split
    }

    /// Whether both daemons are still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.a.0.try_wait(), Ok(None)) && matches!(self.b.0.try_wait(), Ok(None))
    }
}

/// The samples of `mef_router_drops_total{reason="..."}` in Prometheus text, by reason.
pub fn drops_by_reason(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("mef_router_drops_total{")?;
            let reason = rest.split("reason=\"").nth(1)?.split('"').next()?;
            let value = l.rsplit_once(' ')?.1.parse::<f64>().ok()?;
            Some((reason.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_metrics_by_name_and_label() {
        let m = "# HELP x y\n# TYPE mef_router_split_flows_total counter\n\
                 mef_router_split_flows_total{side=\"ingress\"} 3\n\
                 mef_router_split_flows_total{side=\"egress\"} 5\n\
                 mef_router_tunnel_tx_bytes_total{peer=\"a\"} 100\n\
                 mef_router_tunnel_tx_bytes_total{peer=\"b\"} 50\n\
                 mef_router_tunnel_tx_bytes_total_extra 7\n\
                 garbage line\n";
        assert_eq!(
            metric_sum(m, "mef_router_split_flows_total", Some("side=\"ingress\"")),
            3.0
        );
        assert_eq!(
            metric_sum(m, "mef_router_tunnel_tx_bytes_total", None),
            150.0
        );
        assert_eq!(metric_sum(m, "absent", None), 0.0);
        let d = drops_by_reason(
            "mef_router_drops_total{reason=\"overflow\"} 4\nmef_router_drops_total{reason=\"bad_mac1\"} 0\n",
        );
        assert_eq!(d.get("overflow"), Some(&4.0));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn path_from_counter_deltas() {
        let b = PathCounters {
            split_ingress: 1.0,
            tunnel_tx_bytes: 1000.0,
            ..PathCounters::default()
        };
        let split = PathCounters {
            split_ingress: 2.0,
            tunnel_tx_bytes: 1000.0,
            ..PathCounters::default()
        };
        let tunnel = PathCounters {
            split_ingress: 1.0,
            tunnel_tx_bytes: 1e6,
            ..PathCounters::default()
        };
        assert_eq!(split.path_since(&b, 1e5), Some("split"));
        assert_eq!(tunnel.path_since(&b, 1e5), Some("tunnel"));
        assert_eq!(b.path_since(&b, 1e5), None);
    }

    #[test]
    fn config_has_the_cell_capacity_and_prefixes() {
        let k = PrivateKey::generate();
        let t = SiteConfig {
            key: &k,
            peer_pub: "PEER",
            lan: &["10.77.1.0/24".to_string(), "10.77.4.0/24".to_string()],
            remote: &["10.77.3.0/24".to_string()],
            endpoint: "10.77.2.2:51820".parse().expect("addr"),
            capacity_mbps: 100.0,
            split: false,
            buffer_bytes: Some(1000),
            split_window: None,
        }
        .to_toml();
        assert!(t.contains("capacity = \"100000kbit\""), "{t}");
        assert!(t.contains("endpoint = \"10.77.2.2:51820\""), "{t}");
        assert!(
            t.contains("prefixes = [\"10.77.1.0/24\", \"10.77.4.0/24\"]"),
            "{t}"
        );
        assert!(t.contains("prefixes = [\"10.77.3.0/24\"]"), "{t}");
        assert!(!t.contains("[split]"));
        assert!(t.contains("buffer_bytes = 1000\n"), "{t}");
        assert_eq!(slash24(Ipv4Addr::new(10, 77, 3, 2)), "10.77.3.0/24");
    }
}
