//! End-to-end tests of `mef_router::bridge::SplitBridge`: a smoltcp LAN client behind router A,
//! a smoltcp LAN server behind router B, the two routers joined by an in-memory lossy WAN on a
//! virtual clock (see `bridge_world.rs`). Deterministic: fixed seeds, no sockets, no root.

#[path = "bridge_world.rs"]
mod world;

use std::net::SocketAddrV4;
use std::time::Duration;

use mef_router::bridge::{BridgeEvent, RefuseReason, ResetReason};
use smoltcp::socket::tcp::State;
use world::{App, CLIENT_IP, SERVER_IP, World, payload, sha};

const MS: Duration = Duration::from_millis(1);

fn server_addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(SERVER_IP, port)
}

#[test]
fn two_megabytes_each_way_over_lossy_wan() {
    let keys = World::real_keys();
    // 100 ms RTT, 1 % loss each way.
    let mut w = World::new(100 * MS, 10_000, None, keys.b, keys.a, |_| {});
    let up = payload(1, 2_000_000);
    let down = payload(2, 2_000_000);
    let srv = w.b.host.listen(443);
    let cli = w.a.host.add_socket();
    w.a.host.connect(cli, server_addr(443), 40000);
    let mut client = App::new(cli, up.clone());
    let mut server = App::new(srv, down.clone());
    let done = w.run_until(Duration::from_secs(60), |w| {
        client.run(&mut w.a.host, w.t);
        server.run(&mut w.b.host, w.t);
        let closed = |s: State| matches!(s, State::Closed | State::TimeWait);
        client.received == down.len()
            && server.received == up.len()
            && closed(w.a.host.tcp(cli).state())
            && closed(w.b.host.tcp(srv).state())
    });
    assert!(
        done,
        "transfer incomplete at {:?}: client got {}, server got {}; A {:?}; B {:?}",
        w.t,
        client.received,
        server.received,
        w.a.bridge.stats(),
        w.b.bridge.stats()
    );
    assert_eq!(client.digest(), sha(&down), "download corrupted");
    assert_eq!(server.digest(), sha(&up), "upload corrupted");
    // Let the FINs and the bridges' bookkeeping settle.
    w.run_until(w.t + Duration::from_secs(2), |_| false);
    assert!(
        w.ab.lost > 0 && w.ba.lost > 0,
        "the WAN must have lost packets"
    );
    let (sa, sb) = (w.a.bridge.stats(), w.b.bridge.stats());
    assert_eq!(
        (sa.flows_ingress, sa.flows_closed, sa.flows_reset),
        (1, 1, 0)
    );
    assert_eq!(
        (sb.flows_egress, sb.flows_closed, sb.flows_reset),
        (1, 1, 0)
    );
    assert_eq!(sa.flows_active + sb.flows_active, 0);
    // The server saw the original client address and port (RFC 3135 §2.3: transparent split).
    let seen = w.b.events.iter().find_map(|e| match e {
        BridgeEvent::FlowOpened { client, .. } => Some(*client),
        _ => None,
    });
    assert_eq!(seen, Some(SocketAddrV4::new(CLIENT_IP, 40000)));
    println!(
        "2 MB each way in {:?} (WAN lost {} + {} packets)",
        client.last_byte.max(server.last_byte),
        w.ab.lost,
        w.ba.lost
    );
}

#[test]
fn server_sees_original_client_address() {
    let keys = World::real_keys();
    let mut w = World::new(100 * MS, 0, None, keys.b, keys.a, |_| {});
    let srv = w.b.host.listen(8080);
    let cli = w.a.host.add_socket();
    w.a.host.connect(cli, server_addr(8080), 41234);
    let ok = w.run_until(Duration::from_secs(5), |w| {
        w.b.host.tcp(srv).state() == State::Established
    });
    assert!(ok, "server never saw the connection");
    let remote = w.b.host.tcp(srv).remote_endpoint().expect("remote");
    assert_eq!(remote.addr, smoltcp::wire::IpAddress::Ipv4(CLIENT_IP));
    assert_eq!(remote.port, 41234);
}

#[test]
fn unconfigured_prefix_is_reset() {
    let keys = World::real_keys();
    let mut w = World::new(100 * MS, 0, None, keys.b, keys.a, |_| {});
    let cli = w.a.host.add_socket();
    w.a.host
        .connect(cli, SocketAddrV4::new([10, 9, 0, 1].into(), 80), 40000);
    let mut seen_open = false;
    let reset = w.run_until(Duration::from_secs(5), |w| {
        let s = w.a.host.tcp(cli).state();
        seen_open |= s == State::Established;
        s == State::Closed
    });
    assert!(reset, "connection to an unrouted prefix was not reset");
    let s = w.a.bridge.stats();
    assert_eq!(s.no_route, 1);
    assert_eq!(s.flows_ingress, 0);
    assert_eq!(
        w.a.bridge.endpoint().connection_count(),
        0,
        "no MEF connection"
    );
    assert!(w.a.events.iter().any(|e| matches!(
        e,
        BridgeEvent::FlowRefused {
            reason: RefuseReason::NoRoute,
            ..
        }
    )));
    let _ = seen_open;
}

/// Runs one wrong-key scenario; returns the world after the client's connection ended.
fn wrong_key(a_knows_b: [u8; 32], b_knows_a: [u8; 32]) -> World {
    let mut w = World::new(100 * MS, 0, None, a_knows_b, b_knows_a, |_| {});
    let srv = w.b.host.listen(443);
    let cli = w.a.host.add_socket();
    w.a.host.connect(cli, server_addr(443), 40000);
    let mut client = App::new(cli, payload(3, 100_000));
    let ended = w.run_until(Duration::from_secs(20), |w| {
        client.run(&mut w.a.host, w.t);
        w.a.host.tcp(cli).state() == State::Closed
    });
    assert!(ended, "client connection was not reset");
    assert_eq!(
        w.b.host.tcp(srv).state(),
        State::Listen,
        "server saw a connection"
    );
    assert_eq!(w.b.bridge.stats().flows_egress, 0, "no data may pass");
    assert_eq!(w.a.bridge.stats().flows_reset, 1);
    w
}

#[test]
fn wrong_keys_are_refused() {
    let keys = World::real_keys();
    let stranger = world::keypair(99).public();
    // A expects a different key for B: B cannot complete A's Noise IK handshake.
    let w = wrong_key(stranger, keys.a);
    assert!(w.b.bridge.stats().endpoint.handshake_failures > 0);
    assert!(w.a.events.iter().any(|e| matches!(
        e,
        BridgeEvent::FlowReset {
            reason: ResetReason::ConnectionClosed,
            ..
        }
    )));
    // B does not know A's key: the handshake completes, then B refuses the connection.
    let w = wrong_key(keys.b, stranger);
    assert_eq!(w.b.bridge.stats().peers_refused, 1);
    assert!(
        w.b.events
            .iter()
            .any(|e| matches!(e, BridgeEvent::PeerRefused { .. }))
    );
}

#[test]
fn concurrent_connections_share_one_mef_connection() {
    let keys = World::real_keys();
    let mut w = World::new(100 * MS, 10_000, None, keys.b, keys.a, |_| {});
    const N: u16 = 4;
    const LEN: usize = 300_000;
    let mut apps = Vec::new();
    for i in 0..N {
        let srv = w.b.host.listen(443);
        let cli = w.a.host.add_socket();
        w.a.host.connect(cli, server_addr(443), 40000 + i);
        let c = App::new(cli, payload(10 + u64::from(i), LEN));
        let s = App::new(srv, payload(20 + u64::from(i), LEN));
        apps.push((c, s));
    }
    let mut max_conns = 0;
    let done = w.run_until(Duration::from_secs(60), |w| {
        max_conns = max_conns
            .max(w.a.bridge.endpoint().connection_count())
            .max(w.b.bridge.endpoint().connection_count());
        let mut all = true;
        for (c, s) in &mut apps {
            c.run(&mut w.a.host, w.t);
            s.run(&mut w.b.host, w.t);
            all &= c.received == LEN && s.received == LEN;
        }
        all
    });
    assert!(
        done,
        "A {:?} B {:?}",
        w.a.bridge.stats(),
        w.b.bridge.stats()
    );
    assert_eq!(max_conns, 1, "all flows must share one MEF connection");
    // Each server socket got one of the clients; match them by the client port.
    for (c, s) in &apps {
        let port = w.b.host.tcp(s.handle).remote_endpoint().map(|e| e.port);
        let (ci, si) = (apps.iter().position(|(x, _)| x.handle == c.handle), port);
        assert!(ci.is_some() && si.is_some());
    }
    for (c, s) in &apps {
        // Server i answers whichever client it got; check by content against all payloads.
        let got_up = s.digest();
        assert!(
            (0..N).any(|i| sha(&payload(10 + u64::from(i), LEN)) == got_up),
            "upload corrupted"
        );
        let got_down = c.digest();
        assert!(
            (0..N).any(|i| sha(&payload(20 + u64::from(i), LEN)) == got_down),
            "download corrupted"
        );
    }
    assert_eq!(w.a.bridge.stats().flows_ingress, u64::from(N));
}

#[test]
fn client_reset_reaches_the_server() {
    let keys = World::real_keys();
    let mut w = World::new(100 * MS, 0, None, keys.b, keys.a, |_| {});
    let srv = w.b.host.listen(443);
    let cli = w.a.host.add_socket();
    w.a.host.connect(cli, server_addr(443), 40000);
    let mut client = App::new(cli, payload(5, 10_000_000));
    let mut server = App::new(srv, Vec::new());
    let flowing = w.run_until(Duration::from_secs(10), |w| {
        client.run(&mut w.a.host, w.t);
        server.run(&mut w.b.host, w.t);
        server.received > 100_000
    });
    assert!(flowing);
    w.a.host.tcp(cli).abort();
    let reset = w.run_until(w.t + Duration::from_secs(5), |w| {
        server.run(&mut w.b.host, w.t);
        w.b.host.tcp(srv).state() == State::Closed
    });
    assert!(reset, "server state {}", w.b.host.tcp(srv).state());
    assert_eq!(w.a.bridge.stats().resets_sent, 1);
    assert_eq!(w.b.bridge.stats().resets_received, 1);
    assert_eq!(w.a.bridge.flow_count() + w.b.bridge.flow_count(), 0);
}

#[test]
fn egress_refuses_servers_outside_its_prefixes() {
    let keys = World::real_keys();
    let mut w = World::new(100 * MS, 0, None, keys.b, keys.a, |cfg| {
        cfg.local_prefixes = vec!["10.3.0.0/16".parse().expect("prefix")];
    });
    let srv = w.b.host.listen(443);
    let cli = w.a.host.add_socket();
    w.a.host.connect(cli, server_addr(443), 40000);
    let mut client = App::new(cli, payload(4, 50_000));
    let reset = w.run_until(Duration::from_secs(5), |w| {
        client.run(&mut w.a.host, w.t);
        w.a.host.tcp(cli).state() == State::Closed
    });
    assert!(reset, "client was not reset");
    assert_eq!(w.b.host.tcp(srv).state(), State::Listen);
    assert!(w.b.events.iter().any(|e| matches!(
        e,
        BridgeEvent::FlowRefused {
            reason: RefuseReason::NotAllowed,
            ..
        }
    )));
    assert_eq!(w.b.bridge.stats().resets_sent, 1);
    assert_eq!(w.a.bridge.stats().resets_received, 1);
    assert!(w.a.events.iter().any(|e| matches!(
        e,
        BridgeEvent::FlowReset {
            reason: ResetReason::PeerReset,
            ..
        }
    )));
}
