//! What a peer advertises over mDNS, and the verifying parser.
//!
//! * service type [`SERVICE_TYPE`] = `_mef-mesh._udp.local.`
//! * instance name = the 52-character hashname (fits the 63-byte DNS label limit)
//! * SRV port = the mesh UDP port; A/AAAA = the host's addresses
//! * TXT: `hn=<hashname>`, `key=<X25519 public key, base32 like the hashname>`, `v=1`
//!
//! On receipt every field is checked: the version, the hashname text, the key's length, that
//! the key hashes to the hashname, and that the instance name is that same hashname. Anything
//! else is refused with a typed [`DiscoveryError`].

use std::net::{IpAddr, SocketAddr};

use crate::hashname::{Hashname, base32_decode, base32_encode};

use super::{DiscoveryError, PeerRecord};

/// The DNS-SD service type of a mesh node.
pub const SERVICE_TYPE: &str = "_mef-mesh._udp.local.";

/// The TXT `v=` value this code writes and accepts.
pub const TXT_VERSION: &str = "1";

/// Encodes an X25519 public key for a TXT record or a config file (lowercase base32, 52 chars).
pub fn encode_key(key: &[u8; 32]) -> String {
    base32_encode(key)
}

/// Decodes a key written by [`encode_key`].
pub fn decode_key(text: &str) -> Result<[u8; 32], DiscoveryError> {
    let bytes = base32_decode(text).map_err(|e| DiscoveryError::BadKey(e.to_string()))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| DiscoveryError::BadKey(format!("{len} bytes, want 32")))
}

/// The TXT properties a node with this hashname and key advertises, in order.
pub fn txt_properties(hashname: &Hashname, static_key: &[u8; 32]) -> Vec<(String, String)> {
    vec![
        ("hn".to_owned(), hashname.to_string()),
        ("key".to_owned(), encode_key(static_key)),
        ("v".to_owned(), TXT_VERSION.to_owned()),
    ]
}

/// A received advertisement, before verification: plain data so it can be tested (and fuzzed)
/// without a network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// The full service instance name, e.g. `<hashname>._mef-mesh._udp.local.`.
    pub fullname: String,
    /// The SRV port.
    pub port: u16,
    /// The resolved addresses (IPv6 link-local ones with their scope id in `scope_ids`).
    pub ips: Vec<IpAddr>,
    /// IPv6 scope ids, parallel to `ips` (0 for none).
    pub scope_ids: Vec<u32>,
    /// TXT properties as `(key, value)`; a key without a value has an empty value.
    pub txt: Vec<(String, String)>,
}

impl Advertisement {
    fn txt(&self, key: &'static str) -> Result<&str, DiscoveryError> {
        // RFC 6763 §6.4: keys are case-insensitive; the first occurrence wins.
        self.txt
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .ok_or(DiscoveryError::MissingTxt(key))
    }

    /// The instance label of [`Advertisement::fullname`], if it is of our service type.
    pub fn instance(&self) -> Result<&str, DiscoveryError> {
        instance_of(&self.fullname)
    }

    /// Verifies the advertisement and turns it into a [`PeerRecord`].
    pub fn verify(&self) -> Result<PeerRecord, DiscoveryError> {
        let version = self.txt("v")?;
        if version != TXT_VERSION {
            return Err(DiscoveryError::UnsupportedVersion(version.to_owned()));
        }
        let hashname: Hashname = self.txt("hn")?.parse()?;
        let key = decode_key(self.txt("key")?)?;
        let instance = self.instance()?;
        if instance != hashname.to_string() {
            return Err(DiscoveryError::InstanceMismatch {
                instance: instance.to_owned(),
                hashname,
            });
        }
        let mut addrs: Vec<SocketAddr> = self
            .ips
            .iter()
            .enumerate()
            .map(|(i, ip)| match ip {
                IpAddr::V4(v4) => SocketAddr::from((*v4, self.port)),
                IpAddr::V6(v6) => {
                    let scope = self.scope_ids.get(i).copied().unwrap_or(0);
                    SocketAddr::V6(std::net::SocketAddrV6::new(*v6, self.port, 0, scope))
                }
            })
            .collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() || self.port == 0 {
            return Err(DiscoveryError::NoAddress);
        }
        PeerRecord::verified(hashname, key, addrs)
    }
}

/// The instance label of a full service name `<instance>._mef-mesh._udp.local.` (case-insensitive
/// suffix match, as DNS names are).
pub fn instance_of(fullname: &str) -> Result<&str, DiscoveryError> {
    let wrong = || DiscoveryError::WrongServiceType(fullname.to_owned());
    let suffix_len = SERVICE_TYPE.len() + 1; // ".<service type>"
    if fullname.len() <= suffix_len || !fullname.is_char_boundary(fullname.len() - suffix_len) {
        return Err(wrong());
    }
    let (instance, rest) = fullname.split_at(fullname.len() - suffix_len);
    let rest = rest.strip_prefix('.').ok_or_else(wrong)?;
    if !rest.eq_ignore_ascii_case(SERVICE_TYPE) {
        return Err(wrong());
    }
    Ok(instance)
}
