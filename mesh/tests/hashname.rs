//! Hashname properties: text round trip, never panicking on arbitrary strings, identities.

use mesh::hashname::{CSID_NOISE_X25519, base32_decode, base32_encode};
use mesh::{Hashname, HashnameError, Identity};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

#[test]
fn identity_generate_and_hashname() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let a = Identity::generate(&mut rng);
    let b = Identity::generate(&mut rng);
    assert_ne!(a.public_key(), b.public_key());
    let h = a.hashname();
    assert_eq!(
        h,
        Hashname::of_keys(&[(CSID_NOISE_X25519, &a.public_key())])
    );
    assert_eq!(h.to_string().len(), 52);
    assert_eq!(Identity::from_bytes(a.to_bytes()).hashname(), h);
    assert!(!format!("{a:?}").contains(&format!("{:?}", a.to_bytes())));
}

#[test]
fn csid_order_does_not_matter_but_csid_does() {
    let k1 = [1u8; 32];
    let k2 = [2u8; 32];
    assert_eq!(
        Hashname::of_keys(&[(0x0a, &k1), (0x3a, &k2)]),
        Hashname::of_keys(&[(0x3a, &k2), (0x0a, &k1)])
    );
    assert_ne!(
        Hashname::of_keys(&[(0x0a, &k1)]),
        Hashname::of_keys(&[(0x3a, &k1)])
    );
}

#[test]
fn uppercase_is_rejected() {
    let h = Hashname([9; 32]).to_string().to_uppercase();
    assert!(matches!(
        h.parse::<Hashname>(),
        Err(HashnameError::Alphabet { index: 0 })
    ));
}

proptest! {
    #[test]
    fn display_parse_round_trip(bytes: [u8; 32]) {
        let h = Hashname(bytes);
        let s = h.to_string();
        prop_assert_eq!(s.len(), 52);
        prop_assert_eq!(s.parse::<Hashname>(), Ok(h));
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,80}") {
        let _ = s.parse::<Hashname>();
        let _ = base32_decode(&s);
    }

    #[test]
    fn parse_never_panics_near_alphabet(s in "[a-z2-9A-Z=]{0,60}") {
        if let Ok(h) = s.parse::<Hashname>() {
            prop_assert_eq!(h.to_string(), s);
        }
    }

    #[test]
    fn base32_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(base32_decode(&base32_encode(&bytes)), Ok(bytes));
    }
}
