//! The `mef-router` daemon's pieces: configuration ([`config`]), the shaped MEF egress
//! ([`egress`]), the sans-IO data plane ([`router::Router`]), metrics ([`metrics`]) and the thin
//! tokio loop ([`mod@run`]).
//!
//! Data path (seed 003: "入口 → 解密 → MEF 路由器 → 加密 → 出口"): the kernel routes packets for a
//! remote site's prefixes into the TUN device; the router validates each IPv4 packet, picks the
//! peer by longest prefix match, queues it in the [`crate::MefQdisc`] (MEF packets stamped, all
//! flows fairly scheduled), releases it at the WAN capacity, encrypts it with the peer's
//! [`crate::tunnel::Tunnel`] and sends it over UDP. The peer decrypts, checks the inner source
//! against the sender's prefixes, and writes it to its TUN device, where its kernel forwards it
//! to the LAN.

pub mod config;
pub mod egress;
pub mod metrics;
pub mod router;
pub mod run;
pub mod sockbuf;

pub use config::{Config, ConfigFileError, Prefix};
pub use router::{Output, Router};
pub use run::{DaemonError, fetch, run};
