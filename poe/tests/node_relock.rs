//! Re-proposal of a prepared block after a round that did not finish (docs/POE.md, "Locks and
//! re-proposal"), in the deterministic simulation of `node_sim.rs` (7 level-1 and 4 level-2
//! members with RSA-2048 keys, seeded per-link latency, virtual clock).
//!
//! What they show: the clerk of round 0 crashes right after broadcasting its prepare
//! certificate, which reaches only some members (a minority, a majority, or all the live
//! ones); those members are locked on its block, and without re-proposal no later block could
//! get a quorum (the locked members refuse it, and n1 − locked < q). With re-proposal the
//! locked block is final at height 1 in a later round on every live node (the next clerk is
//! left out of the locked members unless all are, so it learns the lock from the others'
//! announcements on their spin), the chains are
//! identical, and the crashed node catches up to them once back (verifying the re-proposed
//! header, whose commit certificate is of a later round than its ticket). At node level: a
//! locked node refuses a different block without a valid, higher justification (forged,
//! lower, mismatched, wrong phase) and votes for it with one; a re-proposal of its locked
//! block is voted PREPARE and COMMIT to the re-proposing clerk and finalized; `verify::header`
//! accepts a commit certificate of a round at or after the ticket's and no earlier.
#![cfg(feature = "std")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Instant;

use poe::devnet::Devnet;
use poe::node::{Node, NodeConfig, NodeEvent, Output};
use poe::verify::{self, Depth, VerifyError};
use poe::wire::{Block, Certificate, Hash, Message, NodeId, Phase, Reproposal, Ticket};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

mod common;
use common::Clock;

use common::members::{N1, N2};

/// The devnet these simulations share (a ticket qualifies in round 0 and seals pass).
fn devnet() -> &'static Devnet {
    static NET: OnceLock<Devnet> = OnceLock::new();
    common::members::devnet(&NET, 0x90e1)
}

fn config() -> NodeConfig {
    common::members::config()
}

fn make_node(i: usize, now: Instant) -> Node {
    common::members::make_node(devnet(), i, now, config())
}

enum Ev {
    Deliver {
        to: usize,
        from: usize,
        msg: Box<Message>,
    },
    Timer {
        node: usize,
    },
}

/// The crash scenario: `clerk` crashes as soon as it broadcasts a prepare certificate, which
/// is delivered only to `cert_to`.
struct Crash {
    clerk: usize,
    cert_to: BTreeSet<usize>,
}

struct Net {
    clock: Clock<Ev>,
    nodes: Vec<Node>,
    timer_at: Vec<Option<u64>>,
    index: BTreeMap<NodeId, usize>,
    latency: Vec<Vec<u64>>,
    crash: Option<Crash>,
    /// Crashed: sends and receives nothing.
    down: Option<usize>,
    /// Per node: (height, block_id, round).
    finals: Vec<Vec<(u64, Hash, u32)>>,
    /// Re-proposals broadcast: (round, block_id).
    reproposals: Vec<(u32, Hash)>,
}

impl Net {
    fn new(seed: u64, crash: Option<Crash>) -> Self {
        let epoch = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = N1 + N2;
        let latency = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| 10_000_000 + rng.next_u64() % 20_000_000)
                    .collect()
            })
            .collect();
        let nodes: Vec<Node> = (0..n).map(|i| make_node(i, epoch)).collect();
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
        let mut net = Self {
            clock: Clock::new(epoch),
            nodes,
            timer_at: vec![None; n],
            index,
            latency,
            crash,
            down: None,
            finals: vec![Vec::new(); n],
            reproposals: Vec::new(),
        };
        for i in 0..n {
            net.flush(i);
        }
        net
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Message) {
        let t = self.clock.now() + self.latency[from][to];
        self.clock.schedule(
            t,
            Ev::Deliver {
                to,
                from,
                msg: Box::new(msg),
            },
        );
    }

    fn flush(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].poll_output() {
            if self.down == Some(i) {
                continue;
            }
            match out {
                Output::Broadcast(msg) | Output::Committee(msg) => {
                    if let Message::Repropose(p) = &msg {
                        self.reproposals
                            .push((p.ticket.round, p.block.header.block_id()));
                    }
                    let crash_now = matches!(
                        (&self.crash, &msg),
                        (Some(c), Message::Certificate(cert))
                            if c.clerk == i && cert.phase == Phase::Prepare
                    );
                    for to in 0..self.nodes.len() {
                        let allowed = match (&self.crash, crash_now) {
                            (Some(c), true) => c.cert_to.contains(&to),
                            _ => true,
                        };
                        if to != i && allowed && self.down != Some(to) {
                            self.deliver(i, to, msg.clone());
                        }
                    }
                    if crash_now {
                        self.down = Some(i);
                        self.crash = None;
                    }
                }
                Output::Send(id, msg) => {
                    if let Some(&to) = self.index.get(&id)
                        && self.down != Some(to)
                    {
                        self.deliver(i, to, msg);
                    }
                }
            }
        }
        while let Some(ev) = self.nodes[i].poll_event() {
            if let NodeEvent::Finalized {
                height,
                block_id,
                round,
                ..
            } = ev
            {
                self.finals[i].push((height, block_id, round));
            }
        }
        if let Some(t) = self.nodes[i].poll_timeout() {
            let ns = self.clock.ns(t);
            if self.timer_at[i] != Some(ns) {
                self.timer_at[i] = Some(ns);
                self.clock.schedule(ns, Ev::Timer { node: i });
            }
        }
    }

    /// Runs until every live node has `height` final blocks or `limit_ns` passes.
    fn run_until(&mut self, height: u64, limit_ns: u64) {
        loop {
            let done = self
                .nodes
                .iter()
                .enumerate()
                .all(|(i, n)| self.down == Some(i) || n.tip().height >= height);
            if done {
                break;
            }
            let Some((t, ev)) = self.clock.next_until(limit_ns) else {
                break;
            };
            let now = self.clock.at(t);
            match ev {
                Ev::Deliver { to, .. } if self.down == Some(to) => {}
                Ev::Deliver { to, from, msg } => {
                    let from_id = self.nodes[from].id();
                    self.nodes[to].handle_message(now, from_id, *msg);
                    self.flush(to);
                }
                Ev::Timer { node } if self.timer_at[node] == Some(t) => {
                    self.timer_at[node] = None;
                    if self.down != Some(node) {
                        self.nodes[node].handle_timeout(now);
                        self.flush(node);
                    }
                }
                Ev::Timer { .. } => {}
            }
        }
    }

    /// The chains of the nodes in `who` are identical up to `height`; returns it.
    fn same_chains(&self, who: &[usize], height: u64) -> Vec<(u64, Hash)> {
        let first = who[0];
        let reference: Vec<(u64, Hash)> = self.finals[first][..height as usize]
            .iter()
            .map(|f| (f.0, f.1))
            .collect();
        for &i in who {
            let chain: Vec<(u64, Hash)> = self.finals[i][..height as usize]
                .iter()
                .map(|f| (f.0, f.1))
                .collect();
            assert_eq!(chain, reference, "node {i} diverged");
            let stored: Vec<Hash> = self.nodes[i]
                .finalized()
                .take(height as usize)
                .map(|b| b.header.block_id())
                .collect();
            assert_eq!(stored, reference.iter().map(|r| r.1).collect::<Vec<_>>());
        }
        reference
    }
}

/// The clerk of round 0 at height 1 crashes after its prepare certificate reached `locked`
/// live level-1 members; the height is final in a later round with the prepared block.
fn crashed_clerk_after_prepare(seed: u64, locked: usize) {
    let d = devnet();
    let first = d.best_ticket(&d.genesis).expect("ticket");
    assert_eq!(first.round, 0);
    let clerk = d
        .level1
        .iter()
        .position(|n| n.id() == first.node)
        .expect("clerk");
    let live: Vec<usize> = (0..N1 + N2).filter(|&i| i != clerk).collect();
    // The clerk of round 1 is among the locked members only if all are: otherwise it learns
    // the lock from the others' announcements.
    let next = d.best_ticket_from(&d.genesis, 1).expect("ticket");
    let mut level1: Vec<usize> = live.iter().copied().filter(|&i| i < N1).collect();
    level1.sort_by_key(|&i| d.level1[i].id() == next.node);
    let cert_to: BTreeSet<usize> = level1.into_iter().take(locked).collect();
    let learns_from_announcements = !cert_to.iter().any(|&i| d.level1[i].id() == next.node);
    assert_eq!(cert_to.len(), locked);
    let unlocked = N1 - 1 - locked;
    let stuck_without_reproposal = unlocked < d.members.quorum();
    assert!(
        stuck_without_reproposal,
        "with {locked} locked, {unlocked} unlocked members could finalize a new block"
    );
    let mut net = Net::new(seed, Some(Crash { clerk, cert_to }));
    net.run_until(3, 60_000_000_000);
    assert_eq!(
        net.down,
        Some(clerk),
        "the clerk crashed after its prepare certificate"
    );
    for &i in &live {
        assert!(
            net.nodes[i].tip().height >= 3,
            "node {i} stuck at height {} (locked {locked})",
            net.nodes[i].tip().height
        );
    }
    let chain = net.same_chains(&live, 3);
    // Height 1 is the block prepared in round 0, final in a later round by re-proposal.
    let (h, id, round) = net.finals[live[0]][0];
    assert_eq!(h, 1);
    let b1 = net.nodes[live[0]]
        .finalized()
        .next()
        .expect("block 1")
        .clone();
    assert_eq!(b1.header.block_id(), id);
    assert_eq!(b1.header.ticket.node, first.node);
    assert_eq!(b1.header.ticket.round, 0);
    let commit = b1.header.commit.as_ref().expect("commit");
    assert!(round > 0 && commit.round == round, "final in round {round}");
    assert!(net.reproposals.contains(&(round, id)));
    println!(
        "node_relock: {locked} of {} live level-1 members locked; height 1 final in round \
         {round} by re-proposal ({} re-proposals broadcast; the re-proposing clerk learned \
         the lock {})",
        N1 - 1,
        net.reproposals.len(),
        if learns_from_announcements {
            "from announcements"
        } else {
            "itself"
        }
    );
    // A node restarted from that chain (as from its store) verifies the commit certificate
    // of the later round.
    let d = devnet();
    let dn = common::members::dev_node(d, live[0]);
    let resumed = poe::node::Node::resume(
        net.clock.at(net.clock.now()),
        dn.sig.clone(),
        dn.vrf.clone(),
        d.members.clone(),
        d.params,
        d.genesis,
        config(),
        net.nodes[live[0]].finalized().cloned(),
    )
    .expect("resume a chain with a re-proposed block");
    assert_eq!(resumed.tip(), net.nodes[live[0]].tip());
    // The crashed clerk comes back and catches up to the same chain, verifying the header.
    net.down = None;
    let target = net.nodes[live[0]].tip().height + 2;
    let limit = net.clock.now() + 60_000_000_000;
    net.run_until(target, limit);
    assert!(net.nodes[clerk].tip().height >= target);
    let all: Vec<usize> = (0..N1 + N2).collect();
    assert_eq!(net.same_chains(&all, 3), chain);
    for n in &net.nodes {
        let r = n.stats().rejects;
        assert_eq!((r.block, r.certificate, r.vote), (0, 0, 0));
    }
}

#[test]
fn prepared_block_of_a_crashed_clerk_is_final_later_minority_locked() {
    crashed_clerk_after_prepare(31, 2);
}

#[test]
fn prepared_block_of_a_crashed_clerk_is_final_later_majority_locked() {
    crashed_clerk_after_prepare(32, 4);
}

#[test]
fn prepared_block_of_a_crashed_clerk_is_final_later_all_locked() {
    crashed_clerk_after_prepare(33, N1 - 1);
}

#[test]
fn prepared_block_of_a_crashed_clerk_is_final_later_across_seeds() {
    // Other link latencies, so other orders of announcements, tickets and votes.
    for (seed, locked) in [(40, 2), (41, 3), (42, 5), (43, 2), (44, 4), (45, 6)] {
        crashed_clerk_after_prepare(seed, locked);
    }
}

/// A sealed block of height 1 on `ticket` with `time_ms` (to tell blocks apart).
fn sealed_block(ticket: &Ticket, time_ms: u64) -> Block {
    let d = devnet();
    let mut header = poe::wire::BlockHeader {
        height: 1,
        prev_hash: d.genesis.block_id,
        tx_root: poe::merkle::root::<&[u8]>(&[]),
        tx_count: 0,
        members_root: d.members.root(),
        time_ms,
        ticket: ticket.clone(),
        clerk_sig: [0; 64],
        seal: None,
        commit: None,
    };
    d.level1_node(&ticket.node)
        .expect("the ticket's holder is a level-1 member")
        .sign_header(&mut header);
    header.seal = Some(
        d.seal(&header.block_id())
            .expect("a seal passes with this seed"),
    );
    Block {
        header,
        txs: Vec::new(),
    }
}

/// The votes a node sent: (to, phase, round, block).
fn sent_votes(node: &mut Node) -> Vec<(NodeId, Phase, u32, Hash)> {
    std::iter::from_fn(|| node.poll_output())
        .filter_map(|o| match o {
            Output::Send(to, Message::Vote(v)) => Some((to, v.phase, v.round, v.block_id)),
            _ => None,
        })
        .collect()
}

fn prepare(round: u32, id: &Hash) -> Certificate {
    devnet()
        .certificate(Phase::Prepare, 1, round, id)
        .expect("cert")
}

/// Tickets of five successive spin rounds at height 1 (each the best of the first round at or
/// after the previous one + 1 in which one qualifies).
fn tickets() -> Vec<Ticket> {
    let d = devnet();
    let mut out: Vec<Ticket> = Vec::new();
    let mut next = 0;
    for _ in 0..5 {
        let t = d.best_ticket_from(&d.genesis, next).expect("ticket");
        next = t.round + 1;
        out.push(t);
    }
    out
}

/// A level-1 member that holds none of `tickets`.
fn bystander(tickets: &[Ticket]) -> usize {
    devnet()
        .level1
        .iter()
        .position(|n| tickets.iter().all(|t| t.node != n.id()))
        .expect("a member that is no clerk")
}

#[test]
fn locked_node_refuses_another_block_without_a_higher_justification() {
    let t = tickets();
    let x = sealed_block(&t[0], 1);
    let a = sealed_block(&t[1], 2);
    let (id_x, id_a) = (x.header.block_id(), a.header.block_id());
    let i = bystander(&t);
    let t0 = Instant::now();
    let mut node = make_node(i, t0);
    let _ = sent_votes(&mut node);
    // Locked on A in A's round.
    node.handle_message(t0, t[1].node, Message::Block(a.clone()));
    assert_eq!(
        sent_votes(&mut node),
        vec![(t[1].node, Phase::Prepare, t[1].round, id_a)]
    );
    node.handle_message(
        t0,
        t[1].node,
        Message::Certificate(prepare(t[1].round, &id_a)),
    );
    assert_eq!(
        sent_votes(&mut node),
        vec![(t[1].node, Phase::Commit, t[1].round, id_a)]
    );
    let rejects = |n: &Node| n.stats().rejects.block;
    let repropose = |ticket: &Ticket, justify: Certificate| {
        Message::Repropose(Reproposal {
            ticket: ticket.clone(),
            block: x.clone(),
            justify,
        })
    };

    // A new block of a later round: refused (locked).
    let fresh = sealed_block(&t[2], 3);
    node.handle_message(t0, t[2].node, Message::Block(fresh));
    assert_eq!(sent_votes(&mut node), vec![], "no PREPARE for a new block");

    // Re-proposals of X in round t[3] with bad justifications: rejected, no vote.
    let mut forged = prepare(t[2].round, &id_x);
    forged.votes[0].1[3] ^= 1;
    node.handle_message(t0, t[3].node, repropose(&t[3], forged));
    assert_eq!(rejects(&node), 1, "forged certificate");
    let mut commit_phase = devnet()
        .certificate(Phase::Commit, 1, t[2].round, &id_x)
        .expect("cert");
    node.handle_message(t0, t[3].node, repropose(&t[3], commit_phase.clone()));
    assert_eq!(
        rejects(&node),
        2,
        "a COMMIT certificate is no justification"
    );
    node.handle_message(t0, t[3].node, repropose(&t[3], prepare(t[2].round, &id_a)));
    assert_eq!(rejects(&node), 3, "a certificate for another block");
    node.handle_message(t0, t[3].node, repropose(&t[3], prepare(t[3].round, &id_x)));
    assert_eq!(
        rejects(&node),
        4,
        "a certificate of the proposal's own round"
    );
    commit_phase.phase = Phase::Prepare;
    node.handle_message(t0, t[3].node, repropose(&t[3], commit_phase));
    assert_eq!(rejects(&node), 5, "COMMIT signatures relabelled PREPARE");
    assert_eq!(sent_votes(&mut node), vec![]);

    // A valid justification below the lock's round: accepted, but the lock stays on A.
    node.handle_message(t0, t[3].node, repropose(&t[3], prepare(t[0].round, &id_x)));
    assert_eq!(rejects(&node), 5);
    assert_eq!(node.round(), t[3].round);
    assert_eq!(
        sent_votes(&mut node),
        vec![],
        "locked on a higher round: no PREPARE for X"
    );

    // A justification above the lock's round moves the lock: PREPARE for X, to its clerk.
    node.handle_message(t0, t[4].node, repropose(&t[4], prepare(t[2].round, &id_x)));
    assert_eq!(rejects(&node), 5);
    assert_eq!(
        sent_votes(&mut node),
        vec![(t[4].node, Phase::Prepare, t[4].round, id_x)]
    );
}

#[test]
fn reproposal_of_the_locked_block_is_voted_and_finalized() {
    let d = devnet();
    let t = tickets();
    let a = sealed_block(&t[0], 1);
    let id_a = a.header.block_id();
    let i = bystander(&t);
    let t0 = Instant::now();
    let mut node = make_node(i, t0);
    let mut fresh = make_node(i, t0);
    let _ = sent_votes(&mut node);
    let _ = sent_votes(&mut fresh);
    node.handle_message(t0, t[0].node, Message::Block(a.clone()));
    let cert = prepare(t[0].round, &id_a);
    node.handle_message(t0, t[0].node, Message::Certificate(cert.clone()));
    let _ = sent_votes(&mut node);

    // The round times out: the locked node announces its block and certificate.
    let t1 = t0 + config().round_timeout;
    node.handle_timeout(t1);
    let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert!(outs.contains(&Output::Committee(Message::Block(a.clone()))));
    assert!(outs.contains(&Output::Committee(Message::Certificate(cert.clone()))));

    // The clerk of a later round re-proposes A: PREPARE for A in that round, to that clerk,
    // from the locked node and from a node that never saw A.
    let p = Message::Repropose(Reproposal {
        ticket: t[2].clone(),
        block: a.clone(),
        justify: cert,
    });
    let r = t[2].round;
    for n in [&mut node, &mut fresh] {
        n.handle_message(t1, t[2].node, p.clone());
        assert_eq!(sent_votes(n), vec![(t[2].node, Phase::Prepare, r, id_a)]);
    }
    // The round's prepare certificate: COMMIT to the re-proposing clerk.
    node.handle_message(t1, t[2].node, Message::Certificate(prepare(r, &id_a)));
    assert_eq!(
        sent_votes(&mut node),
        vec![(t[2].node, Phase::Commit, r, id_a)]
    );
    // The final block: A with a commit certificate of round r.
    let mut fin = a.clone();
    fin.header.commit = Some(d.certificate(Phase::Commit, 1, r, &id_a).expect("cert"));
    node.handle_message(t1, t[2].node, Message::Block(fin));
    let ev: Vec<NodeEvent> = std::iter::from_fn(|| node.poll_event()).collect();
    assert!(ev.iter().any(|e| matches!(
        e,
        NodeEvent::Finalized { height: 1, block_id, round, .. } if *block_id == id_a && *round == r
    )));
    assert_eq!(node.tip().block_id, id_a);
}

#[test]
fn header_commit_certificate_of_a_later_round_verifies_and_of_an_earlier_does_not() {
    let d = devnet();
    let t = tickets();
    let mut b = sealed_block(&t[1], 1);
    let id = b.header.block_id();
    for (round, ok) in [
        (t[1].round, true),
        (t[1].round + 3, true),
        (t[0].round, false),
    ] {
        b.header.commit = Some(d.certificate(Phase::Commit, 1, round, &id).expect("cert"));
        let v = verify::header(&b.header, &d.genesis, &d.members, &d.params, Depth::Full);
        if ok {
            assert_eq!(v.map(|v| v.block_id), Ok(id), "commit round {round}");
        } else if t[0].round < t[1].round {
            assert_eq!(
                v,
                Err(VerifyError::CommitBeforeTicket {
                    ticket_round: t[1].round,
                    commit_round: round,
                })
            );
        }
    }
    // A commit certificate for the right round but another block, or a PREPARE one: rejected.
    b.header.commit = Some(
        d.certificate(Phase::Commit, 1, t[1].round + 1, &[9; 32])
            .expect("c"),
    );
    assert!(verify::header(&b.header, &d.genesis, &d.members, &d.params, Depth::Full).is_err());
    b.header.commit = Some(prepare(t[1].round + 1, &id));
    assert!(verify::header(&b.header, &d.genesis, &d.members, &d.params, Depth::Full).is_err());
}

/// A level-1 member that crashes after voting PREPARE and COMMIT (locked) in a round and
/// restarts with its saved `VoteRecord` neither votes again in that round (for the same or
/// another block) nor forgets its lock. The same restart without the record votes PREPARE
/// again: what the record is for.
#[test]
fn a_restarted_member_keeps_its_votes_and_lock_from_its_vote_record() {
    use poe::node::VoteRecord;
    let t = tickets();
    let a = sealed_block(&t[1], 2);
    let id_a = a.header.block_id();
    let i = bystander(&t);
    let t0 = Instant::now();
    let mut node = make_node(i, t0);
    let _ = sent_votes(&mut node);
    node.handle_message(t0, t[1].node, Message::Block(a.clone()));
    node.handle_message(
        t0,
        t[1].node,
        Message::Certificate(prepare(t[1].round, &id_a)),
    );
    assert_eq!(
        sent_votes(&mut node),
        vec![
            (t[1].node, Phase::Prepare, t[1].round, id_a),
            (t[1].node, Phase::Commit, t[1].round, id_a)
        ]
    );
    // What the driver saved before sending those votes, through its byte encoding.
    let saved = node.vote_record().to_bytes();
    let record = VoteRecord::decode(&saved).expect("decodes");
    assert_eq!(record, node.vote_record());
    assert!(VoteRecord::decode(&saved[..saved.len() - 1]).is_err());

    // Without the record, a restarted member votes again in the round.
    let mut amnesiac = make_node(i, t0);
    let _ = sent_votes(&mut amnesiac);
    amnesiac.handle_message(t0, t[1].node, Message::Block(a.clone()));
    assert_eq!(
        sent_votes(&mut amnesiac),
        vec![(t[1].node, Phase::Prepare, t[1].round, id_a)]
    );
    // And, unlocked, it votes for a new block of a later round.
    let fresh = sealed_block(&t[2], 3);
    let id_fresh = fresh.header.block_id();
    amnesiac.handle_message(t0, t[2].node, Message::Block(fresh.clone()));
    assert_eq!(
        sent_votes(&mut amnesiac),
        vec![(t[2].node, Phase::Prepare, t[2].round, id_fresh)]
    );

    // With it: no vote in that round, for this block or another one under the same ticket,
    // and still locked on A against a new block of a later round.
    let mut restarted = make_node(i, t0);
    let _ = sent_votes(&mut restarted);
    restarted.restore_votes(t0, &record).expect("restore");
    restarted.handle_message(t0, t[1].node, Message::Block(a.clone()));
    restarted.handle_message(
        t0,
        t[1].node,
        Message::Certificate(prepare(t[1].round, &id_a)),
    );
    let other = sealed_block(&t[1], 7);
    restarted.handle_message(t0, t[1].node, Message::Block(other));
    assert_eq!(
        sent_votes(&mut restarted),
        vec![],
        "voted again after restart"
    );
    restarted.handle_message(t0, t[2].node, Message::Block(fresh));
    assert_eq!(sent_votes(&mut restarted), vec![], "lock forgotten");
}
