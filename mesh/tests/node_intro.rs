//! Introduction through a router, relaying, direct-path upgrade and relay limits.
//!
//! Nodes: 0 = A and 2 = B sit behind simulated NATs that only admit the router 1 = R (and,
//! once the test "opens the mapping", each other).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Net, addr, pattern, star};
use mesh::node::sim::node_ip;
use mesh::node::{MeshConfig, MeshEvent, Path, PeerState, RelayLimits};

const A: usize = 0;
const R: usize = 1;
const B: usize = 2;

/// A and B (and any further clients) linked with R; A knows B only by key and router hint.
fn introduced(n: usize, relay: RelayLimits) -> Net {
    let mut net = star(
        n,
        |i| MeshConfig {
            relay: if i == R {
                relay.clone()
            } else {
                RelayLimits::default()
            },
            ..MeshConfig::default()
        },
        |i| (i != R).then(|| vec![R]),
    );
    for i in (0..n).filter(|&i| i != R) {
        net.learn(i, R, true);
        net.connect(i, R);
        for j in (0..n).filter(|&j| j != R && j != i) {
            net.learn(i, j, false);
            let (hn, r) = (net.hns[j], net.hns[R]);
            net.with(i, |e, _| e.mesh.add_router_hint(hn, r).unwrap());
        }
    }
    assert!(
        net.run_until(Duration::from_secs(10), |net| (0..n)
            .filter(|&i| i != R)
            .all(|i| net.up(i, R) && net.up(R, i))),
        "clients linked with the router"
    );
    net
}

fn path(net: &Net, i: usize, j: usize) -> Option<Path> {
    net.ep(i).mesh.peer_info(net.hns[j]).and_then(|p| p.path)
}

fn open_nat(net: &mut Net, i: usize, j: usize) {
    net.with(i, |e, _| {
        e.nat.as_mut().unwrap().allow.insert(IpAddr::V4(node_ip(j)));
    });
}

#[test]
fn introduction_relays_then_upgrades_to_direct() {
    let mut net = introduced(3, RelayLimits::default());
    net.connect(A, B);
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.up(A, B) && n.up(B, A)),
        "A–B link via R"
    );
    let rh = net.hns[R];
    assert_eq!(path(&net, A, B), Some(Path::Relayed(rh)));
    assert_eq!(path(&net, B, A), Some(Path::Relayed(rh)));

    let first = pattern(30_000, 7);
    net.send(A, B, &first);
    assert!(
        net.run_until(Duration::from_secs(20), |n| n.received(B, A) >= first.len()),
        "relayed data"
    );
    assert_eq!(net.ep(B).received[&net.hns[A]], first);
    let rs = net.ep(R).mesh.stats();
    assert!(rs.relayed_packets > 20, "R relayed: {rs:?}");
    assert!(rs.relayed_bytes > first.len() as u64);
    // R holds links to A and B only (no A–B session: the A–B link exists only at A and B, R
    // only moved opaque packets between its own links) and saw none of the channel data.
    let r_peers: Vec<_> = net.ep(R).mesh.peers().map(|(h, _)| h).collect();
    assert_eq!(r_peers.len(), 2);
    assert!(net.ep(R).received.is_empty());
    assert!(
        !net.ep(R)
            .events
            .iter()
            .any(|(_, e)| matches!(e, MeshEvent::Channel { .. }))
    );

    // Probes go out but the NATs drop them: still relayed.
    net.sim.run_for(Duration::from_secs(3));
    assert!(net.ep(A).mesh.stats().probes_sent > 0);
    assert!(
        net.ep(B).filtered > 0 || net.ep(A).filtered > 0,
        "probes filtered"
    );
    assert_eq!(path(&net, A, B), Some(Path::Relayed(rh)));

    // The NAT mappings open: both switch to direct.
    open_nat(&mut net, A, B);
    open_nat(&mut net, B, A);
    let changed = |n: &Net, i: usize, j: usize| {
        n.ep(i).events.iter().any(|(_, e)| matches!(e, MeshEvent::PathChanged { peer, path: Path::Direct(_) } if *peer == n.hns[j]))
    };
    assert!(
        net.run_until(Duration::from_secs(20), |n| changed(n, A, B)
            && changed(n, B, A)),
        "PathChanged to direct"
    );
    assert_eq!(path(&net, A, B), Some(Path::Direct(addr(B))));
    assert_eq!(path(&net, B, A), Some(Path::Direct(addr(A))));
    let relayed_before = net.ep(R).mesh.stats().relayed_packets;

    let second = pattern(40_000, 9);
    net.send(B, A, &second);
    assert!(
        net.run_until(Duration::from_secs(20), |n| n.received(A, B)
            >= second.len()),
        "direct data"
    );
    assert_eq!(net.ep(A).received[&net.hns[B]], second);
    let relayed_after = net.ep(R).mesh.stats().relayed_packets;
    assert!(
        relayed_after - relayed_before < 5,
        "data no longer relayed: {relayed_before} → {relayed_after}"
    );
    assert!(net.ep(A).mesh.stats().path_upgrades >= 1);
}

#[test]
fn introduction_learns_the_key_from_the_router() {
    // A knows B by hashname only (and that R routes to it); R knows B's key.
    let mut net2 = star(3, |_| MeshConfig::default(), |i| (i != R).then(|| vec![R]));
    net2.learn(A, R, true);
    net2.learn(B, R, true);
    net2.learn(R, B, false);
    net2.connect(A, R);
    net2.connect(B, R);
    assert!(net2.run_until(Duration::from_secs(10), |n| n.up(A, R) && n.up(B, R)));
    let (bh, rh) = (net2.hns[B], net2.hns[R]);
    net2.with(A, |e, _| {
        e.mesh.add_peer_hashname(bh).unwrap();
        e.mesh.add_router_hint(bh, rh).unwrap();
    });
    net2.connect(A, B);
    assert!(
        net2.run_until(Duration::from_secs(10), |n| n.up(A, B) && n.up(B, A)),
        "connected after KEY_REPLY"
    );
    assert_eq!(net2.ep(A).mesh.stats().bad_keys, 0);
    assert_eq!(path(&net2, A, B), Some(Path::Relayed(rh)));
}

#[test]
fn relay_session_limit_refuses_new_pairs() {
    // Clients 0 (A), 2 (B), 3 (C); R relays at most one pair.
    let relay = RelayLimits {
        max_sessions: 1,
        ..RelayLimits::default()
    };
    let mut net = introduced(4, relay);
    net.connect(A, B);
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.up(A, B)),
        "first pair relayed"
    );
    net.connect(3, B);
    net.sim.run_for(Duration::from_secs(10));
    assert!(!net.up(3, B), "second pair must be refused");
    let rs = net.ep(R).mesh.stats();
    assert!(rs.relay_refused > 0, "{rs:?}");
    assert!(rs.relay_sessions <= 1);
    assert!(net.ep(3).mesh.stats().refusals_received > 0);
    assert_ne!(
        net.ep(3).mesh.peer_info(net.hns[B]).unwrap().state,
        PeerState::Up
    );
}

#[test]
fn relay_rate_limit_drops_and_counts() {
    let relay = RelayLimits {
        packets_per_sec: 50,
        packet_burst: 20,
        bytes_per_sec: 40_000,
        byte_burst: 20_000,
        ..RelayLimits::default()
    };
    let mut net = introduced(3, relay);
    net.connect(A, B);
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.up(A, B)),
        "pair relayed"
    );
    let data = pattern(200_000, 3);
    net.send(A, B, &data);
    net.sim.run_for(Duration::from_secs(2));
    let rs = net.ep(R).mesh.stats();
    assert!(rs.relay_rate_dropped > 0, "{rs:?}");
    assert!(rs.relay_sessions <= 1);
    // At most the burst plus 2 s of rate went through.
    assert!(rs.relayed_packets <= 20 + 2 * 50 + 60, "{rs:?}");
    // The reliable channel still makes (slow) progress through the limit.
    let got = net.received(B, A);
    assert!(got > 0 && got < data.len(), "got {got}");
}
