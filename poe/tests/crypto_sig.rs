//! ed25519 signatures over domain-prefixed messages (`poe::sig`), with keys from an RNG of the
//! workspace's `rand_core`.
#![allow(clippy::unwrap_used)]

use poe::sig::{SigError, SigningKey, TX_DOMAIN, VOTE_DOMAIN, node_id, verify};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[test]
fn generated_keys_sign_and_verify() {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let a = SigningKey::generate(&mut rng);
    let b = SigningKey::generate(&mut rng);
    assert_ne!(a.public(), b.public());
    assert_eq!(a.node_id(), node_id(&a.public()));

    let parts: [&[u8]; 3] = [b"height", &7u64.to_be_bytes(), &[0xaa; 32]];
    let sig = a.sign(VOTE_DOMAIN, &parts);
    assert_eq!(verify(&a.public(), VOTE_DOMAIN, &parts, &sig), Ok(()));
    // Deterministic (RFC 8032 §5.1.6).
    assert_eq!(a.sign(VOTE_DOMAIN, &parts), sig);
    // A vote signature is not a transaction signature, and not b's.
    assert_eq!(
        verify(&a.public(), TX_DOMAIN, &parts, &sig),
        Err(SigError::BadSignature)
    );
    assert_eq!(
        verify(&b.public(), VOTE_DOMAIN, &parts, &sig),
        Err(SigError::BadSignature)
    );
    // Moving bytes between the domain and the message changes nothing only when the
    // concatenation is equal; a different message is rejected.
    assert_eq!(
        verify(&a.public(), b"POE1-voteheight", &parts[1..], &sig),
        Ok(())
    );
    assert_eq!(
        verify(&a.public(), VOTE_DOMAIN, &parts[1..], &sig),
        Err(SigError::BadSignature)
    );

    // The key round-trips through its secret bytes.
    let again = SigningKey::from_bytes(&a.to_bytes());
    assert_eq!(again.public(), a.public());
    assert_eq!(again.sign(VOTE_DOMAIN, &parts), sig);

    // Debug shows the node id, never the secret.
    let secret_hex: String = a.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let shown = format!("{a:?}");
    assert!(!shown.contains(&secret_hex[..16]), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn invalid_public_keys_are_errors() {
    // y = 2 is not the encoding of a curve point.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    let r = verify(&not_a_point, TX_DOMAIN, &[b"m"], &[0; 64]);
    assert!(
        r == Err(SigError::InvalidPublicKey) || r == Err(SigError::BadSignature),
        "{r:?}"
    );
    // Small-order points are rejected as keys.
    assert_eq!(
        verify(&[0; 32], TX_DOMAIN, &[b"m"], &[0; 64]),
        Err(SigError::InvalidPublicKey)
    );
}
