//! Finding peers: mDNS/DNS-SD on the local link and static seeds from the gateway config.
//!
//! Both sources produce the same thing, a [`PeerRecord`]: a peer's [`Hashname`], its X25519
//! static key and the UDP addresses it listens on — exactly what the mesh node needs to open a
//! link (`Mesh::add_peer(hashname, static_key, addrs)`). A record is only ever built after the
//! key has been checked against the hashname (`Hashname::of_x25519(key) == hashname`), so a
//! record that reaches the node is self-certifying: whoever answers the Noise handshake at those
//! addresses must hold the secret key of that hashname, whatever the network claimed.
//!
//! * [`record`]: what a peer advertises over mDNS (service `_mef-mesh._udp.local.`, instance
//!   name = hashname, TXT `hn=`, `key=`, `v=1`) and the verifying parser.
//! * [`mdns`]: [`Mdns`], a running advertiser + browser built on the `mdns-sd` crate (its own
//!   thread; poll it with [`Mdns::try_recv`] or await [`Mdns::recv_async`]).
//! * [`config`]: the `[mesh]` part of a gateway's TOML config, with `[[mesh.seed]]` peers.

pub mod config;
pub mod mdns;
pub mod record;

use std::net::SocketAddr;

use crate::hashname::{Hashname, HashnameError};

pub use config::{ConfigError, MeshFileConfig};
pub use mdns::{DiscoveryStats, InterfaceSelection, Mdns, MdnsConfig};
pub use record::{Advertisement, SERVICE_TYPE, TXT_VERSION};

/// A peer as discovery reports it: a hashname, the static key it was verified against, and
/// where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// The peer's hashname (always `Hashname::of_x25519(&static_key)` for a record built by
    /// this module).
    pub hashname: Hashname,
    /// The peer's X25519 static public key (the Noise `rs`).
    pub static_key: [u8; 32],
    /// The peer's mesh UDP addresses.
    pub addrs: Vec<SocketAddr>,
}

impl PeerRecord {
    /// Builds a record after checking that `static_key` hashes to `hashname`.
    pub fn verified(
        hashname: Hashname,
        static_key: [u8; 32],
        addrs: Vec<SocketAddr>,
    ) -> Result<PeerRecord, DiscoveryError> {
        let actual = Hashname::of_x25519(&static_key);
        if actual != hashname {
            return Err(DiscoveryError::KeyMismatch {
                claimed: hashname,
                actual,
            });
        }
        Ok(PeerRecord {
            hashname,
            static_key,
            addrs,
        })
    }
}

/// What discovery tells the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A peer was found (or its addresses changed): verified hashname, key and addresses.
    Found(PeerRecord),
    /// A peer previously reported as found withdrew its advertisement (or it expired).
    Lost(Hashname),
}

/// Errors of peer discovery: refused advertisements and mDNS daemon failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The advertisement is not of our service type.
    #[error("service {0:?} is not of type {SERVICE_TYPE}")]
    WrongServiceType(String),
    /// A required TXT property is missing.
    #[error("TXT property {0:?} missing")]
    MissingTxt(&'static str),
    /// The TXT `v=` property names a version we do not speak.
    #[error("unsupported advertisement version {0:?}")]
    UnsupportedVersion(String),
    /// The TXT `hn=` property or the instance name is not a hashname.
    #[error("bad hashname: {0}")]
    BadHashname(#[from] HashnameError),
    /// The TXT `key=` property is not 32 bytes of base32.
    #[error("bad key: {0}")]
    BadKey(String),
    /// The key does not hash to the claimed hashname (a forged or corrupted record).
    #[error("key hashes to {actual}, not the claimed {claimed}")]
    KeyMismatch {
        /// The hashname the record claimed.
        claimed: Hashname,
        /// The hashname of the key it carried.
        actual: Hashname,
    },
    /// The instance name is not the hashname of the TXT record.
    #[error("instance name {instance:?} does not match hashname {hashname}")]
    InstanceMismatch {
        /// The advertised instance name.
        instance: String,
        /// The hashname from the TXT record.
        hashname: Hashname,
    },
    /// The advertisement carries no address.
    #[error("advertisement has no address")]
    NoAddress,
    /// The mDNS daemon failed or refused a command.
    #[error("mDNS: {0}")]
    Mdns(String),
}

impl From<mdns_sd::Error> for DiscoveryError {
    fn from(e: mdns_sd::Error) -> Self {
        DiscoveryError::Mdns(e.to_string())
    }
}
