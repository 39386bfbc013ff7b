//! The POE lottery (docs/POE.md, "Lottery"): VRF inputs for tickets and seals, qualification
//! thresholds, and the ranking of tickets.
//!
//! A level-1 member qualifies as a candidate for (height, round) when the VRF output of its
//! ticket has at least `z1 = threshold(n1, k)` leading zero bits, so P(qualify) = 2^-z1 ≥ k/n1;
//! a level-2 member may seal a block when its seal output has at least `z2 = threshold(n2, s)`.

use alloc::vec::Vec;
use core::cmp::Ordering;

use crate::hash::Hash;

/// Domain prefix of ticket VRF inputs.
pub const TICKET_DOMAIN: &[u8] = b"POE1-ticket";
/// Domain prefix of seal VRF inputs.
pub const SEAL_DOMAIN: &[u8] = b"POE1-seal";

/// Number of leading zero bits of a VRF output (256 for the all-zero output).
pub fn leading_zeros(beta: &Hash) -> u32 {
    let mut zeros = 0;
    for &byte in beta {
        if byte != 0 {
            return zeros + byte.leading_zeros();
        }
        zeros += 8;
    }
    zeros
}

/// `max(0, floor(log2(members / expected)))`: the number of leading zero bits a VRF output needs
/// so that, of `members` nodes, about `expected` (and at least that many on average) qualify.
///
/// 0 when `members <= expected` (everyone qualifies). An `expected` of 0 is treated as 1.
/// Exact integer arithmetic: the result is the largest `z` with `expected · 2^z ≤ members`.
pub fn threshold(members: usize, expected: usize) -> u32 {
    let expected = expected.max(1);
    // floor(log2(n / k)) = floor(log2(floor(n / k))) because 2^z is an integer.
    match members / expected {
        0 => 0,
        q => q.ilog2(),
    }
}

/// Whether a VRF output passes a threshold: `leading_zeros(beta) >= threshold`.
pub fn qualifies(beta: &Hash, threshold: u32) -> bool {
    leading_zeros(beta) >= threshold
}

/// The ticket VRF input: `"POE1-ticket" || height (u64 BE) || prev (32) || round (u32 BE)`.
pub fn ticket_alpha(height: u64, prev: &Hash, round: u32) -> Vec<u8> {
    let mut alpha = Vec::with_capacity(TICKET_DOMAIN.len() + 8 + 32 + 4);
    alpha.extend_from_slice(TICKET_DOMAIN);
    alpha.extend_from_slice(&height.to_be_bytes());
    alpha.extend_from_slice(prev);
    alpha.extend_from_slice(&round.to_be_bytes());
    alpha
}

/// The seal VRF input: `"POE1-seal" || block_id (32)`.
pub fn seal_alpha(block_id: &Hash) -> Vec<u8> {
    let mut alpha = Vec::with_capacity(SEAL_DOMAIN.len() + 32);
    alpha.extend_from_slice(SEAL_DOMAIN);
    alpha.extend_from_slice(block_id);
    alpha
}

/// The rank of a ticket. The best ticket is the *smallest* `Rank`: lower round first, then more
/// leading zeros, then the smaller VRF output (a total order, and distinct outputs never tie).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rank {
    /// Spin round of the ticket (0 first).
    pub round: u32,
    /// Leading zero bits of `beta`.
    pub zeros: u32,
    /// The ticket's VRF output.
    pub beta: Hash,
}

impl Rank {
    /// The rank of a ticket of `round` with VRF output `beta` (`zeros` computed from `beta`).
    pub fn new(round: u32, beta: Hash) -> Self {
        Self {
            round,
            zeros: leading_zeros(&beta),
            beta,
        }
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.round
            .cmp(&other.round)
            // More zeros is better, so it sorts first.
            .then_with(|| other.zeros.cmp(&self.zeros))
            .then_with(|| self.beta.cmp(&other.beta))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn beta_with(first: &[u8]) -> Hash {
        let mut b = [0xffu8; 32];
        b[..first.len()].copy_from_slice(first);
        b
    }

    #[test]
    fn leading_zeros_edges() {
        assert_eq!(leading_zeros(&[0; 32]), 256);
        assert_eq!(leading_zeros(&[0xff; 32]), 0);
        assert_eq!(leading_zeros(&beta_with(&[0x80])), 0);
        assert_eq!(leading_zeros(&beta_with(&[0x7f])), 1);
        assert_eq!(leading_zeros(&beta_with(&[0x01])), 7);
        assert_eq!(leading_zeros(&beta_with(&[0x00, 0x80])), 8);
        assert_eq!(leading_zeros(&beta_with(&[0x00, 0x00, 0x10])), 19);
        let mut last = [0u8; 32];
        last[31] = 1;
        assert_eq!(leading_zeros(&last), 255);
        assert!(qualifies(&beta_with(&[0x00, 0x00, 0x10]), 19));
        assert!(!qualifies(&beta_with(&[0x00, 0x00, 0x10]), 20));
        assert!(qualifies(&[0xff; 32], 0));
    }

    #[test]
    fn threshold_examples() {
        // 1,000,000 nodes, 1 expected: log2(10^6) = 19.93.
        assert_eq!(threshold(1_000_000, 1), 19);
        // With the default k = 4: log2(250,000) = 17.93.
        assert_eq!(threshold(1_000_000, 4), 17);
        // n <= k: everyone qualifies.
        assert_eq!(threshold(4, 4), 0);
        assert_eq!(threshold(3, 4), 0);
        assert_eq!(threshold(0, 4), 0);
        assert_eq!(threshold(7, 4), 0);
        // Exact powers: n / k = 2^z gives z.
        assert_eq!(threshold(8, 4), 1);
        assert_eq!(threshold(1024, 1), 10);
        assert_eq!(threshold(1023, 1), 9);
        assert_eq!(threshold(100, 3), 5); // 33.3 -> 5
        assert_eq!(threshold(usize::MAX, 1), usize::BITS - 1);
        assert_eq!(threshold(10, 0), threshold(10, 1));
        // P(qualify) = 2^-z >= k/n for every case.
        for n in 1..300usize {
            for k in 1..10usize {
                let z = threshold(n, k);
                assert!(k << z <= n.max(k), "n={n} k={k} z={z}");
                assert!(k << (z + 1) > n, "n={n} k={k} z={z}");
            }
        }
    }

    #[test]
    fn alphas_have_the_documented_layout() {
        let prev = [0xaa; 32];
        let a = ticket_alpha(0x0102_0304_0506_0708, &prev, 0x0a0b_0c0d);
        let mut want = b"POE1-ticket".to_vec();
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&prev);
        want.extend_from_slice(&[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(a, want);
        assert_eq!(a.len(), 11 + 8 + 32 + 4);
        assert_ne!(ticket_alpha(1, &prev, 0), ticket_alpha(1, &prev, 1));

        let id = [0x55; 32];
        let mut want = b"POE1-seal".to_vec();
        want.extend_from_slice(&id);
        assert_eq!(seal_alpha(&id), want);
    }

    #[test]
    fn rank_order() {
        let low = beta_with(&[0x00, 0x00, 0x01]); // 23 zeros
        let mid = beta_with(&[0x00, 0x10]); // 11 zeros
        let mid2 = beta_with(&[0x00, 0x11]); // 11 zeros, larger
        let high = beta_with(&[0xf0]); // 0 zeros
        // Lower round wins even with fewer zeros.
        assert!(Rank::new(0, high) < Rank::new(1, low));
        // Same round: more zeros wins.
        assert!(Rank::new(2, low) < Rank::new(2, mid));
        assert!(Rank::new(2, mid) < Rank::new(2, high));
        // Same round and zeros: smaller beta wins.
        assert!(Rank::new(2, mid) < Rank::new(2, mid2));
        assert_eq!(Rank::new(2, mid).cmp(&Rank::new(2, mid)), Ordering::Equal);

        let mut ranks = vec![
            Rank::new(1, low),
            Rank::new(0, high),
            Rank::new(0, mid2),
            Rank::new(0, mid),
            Rank::new(0, low),
        ];
        ranks.sort();
        assert_eq!(
            ranks,
            vec![
                Rank::new(0, low),
                Rank::new(0, mid),
                Rank::new(0, mid2),
                Rank::new(0, high),
                Rank::new(1, low),
            ]
        );
        assert_eq!(ranks.iter().min(), Some(&Rank::new(0, low)));
    }
}
