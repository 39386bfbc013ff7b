//! Arbitrary bytes decoded as a firmware `SignedManifest` (and a bare `Manifest`) never panic; an
//! accepted one re-encodes to the same bytes, its signing bytes are the domain and the manifest
//! encoding, and verification against a fixed manufacturer key never panics.
#![no_main]

use firmware::manifest::{Manifest, SIGNING_DOMAIN, SignedManifest};
use libfuzzer_sys::fuzz_target;

const MANUFACTURER: [u8; 32] = [
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
    0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode().ok().as_deref(), Some(data), "Manifest re-encodes differently");
        let signing = m.signing_bytes().unwrap_or_default();
        assert!(signing.starts_with(SIGNING_DOMAIN));
        assert_eq!(&signing[SIGNING_DOMAIN.len()..], data);
        let _ = m.to_json();
    }
    if let Ok(s) = SignedManifest::decode(data) {
        assert_eq!(s.encode().ok().as_deref(), Some(data), "SignedManifest re-encodes differently");
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&MANUFACTURER) {
            let _ = s.verify(&key);
        }
    }
});
