//! The daemon's TOML configuration (`mef-gateway run --config gateway.toml`). Unknown fields are
//! errors; a bad value is reported with the line, column and dotted field name. Relative paths
//! (`gateway.key`, `store.path`, `uplink.path`) are taken relative to the configuration file's
//! directory.
//!
//! ```toml
//! [gateway]
//! key = "gateway.key"                 # ed25519 batch-signing key (`mef-gateway keygen`)
//!
//! [store]
//! path = "queue.db"                   # SQLite WAL durable queue
//! max_readings = 1000000              # queue bound (queued + in flight)
//! max_bytes = 268435456
//! # max_file_bytes = 1073741824       # optional cap on the database file
//!
//! [ingest]
//! batch_readings = 500                # append when this many readings are pending ...
//! batch_interval_ms = 20              # ... or the oldest has waited this long
//!
//! [lora]
//! enabled = true
//! listen = "0.0.0.0:1700"             # Semtech UDP (ChirpStack gateway bridge's default)
//! plaintext_devices = ["26011bda"]    # DevAddrs whose FRMPayload is plaintext LPP (tests)
//! [[lora.device]]
//! dev_addr = "26011bdb"
//! app_skey = "000102030405060708090a0b0c0d0e0f"
//!
//! [ble]
//! enabled = false                     # needs the `bluez` feature
//! adapter = "hci0"                    # optional: BlueZ's default adapter otherwise
//! [[ble.device]]
//! mac = "a4:c1:38:00:00:01"
//! bind_key = "231d39c1d7cc1ab1aee224cd096db932"   # hex; encrypted BTHome
//!
//! [uplink]
//! kind = "file"                       # fsynced JSON lines; chain submission comes later
//! path = "uplink.jsonl"
//!
//! [metrics]
//! listen = "127.0.0.1:9187"           # GET /metrics (Prometheus), GET /status
//!
//! [firmware]                          # the firmware swarm (docs/FIRMWARE.md); optional
//! store = "firmware"                  # content-addressed blockstore (directory)
//! key = "mesh.key"                    # mesh identity (`mef-gateway keygen --mesh`)
//! listen = "0.0.0.0:4242"             # mesh UDP
//! providers = ["KEY@198.51.100.7:4242"]   # the manufacturer's node
//! swarm_peers = ["KEY@192.0.2.10:4242"]   # other gateways
//! manifests = "manifests"             # watched for signed `*.manifest` files ...
//! staging = "staged"                  # ... whose verified images are staged here
//! model = "mef-gw-1"
//! current = "1.0.0"
//! trust = ["<base64 ed25519 key>"]    # manufacturer keys (`mef-gateway keygen`)
//! # copies_per_block = 2              # a manufacturer's node: super-seeding budget
//! # max_upload = "8mbit"              # cap on what serving firmware may upload
//! ```
//!
//! `[firmware]` without `manifests` only serves the blockstore; with it, the gateway also
//! fetches, verifies and stages newer images ([`crate::firmware_net::FirmwareNode`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use firmware::exchange::ServerConfig;
use firmware::manifest::Version;
use firmware::update::UpdatePolicy;
use serde::Deserialize;
use thiserror::Error;

use crate::firmware_net::{PeerAddr, UpdateConfig};
use crate::store::Limits;

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A field is missing, unknown, or has a bad type.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (names the field).
        message: String,
    },
    /// A value has the right type but is not valid.
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Dotted field name.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// The batch-signing key file (base64 ed25519 secret key, written by `mef-gateway keygen`).
    pub key: PathBuf,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The SQLite database.
    pub path: PathBuf,
    /// Most readings stored. Default 1,000,000.
    #[serde(default = "default_max_readings")]
    pub max_readings: u64,
    /// Most encoded bytes stored. Default 256 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Optional cap on the database file size.
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
}

fn default_max_readings() -> u64 {
    Limits::default().max_readings
}
fn default_max_bytes() -> u64 {
    Limits::default().max_bytes
}

/// `[ingest]`: the batching policy of [`super::ingest::Ingest`].
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// Append when this many readings are pending. Default 500.
    #[serde(default = "default_batch_readings")]
    pub batch_readings: usize,
    /// Append when the oldest pending reading (or held ack) is this old, ms. Default 20.
    #[serde(default = "default_batch_interval_ms")]
    pub batch_interval_ms: u64,
}

fn default_batch_readings() -> usize {
    500
}
fn default_batch_interval_ms() -> u64 {
    20
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            batch_readings: default_batch_readings(),
            batch_interval_ms: default_batch_interval_ms(),
        }
    }
}

/// `[[lora.device]]`: a device whose FRMPayload the gateway decrypts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraDeviceSection {
    /// DevAddr, 8 hex digits (as printed, big-endian).
    pub dev_addr: String,
    /// AppSKey, 32 hex digits.
    pub app_skey: String,
}

/// `[lora]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// Listen for packet forwarders. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// UDP address. Default `0.0.0.0:1700`.
    #[serde(default = "default_lora_listen")]
    pub listen: SocketAddr,
    /// DevAddrs (8 hex digits) whose FRMPayload is plaintext Cayenne LPP (test devices).
    #[serde(default)]
    pub plaintext_devices: Vec<String>,
    /// Devices with an AppSKey.
    #[serde(default, rename = "device")]
    pub devices: Vec<LoraDeviceSection>,
}

fn yes() -> bool {
    true
}
fn default_lora_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], crate::lora::udp::DEFAULT_PORT))
}

impl Default for LoraSection {
    fn default() -> Self {
        LoraSection {
            enabled: true,
            listen: default_lora_listen(),
            plaintext_devices: Vec::new(),
            devices: Vec::new(),
        }
    }
}

/// `[[ble.device]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BleDeviceSection {
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// BTHome bind key, 32 hex digits (encrypted adverts); absent for plain adverts.
    #[serde(default)]
    pub bind_key: Option<String>,
}

/// `[ble]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BleSection {
    /// Scan through BlueZ (needs the `bluez` feature). Default false.
    #[serde(default)]
    pub enabled: bool,
    /// The adapter (informational for now: the scanner uses BlueZ's default adapter).
    #[serde(default)]
    pub adapter: Option<String>,
    /// Known devices.
    #[serde(default, rename = "device")]
    pub devices: Vec<BleDeviceSection>,
}

/// The uplink kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkKind {
    /// [`crate::uplink::FileUplink`].
    File,
}

/// `[uplink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// The kind.
    pub kind: UplinkKind,
    /// The file (kind `file`).
    pub path: PathBuf,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// HTTP address for /metrics and /status. Default `127.0.0.1:9187`.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: default_metrics_listen(),
        }
    }
}

/// `[firmware]`, as written: see the module docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareSection {
    /// Run the firmware node. Default true (when the section is present).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The blockstore directory (created if missing).
    pub store: PathBuf,
    /// The mesh identity key file (`mef-gateway keygen --mesh`).
    pub key: PathBuf,
    /// The mesh's UDP address. Default `0.0.0.0:4242`.
    #[serde(default = "default_mesh_listen")]
    pub listen: SocketAddr,
    /// The manufacturer's nodes, `KEY@IP:PORT`: asked for the blocks the swarm lacks.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Other gateways, `KEY@IP:PORT`: asked for the blocks they announce.
    #[serde(default)]
    pub swarm_peers: Vec<String>,
    /// The directory watched for signed manifests; absent: serve only.
    #[serde(default)]
    pub manifests: Option<PathBuf>,
    /// Where verified images are staged (with `manifests`).
    #[serde(default)]
    pub staging: Option<PathBuf>,
    /// The device model (with `manifests`).
    #[serde(default)]
    pub model: Option<String>,
    /// The running version, `X.Y.Z` (with `manifests`).
    #[serde(default)]
    pub current: Option<String>,
    /// Trusted manufacturer public keys, base64 (with `manifests`).
    #[serde(default)]
    pub trust: Vec<String>,
    /// Abandon a fetch after this many seconds (tried again later). Default 600.
    #[serde(default = "default_fetch_timeout_s")]
    pub fetch_timeout_s: u64,
    /// Wait this long after a failed fetch before trying again, seconds. Default 10.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u64,
    /// How often the manifest directory is read, ms. Default 1000.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Super-seeding (a manufacturer's node): serve each leaf block at most this many times,
    /// then let the gateways fetch it from each other. Absent: no limit.
    #[serde(default)]
    pub copies_per_block: Option<u32>,
    /// Cap on what the node uploads, tc units (`8mbit`). Absent: no cap.
    #[serde(default)]
    pub max_upload: Option<String>,
}

fn default_mesh_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4242))
}
fn default_fetch_timeout_s() -> u64 {
    600
}
fn default_retry_after_s() -> u64 {
    10
}
fn default_poll_ms() -> u64 {
    1000
}

/// `[firmware]`, checked: what [`super::run::run`] starts a
/// [`crate::firmware_net::FirmwareNode`] with.
#[derive(Debug, Clone)]
pub struct FirmwareConfig {
    /// The blockstore directory (resolved).
    pub store: PathBuf,
    /// The mesh key file (resolved).
    pub key: PathBuf,
    /// The mesh's UDP address.
    pub listen: SocketAddr,
    /// Providers, parsed.
    pub providers: Vec<PeerAddr>,
    /// Swarm peers, parsed.
    pub swarm_peers: Vec<PeerAddr>,
    /// The update flow (`manifests` given), paths resolved.
    pub update: Option<UpdateConfig>,
    /// The serving side (`copies_per_block`).
    pub server: ServerConfig,
    /// The upload cap, bits per second.
    pub max_upload: Option<u64>,
}

impl FirmwareSection {
    /// Checks the section; `resolve` makes paths absolute, `invalid` names the field.
    fn check(
        self,
        resolve: &dyn Fn(&Path) -> PathBuf,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<FirmwareConfig, ConfigError> {
        let peers = |list: &[String], field: &str| {
            list.iter()
                .map(|p| {
                    p.parse::<PeerAddr>()
                        .map_err(|e| invalid(field, e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        if self.copies_per_block == Some(0) {
            return Err(invalid(
                "firmware.copies_per_block",
                "must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        let max_upload = self
            .max_upload
            .as_deref()
            .map(crate::firmware_cli::parse_upload_rate)
            .transpose()
            .map_err(|m| invalid("firmware.max_upload", m))?;
        let providers = peers(&self.providers, "firmware.providers")?;
        let swarm_peers = peers(&self.swarm_peers, "firmware.swarm_peers")?;
        let update = match self.manifests {
            None => {
                let stray = [
                    ("firmware.staging", self.staging.is_some()),
                    ("firmware.model", self.model.is_some()),
                    ("firmware.current", self.current.is_some()),
                    ("firmware.trust", !self.trust.is_empty()),
                ];
                if let Some((field, _)) = stray.into_iter().find(|(_, set)| *set) {
                    return Err(invalid(
                        field,
                        "only used with `firmware.manifests` (the update flow)".into(),
                    ));
                }
                None
            }
            Some(manifests) => {
                let needed = |field: &str| {
                    invalid(
                        field,
                        "needed with `firmware.manifests` (the update flow)".into(),
                    )
                };
                let staging = self.staging.ok_or_else(|| needed("firmware.staging"))?;
                let model = self.model.ok_or_else(|| needed("firmware.model"))?;
                let current = self
                    .current
                    .ok_or_else(|| needed("firmware.current"))?
                    .parse::<Version>()
                    .map_err(|e| invalid("firmware.current", e.to_string()))?;
                if self.trust.is_empty() {
                    return Err(needed("firmware.trust"));
                }
                let trust = self
                    .trust
                    .iter()
                    .map(|k| {
                        crate::firmware_cli::parse_pubkey(k)
                            .map_err(|m| invalid("firmware.trust", m))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if self.poll_ms == 0 || self.fetch_timeout_s == 0 {
                    return Err(invalid(
                        "firmware.poll_ms",
                        "poll_ms and fetch_timeout_s must be positive".into(),
                    ));
                }
                let mut cfg = UpdateConfig::new(
                    resolve(&manifests),
                    UpdatePolicy::new(model, current, trust),
                    resolve(&staging),
                );
                cfg.poll = Duration::from_millis(self.poll_ms);
                cfg.fetch_timeout = Duration::from_secs(self.fetch_timeout_s);
                cfg.retry_after = Duration::from_secs(self.retry_after_s);
                Some(cfg)
            }
        };
        Ok(FirmwareConfig {
            store: resolve(&self.store),
            key: resolve(&self.key),
            listen: self.listen,
            providers,
            swarm_peers,
            update,
            server: crate::firmware_cli::server_config(self.copies_per_block),
            max_upload,
        })
    }
}

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: GatewaySection,
    store: StoreSection,
    #[serde(default)]
    ingest: IngestSection,
    #[serde(default)]
    lora: LoraSection,
    #[serde(default)]
    ble: BleSection,
    uplink: UplinkSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    firmware: Option<FirmwareSection>,
}

/// A checked configuration, paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The key file.
    pub key_path: PathBuf,
    /// `[store]` (path resolved).
    pub store: StoreSection,
    /// `[ingest]`.
    pub ingest: IngestSection,
    /// `[lora]`.
    pub lora: LoraSection,
    /// Plaintext LoRa DevAddrs, parsed.
    pub lora_plaintext: Vec<u32>,
    /// LoRa AppSKeys, parsed.
    pub lora_keys: Vec<(u32, [u8; 16])>,
    /// `[ble]`.
    pub ble: BleSection,
    /// BLE bind keys, parsed.
    pub ble_keys: Vec<([u8; 6], [u8; 16])>,
    /// `[uplink]` (path resolved).
    pub uplink: UplinkSection,
    /// `[metrics]`.
    pub metrics: MetricsSection,
    /// `[firmware]`, when present and enabled.
    pub firmware: Option<FirmwareConfig>,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base)
    }

    /// Parses `text` (named `name` in errors); relative paths are resolved against `base`.
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let start = e.span().map_or(0, |s| s.start).min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            let column = start - text[..start].rfind('\n').map_or(0, |i| i + 1) + 1;
            ConfigError::Syntax {
                path: name.to_string(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: name.to_string(),
            field: field.to_string(),
            message,
        };
        if raw.store.max_readings == 0 || raw.store.max_bytes == 0 {
            return Err(invalid(
                "store.max_readings",
                "store limits must be positive".into(),
            ));
        }
        if raw.ingest.batch_readings == 0 {
            return Err(invalid("ingest.batch_readings", "must be positive".into()));
        }
        let lora_plaintext = raw
            .lora
            .plaintext_devices
            .iter()
            .map(|s| parse_dev_addr(s).map_err(|m| invalid("lora.plaintext_devices", m)))
            .collect::<Result<Vec<_>, _>>()?;
        let lora_keys = raw
            .lora
            .devices
            .iter()
            .map(|d| {
                Ok((
                    parse_dev_addr(&d.dev_addr).map_err(|m| invalid("lora.device.dev_addr", m))?,
                    parse_key(&d.app_skey).map_err(|m| invalid("lora.device.app_skey", m))?,
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let mut ble_keys = Vec::new();
        for d in &raw.ble.devices {
            let mac = parse_mac(&d.mac).map_err(|m| invalid("ble.device.mac", m))?;
            if let Some(k) = &d.bind_key {
                ble_keys.push((
                    mac,
                    parse_key(k).map_err(|m| invalid("ble.device.bind_key", m))?,
                ));
            }
        }
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        // Checked even when disabled, so a section switched on later is known to be valid.
        let firmware = match raw.firmware {
            Some(f) => {
                let enabled = f.enabled;
                Some(f.check(&resolve, &invalid)?).filter(|_| enabled)
            }
            None => None,
        };
        let mut store = raw.store;
        store.path = resolve(&store.path);
        let mut uplink = raw.uplink;
        uplink.path = resolve(&uplink.path);
        Ok(Config {
            key_path: resolve(&raw.gateway.key),
            store,
            ingest: raw.ingest,
            lora: raw.lora,
            lora_plaintext,
            lora_keys,
            ble: raw.ble,
            ble_keys,
            uplink,
            metrics: raw.metrics,
            firmware,
        })
    }

    /// The store limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_readings: self.store.max_readings,
            max_bytes: self.store.max_bytes,
            max_file_bytes: self.store.max_file_bytes,
            ..Limits::default()
        }
    }
}

/// Decodes hex (any case, no separators) into exactly `N` bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let s = s.trim();
    if s.len() != 2 * N || !s.is_ascii() {
        return Err(format!("expected {} hex digits, got {s:?}", 2 * N));
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| format!("not hex: {s:?}"))?;
    }
    Ok(out)
}

/// A 16-byte key from 32 hex digits.
pub fn parse_key(s: &str) -> Result<[u8; 16], String> {
    parse_hex::<16>(s)
}

/// A DevAddr from 8 hex digits.
pub fn parse_dev_addr(s: &str) -> Result<u32, String> {
    parse_hex::<4>(s).map(u32::from_be_bytes)
}

/// A MAC address `aa:bb:cc:dd:ee:ff` (or `-` separated, or 12 bare hex digits).
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bare: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
    parse_hex::<6>(&bare).map_err(|_| format!("not a MAC address: {s:?}"))
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../../dist/mef-gateway.toml");

    #[test]
    fn the_example_parses() {
        let c = Config::parse(GOOD, "ex.toml", Path::new("/etc/mef-gateway")).expect("parse");
        assert_eq!(c.lora.listen.port(), 1700);
        assert_eq!(c.metrics.listen.port(), 9187);
        assert!(c.key_path.is_absolute());
        assert_eq!(c.ble_keys.len(), 1);
        assert!(c.firmware.is_none(), "the example's [firmware] is disabled");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let bad = GOOD.replace("[uplink]", "[uplink]\nbogus = 1");
        let e = Config::parse(&bad, "x.toml", Path::new(".")).expect_err("unknown field");
        assert!(e.to_string().contains("bogus"), "{e}");
        let bad = GOOD.replace("231d39c1d7cc1ab1aee224cd096db932", "zz");
        let e = Config::parse(&bad, "x.toml", Path::new(".")).expect_err("bad key");
        assert!(e.to_string().contains("ble.device.bind_key"), "{e}");
    }

    const FIRMWARE: &str = "\n[firmware]\nstore = \"fw\"\nkey = \"mesh.key\"\n\
        providers = [\"PcuRnL1sZKUO3RpTnW4nFybM4feF99E0wdueL1OMaAQ=@127.0.0.1:4242\"]\n";
    const UPDATE: &str = "manifests = \"m\"\nstaging = \"s\"\nmodel = \"gw\"\n\
        current = \"1.2.3\"\ntrust = [\"B8Rj7pT58ghRdQmGQMgXMfbSL+f9TaNMn6HPkyrATi0=\"]\n";

    /// The smallest valid file, `[firmware]` with `extra` lines.
    fn parse_firmware(extra: &str) -> Result<Option<FirmwareConfig>, ConfigError> {
        let text = format!(
            "[gateway]\nkey = \"k\"\n[store]\npath = \"q.db\"\n[uplink]\nkind = \"file\"\n\
             path = \"u\"\n{FIRMWARE}{extra}"
        );
        Config::parse(&text, "x.toml", Path::new("/etc/gw")).map(|c| c.firmware)
    }

    #[test]
    fn the_firmware_section_serves_or_updates() {
        let serve = parse_firmware("").expect("serve only").expect("enabled");
        assert_eq!(serve.store, Path::new("/etc/gw/fw"));
        assert_eq!(serve.key, Path::new("/etc/gw/mesh.key"));
        assert_eq!(serve.listen.port(), 4242);
        assert_eq!(serve.providers.len(), 1);
        assert!(serve.update.is_none());
        let update = parse_firmware(UPDATE).expect("update").expect("enabled");
        let u = update.update.expect("update flow");
        assert_eq!(u.manifests, Path::new("/etc/gw/m"));
        assert_eq!(u.staging, Path::new("/etc/gw/s"));
        assert_eq!(u.policy.current, Version::new(1, 2, 3));
        assert!(
            parse_firmware("enabled = false\n")
                .expect("disabled")
                .is_none()
        );
    }

    #[test]
    fn firmware_mistakes_name_the_field() {
        let field = |extra: &str| match parse_firmware(extra) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("{extra:?}: expected an invalid field, got {other:?}"),
        };
        assert_eq!(field(&UPDATE.replace("trust = [", "#")), "firmware.trust");
        assert_eq!(field(&UPDATE.replace("staging", "#")), "firmware.staging");
        assert_eq!(field(&UPDATE.replace("1.2.3", "1.2")), "firmware.current");
        assert_eq!(field(&UPDATE.replace("B8Rj", "x")), "firmware.trust");
        assert_eq!(field("model = \"gw\"\n"), "firmware.model");
        assert_eq!(field("copies_per_block = 0\n"), "firmware.copies_per_block");
        assert_eq!(field("max_upload = \"fast\"\n"), "firmware.max_upload");
        assert_eq!(field("max_upload = \"1kbit\"\n"), "firmware.max_upload");
        assert_eq!(
            field("swarm_peers = [\"nokey@127.0.0.1:1\"]\n"),
            "firmware.swarm_peers"
        );
        // Disabled sections are checked too.
        assert_eq!(
            field("enabled = false\nswarm_peers = [\"k@1\"]\n"),
            "firmware.swarm_peers"
        );
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(
            parse_mac("A4:C1:38:00:00:01"),
            Ok([0xa4, 0xc1, 0x38, 0, 0, 1])
        );
        assert_eq!(parse_dev_addr("26011bda"), Ok(0x2601_1bda));
        assert!(parse_key("00").is_err());
        assert_eq!(format_mac([0xa4, 0xc1, 0x38, 0, 0, 1]), "a4:c1:38:00:00:01");
    }
}
