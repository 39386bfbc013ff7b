//! RSA-FDH-VRF-SHA256 (RFC 9381 §4): known-answer vectors and the VRF's properties.
//!
//! The vectors are the RSA-FDH-VRF-SHA256 examples that the RFC 9381 authors' reference
//! implementation (used to generate the document's test vectors) checks itself against: its
//! 2048-bit key with the empty alpha (the document's "Example 1") and three vectors from hacspec
//! on a 2047-bit modulus (k = 256). See the header of `crypto_vrf_vectors.txt`.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use poe::lottery::{seal_alpha, ticket_alpha};
use poe::vrf::{DEFAULT_MODULUS_BITS, VrfError, VrfPublicKey, VrfSecretKey, proof_to_hash};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// One key of the vector file and its (alpha, pi, beta) triples.
struct VectorKey {
    name: String,
    n: Vec<u8>,
    d: Vec<u8>,
    e: Vec<u8>,
    cases: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

fn vectors() -> Vec<VectorKey> {
    let text = include_str!("crypto_vrf_vectors.txt");
    let mut keys: Vec<VectorKey> = Vec::new();
    let mut alpha = None;
    let mut pi = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            keys.push(VectorKey {
                name: name.to_string(),
                n: vec![],
                d: vec![],
                e: vec![],
                cases: vec![],
            });
            continue;
        }
        let (k, v) = line.split_once('=').unwrap();
        let key = keys.last_mut().unwrap();
        match k {
            "n" => key.n = unhex(v),
            "d" => key.d = unhex(v),
            "e" => key.e = unhex(v),
            "alpha" => alpha = Some(unhex(v)),
            "pi" => pi = Some(unhex(v)),
            "beta" => key
                .cases
                .push((alpha.take().unwrap(), pi.take().unwrap(), unhex(v))),
            other => panic!("unknown field {other}"),
        }
    }
    keys
}

/// Two 2048-bit keys, generated once for all tests (key generation is slow).
fn keys() -> &'static (VrfSecretKey, VrfSecretKey) {
    static KEYS: OnceLock<(VrfSecretKey, VrfSecretKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(0x5eed);
        (
            VrfSecretKey::generate(&mut rng, DEFAULT_MODULUS_BITS).unwrap(),
            VrfSecretKey::generate(&mut rng, DEFAULT_MODULUS_BITS).unwrap(),
        )
    })
}

#[test]
fn reference_vectors_verify_and_prove() {
    let keys = vectors();
    assert_eq!(keys.len(), 2);
    let mut checked = 0;
    for key in &keys {
        let public = VrfPublicKey::from_components(&key.n, &key.e).unwrap();
        assert_eq!(public.modulus_len(), 256, "{}", key.name);
        let secret = VrfSecretKey::from_components(&key.n, &key.e, &key.d).unwrap();
        assert_eq!(secret.public(), public);
        for (alpha, pi, beta) in &key.cases {
            // RFC 9381 §4.3: the published proof verifies and yields the published beta.
            let got = public.verify(alpha, pi).unwrap();
            assert_eq!(
                got.as_slice(),
                beta.as_slice(),
                "{} alpha {alpha:02x?}",
                key.name
            );
            // §4.2 on its own.
            assert_eq!(proof_to_hash(pi).as_slice(), beta.as_slice());
            // §4.1: proving gives exactly the published proof.
            assert_eq!(&secret.prove(alpha).unwrap(), pi, "{}", key.name);
            // And the proof is for this alpha only.
            let mut other = alpha.clone();
            other.push(0);
            assert_eq!(public.verify(&other, pi), Err(VrfError::InvalidProof));
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}

#[test]
fn proofs_verify_and_are_deterministic() {
    let (a, _) = keys();
    let pk = a.public();
    assert_eq!(pk.modulus_len(), 256);
    for alpha in [
        Vec::new(),
        b"x".to_vec(),
        ticket_alpha(7, &[3; 32], 0),
        ticket_alpha(7, &[3; 32], 1),
        seal_alpha(&[9; 32]),
        vec![0xff; 5000],
    ] {
        let pi = a.prove(&alpha).unwrap();
        // The proof is k octets.
        assert_eq!(pi.len(), pk.modulus_len());
        let beta = pk.verify(&alpha, &pi).unwrap();
        assert_eq!(beta, proof_to_hash(&pi));
        // Deterministic: the same key and input give the same proof (blinding does not show).
        assert_eq!(a.prove(&alpha).unwrap(), pi);
    }
    // Different inputs give different outputs.
    let b0 = pk
        .verify(
            &ticket_alpha(7, &[3; 32], 0),
            &a.prove(&ticket_alpha(7, &[3; 32], 0)).unwrap(),
        )
        .unwrap();
    let b1 = pk
        .verify(
            &ticket_alpha(7, &[3; 32], 1),
            &a.prove(&ticket_alpha(7, &[3; 32], 1)).unwrap(),
        )
        .unwrap();
    assert_ne!(b0, b1);
}

#[test]
fn wrong_key_alpha_or_tampered_proof_is_rejected() {
    let (a, b) = keys();
    let alpha = ticket_alpha(1, &[0; 32], 0);
    let pi = a.prove(&alpha).unwrap();
    let pk = a.public();

    // Wrong key.
    assert_eq!(b.public().verify(&alpha, &pi), Err(VrfError::InvalidProof));
    // Wrong alpha.
    assert_eq!(
        pk.verify(&ticket_alpha(1, &[0; 32], 1), &pi),
        Err(VrfError::InvalidProof)
    );
    // Every byte position tampered.
    for i in (0..pi.len()).step_by(17).chain([pi.len() - 1]) {
        let mut bad = pi.clone();
        bad[i] ^= 0x01;
        assert!(pk.verify(&alpha, &bad).is_err(), "byte {i}");
    }
    // Wrong length: truncated, extended (even with a leading zero: the RFC's pi has k octets).
    assert_eq!(
        pk.verify(&alpha, &pi[1..]),
        Err(VrfError::ProofLength {
            expected: 256,
            actual: 255
        })
    );
    let mut longer = vec![0u8];
    longer.extend_from_slice(&pi);
    assert_eq!(
        pk.verify(&alpha, &longer),
        Err(VrfError::ProofLength {
            expected: 256,
            actual: 257
        })
    );
    // A representative not below n (RSAVP1 step 1).
    assert_eq!(
        pk.verify(&alpha, &[0xff; 256]),
        Err(VrfError::ProofOutOfRange)
    );
    // Zero is in range, but is not the proof.
    assert_eq!(pk.verify(&alpha, &[0; 256]), Err(VrfError::InvalidProof));
    // Another key's proof for the same alpha.
    let other = b.prove(&alpha).unwrap();
    assert_eq!(pk.verify(&alpha, &other), Err(VrfError::InvalidProof));
}

#[test]
fn keys_round_trip_through_pkcs1_der() {
    let (a, _) = keys();
    let der = a.public().to_pkcs1_der();
    let pk = VrfPublicKey::from_pkcs1_der(&der).unwrap();
    assert_eq!(pk, a.public());
    let sk_der = a.to_pkcs1_der().unwrap();
    let sk = VrfSecretKey::from_pkcs1_der(&sk_der).unwrap();
    assert_eq!(sk.public(), a.public());
    let alpha = seal_alpha(&[1; 32]);
    assert_eq!(sk.prove(&alpha).unwrap(), a.prove(&alpha).unwrap());

    // Garbage and truncated DER are errors, not panics.
    assert!(VrfPublicKey::from_pkcs1_der(&[]).is_err());
    assert!(VrfPublicKey::from_pkcs1_der(&der[..der.len() - 1]).is_err());
    assert!(VrfPublicKey::from_pkcs1_der(&[0x30, 0x03, 0x02, 0x01, 0x05]).is_err());
    assert!(VrfSecretKey::from_pkcs1_der(&der).is_err());
}

#[test]
fn key_policy() {
    // Too small a modulus (a 1024-bit n with e = 65537): rejected.
    let mut n = vec![0xc5; 128];
    n[127] |= 1;
    assert_eq!(
        VrfPublicKey::from_components(&n, &[1, 0, 1]),
        Err(VrfError::ModulusSize { len: 128 })
    );
    // Even exponent: rejected by the rsa crate.
    let mut n = vec![0xc5; 256];
    n[255] |= 1;
    assert!(matches!(
        VrfPublicKey::from_components(&n, &[1, 0, 0]),
        Err(VrfError::Rsa(_))
    ));
    // An even modulus (no RSA key has one) is refused, or at worst verifies nothing; it must
    // never reach the Montgomery verifier, which cannot handle it.
    let mut n = vec![0xc5; 256];
    n[255] &= !1;
    if let Ok(k) = VrfPublicKey::from_components(&n, &[1, 0, 1]) {
        let mut proof = vec![0x11; 256];
        proof[0] = 0;
        assert!(k.verify(b"alpha", &proof).is_err());
    }
    // Key sizes outside 2048..=4096 are refused before any work.
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    assert_eq!(
        VrfSecretKey::generate(&mut rng, 1024).unwrap_err(),
        VrfError::KeySize { bits: 1024 }
    );
    assert_eq!(
        VrfSecretKey::generate(&mut rng, 8192).unwrap_err(),
        VrfError::KeySize { bits: 8192 }
    );
}

#[test]
fn debug_prints_no_secret() {
    let (a, _) = keys();
    let der = a.to_pkcs1_der().unwrap();
    let s = format!("{a:?} {a:#?}");
    assert!(s.contains("<redacted>"), "{s}");
    // No long run of the private key's DER (which holds d, p, q) shows up, in hex or decimal.
    let hex: String = der[der.len() - 40..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!s.contains(&hex), "{s}");
    assert!(s.len() < 400, "{s}");
}
