//! POE consensus over `sim-netem` (issue 4, "byzantine simulations"): every member runs the real
//! sans-IO node and gossip core on its own simulated host (`mef_benches::poe_net`), seeded, so
//! each run replays exactly.
//!
//! 7 level-1 members (quorum 5, so at most 2 byzantine: fewer than one third) and 6 level-2
//! members with RSA-2048 keys, 50 ms between any two members.
//!
//! - **Safety** (never two different final blocks at one height, at any member) is asserted in
//!   every test, with byzantine members present.
//! - **Liveness**: the honest members keep finalizing, within a bound, with a withholding clerk,
//!   with forged tickets, double votes, blocks with bad transactions, blocks under copied
//!   tickets (refused: not signed by the clerk) and a level-2 member that seals anything; and
//!   after a partition (no side has a quorum) heals.

use std::sync::OnceLock;
use std::time::Duration;

use mef_benches::poe_net::{Fault, PoeNet, PoeNetConfig};
use mef_benches::poe_scale::devnet_parallel;
use poe::devnet::Devnet;
use poe::node::Rejects;
use poe::verify::Params;
use poe::wire::Evidence;

const N1: usize = 7;
const N2: usize = 6;

fn devnet() -> &'static Devnet {
    static NET: OnceLock<Devnet> = OnceLock::new();
    NET.get_or_init(|| {
        let params = Params {
            expected_candidates: 2,
            expected_sealers: 2,
        };
        devnet_parallel(0x005e_ed0e, N1, N2, params, 2048, 2).expect("devnet")
    })
}

fn net(seed: u64, loss: f64, sites: usize) -> PoeNet {
    let mut cfg = PoeNetConfig::new(seed);
    cfg.loss = loss;
    cfg.sites = sites;
    cfg.l2_peers = 4;
    PoeNet::new(devnet(), &cfg).expect("network")
}

fn all() -> Vec<usize> {
    (0..N1 + N2).collect()
}

/// Every member's final height.
fn heights(net: &PoeNet) -> Vec<u64> {
    all()
        .iter()
        .map(|&i| net.member(i).node().tip().height)
        .collect()
}

/// One reject counter summed over `members`.
fn rejects(net: &PoeNet, members: &[usize], counter: impl Fn(&Rejects) -> u64) -> u64 {
    members
        .iter()
        .map(|&i| counter(&net.member(i).node().stats().rejects))
        .sum()
}

fn assert_safe(net: &PoeNet) {
    if let Some((h, a, b)) = net.conflicting_finals() {
        panic!("safety violated at height {h}: members {a} and {b} finalized different blocks");
    }
}

#[test]
fn honest_members_over_lossy_links_finalize_one_chain() {
    let mut net = net(1, 0.01, 1);
    let done = net.run_until_height(
        &all(),
        10,
        Duration::from_millis(100),
        Duration::from_secs(120),
    );
    assert_safe(&net);
    assert!(done, "heights: {:?}", heights(&net));
    // Every member holds the same blocks, level-2 included.
    let reference: Vec<_> = net
        .member(0)
        .node()
        .finalized()
        .map(|b| b.header.block_id())
        .collect();
    for i in all() {
        let chain: Vec<_> = net
            .member(i)
            .node()
            .finalized()
            .map(|b| b.header.block_id())
            .collect();
        assert_eq!(chain[..10], reference[..10], "member {i}");
    }
}

/// Two byzantine level-1 members (one double-votes, one builds blocks with a bad transaction)
/// and a level-2 member that seals anything: evidence of the double votes appears, no block of
/// the bad clerk is ever final, and the honest members keep finalizing.
#[test]
fn byzantine_minority_is_caught_and_cannot_stop_or_fork_the_chain() {
    let mut net = net(2, 0.0, 1);
    net.with_member(0, |ep, _| ep.set_fault(Fault::DoubleVote));
    net.with_member(1, |ep, _| ep.set_fault(Fault::BadTxBlocks));
    net.with_member(N1, |ep, _| ep.set_fault(Fault::SealAnything));
    let honest: Vec<usize> = (2..N1).chain(N1 + 1..N1 + N2).collect();
    let done = net.run_until_height(
        &honest,
        12,
        Duration::from_millis(100),
        Duration::from_secs(180),
    );
    assert_safe(&net);
    assert!(
        done,
        "honest members stalled at {}",
        net.min_height(honest.clone())
    );
    let bad_clerk = net.dir.ids[1];
    let double_voter = net.dir.ids[0];
    for b in net.member(2).node().finalized() {
        assert_ne!(
            b.header.ticket.node, bad_clerk,
            "a block with a bad tx became final"
        );
    }
    let caught = honest.iter().any(|&i| {
        net.member(i).log.evidence.iter().any(|e| match e {
            Evidence::DoubleVote(a, _) => a.voter == double_voter,
            _ => false,
        })
    });
    assert!(caught, "no member produced evidence of the double votes");
    // The bad clerk's blocks were refused where they arrived.
    let refused = rejects(&net, &honest, |r| r.block);
    assert!(refused > 0, "nobody refused a block with a bad transaction");
}

/// A clerk that withholds its blocks and a member that broadcasts forged tickets: heights where
/// the withholder holds the best ticket spin to a later round, forged tickets are refused, and
/// the chain goes on.
#[test]
fn withholding_clerk_spins_and_forged_tickets_are_refused() {
    let mut net = net(3, 0.0, 1);
    net.with_member(0, |ep, _| ep.set_fault(Fault::WithholdBlocks));
    net.with_member(1, |ep, _| ep.set_fault(Fault::ForgeTickets));
    let honest: Vec<usize> = (2..N1 + N2).collect();
    let done = net.run_until_height(
        &honest,
        12,
        Duration::from_millis(100),
        Duration::from_secs(180),
    );
    assert_safe(&net);
    assert!(
        done,
        "honest members stalled at {}",
        net.min_height(honest.clone())
    );
    let forged = rejects(&net, &honest, |r| r.ticket);
    assert!(forged > 0, "no forged ticket was refused");
    let withholder = net.dir.ids[0];
    let finals = &net.member(2).log.finals;
    let spun = finals.iter().filter(|f| f.2 > 0).count();
    assert!(
        spun > 0,
        "no height spun although member 0 withholds: {finals:?}"
    );
    for b in net.member(2).node().finalized() {
        assert_ne!(
            b.header.ticket.node, withholder,
            "a withheld block became final"
        );
    }
    // (Member 1's own node still holds its genuine ticket: the blocks it builds carry that one,
    // which verifies, so they may be final. Only the forged broadcasts are refused.)
}

/// A member that copies every clerk's ticket and broadcasts a block of its own under it (signed
/// with its own key): the copies are refused (the clerk signature does not verify), none
/// becomes final, no clerk is framed with double-block evidence, and the chain goes on.
#[test]
fn blocks_under_copied_tickets_are_refused_and_frame_nobody() {
    let mut net = net(5, 0.0, 1);
    net.with_member(0, |ep, _| ep.set_fault(Fault::StealTickets));
    let honest: Vec<usize> = (1..N1 + N2).collect();
    let done = net.run_until_height(
        &honest,
        8,
        Duration::from_millis(100),
        Duration::from_secs(120),
    );
    assert_safe(&net);
    assert!(
        done,
        "honest members stalled at {}",
        net.min_height(honest.clone())
    );
    let stolen = net.member(0).log.stolen.clone();
    assert!(!stolen.is_empty(), "member 0 copied no ticket");
    for &i in &honest {
        let m = net.member(i);
        for b in m.node().finalized() {
            assert!(
                !stolen.contains(&b.header.block_id()),
                "a block under a copied ticket became final at member {i}"
            );
        }
        assert!(
            !m.log
                .evidence
                .iter()
                .any(|e| matches!(e, Evidence::DoubleBlock(..))),
            "member {i} has double-block evidence against an honest clerk"
        );
    }
    let refused = rejects(&net, &honest, |r| r.block);
    assert!(refused > 0, "nobody refused a block under a copied ticket");
}

/// Two sites (4 + 3 level-1 members): cut apart, neither side has a quorum of 5, so nothing
/// becomes final and nothing conflicts; healed, finality resumes within a bounded time and
/// every member ends on the same chain.
#[test]
fn partition_stops_finality_safely_and_heal_resumes_it() {
    let mut net = net(4, 0.0, 2);
    assert!(net.run_until_height(
        &all(),
        3,
        Duration::from_millis(100),
        Duration::from_secs(60)
    ));
    net.partition(true).expect("cut");
    // Let anything in flight land, then look for progress during the cut.
    net.sim.run_for(Duration::from_secs(1));
    let during = net
        .member(0)
        .node()
        .tip()
        .height
        .max(net.member(1).node().tip().height);
    net.sim.run_for(Duration::from_secs(10));
    assert_safe(&net);
    for i in all() {
        let h = net.member(i).node().tip().height;
        assert!(
            h <= during,
            "member {i} finalized height {h} without a quorum"
        );
    }
    net.partition(false).expect("heal");
    let healed_at = net.sim.elapsed();
    let done = net.run_until_height(
        &all(),
        during + 4,
        Duration::from_millis(100),
        Duration::from_secs(60),
    );
    assert_safe(&net);
    assert!(
        done,
        "finality did not resume within 60 s of the heal (at {healed_at:?}): heights {:?}",
        heights(&net)
    );
    println!(
        "partition healed at {healed_at:?}; {} more heights final everywhere after {:?}",
        4,
        net.sim.elapsed() - healed_at
    );
}

/// Seals and votes to every level-1 member (`Fanout::AllLevel1`, the network's default) against
/// the clerk-aggregated flow (`Fanout::Clerk`) on the same seeded network: both finalize the
/// same number of heights safely; the direct fan-out saves at least one RTT of finality after
/// the build (simulated time, so the comparison is exact and repeatable).
#[test]
fn fanout_to_every_level1_member_finalizes_sooner_than_through_the_clerk() {
    use mef_benches::poe_scale;
    use poe::node::Fanout;
    let mut figures = Vec::new();
    for fanout in [Fanout::Clerk, Fanout::AllLevel1] {
        let mut cfg = PoeNetConfig::new(5);
        cfg.l2_peers = 4;
        cfg.node.fanout = fanout;
        let f = poe_scale::run(devnet(), &cfg, 1, 6, 50, Duration::from_secs(120))
            .expect("network run");
        println!(
            "{fanout:?}: finality after build {:.2} RTT (level-1), {:.2} (all); {:.0} direct messages per block",
            f.finality_rtts, f.finality_rtts_all, f.unicasts_per_block
        );
        figures.push(f);
    }
    assert!(
        figures[1].finality_rtts + 1.0 <= figures[0].finality_rtts,
        "all-level-1 fanout {:.2} RTT vs clerk {:.2}",
        figures[1].finality_rtts,
        figures[0].finality_rtts
    );
    assert!(figures[1].unicasts_per_block > figures[0].unicasts_per_block);
}
