//! A long uplink outage: readings keep arriving, the queue grows to its bound, further
//! appends are refused with `QueueFull` (counted and reported), and when the uplink comes
//! back the queue drains in order with nothing lost or duplicated.

mod common;

use common::{TempDir, ble, lora, open};
use gateway::store::{Limits, StoreError};
use gateway::uplink::{Forwarder, ForwarderConfig, PumpState, TestUplink};

#[test]
fn outage_fills_to_the_bound_then_drains_in_order() {
    const BOUND: u64 = 5_000;
    const PER_TICK: u32 = 60;
    const TICK_MS: u64 = 10_000;
    let dir = TempDir::new("outage");
    let limits = Limits {
        max_readings: BOUND,
        ..Limits::default()
    };
    let mut store = open(&dir.db(), limits);
    let mut uplink = TestUplink::new();
    let mut fwd = Forwarder::new(ForwarderConfig {
        batch_size: 200,
        max_batches_per_pump: 8,
        backoff_min_ms: 20_000,
        backoff_max_ms: 300_000,
    });

    let mut acked: Vec<u64> = Vec::new();
    let (mut refused, mut refused_calls, mut frame) = (0u64, 0u64, 0u32);
    let mut saw_full_status = false;
    let mut backoffs = 0;
    let mut max_stored = 0;
    // 10 ticks up, a 3-hour outage (simulated, 10 s ticks), then up until drained.
    let (down_at, up_at) = (10u64, 10 + 3 * 360);
    for tick in 0..(up_at + 300) {
        let now = 1_700_000_000_000 + tick * TICK_MS;
        uplink.set_up(!(down_at..up_at).contains(&tick));
        if tick == up_at + 2 {
            uplink.lose_next_ack(); // a re-send during the drain, deduped by the receiver
        }
        if tick < up_at + 100 {
            let rs: Vec<_> = (0..PER_TICK)
                .map(|i| {
                    frame += 1;
                    if i % 2 == 0 {
                        ble((i % 16) as u8, Some(frame), now, f64::from(frame))
                    } else {
                        lora((i % 16) as u8, frame, now, "temperature", 1)
                    }
                })
                .collect();
            match store.append(&rs) {
                Ok(o) => {
                    assert_eq!(o.accepted, rs.len());
                    acked.extend(o.seqs.expect("seqs"));
                }
                Err(StoreError::QueueFull {
                    queued, incoming, ..
                }) => {
                    assert!(queued + incoming > BOUND);
                    refused += incoming;
                    refused_calls += 1;
                    saw_full_status |= store.stats(now, 0).expect("stats").full;
                }
                Err(e) => panic!("append: {e}"),
            }
        }
        let out = fwd.pump(&mut store, &mut uplink, now).expect("pump");
        backoffs += u64::from(matches!(out.state, PumpState::BackingOff { .. }));
        let s = store.stats(now, 0).expect("stats");
        assert!(s.queued + s.in_flight <= BOUND, "bound exceeded: {s:?}");
        max_stored = max_stored.max(s.queued + s.in_flight);
        if tick > up_at + 100 && s.queued + s.in_flight == 0 {
            break;
        }
    }
    let s = store.stats(0, 0).expect("stats");
    eprintln!(
        "acked {} readings, refused {refused} in {refused_calls} calls, max stored {max_stored}, \
         {} uplink submissions ({} duplicates), {backoffs} back-off pumps, {} failures",
        acked.len(),
        uplink.submissions(),
        uplink.duplicates(),
        fwd.failures()
    );
    assert_eq!(
        max_stored,
        BOUND - BOUND % u64::from(PER_TICK),
        "grew to the bound"
    );
    assert!(
        refused_calls > 900,
        "appends were refused during the outage"
    );
    assert!(saw_full_status, "the status reported the full queue");
    assert!(!s.full, "accepted appends cleared the full flag");
    assert_eq!(s.full_rejections, refused);
    assert_eq!(s.full_rejected_calls, refused_calls);
    assert!(
        backoffs > 0,
        "the forwarder backed off while the uplink was down"
    );
    assert_eq!(
        uplink.duplicates(),
        1,
        "the lost ack's batch was re-sent once"
    );

    // Delivered: every acknowledged reading exactly once, in order, nothing else.
    let delivered: Vec<u64> = uplink.readings().map(|q| q.seq).collect();
    assert_eq!(delivered, acked, "in order, nothing lost or duplicated");
    assert!(delivered.windows(2).all(|w| w[0] < w[1]));
    for b in uplink.batches() {
        b.verify(&common::key().verifying_key()).expect("signed");
    }
    assert_eq!(s.appended_total, acked.len() as u64);
    assert_eq!(s.confirmed_total, acked.len() as u64);
    assert_eq!((s.queued, s.in_flight, s.bytes), (0, 0, 0));
    store.check().expect("check");

    // The counters survive a reopen.
    drop(store);
    let store = open(&dir.db(), limits);
    let again = store.stats(0, 0).expect("stats");
    assert_eq!(
        (
            again.full_rejections,
            again.full_rejected_calls,
            again.appended_total
        ),
        (refused, refused_calls, acked.len() as u64)
    );
}

#[test]
fn byte_bound_refuses_whole_calls() {
    let dir = TempDir::new("bytes");
    let one = gateway::store::encoded_len(&ble(1, None, 0, 0.0)) as u64;
    let limits = Limits {
        max_bytes: one * 10,
        ..Limits::default()
    };
    let mut store = open(&dir.db(), limits);
    let rs: Vec<_> = (0..6).map(|i| ble(1, None, i, 0.0)).collect();
    store.append(&rs).expect("6 fit");
    let err = store.append(&rs).expect_err("12 do not fit");
    assert!(err.is_queue_full(), "{err}");
    assert_eq!(
        store.readings_after(0, 100).expect("read").len(),
        6,
        "nothing of the call"
    );
    store.append(&rs[..4]).expect("4 more fit exactly");
    let s = store.stats(0, 0).expect("stats");
    assert_eq!((s.queued, s.bytes, s.full_rejections), (10, one * 10, 6));
    // A refused call's frames are not remembered as seen: retried later, they are accepted.
    let dir2 = TempDir::new("bytes-dedup");
    let mut store = open(
        &dir2.db(),
        Limits {
            max_readings: 1,
            ..Limits::default()
        },
    );
    store.append(&[ble(1, Some(1), 0, 0.0)]).expect("first");
    assert!(store.append(&[ble(1, Some(2), 0, 0.0)]).is_err());
    let b = store.next_batch(10).expect("batch").expect("some");
    store.confirm(b.id).expect("confirm");
    let o = store.append(&[ble(1, Some(2), 0, 0.0)]).expect("retry");
    assert_eq!((o.accepted, o.duplicates), (1, 0));
}

#[test]
fn forwarder_backs_off_exponentially_and_resumes_in_order() {
    let dir = TempDir::new("backoff");
    let mut store = open(&dir.db(), Limits::default());
    store
        .append(&(0..25).map(|i| ble(1, None, i, 0.0)).collect::<Vec<_>>())
        .expect("append");
    let mut uplink = TestUplink::new();
    uplink.set_up(false);
    let mut fwd = Forwarder::new(ForwarderConfig {
        batch_size: 10,
        max_batches_per_pump: 2,
        backoff_min_ms: 100,
        backoff_max_ms: 350,
    });
    let down = |s| match s {
        PumpState::Down { retry_at_ms } => retry_at_ms,
        other => panic!("expected Down, got {other:?}"),
    };
    assert_eq!(
        down(fwd.pump(&mut store, &mut uplink, 0).expect("pump").state),
        100
    );
    assert_eq!(
        fwd.pump(&mut store, &mut uplink, 50).expect("pump").state,
        PumpState::BackingOff { retry_at_ms: 100 }
    );
    assert_eq!(
        down(fwd.pump(&mut store, &mut uplink, 100).expect("pump").state),
        300
    );
    assert_eq!(
        down(fwd.pump(&mut store, &mut uplink, 300).expect("pump").state),
        650
    );
    assert_eq!(
        down(fwd.pump(&mut store, &mut uplink, 650).expect("pump").state),
        1000
    );
    uplink.set_up(true);
    let out = fwd.pump(&mut store, &mut uplink, 1000).expect("pump");
    assert_eq!(
        (out.batches, out.readings, out.state),
        (2, 20, PumpState::More)
    );
    let out = fwd.pump(&mut store, &mut uplink, 1001).expect("pump");
    assert_eq!(
        (out.batches, out.readings, out.state),
        (1, 5, PumpState::Idle)
    );
    let seqs: Vec<u64> = uplink.readings().map(|q| q.seq).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    assert_eq!(fwd.failures(), 4);
    // After a success the back-off starts again from the minimum.
    store.append(&[ble(1, None, 99, 0.0)]).expect("append");
    uplink.set_up(false);
    assert_eq!(
        down(fwd.pump(&mut store, &mut uplink, 2000).expect("pump").state),
        2100
    );
}
