//! One `Gossip` node driven frame by frame: de-duplication, mesh maintenance (GRAFT/PRUNE,
//! D_lo/D_hi, backoff), IHAVE/IWANT, and every bound (queues, events, caches, topics).
#![cfg(feature = "std")]

use std::time::{Duration, Instant};

use poe::gossip::{
    Frame, Gossip, GossipConfig, GossipEvent, HandleError, MessageId, PeerId, PublishError,
    SubscribeError, Subscription, Transport,
};

const T: &str = "poe/votes";

fn pid(i: u64) -> PeerId {
    PeerId::from_u64(i)
}

fn node(config: GossipConfig) -> Gossip {
    Gossip::new(config, pid(0)).expect("valid config")
}

/// Every queued frame, decoded.
fn drain(g: &mut Gossip) -> Vec<(PeerId, Frame)> {
    let mut out = Vec::new();
    while let Some((to, bytes)) = g.poll_transmit() {
        out.push((to, Frame::decode(&bytes).expect("own frames decode")));
    }
    out
}

fn subs(topic: &str) -> Vec<u8> {
    Frame::Subscriptions(vec![Subscription {
        subscribe: true,
        topic: topic.into(),
    }])
    .to_bytes()
}

fn publish_frame(topic: &str, data: &[u8]) -> Vec<u8> {
    Frame::Publish {
        topic: topic.into(),
        data: data.to_vec(),
    }
    .to_bytes()
}

/// A node subscribed to `T` with `n` peers (ids 1..=n) that all announced `T`.
fn with_peers(config: GossipConfig, n: u64, now: Instant) -> Gossip {
    let mut g = node(config);
    for i in 1..=n {
        assert!(g.add_peer(pid(i)));
        g.handle(now, pid(i), &subs(T)).expect("subscriptions");
    }
    assert_eq!(g.subscribe(T), Ok(true));
    g
}

fn kinds(frames: &[(PeerId, Frame)], f: impl Fn(&Frame) -> bool) -> Vec<PeerId> {
    frames
        .iter()
        .filter(|(_, fr)| f(fr))
        .map(|(p, _)| *p)
        .collect()
}

#[test]
fn duplicates_are_delivered_and_forwarded_once() {
    let now = Instant::now();
    let mut g = with_peers(GossipConfig::default(), 3, now);
    assert_eq!(g.mesh(T), [pid(1), pid(2), pid(3)]);
    drain(&mut g);

    let m = publish_frame(T, b"vote");
    g.handle(now, pid(1), &m).expect("publish");
    g.handle(now, pid(2), &m).expect("same publish");
    g.handle(now, pid(1), &m).expect("same publish again");
    assert_eq!(
        g.poll_event(),
        Some(GossipEvent::Message {
            topic: T.into(),
            data: b"vote".to_vec(),
            from: pid(1)
        })
    );
    assert_eq!(g.poll_event(), None);
    let out = drain(&mut g);
    // Forwarded to the mesh except the sender, once.
    assert_eq!(
        kinds(&out, |f| matches!(f, Frame::Publish { .. })),
        [pid(2), pid(3)]
    );
    let s = g.stats();
    assert_eq!((s.delivered, s.duplicates, s.seen_entries), (1, 2, 1));
}

#[test]
fn publish_checks_and_own_messages_stay_local() {
    let now = Instant::now();
    let config = GossipConfig {
        max_message_size: 8,
        ..GossipConfig::default()
    };
    let mut g = with_peers(config, 2, now);
    drain(&mut g);
    let id = g.publish(now, T, b"hello").expect("published");
    assert_eq!(id, MessageId::new(T, b"hello"));
    assert_ne!(
        id,
        MessageId::new("other", b"hello"),
        "the topic is in the id"
    );
    assert_eq!(
        g.publish(now, T, b"hello"),
        Err(PublishError::Duplicate(id))
    );
    assert_eq!(
        g.publish(now, T, b"too long!"),
        Err(PublishError::MessageTooLarge { size: 9, max: 8 })
    );
    assert_eq!(
        g.publish(now, "", b"x"),
        Err(PublishError::InvalidTopic { len: 0 })
    );
    assert_eq!(
        g.subscribe(&"x".repeat(256)),
        Err(SubscribeError::InvalidTopic { len: 256 })
    );
    assert_eq!(g.poll_event(), None, "no echo of own messages");
    let out = drain(&mut g);
    assert_eq!(kinds(&out, |f| matches!(f, Frame::Publish { .. })).len(), 2);
    // Incoming oversize messages are refused and counted.
    let big = publish_frame(T, b"0123456789");
    assert_eq!(
        g.handle(now, pid(1), &big),
        Err(HandleError::MessageTooLarge { size: 10, max: 8 })
    );
    assert_eq!(g.stats().oversize_drops, 1);
    assert_eq!(g.stats().published, 1);
}

#[test]
fn bad_input_is_rejected_with_reasons_and_counted() {
    let now = Instant::now();
    let mut g = with_peers(GossipConfig::default(), 1, now);
    assert_eq!(
        g.handle(now, pid(9), &subs(T)),
        Err(HandleError::UnknownPeer(pid(9)))
    );
    assert!(matches!(
        g.handle(now, pid(1), &[1, 77]),
        Err(HandleError::Decode(_))
    ));
    assert!(matches!(
        g.handle(now, pid(1), &vec![0u8; 1 << 21]),
        Err(HandleError::FrameTooLarge { .. })
    ));
    let s = g.stats();
    assert_eq!((s.unknown_peer_frames, s.decode_errors), (1, 2));
}

#[test]
fn heartbeat_keeps_the_mesh_between_d_lo_and_d_hi() {
    let t0 = Instant::now();
    let c = GossipConfig::default();
    let hb = c.heartbeat_interval;
    let mut g = with_peers(c.clone(), 30, t0);
    let out = drain(&mut g);
    // Subscribing grafts D of the 30 topic peers.
    assert_eq!(g.mesh(T).len(), c.mesh_n);
    assert_eq!(
        kinds(&out, |f| matches!(f, Frame::Graft { .. })).len(),
        c.mesh_n
    );

    // Twenty peers graft us: the mesh grows past D_hi until the heartbeat prunes it to D.
    for i in 1..=20 {
        g.handle(
            t0,
            pid(i),
            &Frame::Graft {
                topics: vec![T.into()],
            }
            .to_bytes(),
        )
        .expect("graft");
    }
    let grown = g.mesh(T).len();
    assert!(grown >= 20);
    g.handle_timeout(t0);
    assert_eq!(g.poll_timeout(), Some(t0 + hb));
    g.handle_timeout(t0 + hb);
    assert_eq!(g.mesh(T).len(), c.mesh_n);
    let out = drain(&mut g);
    let pruned = kinds(&out, |f| matches!(f, Frame::Prune { .. }));
    assert_eq!(pruned.len(), grown - c.mesh_n);
    assert!(pruned.iter().all(|p| !g.mesh(T).contains(p)));
    assert_eq!(g.poll_timeout(), Some(t0 + 2 * hb));

    // A pruned peer that grafts again within the backoff is refused with PRUNE.
    let p = pruned[0];
    g.handle(
        t0 + hb,
        p,
        &Frame::Graft {
            topics: vec![T.into()],
        }
        .to_bytes(),
    )
    .expect("graft");
    assert!(!g.mesh(T).contains(&p));
    let out = drain(&mut g);
    assert_eq!(kinds(&out, |f| matches!(f, Frame::Prune { .. })), [p]);

    // Losing mesh peers below D_lo: the heartbeat grafts back up to D.
    let mesh = g.mesh(T);
    for q in &mesh[..2] {
        assert!(g.remove_peer(*q));
    }
    assert_eq!(g.mesh(T).len(), c.mesh_n - 2);
    g.handle_timeout(t0 + 2 * hb);
    assert_eq!(g.mesh(T).len(), c.mesh_n);
    let out = drain(&mut g);
    let grafted = kinds(&out, |f| matches!(f, Frame::Graft { .. }));
    assert_eq!(grafted.len(), 2);
    // Backed-off peers are not among them (backoff 60 s > 2 heartbeats).
    assert!(grafted.iter().all(|q| !pruned.contains(q)));

    // A PRUNE from a mesh peer removes it; an unsubscription too.
    let mesh = g.mesh(T);
    let prune = Frame::Prune {
        topics: vec![T.into()],
        backoff_secs: 60,
    };
    g.handle(t0 + 2 * hb, mesh[0], &prune.to_bytes())
        .expect("prune");
    let leave = Frame::Subscriptions(vec![Subscription {
        subscribe: false,
        topic: T.into(),
    }]);
    g.handle(t0 + 2 * hb, mesh[1], &leave.to_bytes())
        .expect("leave");
    assert_eq!(g.mesh(T).len(), c.mesh_n - 2);
}

#[test]
fn grafts_for_unknown_topics_are_pruned() {
    let now = Instant::now();
    let mut g = with_peers(GossipConfig::default(), 1, now);
    drain(&mut g);
    g.handle(
        now,
        pid(1),
        &Frame::Graft {
            topics: vec!["nope".into()],
        }
        .to_bytes(),
    )
    .expect("graft");
    let out = drain(&mut g);
    assert!(
        matches!(&out[..], [(p, Frame::Prune { topics, .. })] if *p == pid(1) && topics == &["nope"])
    );
}

#[test]
fn ihave_goes_to_non_mesh_peers_and_iwant_is_answered_from_the_cache() {
    let t0 = Instant::now();
    let c = GossipConfig::default();
    let hb = c.heartbeat_interval;
    let mut g = with_peers(c.clone(), 10, t0);
    g.handle_timeout(t0);
    let id = g.publish(t0, T, b"block").expect("published");
    drain(&mut g);
    g.handle_timeout(t0 + hb);
    let out = drain(&mut g);
    let mesh = g.mesh(T);
    let ihave: Vec<_> = out
        .iter()
        .filter_map(|(p, f)| match f {
            Frame::IHave { topic, ids } => Some((*p, topic.clone(), ids.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ihave.len(),
        10 - mesh.len(),
        "D_lazy = 6 ≥ the non-mesh peers"
    );
    for (p, topic, ids) in &ihave {
        assert!(!mesh.contains(p));
        assert_eq!((topic.as_str(), ids.as_slice()), (T, &[id][..]));
    }
    // IWANT is answered with the message; unknown ids are refused.
    let asker = ihave[0].0;
    let want = Frame::IWant {
        ids: vec![id, MessageId([1; 32])],
    };
    g.handle(t0 + hb, asker, &want.to_bytes()).expect("iwant");
    let out = drain(&mut g);
    assert_eq!(
        out,
        [(
            asker,
            Frame::Publish {
                topic: T.into(),
                data: b"block".to_vec()
            }
        )]
    );
    assert_eq!((g.stats().iwant_served, g.stats().iwant_refused), (1, 1));

    // After history_gossip heartbeats the id is no longer advertised; after history_length
    // it is no longer cached.
    for k in 2..=c.history_gossip as u32 {
        g.handle_timeout(t0 + hb * k);
    }
    let out = drain(&mut g);
    assert!(!kinds(&out, |f| matches!(f, Frame::IHave { .. })).is_empty());
    g.handle_timeout(t0 + hb * (c.history_gossip as u32 + 1));
    assert!(kinds(&drain(&mut g), |f| matches!(f, Frame::IHave { .. })).is_empty());
    for k in c.history_gossip + 2..=c.history_length + 1 {
        g.handle_timeout(t0 + hb * k as u32);
    }
    assert_eq!(g.stats().mcache_messages, 0);
    g.handle(t0, asker, &Frame::IWant { ids: vec![id] }.to_bytes())
        .expect("iwant");
    assert!(drain(&mut g).is_empty());
}

#[test]
fn ihave_of_unseen_ids_is_requested_once() {
    let now = Instant::now();
    let mut g = with_peers(GossipConfig::default(), 2, now);
    drain(&mut g);
    let id = MessageId::new(T, b"x");
    let ihave = Frame::IHave {
        topic: T.into(),
        ids: vec![id],
    }
    .to_bytes();
    g.handle(now, pid(1), &ihave).expect("ihave");
    g.handle(now, pid(2), &ihave).expect("ihave again");
    let out = drain(&mut g);
    assert_eq!(out, [(pid(1), Frame::IWant { ids: vec![id] })]);
    assert_eq!(g.stats().pending_iwant, 1);
    // The answer clears the request; a later IHAVE for it asks nothing.
    g.handle(now, pid(1), &publish_frame(T, b"x"))
        .expect("answer");
    assert_eq!(g.stats().pending_iwant, 0);
    drain(&mut g);
    g.handle(now, pid(2), &ihave).expect("ihave");
    assert!(drain(&mut g).is_empty());
    // IHAVE for a topic we do not follow is ignored.
    let other = Frame::IHave {
        topic: "other".into(),
        ids: vec![MessageId([3; 32])],
    };
    g.handle(now, pid(2), &other.to_bytes()).expect("ihave");
    assert!(drain(&mut g).is_empty());
}

#[test]
fn ihave_flood_is_capped_per_heartbeat() {
    let now = Instant::now();
    let c = GossipConfig {
        max_ihave_messages: 2,
        ..GossipConfig::default()
    };
    let mut g = with_peers(c, 1, now);
    drain(&mut g);
    for k in 0..5u8 {
        let f = Frame::IHave {
            topic: T.into(),
            ids: vec![MessageId([k; 32])],
        };
        g.handle(now, pid(1), &f.to_bytes()).expect("ihave");
    }
    assert_eq!(drain(&mut g).len(), 2);
    assert_eq!(g.stats().ihave_ignored, 3);
}

#[test]
fn outbound_queue_events_and_peer_topics_are_bounded() {
    let now = Instant::now();
    let c = GossipConfig {
        max_queue_frames: 3,
        max_events: 2,
        max_peer_topics: 2,
        ..GossipConfig::default()
    };
    let mut g = with_peers(c, 1, now);
    drain(&mut g);
    for k in 0..5u8 {
        g.publish(now, T, &[k]).expect("published");
    }
    assert_eq!(g.stats().queued_frames, 3);
    assert_eq!(g.stats().queue_drops, 2);
    assert_eq!(drain(&mut g).len(), 3);

    for k in 10..13u8 {
        g.handle(now, pid(1), &publish_frame(T, &[k]))
            .expect("publish");
    }
    let s = g.stats();
    assert_eq!((s.pending_events, s.delivered, s.event_drops), (2, 2, 1));

    for t in ["a", "b", "c"] {
        g.handle(now, pid(1), &subs(t)).expect("subscriptions");
    }
    assert_eq!(g.stats().peer_topic_drops, 2, "T and a fill the two slots");
}

#[test]
fn seen_cache_bounds_show_in_delivery() {
    let t0 = Instant::now();
    let c = GossipConfig {
        seen_capacity: 2,
        seen_ttl: Duration::from_secs(5),
        ..GossipConfig::default()
    };
    let mut g = with_peers(c, 1, t0);
    for k in 0..3u8 {
        g.handle(t0, pid(1), &publish_frame(T, &[k]))
            .expect("publish");
    }
    let s = g.stats();
    assert_eq!((s.seen_entries, s.seen_evictions), (2, 1));
    // [0] was evicted by count: a late copy is new again; [2] is still a duplicate.
    g.handle(t0, pid(1), &publish_frame(T, &[0]))
        .expect("publish");
    g.handle(t0, pid(1), &publish_frame(T, &[2]))
        .expect("publish");
    assert_eq!((g.stats().delivered, g.stats().duplicates), (4, 1));
    // After the TTL, everything is forgotten.
    g.handle_timeout(t0);
    g.handle_timeout(t0 + Duration::from_secs(6));
    assert_eq!(g.stats().seen_entries, 0);
}

#[test]
fn fanout_publishes_to_d_peers_without_subscribing() {
    let now = Instant::now();
    let c = GossipConfig::default();
    let mut g = node(c.clone());
    for i in 1..=10 {
        g.add_peer(pid(i));
        g.handle(now, pid(i), &subs(T)).expect("subscriptions");
    }
    drain(&mut g);
    g.publish(now, T, b"tx").expect("published");
    let out = drain(&mut g);
    assert_eq!(out.len(), c.mesh_n);
    assert_eq!(g.stats().fanout_peers, c.mesh_n);
    // Subscribing later turns the fanout set into the mesh.
    let fanout: Vec<PeerId> = out.iter().map(|(p, _)| *p).collect();
    g.subscribe(T).expect("subscribed");
    let mut mesh = g.mesh(T);
    mesh.sort();
    let mut expected = fanout.clone();
    expected.sort();
    assert_eq!(mesh, expected);
    assert_eq!(g.stats().fanout_peers, 0);
    // Unsubscribing prunes the mesh and announces the leave.
    drain(&mut g);
    assert!(g.unsubscribe(T));
    let out = drain(&mut g);
    assert_eq!(
        kinds(&out, |f| matches!(f, Frame::Prune { .. })).len(),
        c.mesh_n
    );
    assert_eq!(
        kinds(&out, |f| matches!(f, Frame::Subscriptions(_))).len(),
        10
    );
}

#[test]
fn peers_learn_subscriptions_on_connect_and_flush_uses_the_transport() {
    struct Sink(Vec<(PeerId, Vec<u8>)>);
    impl Transport for Sink {
        fn send(&mut self, to: PeerId, bytes: Vec<u8>) {
            self.0.push((to, bytes));
        }
    }
    let mut g = node(GossipConfig::default());
    g.subscribe(T).expect("subscribed");
    assert!(g.add_peer(pid(1)));
    assert!(!g.add_peer(pid(1)), "already added");
    assert!(!g.add_peer(pid(0)), "self");
    let mut sink = Sink(Vec::new());
    assert_eq!(g.flush(&mut sink), 1);
    assert_eq!(sink.0, [(pid(1), subs(T))]);
    assert!(g.remove_peer(pid(1)));
    assert!(!g.remove_peer(pid(1)));
    assert_eq!(g.stats().peers, 0);
}

#[test]
fn invalid_configs_are_refused() {
    let c = GossipConfig {
        mesh_n_high: 3,
        ..GossipConfig::default()
    };
    assert!(Gossip::new(c, pid(0)).is_err());
}

#[test]
fn messages_on_foreign_topics_are_dropped_without_state() {
    let now = Instant::now();
    let mut g = with_peers(GossipConfig::default(), 2, now);
    drain(&mut g);
    g.handle(now, pid(1), &publish_frame("elsewhere", b"junk"))
        .expect("well-formed");
    assert_eq!(g.poll_event(), None);
    assert!(drain(&mut g).is_empty(), "not forwarded");
    let s = g.stats();
    assert_eq!(
        (s.unsubscribed_drops, s.seen_entries, s.mcache_messages),
        (1, 0, 0)
    );
}

#[test]
fn outbound_queue_and_events_are_bounded_in_bytes() {
    let now = Instant::now();
    let mut c = GossipConfig {
        max_message_size: 40_000,
        ..GossipConfig::default()
    };
    c.max_queue_bytes = c.max_frame_len();
    c.max_event_bytes = c.max_frame_len();
    let mut g = with_peers(c, 1, now);
    drain(&mut g);
    g.publish(now, T, &[1; 40_000]).expect("published");
    g.publish(now, T, &[2; 40_000]).expect("published");
    let s = g.stats();
    assert_eq!((s.queued_frames, s.queue_drops), (1, 1));
    assert!(s.queued_bytes > 40_000 && s.queued_bytes < 41_000);
    drain(&mut g);
    assert_eq!(g.stats().queued_bytes, 0);

    g.handle(now, pid(1), &publish_frame(T, &[3; 40_000]))
        .expect("publish");
    g.handle(now, pid(1), &publish_frame(T, &[4; 40_000]))
        .expect("publish");
    assert_eq!(g.stats().event_drops, 1);
    assert!(g.poll_event().is_some());
    g.handle(now, pid(1), &publish_frame(T, &[5; 40_000]))
        .expect("publish");
    assert_eq!((g.stats().pending_events, g.stats().event_drops), (1, 1));
}
