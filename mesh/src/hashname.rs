//! Identities and telehash v3 hashnames.
//!
//! A [`Hashname`] is the telehash v3 fingerprint of one or more cipher-set keys (telehash v3
//! `hashname.md`, "Hashname Generation"): each key's *intermediate* is `SHA-256(key bytes)`,
//! then the intermediates are rolled up in ascending CSID order —
//!
//! ```text
//! hash = []                                   // empty
//! for (csid, intermediate) in ascending csid:
//!     hash = SHA-256(hash || csid)            // one byte
//!     hash = SHA-256(hash || intermediate)    // 32 bytes
//! hashname = base32(hash)                     // RFC 4648, lowercase, no padding: 52 chars
//! ```
//!
//! (`hashname.md`, "Final Rollup": "each resulting 32 byte binary output is concatenated with
//! the next binary value as the input"; the first round hashes the CSID alone.)
//!
//! ## Our cipher set: CSID `0x0a`
//!
//! Our links use Noise with X25519 static keys (see [`crate::link`]), not one of the published
//! telehash cipher sets: CS1a is secp160r1, CS2a RSA/P-256, and CS3a, though it also uses
//! Curve25519 keys, means the NaCl-box handshake of e3x, which we do not speak. Telehash v3
//! (`e3x/cs/README.md`) reserves CSIDs `0x01`–`0x0a` for "special use custom Cipher Sets whose
//! definitions are entirely app-specific", so we use [`CSID_NOISE_X25519`] = `0x0a` for the
//! 32-byte X25519 public key. A gateway's hashname is therefore
//! `Hashname::of_keys(&[(0x0a, &public_key)])`; it can never collide with the hashname a CS3a
//! endpoint computes for the same Curve25519 key, which keeps the two protocols apart.

use std::fmt;
use std::str::FromStr;

use rand::CryptoRng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

/// The custom telehash CSID of our cipher set (Noise, X25519 static keys); see the module docs.
pub const CSID_NOISE_X25519: u8 = 0x0a;

/// Length of a hashname's text form: 32 bytes in unpadded base32.
pub const HASHNAME_TEXT_LEN: usize = 52;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Errors parsing base32 text or a [`Hashname`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashnameError {
    /// The text is not 52 characters long.
    #[error("hashname must be {HASHNAME_TEXT_LEN} characters, got {0}")]
    Length(usize),
    /// A character outside the lowercase RFC 4648 base32 alphabet (`a-z2-7`).
    #[error("invalid base32 character at index {index}")]
    Alphabet {
        /// Byte index of the offending character.
        index: usize,
    },
    /// The length cannot be produced by unpadded base32 (1, 3 or 6 characters mod 8).
    #[error("{0} characters is not a valid unpadded base32 length")]
    Base32Length(usize),
    /// The trailing bits of the last character are not zero (non-canonical encoding).
    #[error("non-canonical base32: trailing bits set")]
    NonCanonical,
}

/// Encodes bytes as RFC 4648 base32, lowercase, without padding (telehash `base32.md`).
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buf: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
        buf &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes lowercase unpadded RFC 4648 base32; rejects bad characters, impossible lengths and
/// non-zero trailing bits.
pub fn base32_decode(text: &str) -> Result<Vec<u8>, HashnameError> {
    let len = text.len();
    if matches!(len % 8, 1 | 3 | 6) {
        return Err(HashnameError::Base32Length(len));
    }
    let mut out = Vec::with_capacity(len * 5 / 8);
    let mut buf: u32 = 0;
    let mut bits = 0u32;
    for (index, c) in text.bytes().enumerate() {
        let v = match c {
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(HashnameError::Alphabet { index }),
        };
        buf = (buf << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    if buf != 0 {
        return Err(HashnameError::NonCanonical);
    }
    Ok(out)
}

/// A telehash v3 hashname: the 32-byte roll-up digest of an endpoint's cipher-set keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hashname(pub [u8; 32]);

impl Hashname {
    /// The intermediate digest of one cipher-set key: `SHA-256(key)` (`hashname.md` step 2).
    pub fn intermediate(key: &[u8]) -> [u8; 32] {
        Sha256::digest(key).into()
    }

    /// Rolls up `(csid, intermediate)` pairs in ascending CSID order (`hashname.md`, "Final
    /// Rollup"). Pairs may be given in any order; they are sorted here.
    pub fn of_intermediates(parts: &[(u8, [u8; 32])]) -> Hashname {
        let mut sorted: Vec<(u8, [u8; 32])> = parts.to_vec();
        sorted.sort_by_key(|p| p.0);
        let mut hash: Vec<u8> = Vec::new();
        for (csid, im) in sorted {
            let mut h = Sha256::new();
            h.update(&hash);
            h.update([csid]);
            let round1 = h.finalize();
            let mut h = Sha256::new();
            h.update(round1);
            h.update(im);
            hash = h.finalize().to_vec();
        }
        let mut out = [0u8; 32];
        if hash.len() == 32 {
            out.copy_from_slice(&hash);
        } else {
            // No keys at all: the spec leaves this undefined; use SHA-256 of nothing.
            out = Sha256::digest([]).into();
        }
        Hashname(out)
    }

    /// The hashname of a set of `(csid, public key bytes)` cipher-set keys.
    pub fn of_keys(keys: &[(u8, &[u8])]) -> Hashname {
        let parts: Vec<(u8, [u8; 32])> = keys
            .iter()
            .map(|(id, k)| (*id, Self::intermediate(k)))
            .collect();
        Self::of_intermediates(&parts)
    }

    /// The hashname of a single X25519 public key under [`CSID_NOISE_X25519`].
    pub fn of_x25519(public: &[u8; 32]) -> Hashname {
        Self::of_keys(&[(CSID_NOISE_X25519, public)])
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Hashname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32_encode(&self.0))
    }
}

impl fmt::Debug for Hashname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hashname({self})")
    }
}

impl FromStr for Hashname {
    type Err = HashnameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != HASHNAME_TEXT_LEN {
            return Err(HashnameError::Length(s.len()));
        }
        let bytes = base32_decode(s)?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| HashnameError::Length(s.len()))?;
        Ok(Hashname(arr))
    }
}

/// A gateway's long-term identity: an X25519 static secret (zeroized on drop).
///
/// `Debug` prints only the hashname, never the secret.
#[derive(Clone)]
pub struct Identity {
    secret: StaticSecret,
    public: [u8; 32],
}

impl Identity {
    /// Generates a fresh identity from a cryptographic RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Identity {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let id = Identity::from_bytes(bytes);
        bytes.zeroize();
        id
    }

    /// An identity from secret key bytes (X25519 clamping is applied at use).
    pub fn from_bytes(mut bytes: [u8; 32]) -> Identity {
        let secret = StaticSecret::from(bytes);
        bytes.zeroize();
        let public = PublicKey::from(&secret).to_bytes();
        Identity { secret, public }
    }

    /// The secret key bytes. Handle with care: zeroize the copy when done.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The X25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// This identity's hashname (CSID [`CSID_NOISE_X25519`]).
    pub fn hashname(&self) -> Hashname {
        Hashname::of_x25519(&self.public)
    }

    /// Secret bytes for snow's builder, in a zeroizing wrapper.
    pub(crate) fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret.to_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("hashname", &self.hashname())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b32(s: &str) -> Vec<u8> {
        base32_decode(s).expect("test vector is base32")
    }

    // Vectors from the telehash v3 spec (`hashname.md`) and the telehash-c / hashname (JS)
    // test suites.
    #[test]
    fn spec_vector_two_keys() {
        let h = Hashname::of_keys(&[
            (
                0x3a,
                &b32("eg3fxjnjkz763cjfnhyabeftyf75m2s4gll3gvmuacegax5h6nia"),
            ),
            (0x1a, &b32("an7lbl5e6vk4ql6nblznjicn5rmf3lmzlm")),
        ]);
        assert_eq!(
            h.to_string(),
            "27ywx5e5ylzxfzxrhptowvwntqrd3jhksyxrfkzi6jfn64d3lwxa"
        );
    }

    #[test]
    fn c_test_vector_keys_and_intermediates() {
        let k1a = b32("vgjz3yjb6cevxjomdleilmzasbj6lcc7");
        let k3a = b32("hp6yglmmqwcbw5hno37uauh6fn6dx5oj7s5vtapaifrur2jv6zha");
        assert_eq!(
            base32_encode(&Hashname::intermediate(&k1a)),
            "ym7p66flpzyncnwkzxv2qk5dtosgnnstgfhw6xj2wvbvm7oz5oaq"
        );
        assert_eq!(
            base32_encode(&Hashname::intermediate(&k3a)),
            "bmxelsxgecormqjlnati6chxqua7wzipxliw5le35ifwxlge2zva"
        );
        let expect = "jvdoio6kjvf3yqnxfvck43twaibbg4pmb7y3mqnvxafb26rqllwa";
        assert_eq!(
            Hashname::of_keys(&[(0x3a, &k3a), (0x1a, &k1a)]).to_string(),
            expect
        );
        let im = |s: &str| -> [u8; 32] { b32(s).try_into().expect("32 bytes") };
        let h = Hashname::of_intermediates(&[
            (
                0x1a,
                im("ym7p66flpzyncnwkzxv2qk5dtosgnnstgfhw6xj2wvbvm7oz5oaq"),
            ),
            (
                0x3a,
                im("bmxelsxgecormqjlnati6chxqua7wzipxliw5le35ifwxlge2zva"),
            ),
        ]);
        assert_eq!(h.to_string(), expect);
        assert_eq!(
            Hashname::of_keys(&[(0x3a, &k3a)]).to_string(),
            "nzf4f6j7ylv53z3m4egrwltv2t2yks4rtpaimeg3avwqsoshqxba"
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!("abc".parse::<Hashname>(), Err(HashnameError::Length(3)));
        // '8' is not in the alphabet (telehash-c's negative vector).
        assert!(matches!(
            "uvabrvfqacyvgcu8kbrrmk9apjbvgvn2wjechqr3vf9c1zm3hv7g".parse::<Hashname>(),
            Err(HashnameError::Alphabet { index: 15 })
        ));
        // 52 chars carry 260 bits: the last 4 must be zero, and 'b' sets one of them.
        assert_eq!(
            "jvdoio6kjvf3yqnxfvck43twaibbg4pmb7y3mqnvxafb26rqllwb".parse::<Hashname>(),
            Err(HashnameError::NonCanonical)
        );
    }

    #[test]
    fn identity_debug_hides_secret() {
        let id = Identity::from_bytes([7; 32]);
        let dbg = format!("{id:?}");
        assert!(dbg.contains(&id.hashname().to_string()));
        assert!(!dbg.contains("7, 7"));
        assert_eq!(
            Identity::from_bytes(id.to_bytes()).public_key(),
            id.public_key()
        );
    }
}
