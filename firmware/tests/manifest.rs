//! Manifest encoding, signing and verification.

use ed25519_dalek::SigningKey;
use firmware::blockstore::{RAW, cid_of};
use firmware::manifest::{Manifest, ManifestError, SIGNING_DOMAIN, SignedManifest, Version};
use proptest::prelude::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn sample() -> Manifest {
    Manifest {
        model: "mef-sensor-v2".into(),
        version: Version::new(1, 4, 2),
        root: cid_of(RAW, b"firmware image"),
        size: 123_456,
        notes: "Fixes the radio timeout.\nAdds LPP.".into(),
        released_ms: 1_790_000_000_000,
    }
}

#[test]
fn manifest_round_trip() {
    let m = sample();
    let bytes = m.encode().expect("encode");
    assert_eq!(&bytes[..5], b"MEFM\x01");
    assert_eq!(Manifest::decode(&bytes).expect("decode"), m);
    let json = m.to_json().expect("json");
    assert_eq!(Manifest::from_json(&json).expect("from json"), m);
}

#[test]
fn signed_manifest_round_trip_and_verifies() {
    let k = key(7);
    let signed = sample().sign(&k).expect("sign");
    let bytes = signed.encode().expect("encode");
    let back = SignedManifest::decode(&bytes).expect("decode");
    assert_eq!(back, signed);
    assert_eq!(back.verify(&k.verifying_key()).expect("verify"), &sample());
    SignedManifest::decode_verified(&bytes, &k.verifying_key()).expect("decode_verified");
    let json = signed.to_json().expect("json");
    assert_eq!(SignedManifest::from_json(&json).expect("from json"), signed);
}

#[test]
fn signing_bytes_are_domain_then_encoding() {
    let m = sample();
    let sb = m.signing_bytes().expect("signing bytes");
    assert_eq!(&sb[..16], SIGNING_DOMAIN);
    assert_eq!(&sb[16..], m.encode().expect("encode").as_slice());
}

#[test]
fn wrong_key_rejected() {
    let signed = sample().sign(&key(1)).expect("sign");
    assert_eq!(
        signed.verify(&key(2).verifying_key()),
        Err(ManifestError::WrongSigner)
    );
    // Claiming the manufacturer as signer does not help: the signature is by another key.
    let mut forged = sample().sign(&key(2)).expect("sign");
    forged.signer = key(1).verifying_key().to_bytes();
    assert_eq!(
        forged.verify(&key(1).verifying_key()),
        Err(ManifestError::BadSignature)
    );
}

#[test]
fn each_tampered_field_rejected() {
    let k = key(3);
    let vk = k.verifying_key();
    let signed = sample().sign(&k).expect("sign");
    type Tamper = Box<dyn Fn(&mut SignedManifest)>;
    let tampers: Vec<(&str, Tamper)> = vec![
        ("model", Box::new(|s| s.manifest.model.push('x'))),
        ("version.major", Box::new(|s| s.manifest.version.major += 1)),
        ("version.minor", Box::new(|s| s.manifest.version.minor += 1)),
        ("version.patch", Box::new(|s| s.manifest.version.patch += 1)),
        (
            "root",
            Box::new(|s| s.manifest.root = cid_of(RAW, b"evil image")),
        ),
        ("size", Box::new(|s| s.manifest.size += 1)),
        ("notes", Box::new(|s| s.manifest.notes.push('!'))),
        ("released_ms", Box::new(|s| s.manifest.released_ms += 1)),
        ("signature", Box::new(|s| s.signature[10] ^= 1)),
    ];
    for (field, tamper) in tampers {
        let mut t = signed.clone();
        tamper(&mut t);
        assert_eq!(
            t.verify(&vk),
            Err(ManifestError::BadSignature),
            "tampered {field}"
        );
    }
    // Every single bit flip of the encoding is either refused by decode or by verify.
    let bytes = signed.encode().expect("encode");
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        assert!(
            SignedManifest::decode_verified(&b, &vk).is_err(),
            "bit {i} flipped accepted"
        );
    }
}

#[test]
fn truncated_and_garbage_rejected() {
    let bytes = sample()
        .sign(&key(4))
        .expect("sign")
        .encode()
        .expect("encode");
    for n in 0..bytes.len() {
        assert!(
            SignedManifest::decode(&bytes[..n]).is_err(),
            "prefix {n} accepted"
        );
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(
        SignedManifest::decode(&long),
        Err(ManifestError::TrailingBytes(1))
    );
    assert_eq!(Manifest::decode(b"NOPE\x01"), Err(ManifestError::BadMagic));
    assert_eq!(
        Manifest::decode(b"MEFM\x02"),
        Err(ManifestError::UnsupportedFormat(2))
    );
    assert_eq!(
        Manifest::decode(b"MEFM\x01"),
        Err(ManifestError::Truncated("model length"))
    );
    assert_eq!(
        Manifest::decode(b"MEFM\x01\x00"),
        Err(ManifestError::BadLength {
            field: "model",
            len: 0
        })
    );
    let mut bad_text = sample().encode().expect("encode");
    bad_text[6] = 0xff; // first model byte: invalid UTF-8
    assert_eq!(
        Manifest::decode(&bad_text),
        Err(ManifestError::BadText("model"))
    );
}

#[test]
fn invalid_manifests_not_encoded() {
    let mut m = sample();
    m.model = String::new();
    assert!(m.encode().is_err());
    let mut m = sample();
    m.model = "a\u{0}b".into();
    assert_eq!(m.encode(), Err(ManifestError::BadText("model")));
    let mut m = sample();
    m.notes = "x".repeat(5000);
    assert!(m.encode().is_err());
}

#[test]
fn version_ordering_and_parsing() {
    let m = sample();
    assert!(m.is_update_for("mef-sensor-v2", Version::new(1, 4, 1)));
    assert!(m.is_update_for("mef-sensor-v2", Version::new(0, 99, 99)));
    assert!(!m.is_update_for("mef-sensor-v2", Version::new(1, 4, 2)));
    assert!(!m.is_update_for("mef-sensor-v2", Version::new(1, 10, 0)));
    assert!(!m.is_update_for("other-model", Version::new(0, 0, 1)));
    let mut older = sample();
    older.version = Version::new(1, 3, 9);
    assert!(m.is_newer_than(&older));
    assert!(!older.is_newer_than(&m));
    older.model = "other".into();
    assert!(!m.is_newer_than(&older));
    assert_eq!("1.4.2".parse::<Version>(), Ok(Version::new(1, 4, 2)));
    assert_eq!(Version::new(10, 0, 3).to_string(), "10.0.3");
    for bad in [
        "",
        "1",
        "1.2",
        "1.2.3.4",
        "1.-2.3",
        "1.+2.3",
        "a.b.c",
        "1..3",
        "99999999999.0.0",
    ] {
        assert!(bad.parse::<Version>().is_err(), "{bad:?} accepted");
    }
}

proptest! {
    #[test]
    fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(s) = SignedManifest::decode(&data) {
            prop_assert_eq!(s.encode().expect("re-encode"), data.clone());
        }
        if let Ok(m) = Manifest::decode(&data) {
            prop_assert_eq!(m.encode().expect("re-encode"), data);
        }
    }

    #[test]
    fn mutated_valid_encoding_never_panics(pos in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let mut bytes = sample().sign(&key(5)).expect("sign").encode().expect("encode");
        let i = pos % bytes.len();
        bytes[i] = byte;
        bytes.truncate(bytes.len() - cut % bytes.len());
        let _ = SignedManifest::decode_verified(&bytes, &key(5).verifying_key());
    }
}
