//! Keys, timestamps and the BLAKE2s helpers of the WireGuard paper §5.4.4 (MAC1/MAC2, cookies).
//!
//! Every secret type zeroizes its bytes on drop and prints as `<redacted>` in `Debug`, so a
//! `tracing` field or a panic message can never leak key material.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng as _;
use std::fmt;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// WireGuard §5.4.4: `LABEL_COOKIE` (shared with the mesh, crate `wg-guard`).
pub use wg_guard::cookie::LABEL_COOKIE;
/// WireGuard §5.4.4: `LABEL_MAC1` (shared with the mesh, crate `wg-guard`).
pub use wg_guard::cookie::LABEL_MAC1;
/// `MAC(key, data)` and constant-time MAC equality (WireGuard §5.4.4), from `wg-guard`.
pub use wg_guard::cookie::{mac, mac_eq};

/// Why a key could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// Not valid base64.
    #[error("key is not valid base64: {0}")]
    Base64(String),
    /// Decoded to the wrong number of bytes.
    #[error("key decodes to {0} bytes, expected 32")]
    Length(usize),
}

fn decode32(s: &str) -> Result<[u8; 32], KeyError> {
    let mut v = B64
        .decode(s.trim())
        .map_err(|e| KeyError::Base64(e.to_string()))?;
    let out = <[u8; 32]>::try_from(v.as_slice()).map_err(|_| KeyError::Length(v.len()));
    v.zeroize();
    out
}

/// An x25519 static private key. Zeroized on drop; `Debug` prints `<redacted>`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A fresh random key from the operating system's CSPRNG (via `rand`'s thread RNG).
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        Self::from_bytes(b)
    }

    /// Wraps raw bytes (clamping is done by X25519 itself, RFC 7748 §5).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Decodes standard base64 (as `wg genkey` and `mef-router keygen` print).
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(Self)
    }

    /// Encodes as base64. The only way key bytes leave this type in text form: call it only to
    /// write a key file.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// The raw bytes (for `snow`'s builder).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The matching public key, `X25519(k, 9)`.
    pub fn public_key(&self) -> PublicKey {
        let s = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&s).to_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// An optional pre-shared symmetric key mixed in by the `psk2` modifier (WireGuard §5.2,
/// Noise spec §9). All zeros when not configured, as in WireGuard.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Decodes standard base64.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(Self)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// An x25519 public key. Public, so `Debug`/`Display` print its base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Decodes standard base64.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(Self)
    }

    /// Encodes as standard base64.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// The TAI64N timestamp of WireGuard §5.1, shared with the mesh (crate `wg-guard`).
pub use wg_guard::Tai64N;

/// `HASH(label || key)` with BLAKE2s-256 (WireGuard §5.4.4).
pub fn hash_label(label: &[u8], key: &PublicKey) -> [u8; 32] {
    wg_guard::cookie::hash_label(label, &key.0)
}

/// Our own keys plus the values derived from the public key that every incoming message needs.
#[derive(Clone)]
pub struct LocalKeys {
    /// Static private key.
    pub private: PrivateKey,
    /// Static public key.
    pub public: PublicKey,
    /// `HASH(LABEL_MAC1 || S_pub)`: verifies MAC1 of messages sent to us.
    pub mac1_key: [u8; 32],
    /// `HASH(LABEL_COOKIE || S_pub)`: encrypts cookie replies we send.
    pub cookie_key: [u8; 32],
}

impl LocalKeys {
    /// Derives the MAC and cookie keys from a private key.
    pub fn new(private: PrivateKey) -> Self {
        let public = private.public_key();
        Self {
            mac1_key: hash_label(LABEL_MAC1, &public),
            cookie_key: hash_label(LABEL_COOKIE, &public),
            private,
            public,
        }
    }
}

impl fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeys")
            .field("private", &self.private)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_keys_round_trip() {
        let k = PrivateKey::generate();
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
        assert!(!format!("{:?}", LocalKeys::new(k.clone())).contains(&k.to_base64()));
        let back = PrivateKey::from_base64(&k.to_base64()).expect("decode");
        assert_eq!(back.public_key(), k.public_key());
        assert_eq!(PublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
        assert!(matches!(
            PublicKey::from_base64("!!"),
            Err(KeyError::Base64(_))
        ));
    }
}
