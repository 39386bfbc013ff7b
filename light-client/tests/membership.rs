//! The light client across membership changes: a block in which two level-1 members leave and
//! a new one joins (approved by a quorum of the old set) is followed one header at a time and
//! in a catch-up run, given the block's membership transactions with inclusion proofs; a
//! server that leaves a change out, adds a transaction that is not one, or proves one at the
//! wrong place is refused, and afterwards the votes of the members that left no longer count
//! while the new member's do.

use std::sync::OnceLock;

use light_client::{LightClient, LightError, MemberChange};
use poe::devnet::{DevNode, Devnet};
use poe::verify::{Params, Verified, VerifyError};
use poe::wire::{Block, BlockHeader, Level, Phase, TxBody};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

struct Net {
    /// The devnet at genesis.
    genesis: Devnet,
    /// Level-1 members at genesis (two of them leave at height 2).
    old_level1: Vec<DevNode>,
    /// The new level-1 member.
    newbie: DevNode,
    /// Heights 1..=5; height 2 holds the changes.
    chain: Vec<Block>,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let genesis = Devnet::new(&mut rng, 4, 2, Params::default(), 2048).expect("devnet");
        let newbie = DevNode::generate(&mut rng, Level::One, 2048).expect("keys");
        let mut d = genesis.clone();
        let old_level1 = d.level1.clone();
        let sender = d.level2[0].clone();
        let mut chain = Vec::new();
        let mut parent = d.genesis;
        let mut push = |d: &mut Devnet, txs, chain: &mut Vec<Block>, joining: &[DevNode]| {
            let b = d
                .next_block(&parent, txs, 1_700_000_000_000 + chain.len() as u64)
                .expect("block");
            d.apply(&b, joining).expect("apply");
            parent = Verified::of(&b.header, b.header.block_id());
            chain.push(b);
        };
        push(
            &mut d,
            vec![sender.transaction(0, TxBody::SensorBatch(Vec::new()))],
            &mut chain,
            &[],
        );
        let mut changes = vec![sender.transaction(1, TxBody::SensorBatch(Vec::new()))];
        for (nonce, (node, member)) in [
            (old_level1[0].id(), None),
            (newbie.id(), Some(newbie.member.clone())),
            (old_level1[1].id(), None),
        ]
        .into_iter()
        .enumerate()
        {
            let approvals = d.approvals(&node, member.as_ref());
            changes.push(sender.transaction(
                2 + nonce as u64,
                TxBody::Membership {
                    node,
                    member,
                    approvals,
                },
            ));
        }
        push(&mut d, changes, &mut chain, std::slice::from_ref(&newbie));
        for i in 0..3u64 {
            push(
                &mut d,
                vec![sender.transaction(10 + i, TxBody::SensorBatch(Vec::new()))],
                &mut chain,
                &[],
            );
        }
        Net {
            genesis,
            old_level1,
            newbie,
            chain,
        }
    })
}

fn client() -> LightClient {
    let d = &net().genesis;
    LightClient::from_checkpoint(d.genesis, d.members.clone(), d.params, 16).expect("client")
}

fn headers() -> Vec<BlockHeader> {
    net().chain.iter().map(|b| b.header.clone()).collect()
}

fn changes() -> Vec<MemberChange> {
    MemberChange::of_block(&net().chain[1])
}

#[test]
fn the_new_set_votes_after_the_change() {
    let n = net();
    assert_eq!(changes().len(), 3);
    // The commit certificates after the change are signed by the three remaining level-1
    // members, the new one among them; none by those who left.
    for b in &n.chain[2..] {
        let voters: Vec<_> = b
            .header
            .commit
            .as_ref()
            .expect("final")
            .votes
            .iter()
            .map(|v| v.0)
            .collect();
        assert_eq!(voters.len(), 3);
        assert!(voters.contains(&n.newbie.id()));
        assert!(!voters.contains(&n.old_level1[0].id()) && !voters.contains(&n.old_level1[1].id()));
    }
}

#[test]
fn push_follows_the_change_with_its_transactions() {
    let h = headers();
    let mut c = client();
    c.push(&h[0]).expect("no change at height 1");
    let before = c.clone();
    assert_eq!(c.push(&h[1]), Err(LightError::MembersRoot { height: 2 }));
    assert_eq!(c.tip(), before.tip(), "nothing added");
    // A server leaving one change out, adding a transaction that is no change, or giving the
    // changes of another height.
    let all = changes();
    assert_eq!(
        c.push_with_changes(&h[1], &all[..2]),
        Err(LightError::MembersRoot { height: 2 })
    );
    let leaves: Vec<Vec<u8>> = n_leaves(1);
    let batch = MemberChange {
        height: 2,
        tx: net().chain[1].txs[0].clone(),
        index: 0,
        proof: poe::merkle::inclusion_proof(&leaves, 0).expect("proof"),
    };
    assert_eq!(
        c.push_with_changes(&h[1], &[all.clone(), vec![batch]].concat()),
        Err(LightError::NotAChange(2))
    );
    let mut elsewhere = all.clone();
    elsewhere[0].height = 3;
    assert_eq!(
        c.push_with_changes(&h[1], &elsewhere),
        Err(LightError::NotAChange(3))
    );
    let mut misplaced = all.clone();
    misplaced[0].index += 1;
    assert!(matches!(
        c.push_with_changes(&h[1], &misplaced),
        Err(LightError::Inclusion(_))
    ));
    let mut twice = all.clone();
    twice.push(all[0].clone());
    assert!(matches!(
        c.push_with_changes(&h[1], &twice),
        Err(LightError::Change { height: 2, .. })
    ));
    assert_eq!(c.tip(), before.tip(), "refusals change nothing");
    assert_eq!(c.members().root(), before.members().root());

    c.push_with_changes(&h[1], &all).expect("the changes");
    assert_eq!(c.members().root(), h[1].members_root);
    assert_eq!(c.members().level1_count(), 3);
    for hd in &h[2..] {
        c.push(hd).expect("headers of the new set");
    }
    assert_eq!(c.tip().height, 5);
}

fn n_leaves(block: usize) -> Vec<Vec<u8>> {
    use poe::wire::Encode;
    net().chain[block]
        .txs
        .iter()
        .map(|t| t.to_bytes())
        .collect()
}

#[test]
fn catch_up_runs_across_the_change() {
    let h = headers();
    let mut c = client();
    assert_eq!(c.sync(&h), Err(LightError::MembersRoot { height: 2 }));
    assert_eq!(c.tip().height, 0, "nothing added");
    assert_eq!(c.sync_with_changes(&h, &changes()), Ok(5));
    assert_eq!(c.tip().block_id, h[4].block_id());
    assert_eq!(c.members().root(), h[4].members_root);
}

#[test]
fn votes_of_members_that_left_no_longer_count() {
    let n = net();
    let h = headers();
    let mut c = client();
    c.sync_with_changes(&h[..2], &changes())
        .expect("through the change");
    // Height 3 re-certified by the old quorum (the two who left among them).
    let mut forged = h[2].clone();
    let id = forged.block_id();
    let round = forged.commit.as_ref().expect("final").round;
    let votes: Vec<_> = n.old_level1[..3]
        .iter()
        .map(|m| m.vote(Phase::Commit, 3, round, &id))
        .collect();
    forged.commit = Some(poe::wire::Certificate::from_votes(&votes).expect("certificate"));
    let left = [n.old_level1[0].id(), n.old_level1[1].id()];
    match c.push(&forged) {
        Err(LightError::Header {
            height: 3,
            source: VerifyError::NotMember(who),
        }) => assert!(left.contains(&who)),
        other => panic!("accepted or wrong error: {other:?}"),
    }
    c.push(&h[2]).expect("the genuine header");
}

#[test]
fn a_checkpoint_must_come_with_its_own_membership() {
    let n = net();
    let h = headers();
    let mut c = client();
    c.sync_with_changes(&h, &changes()).expect("sync");
    let tip = *c.tip();
    // The genesis set with the tip of the changed chain.
    assert_eq!(
        LightClient::from_checkpoint(tip, n.genesis.members.clone(), n.genesis.params, 4).err(),
        Some(LightError::CheckpointMembers)
    );
    let resumed = LightClient::from_checkpoint(tip, c.members().clone(), n.genesis.params, 4)
        .expect("the tip's own set");
    assert_eq!(resumed.tip(), &tip);
}
