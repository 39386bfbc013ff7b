//! SHA-256 (FIPS 180-4), the one hash of POE: block ids, transaction ids, `NodeId`s, Merkle trees
//! (RFC 6962 §2.1) and the VRF output (RFC 9381 §4.2).

use sha2::{Digest, Sha256};

pub use crate::wire::Hash;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// SHA-256 of the concatenation of `parts`, without building the concatenation.
///
/// `sha256_parts(&[a, b]) == sha256(&[a, b].concat())`: the parts are *not* length-prefixed, so
/// callers that hash variable-length parts must make the split unambiguous themselves (fixed
/// sizes, a domain prefix, or explicit lengths).
pub fn sha256_parts(parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(h: &Hash) -> alloc::string::String {
        use core::fmt::Write;
        let mut s = alloc::string::String::new();
        for b in h {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    #[test]
    fn fips_180_vectors() {
        // FIPS 180-4 examples (NIST CSRC "SHA256.pdf"): "" and "abc".
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parts_equal_concatenation() {
        assert_eq!(sha256_parts(&[]), sha256(b""));
        assert_eq!(sha256_parts(&[b"a", b"", b"bc"]), sha256(b"abc"));
        assert_eq!(
            sha256_parts(&[b"POE1-seal", &[7u8; 32]]),
            sha256(&[b"POE1-seal".as_slice(), &[7u8; 32]].concat())
        );
    }
}
