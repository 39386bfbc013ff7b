//! End-to-end tests of the sans-IO transport over the deterministic in-memory network.

mod util;

use std::time::Duration;

use mef_transport::{CloseReason, Config, Event, RateMode};
use util::{LinkConfig, Pair, Transfer, data, sha};

fn link(delay_ms: u64) -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(delay_ms),
        ..LinkConfig::default()
    }
}

#[test]
fn handshake_and_small_transfer() {
    let mut p = Pair::symmetric(1, Config::default(), link(10));
    let h = p.connect();
    assert!(p.drive_until(Duration::from_secs(1), |p| p.connected(h)));
    // One round trip: 20 ms.
    assert_eq!(p.elapsed(), Duration::from_millis(20));
    let payload = data(100_000, 1);
    let mut t = Transfer::new(h);
    assert!(t.run(&mut p, &payload, Duration::from_secs(10)));
    assert_eq!(sha(&t.received), sha(&payload));
    let s = p.client.connection(h).expect("conn").stats();
    assert_eq!(s.mode, RateMode::Fallback);
    assert_eq!(s.packets_lost, 0);
    assert!(
        s.srtt >= Duration::from_millis(20) && s.srtt < Duration::from_millis(30),
        "{:?}",
        s.srtt
    );
}

#[test]
fn exactly_once_under_loss_reordering_duplication_corruption() {
    let bad = LinkConfig {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(8),
        loss: 0.10,
        dup: 0.05,
        corrupt: 0.03,
        rate_bps: Some(50_000_000),
        queue_bytes: 400_000,
        ..LinkConfig::default()
    };
    for seed in [2, 3] {
        let mut p = Pair::symmetric(seed, Config::default(), bad.clone());
        let h = p.connect();
        let payload = data(2_000_000, seed);
        let mut t = Transfer::new(h);
        assert!(
            t.run(&mut p, &payload, Duration::from_secs(120)),
            "transfer did not finish"
        );
        assert_eq!(t.received.len(), payload.len());
        assert_eq!(
            sha(&t.received),
            sha(&payload),
            "bytes delivered exactly once, in order"
        );
        let sc = p.server_conn().expect("accepted");
        let srv = p.server.connection(sc).expect("conn").stats();
        let cli = p.client.connection(h).expect("conn").stats();
        assert!(p.c2s.stats.corrupted > 0 && p.c2s.stats.duplicated > 0);
        assert!(
            srv.decrypt_failures > 0,
            "corrupted packets rejected: {srv:?}"
        );
        assert!(srv.replays_dropped > 0, "duplicates dropped: {srv:?}");
        assert!(
            cli.packets_lost > 0 && cli.bytes_retransmitted > 0,
            "{cli:?}"
        );
        assert_eq!(srv.bytes_read, payload.len() as u64);
    }
}

#[test]
fn replayed_packets_are_rejected() {
    let mut p = Pair::symmetric(4, Config::default(), link(5));
    let h = p.connect();
    p.c2s.capture = true;
    let payload = data(50_000, 4);
    let mut t = Transfer::new(h);
    assert!(t.run(&mut p, &payload, Duration::from_secs(5)));
    let captured = std::mem::take(&mut p.c2s.captured);
    assert!(captured.len() > 10);
    // Replay every captured client packet (handshake and data) a second time.
    let at = p.now + Duration::from_millis(1);
    for pkt in captured {
        p.c2s.inject(at, pkt);
    }
    p.drive_until(Duration::from_millis(100), |_| false);
    let sc = p.server_conn().expect("accepted");
    let srv = p.server.connection(sc).expect("conn").stats();
    assert!(srv.replays_dropped >= 10, "{srv:?}");
    assert_eq!(p.server.stats().duplicate_initials, 1);
    assert_eq!(
        p.server.connection_count(),
        1,
        "a replayed Initial creates no connection"
    );
    t.pump(&mut p, &payload);
    assert_eq!(t.received.len(), payload.len(), "nothing delivered twice");
}

#[test]
fn wrong_server_key_is_rejected() {
    let cfg = Config {
        handshake_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    let mut p = Pair::symmetric(5, cfg, link(10));
    let h = p
        .client
        .connect(p.now, p.server_addr, [9u8; 32])
        .expect("connect");
    let done = p.drive_until(Duration::from_secs(10), |p| !p.client_events.is_empty());
    assert!(done);
    assert_eq!(
        p.client_events,
        vec![Event::Closed {
            conn: h,
            reason: CloseReason::HandshakeTimeout
        }]
    );
    assert!(p.server_events.is_empty(), "server accepted nothing");
    assert!(p.server.stats().handshake_failures >= 1);
    assert_eq!(p.server.connection_count(), 0);
}

#[test]
fn handshake_timeout_with_backoff() {
    let cfg = Config {
        handshake_timeout: Duration::from_secs(5),
        handshake_retransmit: Duration::from_millis(200),
        ..Config::default()
    };
    let dead = LinkConfig {
        loss: 1.0,
        ..link(10)
    };
    let mut p = Pair::symmetric(6, cfg, dead);
    let h = p.connect();
    assert!(p.drive_until(Duration::from_secs(20), |p| !p.client_events.is_empty()));
    assert_eq!(
        p.client_events,
        vec![Event::Closed {
            conn: h,
            reason: CloseReason::HandshakeTimeout
        }]
    );
    assert_eq!(p.elapsed(), Duration::from_secs(5));
    // Sent at 0, 0.2, 0.6, 1.4, 3.0 s (200 ms doubling).
    assert_eq!(p.c2s.stats.sent, 5);
    // The connection is gone.
    p.drive_until(Duration::from_millis(1), |_| false);
    assert_eq!(p.client.connection_count(), 0);
}

#[test]
fn lost_handshake_reply_is_recovered_and_initials_deduplicated() {
    let cfg = Config {
        handshake_retransmit: Duration::from_millis(100),
        ..Config::default()
    };
    // Every client packet is duplicated; the first server reply is lost.
    let c2s = LinkConfig {
        dup: 1.0,
        ..link(10)
    };
    let mut p = Pair::new(7, cfg.clone(), cfg, c2s, link(10));
    p.s2c.cfg.loss = 1.0;
    let h = p.connect();
    p.drive_until(Duration::from_millis(50), |_| false);
    assert_eq!(p.server.connection_count(), 1);
    assert_eq!(p.server.stats().duplicate_initials, 1);
    p.s2c.cfg.loss = 0.0;
    assert!(p.drive_until(Duration::from_secs(2), |p| p.connected(h)));
    assert_eq!(
        p.server.connection_count(),
        1,
        "duplicate Initials never create connections"
    );
    assert_eq!(
        p.server_events
            .iter()
            .filter(|e| matches!(e, Event::Accepted(_)))
            .count(),
        1
    );
    let payload = data(30_000, 7);
    let mut t = Transfer::new(h);
    assert!(t.run(&mut p, &payload, Duration::from_secs(5)));
    assert_eq!(sha(&t.received), sha(&payload));
}

#[test]
fn rate_follows_router_stamps_and_loss_does_not_lower_it() {
    let c2s = LinkConfig {
        delay: Duration::from_millis(25),
        rate_bps: Some(100_000_000),
        queue_bytes: 1_000_000,
        stamp_kbps: Some(20_000),
        ..LinkConfig::default()
    };
    let s2c = LinkConfig {
        delay: Duration::from_millis(25),
        stamp_kbps: Some(30_000),
        ..LinkConfig::default()
    };
    let mut p = Pair::new(8, Config::default(), Config::default(), c2s, s2c);
    let h = p.connect();
    // The server learns the client→server stamp from the Initial, ½ RTT in.
    assert!(p.drive_until(Duration::from_secs(1), |p| p.server_conn().is_some()));
    // (plus 16 µs serialisation of the Initial at 100 Mbit/s)
    assert!(
        p.elapsed() < Duration::from_micros(25_100),
        "{:?}",
        p.elapsed()
    );
    let sc = p.server_conn().expect("accepted");
    let srv = p.server.connection(sc).expect("conn");
    assert_eq!(srv.rate_mode(), RateMode::Explicit);
    assert_eq!(srv.rate_bps(), 20_000_000);
    // The client learns its rate with the handshake reply, 1 RTT in, before sending data.
    assert!(p.drive_until(Duration::from_secs(1), |p| p.connected(h)));
    assert!(
        p.elapsed() < Duration::from_micros(50_100),
        "{:?}",
        p.elapsed()
    );
    let c = p.client.connection(h).expect("conn");
    assert_eq!(c.rate_mode(), RateMode::Explicit);
    assert_eq!(c.rate_bps(), 20_000_000);

    // Bulk transfer: goodput matches the stamped rate from the first RTT, no slow start.
    let payload = data(20_000_000, 8);
    let mut t = Transfer::new(h);
    let t0 = p.now;
    p.drive_until(Duration::from_secs(2), |p| {
        t.pump(p, &payload);
        false
    });
    let got = t.received.len() as f64 * 8.0 / (p.now - t0).as_secs_f64();
    assert!(
        got > 0.90 * 20e6 && got < 20e6,
        "goodput {got} vs stamp 20 Mbit/s"
    );
    // The server only sends ACKs: it advertises its measured need (APP_LIMITED, ≥ 1 Mbit/s)
    // as demand, so the echo of its own direction's stamp is clamped to that.
    let srv = p.server.connection(sc).expect("conn");
    assert_eq!(srv.rate_mode(), RateMode::Explicit);
    assert!(
        (1_000_000..30_000_000).contains(&srv.rate_bps()),
        "{}",
        srv.rate_bps()
    );

    // The router lowers the share: the sender follows within an RTT.
    p.c2s.cfg.stamp_kbps = Some(10_000);
    p.drive_until(Duration::from_millis(200), |p| {
        t.pump(p, &payload);
        false
    });
    assert_eq!(p.client.connection(h).expect("conn").rate_bps(), 10_000_000);

    // 5 % random loss: the rate does not drop, losses are repaired.
    p.c2s.cfg.loss = 0.05;
    let before = t.received.len();
    let t1 = p.now;
    p.drive_until(Duration::from_secs(3), |p| {
        t.pump(p, &payload);
        false
    });
    let c = p.client.connection(h).expect("conn");
    let s = c.stats();
    assert!(s.packets_lost > 50, "{s:?}");
    assert_eq!(
        c.rate_bps(),
        10_000_000,
        "loss does not lower a router-given rate"
    );
    assert_eq!(s.mode, RateMode::Explicit);
    let got = (t.received.len() - before) as f64 * 8.0 / (p.now - t1).as_secs_f64();
    assert!(got > 0.85 * 10e6, "goodput under 5% loss {got}");
    // Paced at exactly the rate, the bottleneck queue never builds.
    assert!(
        p.c2s.stats.max_queue_bytes < 20_000,
        "queue {}",
        p.c2s.stats.max_queue_bytes
    );
    assert_eq!(p.c2s.stats.dropped_queue, 0);
}

#[test]
fn fallback_cubic_without_routers() {
    let l = LinkConfig {
        delay: Duration::from_millis(10),
        rate_bps: Some(50_000_000),
        queue_bytes: 125_000,
        ..LinkConfig::default()
    };
    let mut p = Pair::new(9, Config::default(), Config::default(), l, link(10));
    let h = p.connect();
    let payload = data(10_000_000, 9);
    let mut t = Transfer::new(h);
    assert!(t.run(&mut p, &payload, Duration::from_secs(30)));
    assert_eq!(sha(&t.received), sha(&payload));
    let s = p.client.connection(h).expect("conn").stats();
    assert_eq!(s.mode, RateMode::Fallback);
    let secs = (t.fin_at.expect("fin") - p.start).as_secs_f64();
    let goodput = payload.len() as f64 * 8.0 / secs;
    assert!(
        goodput > 25e6,
        "cubic reaches a sensible share of 50 Mbit/s: {goodput}"
    );
    assert!(s.cwnd > 14_720, "{s:?}");
}

#[test]
fn small_flow_control_windows_still_complete() {
    let cfg = Config {
        stream_receive_window: 3_000,
        receive_window: 5_000,
        ..Config::default()
    };
    let mut p = Pair::symmetric(
        10,
        cfg,
        LinkConfig {
            loss: 0.05,
            ..link(5)
        },
    );
    let h = p.connect();
    let payload = data(200_000, 10);
    let mut t = Transfer::new(h);
    assert!(t.run(&mut p, &payload, Duration::from_secs(60)));
    assert_eq!(sha(&t.received), sha(&payload));
}

#[test]
fn idle_timeout_closes_both_sides() {
    let cfg = Config {
        idle_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let mut p = Pair::symmetric(11, cfg, link(10));
    let h = p.connect();
    assert!(p.drive_until(Duration::from_secs(1), |p| p.connected(h)));
    let both_closed = |p: &mut Pair| {
        p.client_events.iter().any(|e| {
            matches!(
                e,
                Event::Closed {
                    reason: CloseReason::IdleTimeout,
                    ..
                }
            )
        }) && p.server_events.iter().any(|e| {
            matches!(
                e,
                Event::Closed {
                    reason: CloseReason::IdleTimeout,
                    ..
                }
            )
        })
    };
    assert!(p.drive_until(Duration::from_secs(5), both_closed));
    let e = p.elapsed();
    assert!(
        e >= Duration::from_secs(2) && e < Duration::from_millis(2100),
        "{e:?}"
    );
    p.drive_until(Duration::from_millis(1), |_| false);
    assert_eq!(p.client.connection_count(), 0);
    assert_eq!(p.server.connection_count(), 0);
}

#[test]
fn clean_close_carries_closing_flag() {
    let mut p = Pair::symmetric(12, Config::default(), link(10));
    let h = p.connect();
    let payload = data(50_000, 12);
    let mut t = Transfer::new(h);
    assert!(t.run(&mut p, &payload, Duration::from_secs(5)));
    let now = p.now;
    p.client
        .connection_mut(h)
        .expect("conn")
        .close(now, 7, b"bye");
    let sc = p.server_conn().expect("accepted");
    assert!(
        p.drive_until(Duration::from_secs(1), |p| p.server_events.contains(
            &Event::Closed {
                conn: sc,
                reason: CloseReason::Remote {
                    code: 7,
                    reason: "bye".into()
                }
            }
        ))
    );
    assert!(p.client_events.contains(&Event::Closed {
        conn: h,
        reason: CloseReason::Local { code: 7 }
    }));
    assert!(p.c2s.stats.closing_flag_seen >= 1);
    // After the draining period both endpoints forget the connection.
    p.drive_until(Duration::from_secs(5), |p| {
        p.client.connection_count() == 0 && p.server.connection_count() == 0
    });
    assert_eq!(p.client.connection_count(), 0);
    assert_eq!(p.server.connection_count(), 0);
}

#[test]
fn several_streams_in_both_directions() {
    let mut p = Pair::symmetric(
        13,
        Config::default(),
        LinkConfig {
            loss: 0.02,
            ..link(5)
        },
    );
    let h = p.connect();
    assert!(p.drive_until(Duration::from_secs(1), |p| p.connected(h)));
    let c = p.client.connection_mut(h).expect("conn");
    let mut ids = Vec::new();
    for i in 0..4u64 {
        let s = c.open_stream().expect("stream");
        assert_eq!(s.0, i * 4);
        let d = data(20_000 + i as usize * 1000, 100 + i);
        assert_eq!(c.write(s, &d), Ok(d.len()));
        c.finish(s).expect("finish");
        ids.push((s, d));
    }
    let sc = loop {
        if let Some(sc) = p.server_conn() {
            break sc;
        }
        assert!(p.step(p.now + Duration::from_secs(1)));
    };
    // The server echoes every stream back on its own stream.
    let mut got: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
    let mut echoed = std::collections::BTreeSet::new();
    let mut back: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
    let ok = p.drive_until(Duration::from_secs(20), |p| {
        let srv = p.server.connection_mut(sc).expect("conn");
        let mut buf = [0u8; 4096];
        for (s, _) in &ids {
            loop {
                match srv.read(*s, &mut buf) {
                    Ok(Some(n)) => got.entry(s.0).or_default().extend_from_slice(&buf[..n]),
                    Ok(None) => {
                        if echoed.insert(s.0) {
                            let out = srv.open_stream().expect("server stream");
                            assert_eq!(out.0 & 1, 1, "server-initiated ids are odd");
                            let d = got.get(&s.0).cloned().unwrap_or_default();
                            assert_eq!(srv.write(out, &d), Ok(d.len()));
                            srv.finish(out).expect("finish");
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let cli = p.client.connection_mut(h).expect("conn");
        let mut done = 0;
        for k in 0..4u64 {
            let s = mef_transport::StreamId(k * 4 + 1);
            loop {
                match cli.read(s, &mut buf) {
                    Ok(Some(n)) => back.entry(s.0).or_default().extend_from_slice(&buf[..n]),
                    Ok(None) => {
                        done += 1;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        done == 4
    });
    assert!(ok);
    let mut expected: Vec<_> = ids.iter().map(|(_, d)| sha(d)).collect();
    let mut returned: Vec<_> = back.values().map(|d| sha(d)).collect();
    expected.sort();
    returned.sort();
    assert_eq!(expected, returned);
}

#[test]
fn same_seed_same_result() {
    let run = |seed| {
        let l = LinkConfig {
            loss: 0.05,
            jitter: Duration::from_millis(3),
            ..link(10)
        };
        let mut p = Pair::symmetric(seed, Config::default(), l);
        let h = p.connect();
        let payload = data(300_000, 1);
        let mut t = Transfer::new(h);
        assert!(t.run(&mut p, &payload, Duration::from_secs(30)));
        (
            p.elapsed(),
            p.client.connection(h).expect("conn").stats().packets_sent,
            p.c2s.stats.lost,
        )
    };
    assert_eq!(run(21), run(21));
    assert_ne!(run(21), run(22));
}

#[test]
fn many_connections_share_one_endpoint() {
    // 64 clients on one endpoint talk to one server endpoint through a 100 Mbit/s stamped link.
    let mut p = Pair::new(
        14,
        Config::default(),
        Config::default(),
        LinkConfig {
            rate_bps: Some(100_000_000),
            queue_bytes: 2_000_000,
            stamp_kbps: Some(100_000 / 64),
            ..link(10)
        },
        link(10),
    );
    let payload = data(100_000, 14);
    let mut transfers: Vec<_> = (0..64)
        .map(|i| Transfer::with_index(p.connect(), i))
        .collect();
    let ok = p.drive_until(Duration::from_secs(30), |p| {
        let mut all = true;
        for t in transfers.iter_mut() {
            t.pump(p, &payload);
            all &= t.fin_at.is_some();
        }
        all
    });
    assert!(ok);
    for t in &transfers {
        assert_eq!(sha(&t.received), sha(&payload));
    }
    assert_eq!(p.server.connection_count(), 64);
}

#[test]
fn server_download_follows_its_own_direction_stamp() {
    let c2s = LinkConfig {
        stamp_kbps: Some(20_000),
        ..link(20)
    };
    let s2c = LinkConfig {
        rate_bps: Some(100_000_000),
        queue_bytes: 1_000_000,
        stamp_kbps: Some(40_000),
        ..link(20)
    };
    let mut p = Pair::new(15, Config::default(), Config::default(), c2s, s2c);
    let h = p.connect();
    assert!(p.drive_until(Duration::from_secs(1), |p| p.connected(h)));
    // The client sends a request; the server answers with 8 MB on the same stream.
    let c = p.client.connection_mut(h).expect("conn");
    let s = c.open_stream().expect("stream");
    c.write(s, b"GET").expect("write");
    c.finish(s).expect("finish");
    let response = data(8_000_000, 15);
    let mut sent = 0;
    let mut got = Vec::new();
    let mut sc = None;
    let mut t_first = None;
    let done = p.drive_until(Duration::from_secs(10), |p| {
        if sc.is_none() {
            sc = p.server_conn();
        }
        if let Some(sc) = sc {
            let srv = p.server.connection_mut(sc).expect("conn");
            let mut b = [0u8; 16];
            while let Ok(Some(_)) = srv.read(s, &mut b) {}
            while sent < response.len() {
                match srv.write(s, &response[sent..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sent += n,
                }
            }
            if sent == response.len() {
                let _ = srv.finish(s);
            }
        }
        let cli = p.client.connection_mut(h).expect("conn");
        let mut b = vec![0u8; 65536];
        loop {
            match cli.read(s, &mut b) {
                Ok(Some(n)) => {
                    t_first.get_or_insert(p.now);
                    got.extend_from_slice(&b[..n]);
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    });
    assert!(done);
    assert_eq!(sha(&got), sha(&response));
    let srv = p.server.connection(sc.expect("accepted")).expect("conn");
    assert_eq!(srv.rate_mode(), RateMode::Explicit);
    assert_eq!(
        srv.rate_bps(),
        40_000_000,
        "server paces at the stamp of its own direction"
    );
    let secs = (p.now - t_first.expect("data")).as_secs_f64();
    let goodput = got.len() as f64 * 8.0 / secs;
    assert!(
        goodput > 0.85 * 40e6 && goodput < 40e6,
        "download goodput {goodput}"
    );
}

#[test]
fn ignore_rate_sender_blasts_at_fixed_rate() {
    let cheat = Config {
        ignore_rate: true,
        fixed_rate_bps: 80_000_000,
        ..Config::default()
    };
    let c2s = LinkConfig {
        rate_bps: Some(100_000_000),
        queue_bytes: 10_000_000,
        stamp_kbps: Some(10_000),
        ..link(10)
    };
    let mut p = Pair::new(16, cheat, Config::default(), c2s, link(10));
    let h = p.connect();
    let payload = data(30_000_000, 16);
    let mut t = Transfer::new(h);
    p.drive_until(Duration::from_secs(2), |p| {
        t.pump(p, &payload);
        false
    });
    let c = p.client.connection(h).expect("conn");
    assert_eq!(c.rate_mode(), RateMode::Fixed);
    assert_eq!(c.rate_bps(), 80_000_000, "stamps of 10 Mbit/s are ignored");
    let got = t.received.len() as f64 * 8.0 / 2.0;
    assert!(
        got > 5.0 * 10e6,
        "the cheater sends far above its share: {got}"
    );
}
