//! `mesh::channel::Channels` driven directly: open/accept, unreliable messages, per-channel
//! errors, and bounded memory against a peer that never acks, sends garbage or opens too many
//! channels.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mesh::channel::frame::Frame;
use mesh::channel::{ChannelError, ChannelEvent, ChannelId, Channels, Config, Side, codes};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

fn dgram(frames: &[Frame<'_>]) -> Vec<u8> {
    let mut d = Vec::new();
    for f in frames {
        f.emit(&mut d).unwrap();
    }
    d
}

fn events(m: &mut Channels) -> Vec<ChannelEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// Moves every datagram from `from` to `to`.
fn deliver(now: Instant, from: &mut Channels, to: &mut Channels) -> usize {
    let mut n = 0;
    while let Some(d) = from.poll_transmit(now) {
        to.handle_datagram(now, &d).unwrap();
        n += 1;
    }
    n
}

#[test]
fn open_accept_and_unreliable_messages() {
    let now = Instant::now();
    let mut a = Channels::new(Side::Initiator, Config::default()).unwrap();
    let mut b = Channels::new(Side::Responder, Config::default()).unwrap();
    let id = a.open("readings", false).unwrap();
    assert_eq!(id, ChannelId(0));
    a.send(id, b"t=21.5").unwrap();
    a.send(id, b"t=21.6").unwrap();
    let max = a.config().max_unreliable_len();
    assert_eq!(
        a.send(id, &vec![0; max + 1]),
        Err(ChannelError::TooLarge { len: max + 1, max })
    );
    deliver(now, &mut a, &mut b);
    assert_eq!(
        events(&mut b),
        vec![
            ChannelEvent::Opened {
                id,
                kind: "readings".into(),
                reliable: false
            },
            ChannelEvent::Data {
                id,
                bytes: b"t=21.5".to_vec()
            },
            ChannelEvent::Data {
                id,
                bytes: b"t=21.6".to_vec()
            },
        ]
    );
    // B's ACK confirms the OPEN: A stops repeating it.
    deliver(now, &mut b, &mut a);
    a.send(id, b"x").unwrap();
    let d = a.poll_transmit(now).unwrap();
    assert_eq!(
        Frame::parse_all(&d).unwrap(),
        vec![Frame::UnreliableData {
            id: 0,
            payload: b"x"
        }]
    );
    // The responder opens odd ids.
    assert_eq!(b.open("chain", true).unwrap(), ChannelId(1));
    assert_eq!(
        a.send(ChannelId(99), b"?"),
        Err(ChannelError::UnknownChannel(ChannelId(99)))
    );
    assert_eq!(a.open("", true), Err(ChannelError::InvalidKind));
}

#[test]
fn reliable_delivery_with_a_lost_datagram() {
    let mut now = Instant::now();
    let mut a = Channels::new(Side::Initiator, Config::default()).unwrap();
    let mut b = Channels::new(Side::Responder, Config::default()).unwrap();
    let id = a.open("blocks", true).unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    a.send(id, &data).unwrap();
    let mut ds: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_transmit(now)).collect();
    assert!(ds.len() >= 5 && ds.iter().all(|d| d.len() <= 1200));
    ds.remove(1); // Lost.
    for d in &ds {
        b.handle_datagram(now, d).unwrap();
    }
    deliver(now, &mut b, &mut a); // SACKs: three later segments make the hole lost.
    let re = a.poll_transmit(now).unwrap();
    b.handle_datagram(now, &re).unwrap();
    let got: Vec<u8> = events(&mut b)
        .into_iter()
        .filter_map(|e| match e {
            ChannelEvent::Data { bytes, .. } => Some(bytes),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(got, data);
    let s = a.channel_stats(id).unwrap().send;
    assert_eq!(
        s.segments_retransmitted, 1,
        "only the missing segment: {s:?}"
    );
    now += Duration::from_millis(30);
    b.handle_timeout(now);
    deliver(now, &mut b, &mut a);
    assert!(a.is_flushed(id));
}

#[test]
fn protocol_violation_closes_only_that_channel() {
    let now = Instant::now();
    let mut b = Channels::new(Side::Responder, Config::default()).unwrap();
    let d = dgram(&[
        Frame::Open {
            id: 0,
            kind: "chain",
            reliable: true,
        },
        Frame::Open {
            id: 2,
            kind: "readings",
            reliable: false,
        },
        Frame::UnreliableData {
            id: 0,
            payload: b"wrong kind of frame",
        },
        Frame::UnreliableData {
            id: 2,
            payload: b"fine",
        },
        Frame::Ack {
            id: 4,
            cum: 0,
            window: 0,
            sacks: vec![],
        }, // Unknown channel: ignored.
    ]);
    b.handle_datagram(now, &d).unwrap();
    let ev = events(&mut b);
    assert!(ev.iter().any(
        |e| matches!(e, ChannelEvent::Closed { id: ChannelId(0), error }
        if error.code == codes::PROTOCOL && !error.by_peer)
    ));
    assert!(ev.contains(&ChannelEvent::Data {
        id: ChannelId(2),
        bytes: b"fine".to_vec()
    }));
    assert!(b.is_open(ChannelId(2)) && !b.is_open(ChannelId(0)));
    // The CLOSE goes to the peer.
    let out = b.poll_transmit(now).unwrap();
    assert!(Frame::parse_all(&out).unwrap().iter().any(|f| matches!(
        f,
        Frame::Close {
            id: 0,
            ack: false,
            code: codes::PROTOCOL,
            ..
        }
    )));
    // An ACK of data never sent is a violation too.
    let mut a = Channels::new(Side::Initiator, Config::default()).unwrap();
    let id = a.open("chain", true).unwrap();
    a.handle_datagram(
        now,
        &dgram(&[Frame::Ack {
            id: 0,
            cum: 5,
            window: 100,
            sacks: vec![],
        }]),
    )
    .unwrap();
    assert!(
        matches!(a.poll_event(), Some(ChannelEvent::Closed { error, .. }) if error.code == codes::PROTOCOL)
    );
    assert_eq!(a.send(id, b"x"), Err(ChannelError::Closing(id)));
}

#[test]
fn peer_that_never_acks_bounded_and_backs_off() {
    let cfg = Config {
        max_send_buffer: 64 * 1024,
        ..Config::default()
    };
    let mut now = Instant::now();
    let mut a = Channels::new(Side::Initiator, cfg).unwrap();
    let id = a.open("chain", true).unwrap();
    let mut blocked = 0;
    let mut datagrams = 0;
    let start = now;
    while now < start + Duration::from_secs(300) {
        loop {
            match a.send(id, &[7; 1000]) {
                Ok(()) => {}
                Err(ChannelError::WouldBlock) => {
                    blocked += 1;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        a.handle_timeout(now);
        while let Some(d) = a.poll_transmit(now) {
            assert!(d.len() <= 1200);
            datagrams += 1;
        }
        assert!(a.buffered_bytes() <= 64 * 1024);
        now = a
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1))
            .max(now + Duration::from_millis(1));
    }
    assert!(blocked > 0, "the full send buffer pushes back");
    assert!(
        !a.poll_event()
            .is_some_and(|e| matches!(e, ChannelEvent::Writable { .. })),
        "nothing was acknowledged"
    );
    // Initial window of 10 segments, then one retransmission per backed-off RTO.
    assert!(datagrams < 40, "{datagrams} datagrams to a silent peer");
    assert!(a.channel_stats(id).unwrap().send.rto_expiries >= 5);
}

#[test]
fn peer_opening_too_many_channels_is_refused() {
    let now = Instant::now();
    let cfg = Config {
        max_channels: 8,
        ..Config::default()
    };
    let mut b = Channels::new(Side::Responder, cfg).unwrap();
    for id in (0..2000u32).step_by(2) {
        b.handle_datagram(
            now,
            &dgram(&[Frame::Open {
                id,
                kind: "spam",
                reliable: true,
            }]),
        )
        .unwrap();
    }
    assert_eq!(b.channel_count(), 8);
    assert_eq!(b.stats().refused_opens, 992);
    let refusals: usize = std::iter::from_fn(|| b.poll_transmit(now))
        .flat_map(|d| {
            Frame::parse_all(&d)
                .unwrap()
                .into_iter()
                .map(|f| {
                    matches!(
                        f,
                        Frame::Close {
                            code: codes::REFUSED,
                            ..
                        }
                    )
                })
                .collect::<Vec<_>>()
        })
        .filter(|&r| r)
        .count();
    assert!(refusals > 0 && refusals <= b.config().max_queued);
    assert_eq!(b.open("mine", true), Err(ChannelError::TooManyChannels));
}

#[test]
fn garbage_and_random_frames_keep_memory_bounded() {
    let cfg = Config {
        max_channels: 16,
        max_send_buffer: 16 * 1024,
        max_recv_buffer: 16 * 1024,
        ..Config::default()
    };
    let mut now = Instant::now();
    let mut b = Channels::new(Side::Responder, cfg.clone()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for round in 0..20_000u32 {
        let d = if round % 3 == 0 {
            let mut g = vec![0u8; (rng.next_u32() % 1200) as usize];
            rng.fill_bytes(&mut g);
            g
        } else {
            let id = rng.next_u32() % 40;
            let payload = vec![rng.next_u32() as u8; (rng.next_u32() % 1100) as usize];
            let f = match rng.next_u32() % 5 {
                0 => Frame::Open {
                    id,
                    kind: "x",
                    reliable: rng.next_u32() % 2 == 0,
                },
                1 => Frame::Data {
                    id,
                    seq: rng.next_u32() % 2000,
                    payload: &payload,
                },
                2 => Frame::UnreliableData {
                    id,
                    payload: &payload,
                },
                3 => Frame::Ack {
                    id,
                    cum: rng.next_u32() % 50,
                    window: rng.next_u32(),
                    sacks: vec![],
                },
                _ => Frame::Close {
                    id,
                    ack: rng.next_u32() % 2 == 0,
                    code: 9,
                    reason: "",
                },
            };
            dgram(&[f])
        };
        let _ = b.handle_datagram(now, &d);
        if round % 7 == 0 {
            b.handle_timeout(now);
            while b.poll_transmit(now).is_some() {}
        }
        assert!(b.channel_count() <= 16);
        assert!(b.buffered_bytes() <= 16 * (16 * 1024 + 16 * 1024));
        now += Duration::from_millis(1);
    }
    assert!(b.stats().bad_datagrams > 0);
}

#[test]
fn lost_open_is_repeated() {
    let mut now = Instant::now();
    let mut a = Channels::new(Side::Initiator, Config::default()).unwrap();
    let mut b = Channels::new(Side::Responder, Config::default()).unwrap();
    let id = a.open("chain", true).unwrap();
    a.send(id, b"genesis").unwrap();
    while a.poll_transmit(now).is_some() {} // All lost.
    // Frames of a channel whose OPEN was lost are ignored, not fatal.
    b.handle_datagram(
        now,
        &dgram(&[Frame::Data {
            id: 0,
            seq: 1,
            payload: b"?",
        }]),
    )
    .unwrap();
    assert_eq!(b.poll_event(), None);
    now = a.poll_timeout().unwrap();
    a.handle_timeout(now);
    deliver(now, &mut a, &mut b);
    assert_eq!(
        events(&mut b),
        vec![
            ChannelEvent::Opened {
                id,
                kind: "chain".into(),
                reliable: true
            },
            ChannelEvent::Data {
                id,
                bytes: b"genesis".to_vec()
            },
        ]
    );
    // B's answer confirms the channel; A stops repeating the OPEN.
    now += Duration::from_millis(30);
    b.handle_timeout(now);
    deliver(now, &mut b, &mut a);
    assert!(a.is_flushed(id));
    a.send(id, b"block 1").unwrap();
    let d = a.poll_transmit(now).unwrap();
    assert!(
        !Frame::parse_all(&d)
            .unwrap()
            .iter()
            .any(|f| matches!(f, Frame::Open { .. }))
    );
}
