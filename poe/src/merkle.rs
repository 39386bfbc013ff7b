//! RFC 6962 §2.1 Merkle tree hashes (the block's `tx_root`) and inclusion proofs, verified with
//! the algorithm of RFC 9162 §2.1.3.2.
//!
//! Leaves are hashed with a `0x00` prefix and interior nodes with a `0x01` prefix, so a leaf can
//! never be passed off as an interior node (second-preimage resistance, RFC 6962 §2.1). Unlike
//! Bitcoin-style trees, the last node of an odd level is *not* duplicated: the tree of `n` leaves
//! splits at the largest power of two below `n`, so a root commits to the number of leaves.

use alloc::vec::Vec;

use crate::hash::{Hash, sha256, sha256_parts};

/// Why an inclusion proof was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index is not below the tree size (RFC 9162 §2.1.3.2 step 1).
    #[error("leaf index {index} is out of range for a tree of {size} leaves")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The proof has more hashes than the path from this leaf to the root (step 4.a), or fewer
    /// (step 5: `sn` is not 0 at the end).
    #[error("the proof has {len} hashes, not the path length for leaf {index} of {size}")]
    WrongLength {
        /// Number of hashes in the proof.
        len: usize,
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The proof recomputes a different root (step 5).
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// The leaf hash of RFC 6962 §2.1: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256_parts(&[&[0x00], data])
}

/// The interior node hash of RFC 6962 §2.1: `SHA-256(0x01 || left || right)`.
pub fn node_hash(l: &Hash, r: &Hash) -> Hash {
    sha256_parts(&[&[0x01], l, r])
}

/// The Merkle Tree Hash `MTH(D[n])` of RFC 6962 §2.1 over the leaves' data (each leaf is hashed
/// with [`leaf_hash`] here). The empty tree's hash is SHA-256 of the empty string.
pub fn root<T: AsRef<[u8]>>(leaves: &[T]) -> Hash {
    if leaves.is_empty() {
        // RFC 6962 §2.1: MTH({}) = SHA-256().
        return sha256(&[]);
    }
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
    subtree_root(&hashes)
}

/// The audit path `PATH(m, D[n])` of RFC 6962 §2.1.1 for the leaf at `index`, from the leaf's
/// sibling up to the root's child; `None` when `index` is not below the number of leaves.
pub fn inclusion_proof<T: AsRef<[u8]>>(leaves: &[T], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
    let mut proof = Vec::new();
    path(index, &hashes, &mut proof);
    Some(proof)
}

/// Checks that `leaf` (the leaf's data, hashed here with [`leaf_hash`]) is the leaf at `index` of
/// the tree of `size` leaves whose root is `root`, with the algorithm of RFC 9162 §2.1.3.2.
///
/// `size` and `root` must come from the same trusted source: the proof binds the size only
/// through the shape of the path, so with a wrong size a proof can still verify, for another
/// index (leaf 2 of 3 has the same path as leaf 1 of 2). Membership of the leaf in the tree of
/// `root` holds regardless.
pub fn verify_inclusion(
    leaf: &[u8],
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    let wrong_length = MerkleError::WrongLength {
        len: proof.len(),
        index,
        size,
    };
    // RFC 9162 §2.1.3.2 step 1: leaf_index must be below tree_size.
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    // Step 2: fn = leaf_index, sn = tree_size - 1.
    let mut fn_ = index;
    let mut sn = size - 1;
    // Step 3: r = hash (the leaf hash).
    let mut r = leaf_hash(leaf);
    // Step 4: for each value p in the inclusion_path array:
    for p in proof {
        // 4.a: if sn is 0, the proof is too long.
        if sn == 0 {
            return Err(wrong_length);
        }
        // 4.b: if LSB(fn) is set, or fn equals sn, then
        if fn_ & 1 == 1 || fn_ == sn {
            // i. r = HASH(0x01 || p || r)
            r = node_hash(p, &r);
            // ii. if LSB(fn) is not set, right-shift fn and sn equally until either LSB(fn) is
            // set or fn is 0.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            // Otherwise: r = HASH(0x01 || r || p).
            r = node_hash(&r, p);
        }
        // 4.c: right-shift both fn and sn one time.
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5: compare sn to 0 and r against the root hash.
    if sn != 0 {
        return Err(wrong_length);
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// The largest power of two strictly below `n` (RFC 6962 §2.1's `k`); `n` must be at least 2.
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    // n >= 2, so n - 1 >= 1 and the shift is below usize::BITS.
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// `MTH` over already-hashed leaves; `hashes` is not empty.
fn subtree_root(hashes: &[Hash]) -> Hash {
    match hashes {
        [] => sha256(&[]),
        [one] => *one,
        _ => {
            // RFC 6962 §2.1: MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])), with k
            // the largest power of two smaller than n. Depth is log2(n).
            let k = split_point(hashes.len());
            node_hash(&subtree_root(&hashes[..k]), &subtree_root(&hashes[k..]))
        }
    }
}

/// RFC 6962 §2.1.1 `PATH(m, D[n])` over already-hashed leaves, appended to `out`; `m < n`.
fn path(m: usize, hashes: &[Hash], out: &mut Vec<Hash>) {
    if hashes.len() <= 1 {
        // PATH(0, {d(0)}) = {}.
        return;
    }
    let k = split_point(hashes.len());
    if m < k {
        // PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k.
        path(m, &hashes[..k], out);
        out.push(subtree_root(&hashes[k..]));
    } else {
        // PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k]) for m >= k.
        path(m - k, &hashes[k..], out);
        out.push(subtree_root(&hashes[..k]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(65_536), 32_768);
    }

    #[test]
    fn prefixes_separate_leaves_from_nodes() {
        let l = leaf_hash(b"x");
        assert_eq!(l, sha256(&[0x00, b'x']));
        let n = node_hash(&l, &l);
        let mut buf = alloc::vec![0x01];
        buf.extend_from_slice(&l);
        buf.extend_from_slice(&l);
        assert_eq!(n, sha256(&buf));
        // A 64-byte leaf equal to two hashes is not the node over them.
        assert_ne!(leaf_hash(&buf[1..]), n);
    }
}
