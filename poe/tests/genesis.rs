//! The genesis (`poe::genesis`, docs/POE.md "Genesis file"): the TOML file round-trips, a
//! devnet's genesis file loads to the same membership and genesis block, every refusal has its
//! typed error, the genesis `block_id` covers every field, and neither the file parser nor the
//! binary decoder panics on any input.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use poe::devnet::{DEVNET_CHAIN, Devnet};
use poe::genesis::{
    Genesis, GenesisError, GenesisFileError, MAX_ATTESTATION, MAX_CHAIN_LEN, MAX_MEMBERS,
};
use poe::merkle;
use poe::verify::Params;
use poe::wire::{Decode, Encode, Level, Member, WireError};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

/// A 2 + 1 devnet with RSA-2048 keys (the smallest the VRF accepts), built once.
fn devnet() -> &'static Devnet {
    static CELL: OnceLock<Devnet> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let params = Params {
            expected_candidates: 4,
            expected_sealers: 3,
        };
        Devnet::new(&mut rng, 2, 1, params, 2048).expect("devnet")
    })
}

/// A valid genesis with the devnet's members, a name and a time.
fn sample() -> Genesis {
    let mut g = devnet().genesis_file().clone();
    g.chain = "mef-devnet".into();
    g.time_ms = 1_700_000_000_000;
    g
}

/// `text` with the `n`-th (0-based) occurrence of `pat` replaced by `with`.
fn replace_nth(text: &str, pat: &str, n: usize, with: &str) -> String {
    let (at, _) = text.match_indices(pat).nth(n).expect("occurrence");
    format!("{}{}{}", &text[..at], with, &text[at + pat.len()..])
}

/// The error of loading `text`.
fn file_err(text: &str) -> GenesisFileError {
    Genesis::from_toml(text).expect_err("refused")
}

/// The validation error of loading `text`.
fn invalid(text: &str) -> GenesisError {
    match file_err(text) {
        GenesisFileError::Invalid(e) => e,
        e => panic!("expected a validation error, got {e:?}"),
    }
}

#[test]
fn toml_round_trip() {
    let g = sample();
    let text = g.to_toml();
    assert!(text.starts_with("# POE genesis (docs/POE.md \"Genesis file\")\n"));
    let back = Genesis::from_toml(&text).expect("loads");
    assert_eq!(back, g);
    assert_eq!(back.to_toml(), text);

    // With an attestation, which is written only when nonempty.
    let mut g = sample();
    g.members[1].attestation = vec![7; MAX_ATTESTATION];
    let text = g.to_toml();
    assert_eq!(text.matches("attestation = ").count(), 1);
    assert_eq!(Genesis::from_toml(&text).expect("loads"), g);
}

#[test]
fn documented_example_shape_loads() {
    let g = sample();
    let m = &g.members[0];
    let text = format!(
        "# POE genesis (docs/POE.md \"Genesis file\")\nchain = \"mef-devnet\"\ntime_ms = 1700000000000\n\
         expected_candidates = 4\nexpected_sealers = 3\n\n[[member]]\nlevel = 1\n\
         ed25519 = \"{}\"\nrsa = \"{}\"\n# attestation = \"<base64>\"\n\n[[member]]\nlevel = 2\n\
         ed25519 = \"{}\"\nrsa = \"{}\"\nattestation = \"\"\n",
        m.ed25519
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>(),
        BASE64.encode(&m.rsa_der),
        g.members[2]
            .ed25519
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        BASE64.encode(&g.members[2].rsa_der),
    );
    let back = Genesis::from_toml(&text).expect("loads");
    assert_eq!(
        back.members,
        vec![g.members[0].clone(), g.members[2].clone()]
    );
    assert_eq!(back.params, g.params);
}

#[test]
fn devnet_file_loads_to_same_genesis() {
    let d = devnet();
    let g = d.genesis_file();
    assert_eq!(g.chain, DEVNET_CHAIN);
    assert_eq!(g.time_ms, 0);
    assert_eq!(g.params, d.params);
    let path = std::env::temp_dir().join(format!("poe-genesis-{}.toml", std::process::id()));
    std::fs::write(&path, g.to_toml()).expect("write");
    let loaded = Genesis::load(&path);
    let _ = std::fs::remove_file(&path);
    let loaded = loaded.expect("loads");
    assert_eq!(&loaded, g);
    let (members, verified, params) = loaded.start().expect("valid");
    assert_eq!(members.root(), d.members.root());
    assert_eq!(verified, d.genesis);
    assert_eq!(verified.block_id, loaded.block_id());
    assert_eq!(verified.height, 0);
    assert_eq!(verified.tx_count, 0);
    assert_eq!(verified.tx_root, merkle::root::<&[u8]>(&[]));
    assert_eq!(params, d.params);
}

#[test]
fn load_missing_file_names_path() {
    let path = std::env::temp_dir().join("poe-genesis-does-not-exist/genesis.toml");
    match Genesis::load(&path) {
        Err(GenesisFileError::Io { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn toml_syntax_and_schema_errors() {
    let text = sample().to_toml();
    match file_err("chain = \"a\"\ntime_ms = \n") {
        GenesisFileError::Toml { line, message } => {
            assert_eq!(line, Some(2), "{message}");
            assert!(!message.is_empty());
        }
        e => panic!("{e:?}"),
    }
    // Unknown keys, at the top and in a member.
    assert!(matches!(
        file_err(&format!("extra = 1\n{text}")),
        GenesisFileError::Toml { .. }
    ));
    assert!(matches!(
        file_err(&replace_nth(&text, "level = 1", 0, "level = 1\nweight = 2")),
        GenesisFileError::Toml { .. }
    ));
    // A missing key, a wrong type, a negative or too large integer.
    assert!(matches!(
        file_err(&text.replace("expected_sealers = 3\n", "")),
        GenesisFileError::Toml { .. }
    ));
    assert!(matches!(
        file_err(&replace_nth(&text, "level = 1", 0, "level = \"1\"")),
        GenesisFileError::Toml { .. }
    ));
    assert!(matches!(
        file_err(&text.replace("time_ms = 1700000000000", "time_ms = -1")),
        GenesisFileError::Toml { .. }
    ));
    assert!(matches!(
        file_err(&text.replace("time_ms = 1700000000000", "time_ms = 18446744073709551616")),
        GenesisFileError::Toml { .. }
    ));
    // TOML integers are 64-bit signed (TOML 1.0 §Integer): larger values are refused even
    // where the parser reads them.
    assert_eq!(
        invalid(&text.replace("time_ms = 1700000000000", "time_ms = 9223372036854775808")),
        GenesisError::OutOfRange("time_ms")
    );
    assert!(
        Genesis::from_toml(
            &text.replace("time_ms = 1700000000000", "time_ms = 9223372036854775807")
        )
        .is_ok()
    );
}

#[test]
fn member_field_errors() {
    let g = sample();
    let text = g.to_toml();
    let hex1 = g.members[1]
        .ed25519
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert!(matches!(
        file_err(&text.replace(&hex1, &hex1[..62])),
        GenesisFileError::Length {
            index: 1,
            field: "ed25519",
            len: 62,
            expected: 64
        }
    ));
    assert!(matches!(
        file_err(&text.replace(&hex1, &format!("{hex1}00"))),
        GenesisFileError::Length {
            index: 1,
            field: "ed25519",
            len: 66,
            expected: 64
        }
    ));
    assert!(matches!(
        file_err(&text.replace(&hex1, &format!("g{}", &hex1[1..]))),
        GenesisFileError::Hex {
            index: 1,
            field: "ed25519"
        }
    ));
    // 64 characters, not all ASCII.
    assert!(matches!(
        file_err(&text.replace(&hex1, &format!("é{}", &hex1[1..]))),
        GenesisFileError::Hex {
            index: 1,
            field: "ed25519"
        }
    ));
    let rsa2 = BASE64.encode(&g.members[2].rsa_der);
    assert!(matches!(
        file_err(&text.replace(&rsa2, &format!("*{rsa2}"))),
        GenesisFileError::Base64 {
            index: 2,
            field: "rsa"
        }
    ));
    assert!(matches!(
        file_err(&replace_nth(
            &text,
            "level = 2",
            0,
            "level = 2\nattestation = \"abc\""
        )),
        GenesisFileError::Base64 {
            index: 2,
            field: "attestation"
        }
    ));
    assert!(matches!(
        file_err(&replace_nth(&text, "level = 1", 1, "level = 3")),
        GenesisFileError::Level { index: 1, level: 3 }
    ));
    assert!(matches!(
        file_err(&replace_nth(&text, "level = 1", 0, "level = 0")),
        GenesisFileError::Level { index: 0, level: 0 }
    ));
}

#[test]
fn validation_errors_from_file() {
    let g = sample();
    let text = g.to_toml();
    let chain = |c: &str| text.replace("chain = \"mef-devnet\"", &format!("chain = \"{c}\""));
    assert_eq!(invalid(&chain("")), GenesisError::EmptyChain);
    assert_eq!(
        invalid(&chain("mef-Devnet")),
        GenesisError::ChainChar { at: 4, ch: 'D' }
    );
    assert_eq!(
        invalid(&chain("mef_devnet")),
        GenesisError::ChainChar { at: 3, ch: '_' }
    );
    assert_eq!(
        invalid(&chain(&"a".repeat(MAX_CHAIN_LEN + 1))),
        GenesisError::ChainTooLong(MAX_CHAIN_LEN + 1)
    );
    assert!(Genesis::from_toml(&chain(&"a".repeat(MAX_CHAIN_LEN))).is_ok());
    assert_eq!(
        invalid(&text.replace("expected_candidates = 4", "expected_candidates = 0")),
        GenesisError::ZeroParam("expected_candidates")
    );
    assert_eq!(
        invalid(&text.replace("expected_sealers = 3", "expected_sealers = 0")),
        GenesisError::ZeroParam("expected_sealers")
    );
    assert_eq!(
        invalid(&text.replace("level = 2", "level = 1")),
        GenesisError::NoMemberOfLevel(Level::Two)
    );
    assert_eq!(
        invalid(&text.replace("level = 1", "level = 2")),
        GenesisError::NoMemberOfLevel(Level::One)
    );
    let no_members = text.split("\n[[member]]").next().expect("head");
    assert_eq!(
        invalid(no_members),
        GenesisError::NoMemberOfLevel(Level::One)
    );

    // A third level-1 member with member 0's ed25519 key.
    let hex0 = g.members[0]
        .ed25519
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let hex2 = g.members[2]
        .ed25519
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(
        invalid(&text.replace(&hex2, &hex0)),
        GenesisError::DuplicateKey { index: 2, first: 0 }
    );
    // RSA keys that do not parse: junk, empty.
    let rsa1 = BASE64.encode(&g.members[1].rsa_der);
    assert_eq!(
        invalid(&text.replace(&rsa1, &BASE64.encode(b"not a key"))),
        GenesisError::BadKey { index: 1 }
    );
    assert_eq!(
        invalid(&text.replace(&rsa1, "")),
        GenesisError::BadKey { index: 1 }
    );
    // An attestation above the limit.
    let long = BASE64.encode(vec![0u8; MAX_ATTESTATION + 1]);
    assert_eq!(
        invalid(&replace_nth(
            &text,
            "level = 2",
            0,
            &format!("level = 2\nattestation = \"{long}\"")
        )),
        GenesisError::AttestationTooLong {
            index: 2,
            len: MAX_ATTESTATION + 1
        }
    );
}

#[test]
fn validation_errors_in_code() {
    let g = sample();
    let mut t = g.clone();
    t.time_ms = i64::MAX as u64 + 1;
    assert_eq!(
        t.validate().err(),
        Some(GenesisError::OutOfRange("time_ms"))
    );
    let mut t = g.clone();
    t.params.expected_sealers = usize::MAX;
    assert_eq!(
        t.validate().err(),
        Some(GenesisError::OutOfRange("expected_sealers"))
    );
    let mut t = g.clone();
    t.members[0].rsa_der = vec![0; 16 * 1024 + 1];
    assert_eq!(t.validate().err(), Some(GenesisError::BadKey { index: 0 }));
    let mut t = g.clone();
    let m = t.members[0].clone();
    t.members = vec![m; MAX_MEMBERS as usize + 1];
    assert_eq!(
        t.validate().err(),
        Some(GenesisError::TooManyMembers(MAX_MEMBERS as usize + 1))
    );
    // `start` is validate then verified.
    let (members, verified, params) = g.start().expect("valid");
    assert_eq!(verified, g.verified(&members));
    assert_eq!(verified.time_ms, g.time_ms);
    assert_eq!(params, g.params);
}

#[test]
fn block_id_covers_every_field() {
    let g = sample();
    let id = g.block_id();
    let mut changed: Vec<Genesis> = Vec::new();
    let mut push = |f: &dyn Fn(&mut Genesis)| {
        let mut t = g.clone();
        f(&mut t);
        changed.push(t);
    };
    push(&|t| t.chain = "mef-devnet2".into());
    push(&|t| t.time_ms += 1);
    push(&|t| t.params.expected_candidates += 1);
    push(&|t| t.params.expected_sealers += 1);
    push(&|t| t.members[0].level = Level::Two);
    push(&|t| t.members[1].ed25519[31] ^= 1);
    push(&|t| {
        let last = t.members[2].rsa_der.len() - 1;
        t.members[2].rsa_der[last] ^= 1;
    });
    push(&|t| t.members[2].attestation = vec![1]);
    push(&|t| t.members.swap(0, 1));
    push(&|t| {
        t.members.pop();
    });
    for (i, t) in changed.iter().enumerate() {
        assert_ne!(t.block_id(), id, "change {i}");
    }
    // The domain and the encoding, nothing else.
    let mut pre = b"POE1-genesis".to_vec();
    pre.extend_from_slice(&g.to_bytes());
    assert_eq!(id, poe::hash::sha256(&pre));
}

#[test]
fn binary_decode_errors() {
    let g = sample();
    let bytes = g.to_bytes();
    assert_eq!(Genesis::decode(&bytes), Ok(g.clone()));
    let mut b = bytes.clone();
    b[0] = 2;
    assert_eq!(
        Genesis::decode(&b),
        Err(WireError::BadVersion {
            message: "Genesis",
            version: 2
        })
    );
    let mut b = bytes.clone();
    b.push(0);
    assert_eq!(
        Genesis::decode(&b),
        Err(WireError::TrailingBytes {
            message: "Genesis",
            count: 1
        })
    );
    // Chain length 65, then a byte outside [a-z0-9-].
    let mut b = bytes.clone();
    b[1..5].copy_from_slice(&65u32.to_be_bytes());
    assert!(matches!(
        Genesis::decode(&b),
        Err(WireError::TooLong {
            field: "Genesis.chain",
            len: 65,
            max: 64
        })
    ));
    let mut b = bytes.clone();
    b[5] = b'M';
    assert_eq!(
        Genesis::decode(&b),
        Err(WireError::BadTag {
            field: "Genesis.chain",
            tag: b'M'
        })
    );
    // The member count above the limit, and above what the input can hold.
    let at = 1 + 4 + g.chain.len() + 8 + 8 + 8;
    let mut b = bytes.clone();
    b[at..at + 4].copy_from_slice(&(MAX_MEMBERS + 1).to_be_bytes());
    assert!(matches!(
        Genesis::decode(&b),
        Err(WireError::TooLong {
            field: "Genesis.members",
            ..
        })
    ));
    let mut b = bytes.clone();
    b[at..at + 4].copy_from_slice(&MAX_MEMBERS.to_be_bytes());
    assert!(matches!(
        Genesis::decode(&b),
        Err(WireError::Truncated {
            field: "Genesis.members",
            ..
        })
    ));
    for n in 0..bytes.len() {
        assert!(
            matches!(
                Genesis::decode(&bytes[..n]),
                Err(WireError::Truncated { .. })
            ),
            "prefix {n}"
        );
    }
}

/// The fuzz seeds (`fuzz/seeds/poe_genesis`) are one valid genesis, as a file and encoded.
#[test]
fn fuzz_seeds_are_valid() {
    let text = include_str!("../../fuzz/seeds/poe_genesis/valid.toml");
    let bin = include_bytes!("../../fuzz/seeds/poe_genesis/valid.bin");
    let g = Genesis::from_toml(text).expect("seed file loads");
    assert_eq!(g.to_toml(), text);
    assert_eq!(g.to_bytes(), bin);
    assert_eq!(Genesis::decode(bin), Ok(g));
}

/// An arbitrary (not necessarily valid) genesis whose name and sizes are within the
/// decoder's limits.
fn any_genesis() -> impl Strategy<Value = Genesis> {
    let member = (
        prop::bool::ANY,
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(two, ed25519, rsa_der, attestation)| Member {
            level: if two { Level::Two } else { Level::One },
            ed25519,
            rsa_der,
            attestation,
        });
    (
        "[a-z0-9-]{0,64}",
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(member, 0..6),
    )
        .prop_map(|(chain, time_ms, k, s, members)| Genesis {
            chain,
            time_ms,
            params: Params {
                expected_candidates: k as usize,
                expected_sealers: s as usize,
            },
            members,
        })
}

proptest! {
    #[test]
    fn from_toml_never_panics(s in "\\PC*") {
        let _ = Genesis::from_toml(&s);
    }

    #[test]
    fn from_toml_never_panics_on_tomlish(s in "[a-z_=\\[\\]\"\n 0-9.{},#-]{0,200}") {
        let _ = Genesis::from_toml(&s);
    }

    #[test]
    fn from_toml_never_panics_on_mutated_files(
        at in any::<prop::sample::Index>(),
        cut in 0usize..40,
        insert in "\\PC{0,12}",
    ) {
        let text = sample().to_toml();
        let mut start = at.index(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mutated = format!("{}{}{}", &text[..start], insert, &text[end..]);
        if let Ok(g) = Genesis::from_toml(&mutated) {
            // Whatever loads is valid and round-trips.
            prop_assert!(g.validate().is_ok());
            prop_assert_eq!(Genesis::from_toml(&g.to_toml()).ok(), Some(g));
        }
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(g) = Genesis::decode(&bytes) {
            prop_assert_eq!(g.to_bytes(), bytes);
        }
    }

    #[test]
    fn decode_round_trips(g in any_genesis()) {
        let bytes = g.to_bytes();
        prop_assert_eq!(Genesis::decode(&bytes), Ok(g));
    }

    #[test]
    fn decode_never_panics_on_mutated_encodings(
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in 0usize..8,
    ) {
        let mut bytes = sample().to_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        bytes.truncate(bytes.len() - cut);
        if let Ok(g) = Genesis::decode(&bytes) {
            prop_assert_eq!(g.to_bytes(), bytes);
        }
    }

    #[test]
    fn to_toml_round_trips_valid(chain in "[a-z0-9-]{1,64}", time_ms in 0u64..=i64::MAX as u64) {
        let mut g = sample();
        g.chain = chain;
        g.time_ms = time_ms;
        prop_assert_eq!(Genesis::from_toml(&g.to_toml()).ok(), Some(g));
    }
}
