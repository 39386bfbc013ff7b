//! RFC 6962 §2.1 Merkle tree hashes and inclusion proofs (verified per RFC 9162 §2.1.3.2),
//! against the certificate-transparency reference vectors and a direct transcription of the
//! RFC's recursive definitions.
#![allow(clippy::unwrap_used)]

use poe::hash::{Hash, sha256};
use poe::merkle::{MerkleError, inclusion_proof, leaf_hash, node_hash, root, verify_inclusion};
use proptest::prelude::*;

fn unhex32(s: &str) -> Hash {
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    h
}

/// RFC 6962 §2.1 MTH, written as literally as possible (byte strings, not hashes, as input).
fn reference_mth(d: &[Vec<u8>]) -> Hash {
    let n = d.len();
    if n == 0 {
        return sha256(b"");
    }
    if n == 1 {
        let mut buf = vec![0x00];
        buf.extend_from_slice(&d[0]);
        return sha256(&buf);
    }
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    let mut buf = vec![0x01];
    buf.extend_from_slice(&reference_mth(&d[..k]));
    buf.extend_from_slice(&reference_mth(&d[k..]));
    sha256(&buf)
}

/// RFC 6962 §2.1.1 PATH(m, D[n]), literally.
fn reference_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    if m < k {
        let mut p = reference_path(m, &d[..k]);
        p.push(reference_mth(&d[k..]));
        p
    } else {
        let mut p = reference_path(m - k, &d[k..]);
        p.push(reference_mth(&d[..k]));
        p
    }
}

/// The sides of the siblings on the path of leaf `m` in a tree of `n` leaves, leaf upwards
/// (`true`: the sibling is on the left), from the recursion of RFC 6962 §2.1.1.
fn shape(m: u64, n: u64) -> Vec<bool> {
    if n <= 1 {
        return vec![];
    }
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    let mut s = if m < k {
        shape(m, k)
    } else {
        shape(m - k, n - k)
    };
    s.push(m >= k);
    s
}

fn leaves(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("leaf {i} of {n}").into_bytes())
        .collect()
}

/// The certificate-transparency test inputs (RFC 6962 reference code, `merkle_tree_test`).
fn ct_leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    })
    .collect()
}

#[test]
fn ct_reference_roots_and_paths() {
    let roots = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let d = ct_leaves();
    for (n, want) in roots.iter().enumerate() {
        assert_eq!(root(&d[..n]), unhex32(want), "tree of {n} leaves");
    }
    let path_0_8 = [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ];
    let path_5_8 = [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ];
    let r8 = unhex32(roots[8]);
    for (m, want) in [(0usize, path_0_8), (5, path_5_8)] {
        let want: Vec<Hash> = want.iter().map(|h| unhex32(h)).collect();
        assert_eq!(inclusion_proof(&d, m).unwrap(), want, "PATH({m}, D[8])");
        assert_eq!(verify_inclusion(&d[m], m as u64, 8, &want, &r8), Ok(()));
    }
}

#[test]
fn empty_and_single_leaf() {
    let none: [&[u8]; 0] = [];
    // RFC 6962 §2.1: MTH({}) = SHA-256().
    assert_eq!(root(&none), sha256(b""));
    assert_eq!(inclusion_proof(&none, 0), None);
    // MTH({d0}) = SHA-256(0x00 || d0).
    assert_eq!(root(&[b"abc"]), sha256(b"\x00abc"));
    assert_eq!(root(&[b"abc"]), leaf_hash(b"abc"));
    assert_eq!(inclusion_proof(&[b"abc"], 0), Some(vec![]));
    assert_eq!(inclusion_proof(&[b"abc"], 1), None);
    assert_eq!(
        verify_inclusion(b"abc", 0, 1, &[], &root(&[b"abc"])),
        Ok(())
    );
    assert_eq!(
        verify_inclusion(b"abd", 0, 1, &[], &root(&[b"abc"])),
        Err(MerkleError::RootMismatch)
    );
    // Nothing is in the empty tree.
    assert_eq!(
        verify_inclusion(b"", 0, 0, &[], &sha256(b"")),
        Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
    );
}

#[test]
fn non_power_of_two_sizes_match_the_rfc_definition() {
    for n in [3usize, 5, 6, 7, 9, 12, 13, 31, 33] {
        let d = leaves(n);
        assert_eq!(root(&d), reference_mth(&d), "n={n}");
    }
    // Spelled out for 3 leaves: MTH = H(1 || H(1 || l0 || l1) || l2), the last leaf not
    // duplicated (a Bitcoin-style tree would give the same root for [a, b, c] and [a, b, c, c]).
    let d = leaves(3);
    let l: Vec<Hash> = d.iter().map(|x| leaf_hash(x)).collect();
    assert_eq!(root(&d), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
    let mut d4 = d.clone();
    d4.push(d[2].clone());
    assert_ne!(root(&d), root(&d4));
}

#[test]
fn every_inclusion_proof_up_to_17_leaves() {
    for n in 1..=17usize {
        let d = leaves(n);
        let r = root(&d);
        let size = n as u64;
        for m in 0..n {
            let proof = inclusion_proof(&d, m).unwrap();
            assert_eq!(proof, reference_path(m, &d), "PATH({m}, D[{n}])");
            let index = m as u64;
            assert_eq!(
                verify_inclusion(&d[m], index, size, &proof, &r),
                Ok(()),
                "{m}/{n}"
            );

            // Wrong leaf.
            assert!(verify_inclusion(b"not a leaf", index, size, &proof, &r).is_err());
            // Every proof element tampered.
            for j in 0..proof.len() {
                let mut bad = proof.clone();
                bad[j][0] ^= 0x80;
                assert_eq!(
                    verify_inclusion(&d[m], index, size, &bad, &r),
                    Err(MerkleError::RootMismatch),
                    "{m}/{n} element {j}"
                );
            }
            // Wrong index (every other index of the tree).
            for other in (0..n).filter(|&o| o != m) {
                assert!(
                    verify_inclusion(&d[m], other as u64, size, &proof, &r).is_err(),
                    "{m}/{n} as index {other}"
                );
            }
            // Index out of range.
            assert_eq!(
                verify_inclusion(&d[m], size, size, &proof, &r),
                Err(MerkleError::IndexOutOfRange { index: size, size })
            );
            // Wrong size (smaller, larger, much larger). The proof binds the size only through
            // the shape of the path (RFC 9162 §2.1.3.2 uses it for nothing else), so a wrong
            // size is rejected exactly when it changes that shape.
            for other in [m as u64 + 1, size - 1, size + 1, 2 * size, 1 << 40]
                .into_iter()
                .filter(|&s| s != size && s > index)
            {
                let result = verify_inclusion(&d[m], index, other, &proof, &r);
                assert_eq!(
                    result.is_ok(),
                    shape(m as u64, other) == shape(m as u64, size),
                    "{m}/{n} with size {other}: {result:?}"
                );
            }
            // Proof one hash too long or too short.
            let mut longer = proof.clone();
            longer.push([0; 32]);
            assert!(matches!(
                verify_inclusion(&d[m], index, size, &longer, &r),
                Err(MerkleError::WrongLength { .. })
            ));
            if !proof.is_empty() {
                assert!(matches!(
                    verify_inclusion(&d[m], index, size, &proof[..proof.len() - 1], &r),
                    Err(MerkleError::WrongLength { .. })
                ));
            }
            // Another root.
            assert_eq!(
                verify_inclusion(&d[m], index, size, &proof, &root(&leaves(n + 1))),
                Err(MerkleError::RootMismatch)
            );
        }
        assert_eq!(inclusion_proof(&d, n), None);
    }
}

#[test]
fn size_must_come_from_the_same_source_as_the_root() {
    // Leaf 2 of 3 has the same path shape as leaf 1 of 2: with the size-3 root, the proof also
    // "verifies" for (index 1, size 2). Callers take (size, root) from one trusted place.
    let d = leaves(3);
    let r = root(&d);
    let proof = inclusion_proof(&d, 2).unwrap();
    assert_eq!(verify_inclusion(&d[2], 2, 3, &proof, &r), Ok(()));
    assert_eq!(verify_inclusion(&d[2], 1, 2, &proof, &r), Ok(()));
    assert_eq!(shape(2, 3), shape(1, 2));
    // With the size fixed, the index is bound.
    assert!(verify_inclusion(&d[2], 1, 3, &proof, &r).is_err());
    assert!(verify_inclusion(&d[2], 0, 3, &proof, &r).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn root_and_proofs_match_reference(
        d in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..70),
        pick in any::<proptest::sample::Index>(),
        flip in any::<u8>(),
    ) {
        let r = root(&d);
        prop_assert_eq!(r, reference_mth(&d));
        if !d.is_empty() {
            let m = pick.index(d.len());
            let proof = inclusion_proof(&d, m).unwrap();
            prop_assert_eq!(&proof, &reference_path(m, &d));
            prop_assert!(verify_inclusion(&d[m], m as u64, d.len() as u64, &proof, &r).is_ok());
            // The leaf with one byte changed (or one byte added to an empty leaf) is not at m.
            let mut changed = d[m].clone();
            match changed.first_mut() {
                Some(b) => *b ^= flip | 1,
                None => changed.push(flip),
            }
            prop_assert!(
                verify_inclusion(&changed, m as u64, d.len() as u64, &proof, &r).is_err()
            );
        }
    }
}
