//! The lottery end to end: tickets proved with the VRF, checked against `z1`, ranked.
#![allow(clippy::unwrap_used)]

use poe::lottery::{Rank, leading_zeros, qualifies, seal_alpha, threshold, ticket_alpha};
use poe::vrf::{DEFAULT_MODULUS_BITS, VrfSecretKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[test]
fn tickets_rank_and_qualify() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let nodes: Vec<VrfSecretKey> = (0..2)
        .map(|_| VrfSecretKey::generate(&mut rng, DEFAULT_MODULUS_BITS).unwrap())
        .collect();
    let prev = [0x11; 32];
    let mut ranks = Vec::new();
    for round in 0..3u32 {
        let alpha = ticket_alpha(5, &prev, round);
        for node in &nodes {
            let proof = node.prove(&alpha).unwrap();
            // What a receiver does: verify against the sender's public key, then rank.
            let beta = node.public().verify(&alpha, &proof).unwrap();
            let rank = Rank::new(round, beta);
            assert_eq!(rank.zeros, leading_zeros(&beta));
            // With 2 members and k = 4 expected candidates, everyone qualifies.
            assert!(qualifies(&beta, threshold(2, 4)));
            ranks.push(rank);
        }
    }
    // Distinct outputs: no ties, and round 0 always beats later rounds.
    let best = *ranks.iter().min().unwrap();
    assert_eq!(best.round, 0);
    ranks.sort();
    ranks.dedup();
    assert_eq!(ranks.len(), 6);
    assert!(ranks.windows(2).all(|w| w[0] < w[1]));

    // Seals use a different input than any ticket: a ticket proof never verifies as a seal.
    let block_id = [0x22; 32];
    let seal = nodes[0].prove(&seal_alpha(&block_id)).unwrap();
    assert!(
        nodes[0]
            .public()
            .verify(&seal_alpha(&block_id), &seal)
            .is_ok()
    );
    assert!(
        nodes[0]
            .public()
            .verify(&ticket_alpha(5, &prev, 0), &seal)
            .is_err()
    );
}
