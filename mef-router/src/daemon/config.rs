//! The daemon's TOML configuration. Every value is parsed while deserializing, so a bad value is
//! reported with the line, column and dotted field name of where it stands in the file.
//!
//! ```toml
//! listen = "0.0.0.0:51820"                 # UDP address of the tunnel socket
//! private_key_file = "/etc/mef-router/private.key"   # or: private_key = "<base64>"
//! control = "127.0.0.1:9184"               # HTTP: /metrics (Prometheus) and /status
//! handshake_load_threshold = 100           # handshakes/s before cookies are demanded
//!
//! [tun]
//! name = "mef0"
//! address = "10.255.0.1/32"                # optional
//! mtu = 1420
//! routes = true                            # add `ip route` entries for peer prefixes
//!
//! [lan]
//! prefixes = ["10.1.0.0/24"]               # this site's LAN (informational, for status)
//!
//! [wan]
//! capacity = "100mbit"                     # tc units: bit, kbit, mbit, gbit
//! buffer_bytes = 150000
//! socket_buffer_bytes = 4194304            # UDP socket send/receive buffers (kernel side)
//!
//! [split]
//! enabled = false                          # TCP splitting over MEF transport (RFC 3135 PEP)
//! port = 51821                             # MEF transport UDP port (same on every router)
//! window_bytes = 262144                    # per-connection TCP window towards the LAN hosts
//! max_connections = 1024                   # split connections held at once
//!
//! [[peer]]
//! name = "site-b"
//! public_key = "<base64>"
//! endpoint = "192.0.2.2:51820"             # optional: learned from the peer's first packet
//! prefixes = ["10.2.0.0/24"]               # remote LAN: routed to this peer, allowed from it
//! persistent_keepalive = "25s"             # optional
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use thiserror::Error;

use crate::tunnel::{PresharedKey, PrivateKey, PublicKey};

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A field is missing, unknown, or has a bad value.
    #[error("{path}:{line}:{column}: field `{field}`: {message}")]
    Field {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted field name, e.g. `wan.capacity` or `peer.public_key`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A constraint across fields does not hold.
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The field concerned.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// An IPv4 prefix such as `10.1.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// Network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Prefix {
    /// The network mask.
    pub fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|e| format!("bad IPv4 address {a:?}: {e}"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|&l| l <= 32)
            .ok_or_else(|| format!("bad prefix length {l:?} (0..=32)"))?;
        let mut p = Prefix { addr, len };
        p.addr = Ipv4Addr::from(u32::from(addr) & p.mask());
        Ok(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Parses a rate in `tc` units (`sim_netem::units::parse_rate`: `bit`, `kbit`, `mbit`, `gbit`
/// in bits per second, `bps`, `kbps`, `mbps`, `gbps` in bytes per second, as `tc` reads them; a
/// bare number is bits per second) and checks it is within 1 kbit/s .. 1,000 gbit/s.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bps = sim_netem::units::parse_rate(s).map_err(|e| format!("bad rate {s:?}: {e}"))?;
    if !(1_000..=1_000_000_000_000).contains(&bps) {
        return Err(format!("rate {s:?} out of range (1kbit..1000gbit)"));
    }
    Ok(bps)
}

fn from_str_de<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(de::Error::custom)
}

fn prefixes_de<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Prefix>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| s.parse().map_err(de::Error::custom))
        .collect()
}

fn rate_de<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_rate(&s).map_err(de::Error::custom)
}

fn pubkey_de<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
    let s = String::deserialize(d)?;
    PublicKey::from_base64(&s).map_err(de::Error::custom)
}

fn privkey_de<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PrivateKey>, D::Error> {
    let s = zeroize::Zeroizing::new(String::deserialize(d)?);
    PrivateKey::from_base64(&s)
        .map(Some)
        .map_err(de::Error::custom)
}

fn psk_de<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PresharedKey>, D::Error> {
    let s = zeroize::Zeroizing::new(String::deserialize(d)?);
    PresharedKey::from_base64(&s)
        .map(Some)
        .map_err(de::Error::custom)
}

fn duration_de<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map(Some)
        .map_err(|e| de::Error::custom(format!("bad duration {s:?}: {e}")))
}

fn prefix_opt_de<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Prefix>, D::Error> {
    from_str_de(d).map(Some)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 51820))
}
fn default_control() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9184))
}
fn default_threshold() -> u32 {
    100
}
fn default_tun_name() -> String {
    "mef0".into()
}
fn default_mtu() -> u16 {
    1420
}
fn default_true() -> bool {
    true
}
fn default_buffer() -> usize {
    150_000
}

/// 4 MiB: 33 ms at 1 Gbit/s, 330 ms at 100 Mbit/s. Linux's default (`net.core.rmem_default`,
/// about 208 KiB) holds only ~90 full-size datagrams, so a router that is descheduled for ~10 ms
/// at 100 Mbit/s loses tunnel packets in its own socket (`RcvbufErrors` in /proc/net/snmp).
fn default_socket_buffer() -> usize {
    4 << 20
}

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// UDP address the tunnel socket binds.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Base64 private key inline (prefer `private_key_file`).
    #[serde(default, deserialize_with = "privkey_de")]
    pub private_key: Option<PrivateKey>,
    /// File holding the base64 private key (as written by `mef-router keygen`).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// Address of the HTTP control/metrics endpoint.
    #[serde(default = "default_control")]
    pub control: SocketAddr,
    /// Handshake messages per second above which cookies are demanded.
    #[serde(default = "default_threshold")]
    pub handshake_load_threshold: u32,
    /// The TUN device.
    #[serde(default)]
    pub tun: TunConfig,
    /// This site's LAN.
    #[serde(default)]
    pub lan: LanConfig,
    /// The WAN link.
    pub wan: WanConfig,
    /// TCP splitting (RFC 3135 PEP) over MEF transport.
    #[serde(default)]
    pub split: SplitSection,
    /// Peer routers.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
}

fn default_split_port() -> u16 {
    51821
}

/// `[split]`: TCP connections from the LAN to a peer's prefixes are terminated here and carried
/// as MEF transport streams to the peer router, which re-originates them (RFC 3135 §2.3).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSection {
    /// Whether TCP is split (default false: TCP goes through the tunnel like any packet).
    #[serde(default)]
    pub enabled: bool,
    /// UDP port of the MEF transport socket, on this router and on every peer's endpoint
    /// address (default 51821). MEF transport has its own Noise IK encryption, keyed with the
    /// same static key as the tunnel.
    #[serde(default = "default_split_port")]
    pub port: u16,
    /// Receive and send buffer per split connection in bytes (default 262144), which is also
    /// the TCP window the router offers the LAN host. A LAN host `d` seconds away gets at most
    /// `window_bytes / d`: raise it when clients sit behind long access links. Memory is
    /// committed as data is buffered, up to twice this per connection.
    #[serde(default = "default_split_window")]
    pub window_bytes: usize,
    /// Split connections held at once, including ones lingering in TIME-WAIT (default 1024);
    /// further SYNs are refused with a RST.
    #[serde(default = "default_split_max_connections")]
    pub max_connections: usize,
}

fn default_split_window() -> usize {
    crate::split::SplitConfig::default().rx_buffer
}

fn default_split_max_connections() -> usize {
    crate::split::SplitConfig::default().max_connections
}

impl Default for SplitSection {
    fn default() -> Self {
        Self {
            enabled: false,
            port: default_split_port(),
            window_bytes: default_split_window(),
            max_connections: default_split_max_connections(),
        }
    }
}

/// `[tun]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunConfig {
    /// Interface name.
    #[serde(default = "default_tun_name")]
    pub name: String,
    /// Optional address/prefix for the interface.
    #[serde(default, deserialize_with = "prefix_opt_de")]
    pub address: Option<Prefix>,
    /// Interface MTU (1500 minus IP, UDP and tunnel overhead, like WireGuard's 1420).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Whether to add `ip route replace PREFIX dev NAME` for every peer prefix.
    #[serde(default = "default_true")]
    pub routes: bool,
}

impl Default for TunConfig {
    fn default() -> Self {
        Self {
            name: default_tun_name(),
            address: None,
            mtu: default_mtu(),
            routes: true,
        }
    }
}

/// `[lan]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanConfig {
    /// The site's LAN prefixes.
    #[serde(default, deserialize_with = "prefixes_de")]
    pub prefixes: Vec<Prefix>,
}

/// `[wan]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    /// Link capacity in bits/s (`"100mbit"`); the egress is shaped to it.
    #[serde(deserialize_with = "rate_de")]
    pub capacity: u64,
    /// Egress buffer in bytes.
    #[serde(default = "default_buffer")]
    pub buffer_bytes: usize,
    /// Kernel send and receive buffer of each UDP socket (tunnel and split transport), bytes.
    /// Set with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` when the daemon has `CAP_NET_ADMIN`, else
    /// with `SO_RCVBUF`/`SO_SNDBUF`, which the kernel caps at `net.core.rmem_max`/`wmem_max`;
    /// the size obtained is logged.
    #[serde(default = "default_socket_buffer")]
    pub socket_buffer_bytes: usize,
}

/// One `[[peer]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// A name for logs and metrics.
    #[serde(default)]
    pub name: Option<String>,
    /// The peer's static public key.
    #[serde(deserialize_with = "pubkey_de")]
    pub public_key: PublicKey,
    /// Optional pre-shared key (psk2).
    #[serde(default, deserialize_with = "psk_de")]
    pub preshared_key: Option<PresharedKey>,
    /// The peer's UDP endpoint; learned from its packets if absent.
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    /// The peer's LAN prefixes: packets to them go to this peer, packets from it must come from
    /// them (cryptokey routing, WireGuard paper §2).
    #[serde(deserialize_with = "prefixes_de")]
    pub prefixes: Vec<Prefix>,
    /// Persistent keepalive interval.
    #[serde(default, deserialize_with = "duration_de")]
    pub persistent_keepalive: Option<Duration>,
}

impl PeerConfig {
    /// The name, or the start of the public key.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.public_key.to_base64()[..8].to_string())
    }
}

/// The dotted name of the key on the line containing byte `at`, with the nearest table header.
fn field_at(text: &str, at: usize) -> String {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string());
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    });
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "<top level>".into(),
    }
}

impl Config {
    /// Parses configuration text; `path` only labels errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigFileError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let start = e.span().map_or(0, |s| s.start).min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            let column = start - text[..start].rfind('\n').map_or(0, |i| i + 1) + 1;
            let mut field = field_at(text, start);
            let message = e.message().trim().to_string();
            // serde names missing/unknown fields itself; prefer that name.
            for marker in ["missing field `", "unknown field `"] {
                if let Some(rest) = message.split(marker).nth(1)
                    && let Some(name) = rest.split('`').next()
                {
                    field = name.to_string();
                }
            }
            ConfigFileError::Field {
                path: path.to_string(),
                line,
                column,
                field,
                message,
            }
        })?;
        let invalid = |field, message: String| ConfigFileError::Invalid {
            path: path.to_string(),
            field,
            message,
        };
        match (&cfg.private_key, &cfg.private_key_file) {
            (None, None) => {
                return Err(invalid(
                    "private_key",
                    "set private_key_file (or private_key)".into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "private_key",
                    "set only one of private_key and private_key_file".into(),
                ));
            }
            _ => {}
        }
        if cfg.tun.name.is_empty() || cfg.tun.name.len() > 15 {
            return Err(invalid("tun.name", "must be 1..=15 characters".into()));
        }
        if !(576..=9000).contains(&cfg.tun.mtu) {
            return Err(invalid("tun.mtu", "must be in 576..=9000".into()));
        }
        if !(64 << 10..=1 << 30).contains(&cfg.wan.socket_buffer_bytes) {
            return Err(invalid(
                "wan.socket_buffer_bytes",
                "must be between 65536 and 1073741824".into(),
            ));
        }
        if !(1024..=1 << 30).contains(&cfg.split.window_bytes) {
            return Err(invalid(
                "split.window_bytes",
                "must be between 1024 and 1073741824".into(),
            ));
        }
        if !(1..=1 << 20).contains(&cfg.split.max_connections) {
            return Err(invalid(
                "split.max_connections",
                "must be between 1 and 1048576".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &cfg.peers {
            if !seen.insert(p.public_key) {
                return Err(invalid(
                    "peer.public_key",
                    format!("duplicate peer {}", p.public_key),
                ));
            }
        }
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// The private key, inline or read from `private_key_file`.
    pub fn private_key(&self) -> Result<PrivateKey, ConfigFileError> {
        if let Some(k) = &self.private_key {
            return Ok(k.clone());
        }
        let path = self.private_key_file.clone().unwrap_or_default();
        let p = path.display().to_string();
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|source| {
            ConfigFileError::Io {
                path: p.clone(),
                source,
            }
        })?);
        PrivateKey::from_base64(&text).map_err(|e| ConfigFileError::Invalid {
            path: p,
            field: "private_key_file",
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "0.0.0.0:51820"
private_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

[wan]
capacity = "100mbit"

[[peer]]
public_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
endpoint = "192.0.2.2:51820"
prefixes = ["10.2.0.0/24"]
"#;

    #[test]
    fn parses_a_good_config() {
        let c = Config::parse(GOOD, "good.toml").expect("parse");
        assert_eq!(c.wan.capacity, 100_000_000);
        assert_eq!(c.peers[0].prefixes[0].to_string(), "10.2.0.0/24");
        assert!(c.peers[0].prefixes[0].contains(Ipv4Addr::new(10, 2, 0, 9)));
        assert_eq!(c.tun.name, "mef0");
        assert!(
            !format!("{c:?}").contains("AAAAAAAA"),
            "private key redacted"
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad = GOOD.replace("\"100mbit\"", "\"100mbits\"");
        let e = Config::parse(&bad, "c.toml")
            .expect_err("bad rate")
            .to_string();
        assert!(e.starts_with("c.toml:6:"), "{e}");
        assert!(e.contains("`wan.capacity`"), "{e}");
        let bad = GOOD.replace(
            "prefixes = [\"10.2.0.0/24\"]",
            "prefixes = [\"10.2.0.0/33\"]",
        );
        let e = Config::parse(&bad, "c.toml")
            .expect_err("bad prefix")
            .to_string();
        assert!(e.contains(":11:") && e.contains("`peer.prefixes`"), "{e}");
        let bad = GOOD.replace("AQEBAQEB", "!!");
        let e = Config::parse(&bad, "c.toml")
            .expect_err("bad key")
            .to_string();
        assert!(e.contains(":9:") && e.contains("`peer.public_key`"), "{e}");
        let bad = GOOD.replace("endpoint", "endpiont");
        let e = Config::parse(&bad, "c.toml").expect_err("typo").to_string();
        assert!(e.contains("`endpiont`"), "{e}");
        let bad = GOOD.replace("capacity = \"100mbit\"", "");
        let e = Config::parse(&bad, "c.toml")
            .expect_err("missing")
            .to_string();
        assert!(e.contains("`capacity`"), "{e}");
        let bad = GOOD.replace("[wan]", "[split]\nwindow_bytes = 10\n\n[wan]");
        let e = Config::parse(&bad, "c.toml")
            .expect_err("tiny window")
            .to_string();
        assert!(e.contains("`split.window_bytes`"), "{e}");
        let bad = GOOD.replace("[wan]", "[wan]\nsocket_buffer_bytes = 4096");
        let e = Config::parse(&bad, "c.toml")
            .expect_err("tiny socket buffer")
            .to_string();
        assert!(e.contains("`wan.socket_buffer_bytes`"), "{e}");
        let c = Config::parse(GOOD, "c.toml").expect("parse");
        assert_eq!(c.wan.socket_buffer_bytes, 4 << 20);
    }

    #[test]
    fn split_window_and_limit_are_configurable() {
        let c = Config::parse(GOOD, "c.toml").expect("parse");
        assert_eq!(c.split.window_bytes, 256 * 1024);
        assert_eq!(c.split.max_connections, 1024);
        let big = GOOD.replace(
            "[wan]",
            "[split]\nwindow_bytes = 4194304\nmax_connections = 4096\n\n[wan]",
        );
        let c = Config::parse(&big, "c.toml").expect("parse");
        assert_eq!(c.split.window_bytes, 4 << 20);
        assert_eq!(c.split.max_connections, 4096);
    }

    #[test]
    fn rates_use_tc_units() {
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("2.5mbit"), Ok(2_500_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10").is_err(), "below 1 kbit/s");
        // tc's units: `bps` is bytes per second.
        assert_eq!(parse_rate("1mbps"), Ok(8_000_000));
        assert_eq!(parse_rate(" 100Mbit "), Ok(100_000_000));
    }
}
