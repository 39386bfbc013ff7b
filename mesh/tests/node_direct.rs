//! Two mesh nodes over sim-netem connect directly by hashname and exchange data on a reliable
//! channel.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{addr, pattern, star};
use mesh::node::{MeshConfig, MeshEvent, Path, PeerState};

#[test]
fn two_nodes_connect_directly_and_exchange_data() {
    let mut net = star(2, |_| MeshConfig::default(), |_| None);
    net.learn(0, 1, true);
    net.connect(0, 1);
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.up(0, 1) && n.up(1, 0)),
        "link up"
    );
    let first = net.ep(0).events.iter().find_map(|(_, e)| match e {
        MeshEvent::LinkUp { path, .. } => Some(*path),
        _ => None,
    });
    assert_eq!(first, Some(Path::Direct(addr(1))));
    let b_info = net.ep(1).mesh.peer_info(net.hns[0]).unwrap();
    assert_eq!(b_info.state, PeerState::Up);
    assert_eq!(b_info.path, Some(Path::Direct(addr(0))));

    let a_to_b = pattern(100_000, 1);
    let b_to_a = pattern(50_000, 2);
    net.send(0, 1, &a_to_b);
    net.send(1, 0, &b_to_a);
    assert!(
        net.run_until(Duration::from_secs(30), |n| n.received(1, 0)
            >= a_to_b.len()
            && n.received(0, 1) >= b_to_a.len()),
        "data delivered"
    );
    assert_eq!(net.ep(1).received[&net.hns[0]], a_to_b);
    assert_eq!(net.ep(0).received[&net.hns[1]], b_to_a);
    let s = net.ep(0).mesh.stats();
    assert_eq!(s.links_up, 1);
    assert_eq!(s.relayed_packets, 0);
    assert_eq!(s.garbage, 0);
}

#[test]
fn garbage_is_counted_not_fatal() {
    let mut net = star(2, |_| MeshConfig::default(), |_| None);
    let from = addr(1);
    net.with(0, |e, now| {
        for junk in [&b""[..], b"\x04", b"\x09hello", &[4u8; 40], &[1u8; 20]] {
            e.mesh.handle_datagram(now, from, junk);
        }
    });
    let s = net.ep(0).mesh.stats();
    assert!(
        s.garbage + s.unknown_index + s.handshakes_refused >= 5,
        "{s:?}"
    );
    assert_eq!(s.links_up, 0);
}

#[test]
fn simultaneous_connects_converge_on_one_link() {
    let mut net = star(2, |_| MeshConfig::default(), |_| None);
    net.learn(0, 1, true);
    net.learn(1, 0, true);
    net.connect(0, 1);
    net.connect(1, 0);
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.up(0, 1) && n.up(1, 0)),
        "link up"
    );
    net.sim.run_for(Duration::from_secs(5));
    let data = pattern(20_000, 5);
    net.send(0, 1, &data);
    net.send(1, 0, &data);
    assert!(
        net.run_until(Duration::from_secs(20), |n| n.received(1, 0) >= data.len()
            && n.received(0, 1) >= data.len()),
        "data both ways after simultaneous open"
    );
    for i in 0..2 {
        let downs = net
            .ep(i)
            .events
            .iter()
            .filter(|(_, e)| matches!(e, MeshEvent::LinkDown { .. }))
            .count();
        assert_eq!(downs, 0, "node {i} saw a link go down");
        assert_eq!(net.ep(i).mesh.stats().links_up, 1);
    }
}

#[test]
fn add_peer_checks_the_key() {
    let net = star(2, |_| MeshConfig::default(), |_| None);
    let mut m = mesh::node::Mesh::new(
        net.sim.now(),
        mesh::link::Tai64N::default(),
        mesh::node::sim::identity(9, 0),
        MeshConfig::default(),
        mesh::link::Acceptor::allow_all(),
    );
    let wrong = net.keys[0];
    assert!(matches!(
        m.add_peer(net.hns[1], wrong, &[]),
        Err(mesh::node::MeshError::KeyMismatch(_))
    ));
    assert!(m.add_peer(net.hns[1], net.keys[1], &[addr(1)]).is_ok());
    let me = m.hashname();
    assert!(matches!(
        m.connect(net.sim.now(), me),
        Err(mesh::node::MeshError::UnknownPeer(_))
    ));
}

#[test]
fn peers_table_is_bounded_and_evicts_idle_inbound_peers() {
    use mesh::link::LinkConfig;
    let link = LinkConfig {
        keepalive_interval: Duration::from_millis(500),
        dead_after: Duration::from_secs(2),
        handshake_give_up: Duration::from_secs(5),
        ..LinkConfig::default()
    };
    let mut net = star(
        3,
        |i| MeshConfig {
            link: link.clone(),
            max_peers: if i == 0 { 1 } else { 16 },
            ..MeshConfig::default()
        },
        |_| None,
    );
    net.learn(1, 0, true);
    net.learn(2, 0, true);
    net.connect(1, 0);
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.up(0, 1)),
        "first inbound peer fits"
    );
    net.connect(2, 0);
    net.sim.run_for(Duration::from_secs(3));
    assert!(!net.up(2, 0), "table full");
    assert!(net.ep(0).mesh.stats().peers_full > 0);
    // Node 1 vanishes; its link at node 0 dies and the peer becomes evictable.
    let gone = net.eps[1];
    net.sim.detach(gone);
    let down = |n: &common::Net, i: usize, j: usize| {
        n.ep(i)
            .events
            .iter()
            .any(|(_, e)| matches!(e, MeshEvent::LinkDown { peer, .. } if *peer == n.hns[j]))
    };
    assert!(
        net.run_until(Duration::from_secs(10), |n| down(n, 0, 1) && down(n, 2, 0)),
        "links down"
    );
    net.connect(2, 0);
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.up(0, 2) && n.up(2, 0)),
        "room made"
    );
    let s = net.ep(0).mesh.stats();
    assert_eq!(s.peers_evicted, 1);
    assert_eq!(s.peers, 1);
}

#[test]
fn node_answers_a_retransmitted_xx_message_3_from_its_link() {
    // An XX initiator (it does not know the node's key) whose message 3 the node got but whose
    // confirming keepalive was lost: the retransmitted message 3 is routed to the node's new
    // link (not the acceptor, which no longer has it pending) and answered with a keepalive.
    use mesh::link::{Link, LinkConfig, LinkEvent, Tai64N};
    use mesh::packet::{Packet, Transport};
    let now = std::time::Instant::now();
    let mut node = mesh::node::Mesh::new(
        now,
        Tai64N::default(),
        mesh::node::sim::identity(5, 0),
        MeshConfig::default(),
        mesh::link::Acceptor::allow_all(),
    );
    let me = mesh::node::sim::identity(6, 0);
    let from = addr(7);
    let (mut a, m1) =
        Link::connect_unknown(now, Tai64N::default(), &me, LinkConfig::default()).expect("connect");
    node.handle_datagram(now, from, &m1);
    let (to, m2) = node.poll_transmit(now).expect("XX message 2");
    assert_eq!(to, from);
    a.handle(now, &m2).expect("m2");
    assert!(matches!(a.poll_event(), Some(LinkEvent::Up { .. })));
    let m3 = a.poll_transmit().expect("m3");
    node.handle_datagram(now, from, &m3);
    let is_transport =
        |p: &[u8]| matches!(Packet::parse(p), Ok(Packet::Transport(Transport { .. })));
    let mut lost = 0;
    while let Some((_, p)) = node.poll_transmit(now) {
        lost += usize::from(is_transport(&p));
    }
    assert_eq!(
        lost, 1,
        "the node confirms message 3 with a keepalive (lost here)"
    );
    let t = a.poll_timeout().expect("retry");
    a.handle_timeout(t);
    let again = a.poll_transmit().expect("m3 again");
    assert_eq!(again, m3);
    node.handle_datagram(t, from, &again);
    let mut confirmed = false;
    while let Some((_, p)) = node.poll_transmit(t) {
        if is_transport(&p) {
            confirmed |= a.handle(t, &p).is_ok();
        }
    }
    assert!(confirmed, "keepalive for the retransmitted message 3");
    let t2 = t + Duration::from_secs(20);
    a.handle_timeout(t2);
    while let Some(p) = a.poll_transmit() {
        assert!(is_transport(&p), "no more message 3");
    }
    assert!(node.stats().links_up >= 1);
}
