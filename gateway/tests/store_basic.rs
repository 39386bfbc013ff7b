//! The gateway store: append / next_batch / confirm order, signatures, de-duplication,
//! requeue, status, and an informational throughput figure.

mod common;

use std::time::Instant;

use common::{TempDir, ble, key, lora, open};
use ed25519_dalek::SigningKey;
use gateway::Source;
use gateway::store::{BatchError, Limits, Store, StoreError};
use gateway::uplink::{FileBatch, FileUplink, TestUplink, Uplink};

#[test]
fn append_next_batch_confirm_keeps_order() {
    let dir = TempDir::new("order");
    let mut store = open(&dir.db(), Limits::default());
    let a = store
        .append(&[ble(1, None, 1000, 20.0), ble(2, None, 1000, 21.0)])
        .expect("append");
    assert_eq!((a.accepted, a.duplicates, a.seqs), (2, 0, Some(1..=2)));
    let b = store
        .append(
            &(0..5)
                .map(|i| ble(3, None, 2000 + i, i as f64))
                .collect::<Vec<_>>(),
        )
        .expect("append");
    assert_eq!(b.seqs, Some(3..=7));
    assert!(store.append(&[]).expect("empty").seqs.is_none());

    let b1 = store.next_batch(4).expect("batch").expect("some");
    assert_eq!((b1.first_seq, b1.last_seq, b1.readings.len()), (1, 4, 4));
    let b2 = store.next_batch(4).expect("batch").expect("some");
    assert_eq!((b2.first_seq, b2.last_seq), (5, 7));
    assert!(b2.id > b1.id);
    assert!(
        store.next_batch(4).expect("batch").is_none(),
        "all in flight"
    );
    let s = store.stats(3000, 10).expect("stats");
    assert_eq!((s.queued, s.in_flight), (0, 7));
    assert_eq!(s.oldest_age_ms, Some(2000));

    // Confirming out of order is allowed; each batch's readings go.
    assert_eq!(store.confirm(b2.id).expect("confirm"), 3);
    assert_eq!(store.confirm(b1.id).expect("confirm"), 4);
    assert!(matches!(
        store.confirm(b1.id),
        Err(StoreError::UnknownBatch { .. })
    ));
    let s = store.stats(3000, 10).expect("stats");
    assert_eq!((s.queued, s.in_flight, s.bytes), (0, 0, 0));
    assert_eq!((s.appended_total, s.confirmed_total), (7, 7));
    assert_eq!(s.oldest_age_ms, None);

    // Sequence numbers are never reused, also across a reopen.
    drop(store);
    let mut store = open(&dir.db(), Limits::default());
    let c = store.append(&[ble(1, None, 4000, 1.0)]).expect("append");
    assert_eq!(c.seqs, Some(8..=8));
    store.check().expect("check");
    assert_eq!(store.stats(0, 0).expect("stats").appended_total, 8);
}

#[test]
fn values_and_radio_metadata_round_trip_exactly() {
    let dir = TempDir::new("roundtrip");
    let mut store = open(&dir.db(), Limits::default());
    let mut rs = vec![
        ble(1, Some(1), 1, f64::NAN),
        ble(1, Some(2), 2, -0.0),
        ble(1, Some(3), 3, f64::INFINITY),
        lora(9, 77, 4, "humidity", 3),
    ];
    rs[0].unit = String::new();
    store.append(&rs).expect("append");
    let back = store.readings_after(0, 10).expect("read");
    assert_eq!(back.len(), 4);
    for (q, r) in back.iter().zip(&rs) {
        assert_eq!(q.reading.value.to_bits(), r.value.to_bits());
        assert_eq!(q.reading.radio, r.radio);
        assert_eq!(
            (q.reading.source, q.reading.device, q.reading.time_ms),
            (r.source, r.device, r.time_ms)
        );
        assert_eq!(
            (&q.reading.quantity, &q.reading.unit),
            (&r.quantity, &r.unit)
        );
        assert_eq!(q.reading.frame_id, r.frame_id);
    }
}

#[test]
fn invalid_reading_is_refused_and_nothing_written() {
    let dir = TempDir::new("invalid");
    let mut store = open(&dir.db(), Limits::default());
    let mut bad = ble(1, None, 1, 1.0);
    bad.quantity = "x".repeat(70_000);
    let err = store
        .append(&[ble(2, None, 1, 1.0), bad])
        .expect_err("too long");
    assert!(
        matches!(err, StoreError::InvalidReading { index: 1, .. }),
        "{err}"
    );
    let mut late = ble(1, None, u64::MAX, 1.0);
    late.time_ms = u64::MAX;
    assert!(matches!(
        store.append(&[late]),
        Err(StoreError::InvalidReading { index: 0, .. })
    ));
    assert_eq!(store.stats(0, 0).expect("stats").appended_total, 0);
    assert!(store.readings_after(0, 10).expect("read").is_empty());
}

#[test]
fn not_a_store_and_garbage_are_typed_errors() {
    let dir = TempDir::new("garbage");
    let p = dir.0.join("garbage.db");
    std::fs::write(&p, vec![0x5Au8; 8192]).expect("write");
    let err = Store::open(&p, Limits::default(), key()).expect_err("garbage");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let err = Store::open(
        dir.db(),
        Limits {
            max_readings: 0,
            ..Limits::default()
        },
        key(),
    )
    .expect_err("zero limit");
    assert!(matches!(err, StoreError::Config { .. }), "{err}");
}

#[test]
fn batch_signature_verifies_and_fails_on_tampering() {
    let dir = TempDir::new("sig");
    let mut store = open(&dir.db(), Limits::default());
    store
        .append(&[ble(1, Some(5), 10, 20.5), lora(2, 9, 11, "humidity", 1)])
        .expect("append");
    let batch = store.next_batch(10).expect("batch").expect("some");
    let pk = key().verifying_key();
    assert_eq!(store.gateway_key(), pk);
    batch.verify(&pk).expect("verifies");

    let bytes = batch.signing_bytes().expect("bytes");
    assert_eq!(&bytes[..13], b"MEF-GW-BATCH1");
    assert_eq!(&bytes[13..45], pk.as_bytes());
    assert_eq!(&bytes[45..53], &batch.id.to_be_bytes());
    assert_eq!(&bytes[53..61], &1u64.to_be_bytes());
    assert_eq!(&bytes[61..69], &2u64.to_be_bytes());
    assert_eq!(&bytes[69..73], &2u32.to_be_bytes());

    type Tamper = Box<dyn Fn(&mut gateway::store::Batch)>;
    let tampered: Vec<(&str, Tamper)> = vec![
        ("value", Box::new(|b| b.readings[0].reading.value = 99.0)),
        ("seq", Box::new(|b| b.readings[1].seq = 3)),
        ("id", Box::new(|b| b.id += 1)),
        ("first_seq", Box::new(|b| b.first_seq = 0)),
        ("last_seq", Box::new(|b| b.last_seq = 3)),
        (
            "device",
            Box::new(|b| b.readings[0].reading.device.0[7] ^= 1),
        ),
        (
            "frame id",
            Box::new(|b| b.readings[0].reading.frame_id = None),
        ),
        (
            "rssi",
            Box::new(|b| b.readings[1].reading.radio.rssi_dbm = Some(-1)),
        ),
        (
            "dropped reading",
            Box::new(|b| {
                b.readings.pop();
            }),
        ),
        ("signature", Box::new(|b| b.signature[5] ^= 1)),
    ];
    for (what, f) in tampered {
        let mut b = batch.clone();
        f(&mut b);
        assert_eq!(b.verify(&pk), Err(BatchError::BadSignature), "{what}");
    }
    let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
    assert_eq!(batch.verify(&other), Err(BatchError::WrongGateway));
    let mut forged = batch.clone();
    forged.gateway = other.to_bytes();
    assert_eq!(forged.verify(&other), Err(BatchError::BadSignature));

    // The file uplink's line carries the signed bytes and verifies too.
    let path = dir.0.join("uplink.jsonl");
    let mut up = FileUplink::open(&path).expect("open file uplink");
    up.submit(&batch).expect("submit");
    let lines = FileUplink::read(&path).expect("read");
    assert_eq!(lines.len(), 1);
    lines[0].verify(&pk).expect("file line verifies");
    let mut bad: FileBatch = lines[0].clone();
    bad.signed.replace_range(200..202, "00");
    assert!(bad.verify(&pk).is_err());
    assert_eq!(lines[0].verify(&other), Err(BatchError::WrongGateway));
}

#[test]
fn dedup_drops_repeats_within_the_window_and_survives_reopen() {
    let dir = TempDir::new("dedup");
    let limits = Limits {
        dedup_window_ms: 60_000,
        ..Limits::default()
    };
    let mut store = open(&dir.db(), limits);
    // The same BTHome packet id twice (the sensor repeats its advertisement), in one call
    // and across calls.
    let o = store
        .append(&[ble(1, Some(42), 1000, 20.0), ble(1, Some(42), 1100, 20.0)])
        .expect("append");
    assert_eq!((o.accepted, o.duplicates), (1, 1));
    let o = store
        .append(&[ble(1, Some(42), 5000, 20.0)])
        .expect("append");
    assert_eq!((o.accepted, o.duplicates), (0, 1));
    assert!(o.seqs.is_none());
    // Another device, another packet id, another quantity: not duplicates.
    let mut hum = ble(1, Some(42), 5000, 50.0);
    hum.quantity = "humidity".into();
    let o = store
        .append(&[
            ble(2, Some(42), 5000, 20.0),
            ble(1, Some(43), 5000, 20.0),
            hum,
        ])
        .expect("append");
    assert_eq!((o.accepted, o.duplicates), (3, 0));
    // The same LoRa frame heard by two packet forwarders: the first copy is kept.
    let o = store
        .append(&[
            lora(7, 100, 6000, "temperature", 1),
            lora(7, 100, 6000, "humidity", 1),
            lora(7, 100, 6003, "temperature", 2),
            lora(7, 100, 6003, "humidity", 2),
        ])
        .expect("append");
    assert_eq!((o.accepted, o.duplicates), (2, 2));
    // Readings without a frame id are never de-duplicated.
    let o = store
        .append(&[ble(3, None, 7000, 1.0), ble(3, None, 7000, 1.0)])
        .expect("append");
    assert_eq!((o.accepted, o.duplicates), (2, 0));

    // Across a reopen the window still holds.
    drop(store);
    let mut store = open(&dir.db(), limits);
    let o = store
        .append(&[
            ble(1, Some(42), 9000, 20.0),
            lora(7, 100, 9000, "humidity", 3),
        ])
        .expect("append");
    assert_eq!((o.accepted, o.duplicates), (0, 2));
    // Within the window, a reused packet id with another value is a new reading (an 8-bit
    // BTHome id that wrapped, a LoRa FCnt reset by a rejoin).
    let o = store
        .append(&[ble(1, Some(42), 9500, 20.5)])
        .expect("append");
    assert_eq!((o.accepted, o.duplicates), (1, 0));
    // After the window, even the same value under the (wrapped) packet id is a new frame.
    let o = store
        .append(&[ble(1, Some(42), 70_000, 20.0)])
        .expect("append");
    assert_eq!((o.accepted, o.duplicates), (1, 0));
    let s = store.stats(70_000, 100).expect("stats");
    assert_eq!(s.duplicates, 6);
    assert_eq!(s.appended_total, 1 + 3 + 2 + 2 + 1 + 1);
    let kept = store.readings_after(0, 100).expect("read");
    let lora_kept: Vec<_> = kept
        .iter()
        .filter(|q| q.reading.source == Source::Lora)
        .collect();
    assert!(
        lora_kept
            .iter()
            .all(|q| q.reading.radio.gateway_eui == Some([1; 8])),
        "the first copy's metadata is kept"
    );
    store.check().expect("check");
}

#[test]
fn dedup_window_is_bounded() {
    let dir = TempDir::new("dedup-bound");
    let limits = Limits {
        dedup_max_entries: 50,
        ..Limits::default()
    };
    let mut store = open(&dir.db(), limits);
    for call in 0..10u32 {
        let rs: Vec<_> = (0..20)
            .map(|i| ble(1, Some(call * 20 + i), 1000, 1.0))
            .collect();
        store.append(&rs).expect("append");
        assert!(store.stats(0, 0).expect("stats").dedup_entries <= 50);
    }
}

#[test]
fn requeue_and_reopen_resend_the_same_batch() {
    let dir = TempDir::new("requeue");
    let mut store = open(&dir.db(), Limits::default());
    store
        .append(
            &(0..10)
                .map(|i| ble(1, Some(i), 1000 + u64::from(i), 1.0))
                .collect::<Vec<_>>(),
        )
        .expect("append");
    let b1 = store.next_batch(4).expect("batch").expect("some");
    let b2 = store.next_batch(4).expect("batch").expect("some");
    assert_eq!(store.requeue_in_flight().expect("requeue"), 2);
    assert_eq!(store.next_batch(100).expect("batch"), Some(b1.clone()));
    drop(store);
    let mut store = open(&dir.db(), Limits::default());
    // A reopen makes both due again, in order, unchanged (same signature).
    assert_eq!(store.next_batch(1).expect("batch"), Some(b1.clone()));
    assert_eq!(store.next_batch(1).expect("batch"), Some(b2.clone()));
    let b3 = store.next_batch(100).expect("batch").expect("some");
    assert_eq!((b3.first_seq, b3.last_seq), (9, 10));

    // A lost acknowledgement: the receiver has the batch, the sender re-sends it, the
    // receiver dedupes by first_seq.
    let mut up = TestUplink::new();
    up.lose_next_ack();
    assert!(up.submit(&b1).is_err());
    store.requeue_in_flight().expect("requeue");
    let again = store.next_batch(100).expect("batch").expect("some");
    assert_eq!(again, b1);
    let ack = up.submit(&again).expect("submit");
    assert!(ack.duplicate);
    store.confirm(ack.batch_id).expect("confirm");
    assert_eq!(up.readings().count(), 4);
    assert_eq!(up.duplicates(), 1);
}

#[test]
fn stats_report_sources_and_bounded_devices() {
    let dir = TempDir::new("stats");
    let limits = Limits {
        max_devices: 5,
        ..Limits::default()
    };
    let mut store = open(&dir.db(), limits);
    for dev in 0..8u8 {
        store
            .append(&[
                ble(dev, None, 1000 + u64::from(dev), 1.0),
                ble(dev, None, 1000, 2.0),
            ])
            .expect("append");
    }
    store
        .append(&[lora(1, 1, 5000, "temperature", 1)])
        .expect("append");
    let s = store.stats(6000, 100).expect("stats");
    assert_eq!(s.devices.len(), 5, "bounded");
    assert_eq!(s.devices[0].source, Source::Lora);
    assert_eq!(s.devices[0].last_ms, 5000);
    assert_eq!(s.devices[1].last_ms, 1007);
    assert_eq!(s.devices[1].readings, 2);
    let ble_s = s
        .per_source
        .iter()
        .find(|p| p.source == Source::Ble)
        .expect("ble");
    assert_eq!((ble_s.stored, ble_s.appended_total), (16, 16));
    let lora_s = s
        .per_source
        .iter()
        .find(|p| p.source == Source::Lora)
        .expect("lora");
    assert_eq!((lora_s.stored, lora_s.appended_total), (1, 1));
    assert_eq!(s.oldest_age_ms, Some(5000));
    assert_eq!(store.stats(6000, 2).expect("stats").devices.len(), 2);
}

/// Informational only (the real benchmark is `mef bench gateway`): durable append
/// throughput by call size.
#[test]
fn throughput_by_call_size_informational() {
    let dir = TempDir::new("throughput");
    let mut store = open(&dir.db(), Limits::default());
    let mut frame = 0u32;
    for call in [1usize, 50, 500, 2000] {
        let total = (call * 40).min(20_000);
        let started = Instant::now();
        let mut done = 0;
        while done < total {
            let rs: Vec<_> = (0..call)
                .map(|i| {
                    frame += 1;
                    lora(
                        (i % 200) as u8,
                        frame,
                        1_000 + u64::from(frame),
                        "temperature",
                        1,
                    )
                })
                .collect();
            store.append(&rs).expect("append");
            done += call;
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "append: {call:>5} readings per call: {:>9.0} readings/s ({:.2} ms per call)",
            done as f64 / secs,
            secs * 1000.0 / (done / call) as f64
        );
    }
    let started = Instant::now();
    let mut n = 0;
    while let Some(b) = store.next_batch(500).expect("batch") {
        n += store.confirm(b.id).expect("confirm");
    }
    eprintln!(
        "drain: {n} readings in batches of 500: {:.0} readings/s",
        n as f64 / started.elapsed().as_secs_f64()
    );
}

#[test]
fn full_disk_is_a_typed_error_and_writes_nothing() {
    let dir = TempDir::new("diskfull");
    let limits = Limits {
        max_file_bytes: Some(256 << 10),
        ..Limits::default()
    };
    let mut store = open(&dir.db(), limits);
    let mut frame = 0;
    let mut acked = 0u64;
    let err = loop {
        let rs: Vec<_> = (0..100)
            .map(|_| {
                frame += 1;
                lora(1, frame, 1000, "temperature", 1)
            })
            .collect();
        match store.append(&rs) {
            Ok(o) => acked += o.accepted as u64,
            Err(e) => break e,
        }
        assert!(frame < 1_000_000, "the file cap was never reached");
    };
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    store.check().expect("check after the failed append");
    let s = store.stats(0, 0).expect("stats");
    assert_eq!((s.queued, s.appended_total), (acked, acked));
    // Draining frees pages; appends work again.
    while let Some(b) = store.next_batch(1000).expect("batch") {
        store.confirm(b.id).expect("confirm");
    }
    store
        .append(&[lora(1, frame + 1, 1000, "temperature", 1)])
        .expect("append after draining");
    store.check().expect("check");
}
