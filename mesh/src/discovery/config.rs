//! The `[mesh]` part of a gateway's TOML config: where to listen, whether to use mDNS, and
//! static seed peers.
//!
//! ```toml
//! [mesh]
//! listen = "0.0.0.0:4242"   # default
//! mdns = true               # default
//!
//! [[mesh.seed]]
//! hashname = "<52-char hashname>"
//! key = "<52-char base32 X25519 public key>"
//! addrs = ["192.0.2.7:4242", "[2001:db8::7]:4242"]
//! ```
//!
//! Other top-level tables belong to the rest of the gateway config and are ignored here; inside
//! `[mesh]` and each seed, unknown keys are errors (a typo must not silently drop a setting).
//! Every seed is verified like an mDNS record: its key must hash to its hashname.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::hashname::{Hashname, HashnameError};

use super::PeerRecord;
use super::record::{decode_key, encode_key};

/// The default mesh UDP port.
pub const DEFAULT_PORT: u16 = 4242;

/// The mesh settings of a gateway config file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshFileConfig {
    /// UDP address the mesh listens on.
    pub listen: SocketAddr,
    /// Whether to advertise and browse over mDNS.
    pub mdns: bool,
    /// Static seed peers (verified).
    pub seeds: Vec<PeerRecord>,
}

impl Default for MeshFileConfig {
    fn default() -> Self {
        MeshFileConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            mdns: true,
            seeds: Vec::new(),
        }
    }
}

/// Errors reading the mesh config. Seed errors carry the seed's index (0-based, file order).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, a wrong type, or an unknown key (the message says which).
    #[error("mesh config: {0}")]
    Toml(String),
    /// The document has no `[mesh]` table.
    #[error("mesh config: no [mesh] table")]
    MissingMesh,
    /// `listen` is not a socket address.
    #[error("mesh config: listen {0:?} is not an address:port")]
    BadListen(String),
    /// A seed's hashname does not parse.
    #[error("mesh seed {seed}: bad hashname: {source}")]
    BadHashname {
        /// Index of the seed.
        seed: usize,
        /// Why it does not parse.
        source: HashnameError,
    },
    /// A seed's key is not 32 bytes of base32.
    #[error("mesh seed {seed}: bad key: {reason}")]
    BadKey {
        /// Index of the seed.
        seed: usize,
        /// Why it does not parse.
        reason: String,
    },
    /// A seed's key does not hash to its hashname.
    #[error("mesh seed {seed}: key does not match hashname {hashname}")]
    KeyMismatch {
        /// Index of the seed.
        seed: usize,
        /// The hashname the seed claims.
        hashname: Hashname,
    },
    /// A seed's address is not `ip:port`.
    #[error("mesh seed {seed}: bad address {addr:?}")]
    BadAddr {
        /// Index of the seed.
        seed: usize,
        /// The offending text.
        addr: String,
    },
    /// A seed has no addresses (it could never be reached).
    #[error("mesh seed {seed}: no addrs")]
    NoAddrs {
        /// Index of the seed.
        seed: usize,
    },
    /// Two seeds have the same hashname.
    #[error("mesh seed {seed}: duplicate hashname {hashname}")]
    DuplicateSeed {
        /// Index of the second occurrence.
        seed: usize,
        /// The repeated hashname.
        hashname: Hashname,
    },
}

#[derive(Deserialize, Serialize)]
struct FileDoc {
    mesh: Option<FileMesh>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileMesh {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mdns: Option<bool>,
    #[serde(default, rename = "seed", skip_serializing_if = "Vec::is_empty")]
    seeds: Vec<FileSeed>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileSeed {
    hashname: String,
    key: String,
    addrs: Vec<String>,
}

impl MeshFileConfig {
    /// Parses and validates the `[mesh]` table of a gateway config document.
    pub fn from_toml(text: &str) -> Result<MeshFileConfig, ConfigError> {
        let doc: FileDoc = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let mesh = doc.mesh.ok_or(ConfigError::MissingMesh)?;
        let defaults = MeshFileConfig::default();
        let listen = match mesh.listen {
            None => defaults.listen,
            Some(text) => text.parse().map_err(|_| ConfigError::BadListen(text))?,
        };
        let mut seen = HashSet::new();
        let mut seeds = Vec::with_capacity(mesh.seeds.len());
        for (seed, s) in mesh.seeds.into_iter().enumerate() {
            let hashname: Hashname = s
                .hashname
                .parse()
                .map_err(|source| ConfigError::BadHashname { seed, source })?;
            let key = decode_key(&s.key).map_err(|e| ConfigError::BadKey {
                seed,
                reason: e.to_string(),
            })?;
            let addrs = s
                .addrs
                .into_iter()
                .map(|addr| {
                    addr.parse()
                        .map_err(|_| ConfigError::BadAddr { seed, addr })
                })
                .collect::<Result<Vec<SocketAddr>, _>>()?;
            if addrs.is_empty() {
                return Err(ConfigError::NoAddrs { seed });
            }
            let record = PeerRecord::verified(hashname, key, addrs)
                .map_err(|_| ConfigError::KeyMismatch { seed, hashname })?;
            if !seen.insert(hashname) {
                return Err(ConfigError::DuplicateSeed { seed, hashname });
            }
            seeds.push(record);
        }
        Ok(MeshFileConfig {
            listen,
            mdns: mesh.mdns.unwrap_or(defaults.mdns),
            seeds,
        })
    }

    /// Writes this config as a TOML document with a `[mesh]` table that
    /// [`MeshFileConfig::from_toml`] reads back to the same value.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let doc = FileDoc {
            mesh: Some(FileMesh {
                listen: Some(self.listen.to_string()),
                mdns: Some(self.mdns),
                seeds: self
                    .seeds
                    .iter()
                    .map(|s| FileSeed {
                        hashname: s.hashname.to_string(),
                        key: encode_key(&s.static_key),
                        addrs: s.addrs.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            }),
        };
        toml::to_string(&doc).map_err(|e| ConfigError::Toml(e.to_string()))
    }
}
