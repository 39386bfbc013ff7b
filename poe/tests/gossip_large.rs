//! Large messages, one `Gossip` node driven frame by frame: gossipsub v1.2 IDONTWANT (sent on
//! the first copy, honoured when relaying, bounded and expiring) and announce-first (IHAVE to
//! the mesh instead of the message, pulled with IWANT, falling back to the next announcer when
//! the first does not answer).
#![cfg(feature = "std")]

use std::time::{Duration, Instant};

use poe::gossip::{
    Frame, Gossip, GossipConfig, GossipEvent, LargeMessageMode, MessageId, PeerId, Subscription,
};

const T: &str = "poe/blocks";
/// Above the default 1 KiB threshold.
const LARGE: usize = 4096;

fn pid(i: u64) -> PeerId {
    PeerId::from_u64(i)
}

fn config(mode: LargeMessageMode) -> GossipConfig {
    GossipConfig {
        large_message_mode: mode,
        ..GossipConfig::default()
    }
}

/// A node subscribed to `T` with `n` peers (ids 1..=n, all in its mesh since n <= D).
fn with_peers(config: GossipConfig, n: u64, now: Instant) -> Gossip {
    let mut g = Gossip::new(config, pid(0)).expect("valid config");
    let subs = Frame::Subscriptions(vec![Subscription {
        subscribe: true,
        topic: T.into(),
    }])
    .to_bytes();
    for i in 1..=n {
        assert!(g.add_peer(pid(i)));
        g.handle(now, pid(i), &subs).expect("subscriptions");
    }
    assert_eq!(g.subscribe(T), Ok(true));
    g.handle_timeout(now);
    drain(&mut g);
    g
}

fn drain(g: &mut Gossip) -> Vec<(PeerId, Frame)> {
    let mut out = Vec::new();
    while let Some((to, bytes)) = g.poll_transmit() {
        out.push((to, Frame::decode(&bytes).expect("own frames decode")));
    }
    out
}

fn publish_frame(data: &[u8]) -> Vec<u8> {
    Frame::Publish {
        topic: T.into(),
        data: data.to_vec(),
    }
    .to_bytes()
}

fn to_whom(out: &[(PeerId, Frame)], f: impl Fn(&Frame) -> bool) -> Vec<PeerId> {
    out.iter().filter(|(_, x)| f(x)).map(|(p, _)| *p).collect()
}

#[test]
fn idontwant_stops_a_push_the_node_had_not_sent_yet() {
    let now = Instant::now();
    let mut g = with_peers(config(LargeMessageMode::IDontWant), 3, now);
    assert_eq!(g.mesh(T), [pid(1), pid(2), pid(3)]);
    let data = vec![7u8; LARGE];
    let id = MessageId::new(T, &data);
    // Peer 2 got the message elsewhere and says so before it reaches this node.
    g.handle(now, pid(2), &Frame::IDontWant { ids: vec![id] }.to_bytes())
        .expect("idontwant");
    assert_eq!(g.stats().idontwant_received, 1);
    g.handle(now, pid(1), &publish_frame(&data))
        .expect("publish");
    let out = drain(&mut g);
    // IDONTWANT to the mesh but the sender, at once; the message to peer 3 only.
    assert_eq!(
        to_whom(&out, |f| *f == Frame::IDontWant { ids: vec![id] }),
        [pid(2), pid(3)]
    );
    assert_eq!(
        to_whom(&out, |f| matches!(f, Frame::Publish { .. })),
        [pid(3)]
    );
    // Per peer, IDONTWANT is queued ahead of the message.
    let to3: Vec<&Frame> = out
        .iter()
        .filter(|(p, _)| *p == pid(3))
        .map(|(_, f)| f)
        .collect();
    assert!(matches!(
        to3[..],
        [Frame::IDontWant { .. }, Frame::Publish { .. }]
    ));
    let s = g.stats();
    assert_eq!((s.idontwant_sent, s.idontwant_suppressed), (2, 1));
    assert!(matches!(g.poll_event(), Some(GossipEvent::Message { .. })));

    // A small message sends no IDONTWANT.
    g.handle(now, pid(1), &publish_frame(b"small"))
        .expect("publish");
    let out = drain(&mut g);
    assert!(to_whom(&out, |f| matches!(f, Frame::IDontWant { .. })).is_empty());
    assert_eq!(
        to_whom(&out, |f| matches!(f, Frame::Publish { .. })),
        [pid(2), pid(3)]
    );
}

#[test]
fn idontwant_sets_are_bounded_capped_and_expire() {
    let t0 = Instant::now();
    let c = GossipConfig {
        max_idontwant_ids: 2,
        max_idontwant_messages: 3,
        ..config(LargeMessageMode::IDontWant)
    };
    let hb = c.heartbeat_interval;
    let mut g = with_peers(c.clone(), 2, t0);
    let msgs: Vec<Vec<u8>> = (0..3u8).map(|k| vec![k; LARGE]).collect();
    let ids: Vec<MessageId> = msgs.iter().map(|m| MessageId::new(T, m)).collect();
    for id in &ids {
        g.handle(t0, pid(2), &Frame::IDontWant { ids: vec![*id] }.to_bytes())
            .expect("idontwant");
    }
    // The fourth frame this heartbeat is over max_idontwant_messages.
    g.handle(
        t0,
        pid(2),
        &Frame::IDontWant { ids: vec![ids[0]] }.to_bytes(),
    )
    .expect("idontwant");
    let s = g.stats();
    assert_eq!(
        (
            s.idontwant_received,
            s.idontwant_ignored,
            s.idontwant_evictions
        ),
        (3, 1, 1)
    );
    // The oldest id was evicted (capacity 2): that message is pushed to peer 2, the others not.
    g.handle(t0, pid(1), &publish_frame(&msgs[0]))
        .expect("publish");
    g.handle(t0, pid(1), &publish_frame(&msgs[1]))
        .expect("publish");
    let out = drain(&mut g);
    let pushed: Vec<&Frame> = out
        .iter()
        .filter(|(p, f)| *p == pid(2) && matches!(f, Frame::Publish { .. }))
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        pushed,
        [&Frame::Publish {
            topic: T.into(),
            data: msgs[0].clone()
        }]
    );
    // After history_length heartbeats the remaining id is forgotten too.
    for k in 1..=c.history_length as u32 + 1 {
        g.handle_timeout(t0 + hb * k);
    }
    drain(&mut g);
    let later = t0 + hb * (c.history_length as u32 + 1);
    g.handle(later, pid(1), &publish_frame(&msgs[2]))
        .expect("publish");
    let out = drain(&mut g);
    assert_eq!(
        to_whom(&out, |f| matches!(f, Frame::Publish { .. })),
        [pid(2)]
    );
}

#[test]
fn announce_first_relays_ihave_and_serves_the_pull() {
    let now = Instant::now();
    let mut g = with_peers(config(LargeMessageMode::AnnounceFirst), 3, now);
    let data = vec![9u8; LARGE];
    let id = MessageId::new(T, &data);
    g.handle(now, pid(1), &publish_frame(&data))
        .expect("publish");
    let out = drain(&mut g);
    let ihave = Frame::IHave {
        topic: T.into(),
        ids: vec![id],
    };
    // No full copy is pushed: an IHAVE to the mesh but the sender.
    assert_eq!(out, [(pid(2), ihave.clone()), (pid(3), ihave)]);
    assert_eq!(g.stats().announced, 2);
    g.handle(now, pid(3), &Frame::IWant { ids: vec![id] }.to_bytes())
        .expect("iwant");
    assert_eq!(
        drain(&mut g),
        [(
            pid(3),
            Frame::Publish {
                topic: T.into(),
                data: data.clone()
            }
        )]
    );
    // Small messages are still pushed.
    g.handle(now, pid(1), &publish_frame(b"vote"))
        .expect("publish");
    assert_eq!(
        to_whom(&drain(&mut g), |f| matches!(f, Frame::Publish { .. })),
        [pid(2), pid(3)]
    );
    // The publisher pushes its own large message (nobody else has it).
    g.publish(now, T, &[1u8; LARGE]).expect("published");
    assert_eq!(
        to_whom(&drain(&mut g), |f| matches!(f, Frame::Publish { .. })),
        [pid(1), pid(2), pid(3)]
    );
}

#[test]
fn announce_first_falls_back_when_the_first_announcer_does_not_answer() {
    let t0 = Instant::now();
    let c = config(LargeMessageMode::AnnounceFirst);
    let timeout = c.iwant_timeout;
    let mut g = with_peers(c, 4, t0);
    let data = vec![5u8; LARGE];
    let id = MessageId::new(T, &data);
    let ihave = Frame::IHave {
        topic: T.into(),
        ids: vec![id],
    }
    .to_bytes();
    for p in [1, 2, 3] {
        g.handle(t0, pid(p), &ihave).expect("ihave");
    }
    // One pull, from the first announcer.
    assert_eq!(drain(&mut g), [(pid(1), Frame::IWant { ids: vec![id] })]);
    assert!(g.poll_timeout().is_some_and(|t| t <= t0 + timeout));
    // Peer 1 stays silent: at the deadline the next announcer is asked.
    g.handle_timeout(t0 + timeout);
    assert_eq!(drain(&mut g), [(pid(2), Frame::IWant { ids: vec![id] })]);
    assert_eq!(g.stats().iwant_retries, 1);
    // Peer 2 answers: delivered, and announced only to the mesh peer that did not announce it.
    let t1 = t0 + timeout + Duration::from_millis(10);
    g.handle(t1, pid(2), &publish_frame(&data)).expect("answer");
    assert!(matches!(g.poll_event(), Some(GossipEvent::Message { from, .. }) if from == pid(2)));
    assert_eq!(
        drain(&mut g),
        [(
            pid(4),
            Frame::IHave {
                topic: T.into(),
                ids: vec![id]
            }
        )]
    );
    let s = g.stats();
    assert_eq!((s.pulls, s.pending_iwant), (0, 0));

    // When every announcer times out the pull is given up, and a later IHAVE asks again.
    let other = vec![6u8; LARGE];
    let oid = MessageId::new(T, &other);
    let oihave = Frame::IHave {
        topic: T.into(),
        ids: vec![oid],
    }
    .to_bytes();
    g.handle(t1, pid(3), &oihave).expect("ihave");
    assert_eq!(drain(&mut g), [(pid(3), Frame::IWant { ids: vec![oid] })]);
    g.handle_timeout(t1 + timeout);
    assert!(drain(&mut g).is_empty());
    assert_eq!(g.stats().iwant_given_up, 1);
    g.handle(t1 + timeout, pid(4), &oihave).expect("ihave");
    assert_eq!(drain(&mut g), [(pid(4), Frame::IWant { ids: vec![oid] })]);
}
