//! ed25519 signatures (RFC 8032 §5.1, via `ed25519-dalek`) over domain-separated messages, and
//! `NodeId`s (docs/POE.md, "Identities").
//!
//! A message is signed as `domain || parts[0] || parts[1] || ...` (plain concatenation). The
//! domains in use ([`TX_DOMAIN`], [`VOTE_DOMAIN`], [`BLOCK_DOMAIN`], and `"POE1-member"`) are
//! prefix-free, so a signature made for one
//! domain never verifies under another; callers make the parts themselves unambiguous (fixed
//! sizes or the length-prefixed wire encoding).
//!
//! Verification is `verify_strict` (RFC 8032 §5.1.7 plus the rejection of small-order public
//! keys and non-canonical encodings), so a signature cannot be mauled into a second valid one and
//! a key cannot be chosen to make signatures verify for many messages.

use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::Signer as _;
use zeroize::Zeroizing;

use crate::hash::sha256;
use crate::wire::NodeId;

/// Domain of transaction signatures (docs/POE.md, "Identities").
pub const TX_DOMAIN: &[u8] = b"POE1-tx";
/// Domain of vote signatures (docs/POE.md, "Identities").
pub const VOTE_DOMAIN: &[u8] = b"POE1-vote";
/// Domain of the clerk's signature on a block header (docs/POE.md, "Blocks").
pub const BLOCK_DOMAIN: &[u8] = crate::wire::ids::BLOCK_DOMAIN;

/// Why a signature was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The 32 bytes are not a valid ed25519 public key (not a curve point, or of small order).
    #[error("invalid ed25519 public key")]
    InvalidPublicKey,
    /// The signature does not verify for this key, domain and message (or is malformed or not
    /// canonical).
    #[error("ed25519 signature does not verify")]
    BadSignature,
}

/// An ed25519 signing key. The secret is zeroized on drop and never printed by `Debug`.
#[derive(Clone)]
pub struct SigningKey {
    /// `ed25519_dalek::SigningKey` zeroizes its secret on drop (feature `zeroize`).
    inner: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A new random key from a cryptographically secure RNG.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self::from_bytes(&seed)
    }

    /// The key with this 32-byte secret seed (RFC 8032 §5.1.5 private key).
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self {
            inner: ed25519_dalek::SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte secret seed, for storing the key; zeroized when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.inner.to_bytes())
    }

    /// The 32-byte public key (RFC 8032 §5.1.5 encoding).
    pub fn public(&self) -> [u8; 32] {
        self.inner.verifying_key().to_bytes()
    }

    /// This key's `NodeId`: SHA-256 of the public key.
    pub fn node_id(&self) -> NodeId {
        node_id(&self.public())
    }

    /// Signs `domain || msg_parts...` (RFC 8032 §5.1.6; deterministic).
    pub fn sign(&self, domain: &[u8], msg_parts: &[&[u8]]) -> [u8; 64] {
        self.inner.sign(&message(domain, msg_parts)).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("node_id", &Hex(&self.node_id().0))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Checks an ed25519 signature over `domain || msg_parts...` by the key `public`
/// (RFC 8032 §5.1.7, strict: small-order keys and non-canonical `S` or `R` are rejected).
pub fn verify(
    public: &[u8; 32],
    domain: &[u8],
    msg_parts: &[&[u8]],
    sig: &[u8; 64],
) -> Result<(), SigError> {
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(public).map_err(|_| SigError::InvalidPublicKey)?;
    if key.is_weak() {
        return Err(SigError::InvalidPublicKey);
    }
    let sig = ed25519_dalek::Signature::from_bytes(sig);
    key.verify_strict(&message(domain, msg_parts), &sig)
        .map_err(|_| SigError::BadSignature)
}

/// The `NodeId` of an ed25519 public key: its SHA-256 (docs/POE.md, "Identities").
pub fn node_id(public: &[u8; 32]) -> NodeId {
    NodeId(sha256(public))
}

/// `domain || parts...`.
fn message(domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = domain.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(domain);
    for part in parts {
        msg.extend_from_slice(part);
    }
    msg
}

/// Lower-case hex for `Debug` output.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn rfc8032_test_1() {
        // RFC 8032 §7.1, TEST 1: empty message.
        let secret = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let public = [
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
            0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
            0xf7, 0x07, 0x51, 0x1a,
        ];
        let k = SigningKey::from_bytes(&secret);
        assert_eq!(k.public(), public);
        let sig = k.sign(b"", &[]);
        assert_eq!(
            format!("{:?}", Hex(&sig)),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert_eq!(verify(&public, b"", &[], &sig), Ok(()));
    }

    #[test]
    fn sign_verify_and_rejections() {
        let k = key(1);
        let pk = k.public();
        let sig = k.sign(VOTE_DOMAIN, &[b"abc", b"def"]);
        assert_eq!(verify(&pk, VOTE_DOMAIN, &[b"abc", b"def"], &sig), Ok(()));
        // The split of the parts does not matter, only their concatenation.
        assert_eq!(verify(&pk, VOTE_DOMAIN, &[b"abcdef"], &sig), Ok(()));
        // Wrong domain, message or key.
        assert_eq!(
            verify(&pk, TX_DOMAIN, &[b"abc", b"def"], &sig),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify(&pk, VOTE_DOMAIN, &[b"abc", b"deg"], &sig),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify(&key(2).public(), VOTE_DOMAIN, &[b"abc", b"def"], &sig),
            Err(SigError::BadSignature)
        );
        // A flipped signature bit.
        let mut bad = sig;
        bad[10] ^= 1;
        assert_eq!(
            verify(&pk, VOTE_DOMAIN, &[b"abc", b"def"], &bad),
            Err(SigError::BadSignature)
        );
        // The identity point is a small-order key: rejected outright.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            verify(&identity, VOTE_DOMAIN, &[], &[0u8; 64]),
            Err(SigError::InvalidPublicKey)
        );
    }

    #[test]
    fn node_id_is_sha256_of_public_key() {
        let k = key(3);
        assert_eq!(k.node_id(), NodeId(sha256(&k.public())));
        assert_eq!(k.node_id(), node_id(&k.public()));
        assert_ne!(key(4).node_id(), k.node_id());
    }

    #[test]
    fn debug_prints_no_secret() {
        let secret = [0xabu8; 32];
        let k = SigningKey::from_bytes(&secret);
        let s = format!("{k:?}");
        assert!(s.contains("<redacted>"));
        assert!(!s.contains("abababab"), "{s}");
        let s = format!("{k:#?}");
        assert!(!s.contains("abababab"), "{s}");
        assert!(!s.contains("171, 171"), "{s}");
        assert_eq!(k.to_bytes().as_slice(), &secret);
    }
}
