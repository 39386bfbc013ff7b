//! The light client against chains built by `poe::devnet` (every element genuine): a valid
//! chain from a checkpoint is accepted (one by one and in a catch-up batch), transactions are
//! proven by RFC 6962 inclusion proofs, and a chain with any single forged element (a clerk
//! signature included) is refused without changing the client's state.

use std::sync::OnceLock;

use light_client::{HEADER_BYTES, LightClient, LightError};
use poe::devnet::{DevNode, Devnet};
use poe::merkle;
use poe::verify::{Params, VerifyError};
use poe::wire::{Block, BlockHeader, Encode, Level, Phase};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

/// 4 level-1 and 2 level-2 members (thresholds 0: every ticket and seal qualifies), and a
/// 12-block chain with 3 transactions per block; built once (RSA key generation is slow).
fn net() -> &'static (Devnet, Vec<Block>) {
    static NET: OnceLock<(Devnet, Vec<Block>)> = OnceLock::new();
    NET.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let d = Devnet::new(&mut rng, 4, 2, Params::default(), 2048).expect("devnet");
        let chain = d.chain(&d.genesis, 12, 3).expect("chain");
        (d, chain)
    })
}

fn client(capacity: usize) -> LightClient {
    let (d, _) = net();
    LightClient::from_checkpoint(d.genesis, d.members.clone(), d.params, capacity).expect("client")
}

fn headers() -> Vec<BlockHeader> {
    net().1.iter().map(|b| b.header.clone()).collect()
}

#[test]
fn accepts_a_valid_chain_one_by_one_and_keeps_a_bounded_window() {
    let mut c = client(8);
    for h in headers() {
        c.push(&h).expect("valid header");
    }
    assert_eq!(c.tip().height, 12);
    assert_eq!(c.window_len(), (8, 8));
    assert!(c.header(4).is_none(), "oldest headers leave the window");
    assert_eq!(
        c.header(12).map(|v| v.block_id),
        Some(headers()[11].block_id())
    );
}

#[test]
fn catch_up_sync_accepts_the_whole_run() {
    let mut c = client(32);
    assert_eq!(c.sync(&headers()), Ok(12));
    assert_eq!(c.tip().height, 12);
}

#[test]
fn inclusion_proofs_use_the_verified_root_and_size() {
    let (_, chain) = net();
    let mut c = client(32);
    c.sync(&headers()).expect("sync");
    let block = &chain[5];
    let leaves: Vec<Vec<u8>> = block.txs.iter().map(|t| t.to_bytes()).collect();
    for (i, leaf) in leaves.iter().enumerate() {
        let proof = merkle::inclusion_proof(&leaves, i).expect("proof");
        c.verify_inclusion(6, leaf, i as u64, &proof)
            .expect("included");
        assert!(
            c.verify_inclusion(6, leaf, (i as u64 + 1) % 3, &proof)
                .is_err()
        );
        assert!(
            c.verify_inclusion(7, leaf, i as u64, &proof).is_err(),
            "other block"
        );
    }
    let mut forged = leaves[0].clone();
    forged[10] ^= 1;
    let proof = merkle::inclusion_proof(&leaves, 0).expect("proof");
    assert!(c.verify_inclusion(6, &forged, 0, &proof).is_err());
    assert_eq!(
        c.verify_inclusion(99, &leaves[0], 0, &proof),
        Err(LightError::UnknownHeight(99))
    );
}

/// Every way of forging header 3 of the chain; each must be refused, by `push` and by `sync`.
fn forgeries() -> Vec<(&'static str, BlockHeader)> {
    let (d, chain) = net();
    let good = chain[2].header.clone();
    let id = good.block_id();
    let mut out = Vec::new();
    let mut h = good.clone();
    if let Some(b) = h.ticket.proof.get_mut(100) {
        *b ^= 1;
    }
    out.push(("tampered ticket proof", h));
    let mut h = good.clone();
    h.ticket.round += 1;
    out.push(("ticket round changed", h));
    let mut h = good.clone();
    h.ticket.node = d.level2[0].id();
    out.push(("ticket claimed by a level-2 node", h));
    let mut h = good.clone();
    if let Some(s) = h.seal.as_mut()
        && let Some(b) = s.proof.get_mut(7)
    {
        *b ^= 0x80;
    }
    out.push(("tampered seal proof", h));
    let mut h = good.clone();
    h.seal = None;
    out.push(("unsealed", h));
    let mut h = good.clone();
    if let Some(s) = h.seal.as_mut() {
        // A level-1 member's VRF output over the same input is not a level-2 seal.
        s.node = d.level1[0].id();
        s.proof = d.level1[0]
            .vrf
            .prove(&poe::lottery::seal_alpha(&id))
            .expect("prove");
    }
    out.push(("sealed by a level-1 node", h));
    let mut h = good.clone();
    h.tx_root[0] ^= 1;
    out.push(("transactions changed after sealing", h));
    let mut h = good.clone();
    h.prev_hash[0] ^= 1;
    out.push(("wrong parent", h));
    let mut h = good.clone();
    h.height += 1;
    out.push(("height skips", h));
    let mut h = good.clone();
    if let Some(c) = h.commit.as_mut() {
        c.votes.pop();
    }
    out.push(("certificate below quorum", h));
    let mut h = good.clone();
    if let Some(c) = h.commit.as_mut()
        && let Some(v) = c.votes.first_mut()
    {
        v.1[0] ^= 1;
    }
    out.push(("forged vote signature", h));
    let mut h = good.clone();
    if let Some(c) = h.commit.as_mut()
        && c.votes.len() >= 2
    {
        c.votes[1] = c.votes[0];
    }
    out.push(("duplicate voter", h));
    let mut h = good.clone();
    h.commit = Some(
        d.certificate(Phase::Prepare, good.height, good.ticket.round, &id)
            .expect("cert"),
    );
    out.push(("prepare certificate instead of commit", h));
    let mut h = good.clone();
    h.commit = None;
    out.push(("no certificate", h));
    out.extend(clerk_forgeries());
    let outsider = {
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        DevNode::generate(&mut rng, Level::One, 2048).expect("outsider")
    };
    let mut h = good.clone();
    if let Some(c) = h.commit.as_mut()
        && let Some(v) = c.votes.last_mut()
    {
        let vote = outsider.vote(Phase::Commit, good.height, good.ticket.round, &id);
        *v = (vote.voter, vote.signature);
        c.votes.sort_by_key(|v| v.0);
    }
    out.push(("vote by a non-member", h));
    out
}

/// A block re-proposed in a later round (docs/POE.md, "Locks and re-proposal") is final with
/// a commit certificate of a round after its ticket's: accepted; one of a round before its
/// ticket's is refused.
#[test]
fn a_commit_certificate_of_a_later_round_than_the_ticket_is_accepted() {
    let (d, _) = net();
    let good = headers();
    let mut c = client(32);
    c.push(&good[0]).expect("h1");
    c.push(&good[1]).expect("h2");
    let parent = *c.tip();
    let mut h = good[2].clone();
    h.ticket = d.best_ticket_from(&parent, 2).expect("ticket");
    h.seal = None;
    h.commit = None;
    d.level1_node(&h.ticket.node)
        .expect("ticket holder")
        .sign_header(&mut h);
    let id = h.block_id();
    h.seal = Some(d.seal(&id).expect("seal"));
    let round = h.ticket.round;
    assert!(round >= 2);
    let mut early = h.clone();
    early.commit = Some(
        d.certificate(Phase::Commit, h.height, round - 1, &id)
            .expect("cert"),
    );
    assert!(
        matches!(
            c.push(&early),
            Err(LightError::Header {
                source: VerifyError::CommitBeforeTicket { .. },
                ..
            })
        ),
        "commit round before the ticket's"
    );
    assert_eq!(*c.tip(), parent);
    h.commit = Some(
        d.certificate(Phase::Commit, h.height, round + 3, &id)
            .expect("cert"),
    );
    c.push(&h).expect("re-proposed header");
    assert_eq!(c.tip().block_id, id);
    // And in a catch-up batch, where the certificate is checked on the newest header only.
    let mut batch = client(32);
    assert_eq!(batch.sync(&[good[0].clone(), good[1].clone(), h]), Ok(3));
}

/// Forgeries of header 3's clerk signature, each otherwise genuine: the header's own
/// signature bit-flipped, another header's signature, a signature by another level-1 member,
/// and a block built under the copied ticket by another member (new transactions, signed by
/// that member, with a genuine seal and commit certificate for the new `block_id`: only the
/// clerk signature can tell).
fn clerk_forgeries() -> Vec<(&'static str, BlockHeader)> {
    let (d, chain) = net();
    let good = chain[2].header.clone();
    let clerk = good.ticket.node;
    let thief = d
        .level1
        .iter()
        .find(|n| n.id() != clerk)
        .expect("another level-1 member");
    let mut out = Vec::new();
    let mut h = good.clone();
    h.clerk_sig[17] ^= 0x04;
    out.push(("forged clerk signature", h));
    let mut h = good.clone();
    h.clerk_sig = chain[1].header.clerk_sig;
    out.push(("clerk signature of another header", h));
    let mut h = good.clone();
    thief.sign_header(&mut h);
    out.push(("signed by another level-1 member", h));
    let mut h = good.clone();
    h.tx_root = merkle::root(&[b"stolen".as_slice()]);
    h.tx_count = 1;
    thief.sign_header(&mut h);
    let id = h.block_id();
    h.seal = Some(d.seal(&id).expect("seal"));
    h.commit = Some(
        d.certificate(Phase::Commit, good.height, good.ticket.round, &id)
            .expect("cert"),
    );
    out.push(("block built under a copied ticket", h));
    out
}

#[test]
fn forged_clerk_signatures_are_refused_as_such() {
    let good = headers();
    let clerk = good[2].ticket.node;
    for (what, forged) in clerk_forgeries() {
        // Pushed (full check) or as the newest header of a catch-up batch (its certificate and
        // clerk signature are checked): refused as a bad clerk signature, nothing changes.
        for as_tip_of_batch in [false, true] {
            let mut c = client(32);
            c.push(&good[0]).expect("h1");
            c.push(&good[1]).expect("h2");
            let err = if as_tip_of_batch {
                c.sync(std::slice::from_ref(&forged)).map(|_| ())
            } else {
                c.push(&forged).map(|_| ())
            };
            assert_eq!(
                err,
                Err(LightError::Header {
                    height: 3,
                    source: VerifyError::BadClerkSignature(clerk)
                }),
                "{what} (batch tip: {as_tip_of_batch})"
            );
            assert_eq!(c.tip().height, 2, "{what}: state changed");
        }
        // Inside a batch, below a certified newest header: a header under a copied ticket has
        // another `block_id`, so the next header's link refuses it; a replaced signature on
        // the genuine header changes nothing kept (the compact header has no signature), and
        // the client ends on the genuine chain.
        let mut c = client(32);
        c.push(&good[0]).expect("h1");
        c.push(&good[1]).expect("h2");
        match c.sync(&[forged.clone(), good[3].clone()]) {
            Ok(2) => {
                assert_eq!(forged.block_id(), good[2].block_id(), "{what}");
                assert_eq!(c.tip().block_id, good[3].block_id(), "{what}");
            }
            Err(LightError::Header {
                height: 4,
                source: VerifyError::BadLink { .. },
            }) => {
                assert_ne!(forged.block_id(), good[2].block_id(), "{what}");
                assert_eq!(c.tip().height, 2, "{what}: state changed");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn every_forged_element_is_refused_and_changes_nothing() {
    let good = headers();
    for (what, forged) in forgeries() {
        let mut c = client(32);
        c.push(&good[0]).expect("h1");
        c.push(&good[1]).expect("h2");
        let before = *c.tip();
        let err = c.push(&forged);
        assert!(
            matches!(err, Err(LightError::Header { height: _, .. })),
            "{what}: accepted ({err:?})"
        );
        assert_eq!(*c.tip(), before, "{what}: state changed");
        c.push(&good[2]).expect("the genuine header still verifies");
    }
}

#[test]
fn catch_up_refuses_a_run_with_a_forged_ticket_or_seal_and_keeps_state() {
    let mut run = headers();
    for (what, forged) in forgeries() {
        // `sync` skips certificates and clerk signatures of all but the last header (covered by
        // its certificate: see `forged_clerk_signatures_are_refused_as_such`); ticket, seal and
        // link forgeries are still caught anywhere in the run.
        let genuine = &headers()[2];
        let signature_only = {
            let mut f = forged.clone();
            f.clerk_sig = genuine.clerk_sig;
            f == *genuine
        };
        let certificate_only =
            what.contains("certificate") || what.contains("vote") || what.contains("voter");
        if certificate_only || signature_only {
            continue;
        }
        run[2] = forged;
        let mut c = client(32);
        let before = *c.tip();
        assert!(c.sync(&run).is_err(), "{what}: run accepted");
        assert_eq!(*c.tip(), before, "{what}: state changed");
    }
    // A forged certificate on the last header of a run is caught.
    let mut run = headers();
    if let Some(c) = run[11].commit.as_mut() {
        c.votes.pop();
    }
    let mut c = client(32);
    assert!(matches!(
        c.sync(&run),
        Err(LightError::Header {
            height: 12,
            source: VerifyError::NoQuorum { .. }
        })
    ));
}

#[test]
fn a_window_of_1000_headers_fits_in_256_kib() {
    let c = client(1000);
    assert!(c.window_bytes() >= 1000 * HEADER_BYTES);
    assert!(
        c.window_bytes() <= 256 * 1024,
        "{} bytes for 1000 headers",
        c.window_bytes()
    );
    assert!(matches!(
        LightClient::from_checkpoint(
            net().0.genesis,
            net().0.members.clone(),
            Params::default(),
            0
        ),
        Err(LightError::EmptyWindow)
    ));
}
