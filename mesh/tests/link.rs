//! Link integration tests: handshakes, data, replay window, rekey, timers and acceptor bounds.

use std::time::{Duration, Instant};

use mesh::link::cookie;
use mesh::link::{
    AcceptError, Accepted, Acceptor, AcceptorConfig, DownReason, Link, LinkConfig, LinkError,
    LinkEvent, LinkState, Tai64N,
};
use mesh::packet::{Packet, Pattern, Transport};
use mesh::{Hashname, Identity};
use proptest::prelude::*;

/// The wall clock the tests' links and acceptors start from (any fixed value works).
const WALL: Tai64N = Tai64N {
    secs: 1_700_000_000,
    nanos: 0,
};

fn id(n: u8) -> Identity {
    Identity::from_bytes([n; 32])
}

fn acceptor(now: Instant, local: &Identity, link: LinkConfig) -> Acceptor {
    Acceptor::new(
        now,
        WALL,
        local,
        AcceptorConfig {
            link,
            ..AcceptorConfig::default()
        },
        Acceptor::allow_all(),
    )
}

/// An IK link pair (a initiated, b accepted), both Up, events drained.
fn ik_pair(now: Instant, cfg: LinkConfig) -> (Link, Link) {
    let (ida, idb) = (id(1), id(2));
    let (mut a, init) =
        Link::connect(now, WALL, &ida, idb.public_key(), cfg.clone()).expect("connect");
    assert_eq!(a.state(), LinkState::Connecting);
    let mut acc = acceptor(now, &idb, cfg);
    let Ok(Accepted::Link {
        link: b,
        reply: Some(resp),
    }) = acc.handle(now, &init, 7)
    else {
        panic!("IK initiation not accepted")
    };
    let mut b = *b;
    assert_eq!(
        b.state(),
        LinkState::Connecting,
        "responder waits for key confirmation"
    );
    assert!(matches!(
        b.send(now, b"early"),
        Err(LinkError::NotConnected)
    ));
    assert_eq!(a.handle(now, &resp), Ok(None));
    assert_eq!(a.state(), LinkState::Up);
    assert_eq!(
        a.poll_event(),
        Some(LinkEvent::Up {
            peer: idb.hashname()
        })
    );
    let confirm = a
        .poll_transmit()
        .expect("initiator sends a keepalive for key confirmation");
    assert_eq!(b.handle(now, &confirm), Ok(None));
    assert_eq!(b.state(), LinkState::Up);
    assert_eq!(
        b.poll_event(),
        Some(LinkEvent::Up {
            peer: ida.hashname()
        })
    );
    assert_eq!(b.peer(), Some(ida.hashname()));
    (a, b)
}

#[test]
fn ik_handshake_and_data_both_ways() {
    let now = Instant::now();
    let (mut a, mut b) = ik_pair(now, LinkConfig::default());
    let p = a.send(now, b"hello b").expect("send");
    assert_eq!(b.handle(now, &p), Ok(Some(b"hello b".to_vec())));
    let p = b.send(now, b"hello a").expect("send");
    assert_eq!(a.handle(now, &p), Ok(Some(b"hello a".to_vec())));
    assert_eq!(a.stats().packets_received, 1);
    assert_eq!(b.stats().packets_received, 2); // keepalive + data
    assert_eq!(b.stats().keepalives_received, 1);
}

#[test]
fn xx_with_unknown_initiator() {
    let now = Instant::now();
    let (ida, idb) = (id(3), id(4));
    let (mut a, m1) =
        Link::connect_unknown(now, WALL, &ida, LinkConfig::default()).expect("connect");
    let mut acc = acceptor(now, &idb, LinkConfig::default());
    let Ok(Accepted::Reply(m2)) = acc.handle(now, &m1, 1) else {
        panic!("no XX reply")
    };
    assert_eq!(acc.pending_len(), 1);
    assert_eq!(a.handle(now, &m2), Ok(None));
    assert_eq!(
        a.poll_event(),
        Some(LinkEvent::Up {
            peer: idb.hashname()
        })
    );
    let m3 = a.poll_transmit().expect("XX message 3");
    let Ok(Accepted::Link {
        link: b,
        reply: None,
    }) = acc.handle(now, &m3, 1)
    else {
        panic!("no link")
    };
    let mut b = *b;
    assert_eq!(acc.pending_len(), 0);
    assert_eq!(
        b.poll_event(),
        Some(LinkEvent::Up {
            peer: ida.hashname()
        })
    );
    let p = a.send(now, b"x").expect("send");
    assert_eq!(b.handle(now, &p), Ok(Some(b"x".to_vec())));
    let p = b.send(now, b"y").expect("send");
    assert_eq!(a.handle(now, &p), Ok(Some(b"y".to_vec())));
}

#[test]
fn xx_refused_by_allow_list() {
    let now = Instant::now();
    let (ida, idb) = (id(3), id(4));
    let (mut a, m1) =
        Link::connect_unknown(now, WALL, &ida, LinkConfig::default()).expect("connect");
    let mut acc = Acceptor::new(
        now,
        WALL,
        &idb,
        AcceptorConfig::default(),
        Acceptor::allow_list([id(9).hashname()]),
    );
    let Ok(Accepted::Reply(m2)) = acc.handle(now, &m1, 1) else {
        panic!("no XX reply")
    };
    a.handle(now, &m2).expect("m2");
    let m3 = a.poll_transmit().expect("m3");
    assert!(matches!(acc.handle(now, &m3, 1), Err(AcceptError::Refused)));
    assert_eq!(acc.stats().refused, 1);
    // And an allow-listed peer gets in.
    let mut acc = Acceptor::new(
        now,
        WALL,
        &idb,
        AcceptorConfig::default(),
        Acceptor::allow_list([ida.hashname()]),
    );
    let (mut a, m1) =
        Link::connect_unknown(now, WALL, &ida, LinkConfig::default()).expect("connect");
    let Ok(Accepted::Reply(m2)) = acc.handle(now, &m1, 1) else {
        panic!("no XX reply")
    };
    a.handle(now, &m2).expect("m2");
    let m3 = a.poll_transmit().expect("m3");
    assert!(matches!(acc.handle(now, &m3, 1), Ok(Accepted::Link { .. })));
}

#[test]
fn wrong_key_rejection() {
    let now = Instant::now();
    let (ida, idb, idc) = (id(1), id(2), id(5));
    // a believes the peer's key is c's, but the packet reaches b.
    let (_a, init) =
        Link::connect(now, WALL, &ida, idc.public_key(), LinkConfig::default()).expect("connect");
    let mut acc = acceptor(now, &idb, LinkConfig::default());
    // Its MAC1 is keyed by c's key: dropped before any DH (WireGuard paper §5.4.4).
    assert!(matches!(
        acc.handle(now, &init, 1),
        Err(AcceptError::BadMac1)
    ));
    // With MAC1 re-keyed for b, the Noise handshake itself rejects it (es/ss, rev 34 §7.1).
    let mut init = init;
    cookie::seal_init(&mut init, Pattern::IK, &idb.public_key(), None).expect("seal");
    assert!(matches!(
        acc.handle(now, &init, 1),
        Err(AcceptError::BadAuth)
    ));
    assert_eq!(acc.stats().bad_auth, 1);
    assert_eq!(acc.stats().accepted_ik, 0);
    // The same initiation with b's real key is accepted.
    let (_a, init) =
        Link::connect(now, WALL, &ida, idb.public_key(), LinkConfig::default()).expect("connect");
    assert!(matches!(
        acc.handle(now, &init, 2),
        Ok(Accepted::Link { .. })
    ));
    assert_eq!(Hashname::of_x25519(&idb.public_key()), idb.hashname());
}

#[test]
fn replayed_packet_dropped_and_counted() {
    let now = Instant::now();
    let (mut a, mut b) = ik_pair(now, LinkConfig::default());
    let p = a.send(now, b"once").expect("send");
    assert_eq!(b.handle(now, &p), Ok(Some(b"once".to_vec())));
    assert_eq!(b.handle(now, &p), Err(LinkError::Replayed));
    assert_eq!(b.handle(now, &p), Err(LinkError::Replayed));
    assert_eq!(b.stats().replayed, 2);
    // The link still works.
    let p = a.send(now, b"twice").expect("send");
    assert_eq!(b.handle(now, &p), Ok(Some(b"twice".to_vec())));
}

#[test]
fn reordering_within_window_accepted() {
    let now = Instant::now();
    let (mut a, mut b) = ik_pair(now, LinkConfig::default());
    let pkts: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| a.send(now, &i.to_le_bytes()).expect("send"))
        .collect();
    // Deliver in reverse: every one is within 1984 of the highest.
    for (i, p) in pkts.iter().enumerate().rev() {
        assert_eq!(
            b.handle(now, p),
            Ok(Some((i as u32).to_le_bytes().to_vec()))
        );
    }
    assert_eq!(b.stats().replayed + b.stats().too_old, 0);
}

#[test]
fn too_old_rejected() {
    let now = Instant::now();
    let (mut a, mut b) = ik_pair(now, LinkConfig::default());
    let first = a.send(now, b"old").expect("send");
    for _ in 0..2100 {
        let p = a.send(now, b"new").expect("send");
        b.handle(now, &p).expect("in order");
    }
    assert_eq!(b.handle(now, &first), Err(LinkError::TooOld));
    assert_eq!(b.stats().too_old, 1);
}

#[test]
fn tampered_and_garbage_packets_counted() {
    let now = Instant::now();
    let (mut a, mut b) = ik_pair(now, LinkConfig::default());
    let mut p = a.send(now, b"data").expect("send");
    let last = p.len() - 1;
    p[last] ^= 1;
    assert_eq!(b.handle(now, &p), Err(LinkError::BadAuth));
    assert!(b.handle(now, &[4, 0, 0]).is_err());
    assert!(b.handle(now, &[99; 40]).is_err());
    let s = b.stats();
    assert_eq!((s.bad_auth, s.truncated, s.garbage), (1, 1, 1));
    // Failed packets do not disturb the session: the next genuine packet is accepted.
    let p = a.send(now, b"ok").expect("send");
    assert_eq!(b.handle(now, &p), Ok(Some(b"ok".to_vec())));
}

#[test]
fn rekey_after_packet_count_keeps_data_flowing() {
    let now = Instant::now();
    let cfg = LinkConfig {
        rekey_after_packets: 8,
        ..LinkConfig::default()
    };
    let (mut a, mut b) = ik_pair(now, cfg);
    // a has sent 1 keepalive; 7 more packets reach the threshold.
    let pkts: Vec<Vec<u8>> = (0..7u8).map(|i| a.send(now, &[i]).expect("send")).collect();
    assert_eq!(a.state(), LinkState::Rekeying);
    let init = a.poll_transmit().expect("rekey initiation");
    // Deliver half the data now; the rest stays in flight across the rekey.
    for (i, p) in pkts[..3].iter().enumerate() {
        assert_eq!(b.handle(now, p), Ok(Some(vec![i as u8])));
    }
    // Data keeps flowing during the rekey.
    let during = a.send(now, b"during").expect("send while rekeying");
    assert_eq!(b.handle(now, &init), Ok(None));
    let resp = b.poll_transmit().expect("rekey response");
    assert_eq!(a.handle(now, &resp), Ok(None));
    assert_eq!(a.poll_event(), Some(LinkEvent::Rekeyed));
    assert_eq!(a.state(), LinkState::Up);
    let confirm = a.poll_transmit().expect("confirmation keepalive");
    assert_eq!(b.handle(now, &confirm), Ok(None));
    assert_eq!(b.poll_event(), Some(LinkEvent::Rekeyed));
    // Old-session packets still in flight are accepted.
    for (i, p) in pkts[3..].iter().enumerate() {
        assert_eq!(b.handle(now, p), Ok(Some(vec![(i + 3) as u8])));
    }
    assert_eq!(b.handle(now, &during), Ok(Some(b"during".to_vec())));
    // New session both ways.
    let p = a.send(now, b"new a").expect("send");
    assert_eq!(b.handle(now, &p), Ok(Some(b"new a".to_vec())));
    let p = b.send(now, b"new b").expect("send");
    assert_eq!(a.handle(now, &p), Ok(Some(b"new b".to_vec())));
    assert_eq!((a.stats().rekeys, b.stats().rekeys), (1, 1));
    // After the grace period the old session is gone.
    let late = now + Duration::from_secs(11);
    b.handle_timeout(late);
    assert!(matches!(
        b.handle(late, &pkts[0]),
        Err(LinkError::UnknownSession(_))
    ));
}

#[test]
fn rekey_after_time_by_initiator() {
    let now = Instant::now();
    let cfg = LinkConfig {
        rekey_after_time: Duration::from_secs(30),
        ..LinkConfig::default()
    };
    let (mut a, mut b) = ik_pair(now, cfg);
    let t = now + Duration::from_secs(30);
    // Keep both sides alive so the keepalive / dead timers don't interfere.
    a.handle_timeout(t);
    assert_eq!(a.state(), LinkState::Rekeying);
    let mut delivered = 0;
    while let Some(p) = a.poll_transmit() {
        let _ = b.handle(t, &p);
        delivered += 1;
    }
    assert!(delivered >= 1);
    while let Some(p) = b.poll_transmit() {
        let _ = a.handle(t, &p);
    }
    assert_eq!(a.state(), LinkState::Up);
    assert_eq!(a.stats().rekeys, 1);
}

#[test]
fn keepalive_emitted_when_idle() {
    let now = Instant::now();
    let (mut a, mut b) = ik_pair(now, LinkConfig::default());
    let t = a.poll_timeout().expect("timer armed");
    assert_eq!(t, now + Duration::from_secs(10));
    a.handle_timeout(t - Duration::from_millis(1));
    assert!(
        a.poll_transmit().is_none(),
        "no keepalive before the interval"
    );
    a.handle_timeout(t);
    let k = a.poll_transmit().expect("keepalive");
    assert_eq!(b.handle(t, &k), Ok(None));
    assert_eq!(a.stats().keepalives_sent, 2); // confirmation + idle
    assert_eq!(b.stats().keepalives_received, 2);
}

#[test]
fn dead_peer_goes_down() {
    let now = Instant::now();
    let (mut a, _b) = ik_pair(now, LinkConfig::default());
    let mut t = now;
    while a.state() != LinkState::Down(DownReason::PeerTimeout) {
        t = a.poll_timeout().expect("timer");
        a.handle_timeout(t);
        while a.poll_transmit().is_some() {}
        assert!(t <= now + Duration::from_secs(60));
    }
    assert_eq!(t, now + Duration::from_secs(60));
    assert!(matches!(
        a.poll_event(),
        Some(LinkEvent::Down {
            reason: DownReason::PeerTimeout
        })
    ));
    assert_eq!(a.send(t, b"x"), Err(LinkError::Down));
}

#[test]
fn handshake_retry_backoff_and_give_up() {
    let now = Instant::now();
    let cfg = LinkConfig {
        handshake_retry_initial: Duration::from_secs(1),
        handshake_retry_max: Duration::from_secs(4),
        handshake_give_up: Duration::from_secs(20),
        ..LinkConfig::default()
    };
    let (mut a, first) =
        Link::connect(now, WALL, &id(1), id(2).public_key(), cfg).expect("connect");
    let mut retries = Vec::new();
    while let Some(t) = a.poll_timeout() {
        a.handle_timeout(t);
        while let Some(p) = a.poll_transmit() {
            assert_eq!(p, first, "retransmission is the same message 1");
            retries.push(t.duration_since(now).as_secs());
        }
    }
    assert_eq!(retries, vec![1, 3, 7, 11, 15, 19]);
    assert_eq!(a.state(), LinkState::Down(DownReason::HandshakeTimeout));
    assert_eq!(
        a.poll_event(),
        Some(LinkEvent::Down {
            reason: DownReason::HandshakeTimeout
        })
    );
    assert_eq!(a.stats().handshakes_sent, 7);
}

#[test]
fn responder_retransmitted_init_gets_a_link_that_expires() {
    // A second copy of an IK initiation creates a second, unconfirmed link; unconfirmed links
    // go Down after the give-up time.
    let now = Instant::now();
    let (_a, init) = Link::connect(now, WALL, &id(1), id(2).public_key(), LinkConfig::default())
        .expect("connect");
    let mut acc = acceptor(now, &id(2), LinkConfig::default());
    let Ok(Accepted::Link { link, .. }) = acc.handle(now, &init, 1) else {
        panic!("no link")
    };
    let mut b = *link;
    let t = b.poll_timeout().expect("give-up timer");
    assert_eq!(t, now + Duration::from_secs(30));
    b.handle_timeout(t);
    assert_eq!(b.state(), LinkState::Down(DownReason::HandshakeTimeout));
}

#[test]
fn pending_table_bounded_under_flood() {
    let now = Instant::now();
    let cfg = AcceptorConfig {
        max_pending: 64,
        max_sources: 128,
        global_rate: 1_000_000,
        global_burst: 1_000_000,
        // This test is about the pending table: no cookie replies.
        cookie_threshold: u32::MAX,
        ..AcceptorConfig::default()
    };
    let server = id(2);
    let mut acc = Acceptor::new(now, WALL, &server, cfg, Acceptor::allow_all());
    let mut replies = 0u64;
    for i in 0..10_000u32 {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_le_bytes());
        key[31] = 0x55;
        let (_l, m1) =
            Link::connect_unknown(now, WALL, &Identity::from_bytes(key), LinkConfig::default())
                .expect("connect");
        // Every 100 initiations, time moves on by 1 ms; each comes from its own source.
        let t = now + Duration::from_millis(u64::from(i / 100));
        if let Ok(Accepted::Reply(_)) = acc.handle(t, &m1, u64::from(i)) {
            replies += 1;
        }
        assert!(acc.pending_len() <= 64);
        assert!(acc.sources_len() <= 128);
    }
    let s = acc.stats().clone();
    assert_eq!(replies, 64);
    assert_eq!(s.pending_full + s.rate_limited + replies, 10_000);
    // After the pending timeout a legitimate XX handshake gets through again.
    let later = now + Duration::from_secs(60);
    acc.handle_timeout(later);
    assert_eq!(acc.pending_len(), 0);
    let (mut a, m1) =
        Link::connect_unknown(later, WALL, &id(1), LinkConfig::default()).expect("connect");
    let Ok(Accepted::Reply(m2)) = acc.handle(later, &m1, 424_242) else {
        panic!("refused")
    };
    a.handle(later, &m2).expect("m2");
    let m3 = a.poll_transmit().expect("m3");
    assert!(matches!(
        acc.handle(later, &m3, 424_242),
        Ok(Accepted::Link { .. })
    ));
}

#[test]
fn ik_flood_is_rate_limited_before_dh() {
    let now = Instant::now();
    let server = id(2);
    let mut acc = Acceptor::new(
        now,
        WALL,
        &server,
        AcceptorConfig {
            // This test is about the token buckets: no cookie replies.
            cookie_threshold: u32::MAX,
            ..AcceptorConfig::default()
        },
        Acceptor::allow_list([]),
    );
    for i in 0..2_000u32 {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_le_bytes());
        key[31] = 0x66;
        let (_l, m1) = Link::connect(
            now,
            WALL,
            &Identity::from_bytes(key),
            server.public_key(),
            LinkConfig::default(),
        )
        .expect("connect");
        let _ = acc.handle(now, &m1, 1);
    }
    let s = acc.stats();
    // One source: its burst (5) gets as far as the policy, the rest is rate limited.
    assert_eq!(s.refused, 5);
    assert_eq!(s.rate_limited, 1_995);
    assert_eq!(acc.pending_len(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_break_a_link(junk in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..120), 1..20)) {
        let now = Instant::now();
        let (mut a, mut b) = ik_pair(now, LinkConfig::default());
        let mut acc = acceptor(now, &id(2), LinkConfig::default());
        let idx = b.local_indices()[0];
        for j in &junk {
            let _ = b.handle(now, j);
            let _ = acc.handle(now, j, 3);
            // The same bytes as a transport packet for the live session must fail auth.
            if j.len() >= 16 {
                let p = Packet::Transport(Transport { receiver: idx, counter: 5, ciphertext: j })
                    .to_vec().expect("emit");
                prop_assert_eq!(b.handle(now, &p), Err(LinkError::BadAuth));
            }
        }
        let p = a.send(now, b"still up").expect("send");
        prop_assert_eq!(b.handle(now, &p), Ok(Some(b"still up".to_vec())));
    }
}

#[test]
fn simultaneous_rekeys_resolve_to_one_session() {
    let now = Instant::now();
    let cfg = LinkConfig {
        rekey_after_packets: 3,
        ..LinkConfig::default()
    };
    let (mut a, mut b) = ik_pair(now, cfg);
    // a already sent its confirmation keepalive: 2 more reach 3; b needs 3.
    for _ in 0..2 {
        let p = a.send(now, b"a").expect("send");
        b.handle(now, &p).expect("data");
    }
    for _ in 0..3 {
        let p = b.send(now, b"b").expect("send");
        a.handle(now, &p).expect("data");
    }
    assert_eq!(
        (a.state(), b.state()),
        (LinkState::Rekeying, LinkState::Rekeying)
    );
    let ia = a.poll_transmit().expect("a's initiation");
    let ib = b.poll_transmit().expect("b's initiation");
    let ra = a.handle(now, &ib);
    let rb = b.handle(now, &ia);
    // Exactly one initiation loses.
    assert!(ra.is_err() != rb.is_err(), "{ra:?} {rb:?}");
    // Pump until quiet.
    for _ in 0..4 {
        while let Some(p) = a.poll_transmit() {
            let _ = b.handle(now, &p);
        }
        while let Some(p) = b.poll_transmit() {
            let _ = a.handle(now, &p);
        }
    }
    assert_eq!((a.state(), b.state()), (LinkState::Up, LinkState::Up));
    assert_eq!((a.stats().rekeys, b.stats().rekeys), (1, 1));
    let p = a.send(now, b"after").expect("send");
    assert_eq!(b.handle(now, &p), Ok(Some(b"after".to_vec())));
    let p = b.send(now, b"after").expect("send");
    assert_eq!(a.handle(now, &p), Ok(Some(b"after".to_vec())));
}

#[test]
fn retransmitted_rekey_initiation_gets_the_same_response() {
    let now = Instant::now();
    let cfg = LinkConfig {
        rekey_after_packets: 2,
        ..LinkConfig::default()
    };
    let (mut a, mut b) = ik_pair(now, cfg);
    let p = a.send(now, b"x").expect("send");
    b.handle(now, &p).expect("data");
    let init = a.poll_transmit().expect("rekey initiation");
    b.handle(now, &init).expect("init");
    let r1 = b.poll_transmit().expect("response");
    // The response is lost; a retransmits after the retry delay.
    let t = now + Duration::from_secs(1);
    a.handle_timeout(t);
    let again = a.poll_transmit().expect("retransmission");
    assert_eq!(again, init);
    b.handle(t, &again).expect("duplicate init");
    let r2 = b.poll_transmit().expect("response again");
    assert_eq!(r1, r2);
    a.handle(t, &r2).expect("response");
    let confirm = a.poll_transmit().expect("confirmation");
    b.handle(t, &confirm).expect("confirm");
    assert_eq!((a.stats().rekeys, b.stats().rekeys), (1, 1));
}

/// An IK initiation from `from` to `to` whose clock reads `wall` at `now`.
fn ik_init(now: Instant, wall: Tai64N, from: &Identity, to: &Identity) -> (Link, Vec<u8>) {
    Link::connect(now, wall, from, to.public_key(), LinkConfig::default()).expect("connect")
}

#[test]
fn replayed_ik_initiation_is_rejected_before_any_link() {
    // WireGuard paper §5.1: the acceptor keeps the greatest timestamp per initiator key.
    let now = Instant::now();
    let (ida, idb) = (id(1), id(2));
    let mut acc = acceptor(now, &idb, LinkConfig::default());
    let (_a1, first) = ik_init(now, WALL, &ida, &idb);
    assert!(matches!(
        acc.handle(now, &first, 1),
        Ok(Accepted::Link { .. })
    ));
    // The initiator restarts later; its new initiation carries a newer timestamp.
    let later = now + Duration::from_secs(2);
    let (_a2, second) = ik_init(later, WALL.plus(Duration::from_secs(2)), &ida, &idb);
    assert!(matches!(
        acc.handle(later, &second, 1),
        Ok(Accepted::Link { .. })
    ));
    // An attacker replays the first one: rejected, no link, counted.
    assert!(matches!(
        acc.handle(later, &first, 2),
        Err(AcceptError::Replayed)
    ));
    // And the second one, once its retransmission window is over.
    let much_later = later + LinkConfig::default().handshake_give_up;
    assert!(matches!(
        acc.handle(much_later, &second, 3),
        Err(AcceptError::Replayed)
    ));
    // A clock that went backwards looks like a replay too.
    let (_a3, old) = ik_init(much_later, WALL, &ida, &idb);
    assert!(matches!(
        acc.handle(much_later, &old, 4),
        Err(AcceptError::Replayed)
    ));
    let s = acc.stats();
    assert_eq!(s.replayed_initiations, 3);
    assert_eq!(s.accepted_ik, 2);
    assert_eq!(s.retransmitted_initiations, 0);
    assert_eq!(
        acc.greatest_timestamp(&ida.public_key()),
        Some(WALL.plus(Duration::from_secs(2)))
    );
}

#[test]
fn retransmitted_ik_initiation_gets_the_same_response_and_no_second_link() {
    // The response is lost; the initiator retransmits message 1 unchanged. The acceptor must
    // neither reject it as a replay (the handshake would stall) nor make a second link.
    let now = Instant::now();
    let (ida, idb) = (id(1), id(2));
    let mut acc = acceptor(now, &idb, LinkConfig::default());
    let (mut a, init) = ik_init(now, WALL, &ida, &idb);
    let Ok(Accepted::Link {
        link: b,
        reply: Some(lost),
    }) = acc.handle(now, &init, 1)
    else {
        panic!("IK initiation not accepted")
    };
    let mut b = *b;
    let t = a.poll_timeout().expect("retry timer");
    a.handle_timeout(t);
    let again = a.poll_transmit().expect("retransmission");
    assert_eq!(again, init);
    let Ok(Accepted::Reply(resp)) = acc.handle(t, &again, 1) else {
        panic!("retransmission not answered")
    };
    assert_eq!(resp, lost, "the same response");
    assert_eq!(acc.stats().retransmitted_initiations, 1);
    assert_eq!(acc.stats().accepted_ik, 1);
    a.handle(t, &resp).expect("response");
    let confirm = a.poll_transmit().expect("confirmation");
    b.handle(t, &confirm).expect("confirm");
    assert_eq!((a.state(), b.state()), (LinkState::Up, LinkState::Up));
}

/// An IK pair made at `now` whose first packet, at `t`, makes `a` rekey (the config must set
/// `rekey_after_packets` to 2 or less); the rekey completes at `t`. Returns the pair and the
/// captured rekey initiation.
fn rekeyed_pair(now: Instant, t: Instant, cfg: LinkConfig) -> (Link, Link, Vec<u8>) {
    let (mut a, mut b) = ik_pair(now, cfg);
    let p = a.send(t, b"x").expect("send");
    b.handle(t, &p).expect("data");
    let init = a.poll_transmit().expect("rekey initiation");
    b.handle(t, &init).expect("init");
    let resp = b.poll_transmit().expect("response");
    a.handle(t, &resp).expect("response");
    let confirm = a.poll_transmit().expect("confirmation");
    b.handle(t, &confirm).expect("confirm");
    (a, b, init)
}

#[test]
fn replayed_rekey_initiation_is_rejected() {
    let now = Instant::now();
    let cfg = LinkConfig {
        rekey_after_packets: 2,
        ..LinkConfig::default()
    };
    let t = now + Duration::from_millis(10);
    let (mut a, mut b, init) = rekeyed_pair(now, t, cfg);
    assert_eq!(b.stats().rekeys, 1);
    // The captured rekey initiation, replayed: no new session, no response.
    assert_eq!(b.handle(t, &init), Err(LinkError::ReplayedInitiation));
    assert!(b.poll_transmit().is_none());
    assert_eq!(b.stats().replayed_initiations, 1);
    let p = a.send(t, b"after").expect("send");
    assert_eq!(b.handle(t, &p), Ok(Some(b"after".to_vec())));
}

#[test]
fn a_flood_of_replayed_rekey_initiations_buys_a_few_dh_per_second() {
    let now = Instant::now();
    let cfg = LinkConfig {
        rekey_after_packets: 2,
        ..LinkConfig::default()
    };
    let budget = cfg.max_rekey_inits_per_sec as u64;
    let t = now + Duration::from_millis(10);
    let (mut a, mut b, init) = rekeyed_pair(now, t, cfg);
    // 1,000 replays of the captured initiation within one second: only the budget (less the
    // real rekey) reaches the DH that finds the stale timestamp; the rest are dropped first.
    for i in 0..1_000u64 {
        let at = t + Duration::from_micros(i * 900);
        let r = b.handle(at, &init);
        assert!(
            matches!(
                r,
                Err(LinkError::ReplayedInitiation | LinkError::RateLimited)
            ),
            "{r:?}"
        );
    }
    let s = b.stats();
    assert_eq!(s.replayed_initiations + s.rate_limited_rekeys, 1_000);
    assert_eq!(s.replayed_initiations, budget - 1, "{s:?}");
    assert!(b.poll_transmit().is_none());
    // A second later the budget is back, and the link still carries data.
    let later = t + Duration::from_secs(2);
    assert_eq!(b.handle(later, &init), Err(LinkError::ReplayedInitiation));
    let p = a.send(later, b"after").expect("send");
    assert_eq!(b.handle(later, &p), Ok(Some(b"after".to_vec())));
}

#[test]
fn replay_table_is_bounded() {
    let now = Instant::now();
    let server = id(2);
    let mut acc = Acceptor::new(
        now,
        WALL,
        &server,
        AcceptorConfig {
            max_timestamps: 8,
            ..AcceptorConfig::default()
        },
        Acceptor::allow_all(),
    );
    for i in 0..20u32 {
        let mut key = [0u8; 32];
        // Byte 0's low bits are cleared by X25519 clamping: vary bytes 1..5.
        key[1..5].copy_from_slice(&i.to_le_bytes());
        key[31] = 0x77;
        let t = now + Duration::from_millis(u64::from(i));
        let (_l, m1) = ik_init(t, WALL, &Identity::from_bytes(key), &server);
        let r = acc.handle(t, &m1, u64::from(i));
        assert!(matches!(r, Ok(Accepted::Link { .. })), "{i}: {r:?}");
        assert!(acc.timestamps_len() <= 8);
    }
    assert_eq!(acc.stats().timestamps_evicted, 12);
}

/// An XX handshake up to message 3: (initiator, acceptor, message 3), the initiator Up.
fn xx_until_final(now: Instant, ida: &Identity, idb: &Identity) -> (Link, Acceptor, Vec<u8>) {
    let (mut a, m1) =
        Link::connect_unknown(now, WALL, ida, LinkConfig::default()).expect("connect");
    let mut acc = acceptor(now, idb, LinkConfig::default());
    let Ok(Accepted::Reply(m2)) = acc.handle(now, &m1, 1) else {
        panic!("no XX reply")
    };
    assert_eq!(a.handle(now, &m2), Ok(None));
    assert_eq!(
        a.poll_event(),
        Some(LinkEvent::Up {
            peer: idb.hashname()
        })
    );
    let m3 = a.poll_transmit().expect("XX message 3");
    (a, acc, m3)
}

#[test]
fn lost_xx_message_3_is_retransmitted_until_confirmed() {
    let now = Instant::now();
    let (ida, idb) = (id(3), id(4));
    let (mut a, mut acc, m3) = xx_until_final(now, &ida, &idb);
    // Message 3 is lost. The initiator retransmits it on the handshake retry timer.
    let t = a.poll_timeout().expect("retry timer");
    assert_eq!(t, now + LinkConfig::default().handshake_retry_initial);
    a.handle_timeout(t);
    let again = a.poll_transmit().expect("message 3 retransmitted");
    assert_eq!(again, m3);
    let Ok(Accepted::Link { link: b, .. }) = acc.handle(t, &again, 1) else {
        panic!("no link")
    };
    let mut b = *b;
    assert_eq!(b.state(), LinkState::Up);
    // The responder confirms at once with a keepalive; then the initiator stops.
    let ka = b.poll_transmit().expect("responder keepalive");
    assert_eq!(a.handle(t, &ka), Ok(None));
    let t2 = t + Duration::from_secs(5);
    a.handle_timeout(t2);
    b.handle_timeout(t2);
    assert!(
        a.poll_transmit().is_none(),
        "no more message 3 once confirmed"
    );
    assert!(t2 < now + LinkConfig::default().dead_after);
    let p = a.send(t2, b"x").expect("send");
    assert_eq!(b.handle(t2, &p), Ok(Some(b"x".to_vec())));
    let p = b.send(t2, b"y").expect("send");
    assert_eq!(a.handle(t2, &p), Ok(Some(b"y".to_vec())));
    assert_eq!((a.state(), b.state()), (LinkState::Up, LinkState::Up));
}

#[test]
fn duplicate_xx_message_3_is_answered_with_a_keepalive() {
    // Message 3 arrives but the responder's confirming keepalive is lost: the retransmitted
    // message 3 reaches the responder's link (its index), which answers with a keepalive.
    let now = Instant::now();
    let (ida, idb) = (id(3), id(4));
    let (mut a, mut acc, m3) = xx_until_final(now, &ida, &idb);
    let Ok(Accepted::Link { link: b, .. }) = acc.handle(now, &m3, 1) else {
        panic!("no link")
    };
    let mut b = *b;
    let _lost = b.poll_transmit().expect("responder keepalive");
    let t = a.poll_timeout().expect("retry timer");
    a.handle_timeout(t);
    let again = a.poll_transmit().expect("message 3 retransmitted");
    assert!(
        !acc.has_pending(b.local_indices()[0]),
        "routed to the link, not the acceptor"
    );
    assert_eq!(b.handle(t, &again), Ok(None));
    let ka = b.poll_transmit().expect("keepalive for the duplicate");
    assert_eq!(a.handle(t, &ka), Ok(None));
    a.handle_timeout(t + Duration::from_secs(10));
    while let Some(p) = a.poll_transmit() {
        assert!(
            matches!(Packet::parse(&p), Ok(Packet::Transport(_))),
            "only keepalives once confirmed"
        );
    }
    // A message 3 that is not the one b accepted gets nothing.
    let mut forged = again.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(b.handle(t, &forged), Err(LinkError::UnexpectedHandshake));
    assert!(b.poll_transmit().is_none());
}

#[test]
fn unconfirmed_xx_initiator_gives_up_after_the_handshake_time() {
    // The responder never gets message 3: the initiator goes Down after handshake_give_up,
    // not after dead_after.
    let now = Instant::now();
    let (ida, idb) = (id(3), id(4));
    let (mut a, _acc, _m3) = xx_until_final(now, &ida, &idb);
    let mut sends = 0;
    while let Some(t) = a.poll_timeout() {
        a.handle_timeout(t);
        while let Some(p) = a.poll_transmit() {
            if Packet::parse(&p).is_ok_and(|p| matches!(p, Packet::Handshake(_))) {
                sends += 1;
            }
        }
        if matches!(a.state(), LinkState::Down(_)) {
            assert_eq!(t, now + LinkConfig::default().handshake_give_up);
            break;
        }
    }
    assert_eq!(a.state(), LinkState::Down(DownReason::HandshakeTimeout));
    assert!(sends >= 4, "message 3 retransmitted ({sends})");
}

/// An IK initiation to `server` that passes MAC1 but fails the Noise handshake: what an
/// attacker who knows the server's public key can make cheaply from spoofed sources.
fn bogus_init_with_valid_mac1(server: &Identity, n: u32) -> Vec<u8> {
    let (_l, mut p) = ik_init(Instant::now(), WALL, &id(9), server);
    p[4..8].copy_from_slice(&n.to_le_bytes());
    p[12 + 40] ^= 0x5a; // inside the encrypted static key: fails after the DH
    cookie::seal_init(&mut p, Pattern::IK, &server.public_key(), None).expect("long enough");
    p
}

#[test]
fn spoofed_flood_gets_cookie_replies_without_dh_and_the_real_peer_connects() {
    // WireGuard paper §5.3 / §5.4.7.
    let now = Instant::now();
    let server = id(2);
    let mut acc = Acceptor::new(
        now,
        WALL,
        &server,
        AcceptorConfig {
            cookie_threshold: 10,
            ..AcceptorConfig::default()
        },
        Acceptor::allow_all(),
    );
    let flood = |acc: &mut Acceptor, from: Instant, count: u32| {
        for i in 0..count {
            let t = from + Duration::from_micros(u64::from(i) * 100);
            let r = acc.handle(
                t,
                &bogus_init_with_valid_mac1(&server, i),
                1_000_000 + u64::from(i),
            );
            assert!(!matches!(r, Ok(Accepted::Link { .. })));
        }
    };
    flood(&mut acc, now, 1_000);
    let s = acc.stats().clone();
    assert_eq!(
        s.handshakes_processed, 10,
        "DH only below the load threshold"
    );
    assert_eq!(s.bad_auth, 10);
    assert_eq!(s.cookie_replies, 990);
    assert_eq!(
        s.rate_limited, 0,
        "cookie replies come before the token buckets"
    );

    // The real peer: its first initiation gets a cookie reply, not a link.
    let t0 = now + Duration::from_millis(100);
    let (mut a, init) = ik_init(t0, WALL, &id(1), &server);
    let Ok(Accepted::CookieReply(reply)) = acc.handle(t0, &init, 7) else {
        panic!("no cookie reply under load")
    };
    assert_eq!(a.handle(t0, &reply), Ok(None));
    assert_eq!(a.stats().cookies_received, 1);
    // The flood goes on; on its retry timer the peer resends message 1 with MAC2.
    let t1 = a.poll_timeout().expect("retry");
    flood(&mut acc, t1 - Duration::from_millis(50), 500);
    a.handle_timeout(t1);
    let again = a.poll_transmit().expect("retransmission");
    let n = init.len();
    assert_eq!(
        again[..n - 16],
        init[..n - 16],
        "same message 1, only MAC2 differs"
    );
    assert_ne!(again[n - 16..], init[n - 16..]);
    // The cookie is bound to the peer's source: from another source it is still refused.
    assert!(matches!(
        acc.handle(t1, &again, 8),
        Ok(Accepted::CookieReply(_))
    ));
    let before = acc.stats().handshakes_processed;
    let Ok(Accepted::Link {
        link: b,
        reply: Some(resp),
    }) = acc.handle(t1, &again, 7)
    else {
        panic!("valid MAC2 not processed under load")
    };
    assert_eq!(acc.stats().handshakes_processed, before + 1);
    let mut b = *b;
    a.handle(t1, &resp).expect("response");
    let confirm = a.poll_transmit().expect("confirmation");
    b.handle(t1, &confirm).expect("confirm");
    assert_eq!((a.state(), b.state()), (LinkState::Up, LinkState::Up));
    assert_eq!(acc.stats().handshakes_processed, 11);
}

#[test]
fn wrong_mac1_is_dropped_before_dh() {
    let now = Instant::now();
    let mut acc = acceptor(now, &id(2), LinkConfig::default());
    // Meant for another key: its MAC1 is keyed by that key.
    let (_l, other) = ik_init(now, WALL, &id(1), &id(3));
    assert!(matches!(
        acc.handle(now, &other, 1),
        Err(AcceptError::BadMac1)
    ));
    // Any bytes with an Init header.
    let mut junk = vec![0x33u8; 150];
    junk[..4].copy_from_slice(&[1, 1, 0, 0]);
    assert!(matches!(
        acc.handle(now, &junk, 1),
        Err(AcceptError::BadMac1)
    ));
    junk[1] = 2;
    assert!(matches!(
        acc.handle(now, &junk, 1),
        Err(AcceptError::BadMac1)
    ));
    let s = acc.stats();
    assert_eq!((s.bad_mac1, s.handshakes_processed, s.bad_auth), (3, 0, 0));
}

#[test]
fn xx_initiator_under_load_uses_the_cookie() {
    let now = Instant::now();
    let server = id(4);
    let mut acc = Acceptor::new(
        now,
        WALL,
        &server,
        AcceptorConfig {
            cookie_threshold: 0,
            ..AcceptorConfig::default()
        },
        Acceptor::allow_all(),
    );
    let (mut a, m1) =
        Link::connect_unknown(now, WALL, &id(3), LinkConfig::default()).expect("connect");
    let Ok(Accepted::CookieReply(c)) = acc.handle(now, &m1, 5) else {
        panic!("no cookie reply")
    };
    assert_eq!(a.handle(now, &c), Ok(None));
    let t = a.poll_timeout().expect("retry");
    a.handle_timeout(t);
    let again = a.poll_transmit().expect("retransmission");
    let Ok(Accepted::Reply(m2)) = acc.handle(t, &again, 5) else {
        panic!("XX with MAC2 not answered")
    };
    a.handle(t, &m2).expect("m2");
    let m3 = a.poll_transmit().expect("m3");
    assert!(matches!(acc.handle(t, &m3, 5), Ok(Accepted::Link { .. })));
}
