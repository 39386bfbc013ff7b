//! `poe::store::Store`: blocks, transactions, idempotence, conflicts, tip, meta, reopen, stats.

use poe::store::{PutOutcome, Store, StoreError};

mod common;
use common::TempDir;

fn id(tag: u8, n: u64) -> [u8; 32] {
    let mut out = [tag; 32];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out
}

/// A block at `height` with `n` transactions; `variant` makes a different block.
#[allow(clippy::type_complexity)]
fn block(height: u64, n: usize, variant: u8) -> ([u8; 32], Vec<u8>, Vec<([u8; 32], Vec<u8>)>) {
    let block_id = id(b'B' ^ variant, height);
    let header = [&b"header"[..], &height.to_be_bytes(), &[variant]].concat();
    let txs = (0..n)
        .map(|i| {
            let tx_id = id(b'T' ^ variant, height * 1000 + i as u64);
            (tx_id, vec![variant; 10 + i])
        })
        .collect();
    (block_id, header, txs)
}

#[test]
fn put_and_get_block_by_height_id_and_tx() {
    let dir = TempDir::new("store_basic", "put_get");
    let mut store = Store::open(dir.db()).expect("open");
    let (bid, header, txs) = block(7, 3, 0);
    assert_eq!(
        store.put_block(7, &bid, &header, &txs, false).expect("put"),
        PutOutcome::Inserted
    );

    let b = store.block_by_height(7).expect("read").expect("present");
    assert_eq!(b.height, 7);
    assert_eq!(b.block_id, bid);
    assert_eq!(b.header, header);
    assert!(!b.is_final);
    assert_eq!(b.txs, txs);
    assert_eq!(store.block_by_id(&bid).expect("read"), Some(b));
    assert_eq!(
        store.header_by_height(7).expect("read"),
        Some(header.clone())
    );
    for (i, (tx_id, body)) in txs.iter().enumerate() {
        assert_eq!(
            store.tx(tx_id).expect("read"),
            Some((body.clone(), 7, i as u32))
        );
    }

    assert_eq!(store.block_by_height(8).expect("read"), None);
    assert_eq!(store.block_by_height(u64::MAX).expect("read"), None);
    assert_eq!(store.block_by_id(&[9; 32]).expect("read"), None);
    assert_eq!(store.header_by_height(6).expect("read"), None);
    assert_eq!(store.tx(&[9; 32]).expect("read"), None);
}

#[test]
fn empty_block_round_trips() {
    let dir = TempDir::new("store_basic", "empty_block");
    let mut store = Store::open(dir.db()).expect("open");
    let (bid, header, _) = block(0, 0, 0);
    store.put_block(0, &bid, &header, &[], true).expect("put");
    let b = store.block_by_height(0).expect("read").expect("present");
    assert!(b.txs.is_empty());
    assert!(b.is_final);
    assert_eq!(store.tip().expect("tip"), Some((0, bid)));
}

#[test]
fn tip_is_highest_final_block() {
    let dir = TempDir::new("store_basic", "tip");
    let mut store = Store::open(dir.db()).expect("open");
    assert_eq!(store.tip().expect("tip"), None);
    for h in 0..5 {
        let (bid, header, txs) = block(h, 2, 0);
        store.put_block(h, &bid, &header, &txs, h < 3).expect("put");
    }
    assert_eq!(store.tip().expect("tip"), Some((2, block(2, 0, 0).0)));
    store.mark_final(4).expect("mark final");
    assert_eq!(store.tip().expect("tip"), Some((4, block(4, 0, 0).0)));
    // Idempotent.
    store.mark_final(4).expect("mark final again");
    assert!(matches!(
        store.mark_final(5),
        Err(StoreError::NotFound { height: 5 })
    ));
}

#[test]
fn reopen_resumes_tip_and_data() {
    let dir = TempDir::new("store_basic", "reopen");
    {
        let mut store = Store::open(dir.db()).expect("open");
        for h in 0..10 {
            let (bid, header, txs) = block(h, 4, 0);
            store
                .put_block(h, &bid, &header, &txs, h <= 8)
                .expect("put");
        }
        store.put_meta("lock", b"round 3").expect("meta");
    }
    let store = Store::open(dir.db()).expect("reopen");
    assert_eq!(store.tip().expect("tip"), Some((8, block(8, 0, 0).0)));
    let b9 = store.block_by_height(9).expect("read").expect("present");
    assert!(!b9.is_final);
    assert_eq!(b9.txs, block(9, 4, 0).2);
    assert_eq!(store.meta("lock").expect("meta"), Some(b"round 3".to_vec()));
    assert_eq!(store.schema_version().expect("version"), 1);
}

#[test]
fn reput_same_block_is_idempotent_and_upgrades() {
    let dir = TempDir::new("store_basic", "idempotent");
    let mut store = Store::open(dir.db()).expect("open");
    let (bid, header, txs) = block(3, 5, 0);
    store.put_block(3, &bid, &header, &txs, false).expect("put");
    assert_eq!(
        store
            .put_block(3, &bid, &header, &txs, false)
            .expect("re-put"),
        PutOutcome::Unchanged
    );
    // The same block with its commit certificate: new header bytes, now final.
    let certified = [&header[..], b"+cert"].concat();
    assert_eq!(
        store
            .put_block(3, &bid, &certified, &txs, true)
            .expect("finalise"),
        PutOutcome::Updated
    );
    let b = store.block_by_height(3).expect("read").expect("present");
    assert!(b.is_final);
    assert_eq!(b.header, certified);
    // Once final, re-puts change nothing (not even with the uncertified header).
    assert_eq!(
        store
            .put_block(3, &bid, &header, &txs, false)
            .expect("re-put"),
        PutOutcome::Unchanged
    );
    assert_eq!(
        store.header_by_height(3).expect("read"),
        Some(certified.clone())
    );
    let stats = store.stats().expect("stats");
    assert_eq!((stats.blocks, stats.final_blocks, stats.txs), (1, 1, 5));
}

#[test]
fn different_block_at_final_height_is_a_conflict() {
    let dir = TempDir::new("store_basic", "conflict");
    let mut store = Store::open(dir.db()).expect("open");
    let (bid, header, txs) = block(4, 2, 0);
    store.put_block(4, &bid, &header, &txs, true).expect("put");
    let (other, other_header, other_txs) = block(4, 3, 1);
    let err = store
        .put_block(4, &other, &other_header, &other_txs, true)
        .expect_err("conflict");
    match &err {
        StoreError::Conflict {
            height,
            existing,
            new,
        } => {
            assert_eq!((*height, *existing, *new), (4, bid, other));
        }
        e => panic!("expected Conflict, got {e:?}"),
    }
    assert!(err.to_string().contains("conflict at height 4"), "{err}");
    // Nothing of the refused block was written.
    assert_eq!(
        store
            .block_by_height(4)
            .expect("read")
            .expect("present")
            .txs,
        txs
    );
    for (tx_id, _) in &other_txs {
        assert_eq!(store.tx(tx_id).expect("read"), None);
    }
    assert_eq!(store.block_by_id(&other).expect("read"), None);
}

#[test]
fn different_block_at_non_final_height_replaces_it() {
    let dir = TempDir::new("store_basic", "replace");
    let mut store = Store::open(dir.db()).expect("open");
    let (bid, header, txs) = block(4, 6, 0);
    store.put_block(4, &bid, &header, &txs, false).expect("put");
    let (other, other_header, other_txs) = block(4, 2, 1);
    assert_eq!(
        store
            .put_block(4, &other, &other_header, &other_txs, true)
            .expect("replace"),
        PutOutcome::Replaced
    );
    let b = store.block_by_height(4).expect("read").expect("present");
    assert_eq!((b.block_id, b.txs), (other, other_txs));
    // The replaced block's transactions went with it.
    for (tx_id, _) in &txs {
        assert_eq!(store.tx(tx_id).expect("read"), None);
    }
    assert_eq!(store.block_by_id(&bid).expect("read"), None);
    assert_eq!(store.stats().expect("stats").txs, 2);
    store.check().expect("sound");
}

#[test]
fn reput_with_other_txs_is_refused() {
    let dir = TempDir::new("store_basic", "mismatch");
    let mut store = Store::open(dir.db()).expect("open");
    let (bid, header, mut txs) = block(1, 3, 0);
    store.put_block(1, &bid, &header, &txs, false).expect("put");
    txs[2].1.push(0xFF);
    assert!(matches!(
        store.put_block(1, &bid, &header, &txs, true),
        Err(StoreError::TxMismatch { height: 1, .. })
    ));
    txs.pop();
    assert!(matches!(
        store.put_block(1, &bid, &header, &txs, true),
        Err(StoreError::TxMismatch { height: 1, .. })
    ));
    // Still the original, still not final.
    let b = store.block_by_height(1).expect("read").expect("present");
    assert!(!b.is_final);
    assert_eq!(b.txs, block(1, 3, 0).2);
}

#[test]
fn tx_or_block_id_stored_elsewhere_is_refused_atomically() {
    let dir = TempDir::new("store_basic", "elsewhere");
    let mut store = Store::open(dir.db()).expect("open");
    let (bid, header, txs) = block(1, 3, 0);
    store.put_block(1, &bid, &header, &txs, true).expect("put");

    // Block 2 reuses block 1's second transaction after two fresh ones: all or nothing.
    let (bid2, header2, mut txs2) = block(2, 2, 0);
    txs2.push(txs[1].clone());
    match store.put_block(2, &bid2, &header2, &txs2, true) {
        Err(StoreError::TxElsewhere {
            id,
            stored_height,
            height,
        }) => assert_eq!((id, stored_height, height), (txs[1].0, 1, 2)),
        r => panic!("expected TxElsewhere, got {r:?}"),
    }
    assert_eq!(store.block_by_height(2).expect("read"), None);
    assert_eq!(store.tx(&txs2[0].0).expect("read"), None);

    // The same transaction twice in one block.
    let (bid3, header3, mut txs3) = block(3, 2, 0);
    txs3.push(txs3[0].clone());
    assert!(matches!(
        store.put_block(3, &bid3, &header3, &txs3, false),
        Err(StoreError::TxElsewhere {
            stored_height: 3,
            height: 3,
            ..
        })
    ));
    assert_eq!(store.block_by_height(3).expect("read"), None);

    // Block 1's id at height 5.
    assert!(matches!(
        store.put_block(5, &bid, &header, &[], false),
        Err(StoreError::BlockIdElsewhere {
            stored_height: 1,
            height: 5,
            ..
        })
    ));
    let stats = store.stats().expect("stats");
    assert_eq!((stats.blocks, stats.txs), (1, 3));
}

#[test]
fn height_beyond_i64_is_out_of_range() {
    let dir = TempDir::new("store_basic", "range");
    let mut store = Store::open(dir.db()).expect("open");
    let (bid, header, txs) = block(1, 1, 0);
    assert!(matches!(
        store.put_block(u64::MAX, &bid, &header, &txs, true),
        Err(StoreError::OutOfRange {
            what: "height",
            value: u64::MAX
        })
    ));
    let top = i64::MAX as u64;
    store
        .put_block(top, &bid, &header, &txs, true)
        .expect("largest height");
    assert_eq!(store.tip().expect("tip"), Some((top, bid)));
    assert!(matches!(
        store.mark_final(u64::MAX),
        Err(StoreError::OutOfRange { .. })
    ));
}

#[test]
fn meta_round_trip() {
    let dir = TempDir::new("store_basic", "meta");
    let mut store = Store::open(dir.db()).expect("open");
    assert_eq!(store.meta("membership").expect("meta"), None);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    store.put_meta("membership", &big).expect("put");
    store.put_meta("empty", &[]).expect("put");
    store.put_meta("lock", b"h=3 r=1").expect("put");
    store.put_meta("lock", b"h=3 r=2").expect("overwrite");
    assert_eq!(store.meta("membership").expect("meta"), Some(big));
    assert_eq!(store.meta("empty").expect("meta"), Some(Vec::new()));
    assert_eq!(store.meta("lock").expect("meta"), Some(b"h=3 r=2".to_vec()));
    assert!(store.delete_meta("lock").expect("delete"));
    assert!(!store.delete_meta("lock").expect("delete again"));
    assert_eq!(store.meta("lock").expect("meta"), None);
}

#[test]
fn stats_count_blocks_txs_and_bytes() {
    let dir = TempDir::new("store_basic", "stats");
    let mut store = Store::open(dir.db()).expect("open");
    let empty = store.stats().expect("stats");
    assert_eq!((empty.blocks, empty.final_blocks, empty.txs), (0, 0, 0));
    for h in 0..6 {
        let (bid, header, txs) = block(h, h as usize, 0);
        store
            .put_block(h, &bid, &header, &txs, h % 2 == 0)
            .expect("put");
    }
    let stats = store.stats().expect("stats");
    assert_eq!(stats.blocks, 6);
    assert_eq!(stats.final_blocks, 3);
    assert_eq!(stats.txs, 1 + 2 + 3 + 4 + 5);
    assert!(stats.db_bytes > 0);
    assert!(stats.wal_bytes > 0, "writes go to the WAL first");
    assert_eq!(store.path(), dir.db().as_path());
}

#[test]
fn open_sets_wal_full_sync_and_foreign_keys() {
    let dir = TempDir::new("store_basic", "pragmas");
    let mut store = Store::open(dir.db()).expect("open");
    let (bid, header, txs) = block(0, 1, 0);
    store.put_block(0, &bid, &header, &txs, true).expect("put");
    // WAL mode is persistent in the file: another connection sees it.
    let conn = rusqlite::Connection::open(dir.db()).expect("raw open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .expect("application_id");
    assert_eq!(app_id, 0x504F_4531);
    // The schema's foreign key: a transaction row needs its block.
    conn.pragma_update(None, "foreign_keys", true).expect("fk");
    let orphan = conn.execute(
        "INSERT INTO txs (id, height, idx, body) VALUES (?1, 99, 0, x'00')",
        [&[7u8; 32][..]],
    );
    assert!(orphan.is_err(), "orphan tx row accepted");
    store.check().expect("sound");
}

#[test]
fn opening_an_older_schema_applies_the_migrations() {
    let dir = TempDir::new("store_basic", "migrate");
    {
        // What a store at schema version 0 looks like: the identity and the version table.
        let conn = rusqlite::Connection::open(dir.db()).expect("raw open");
        conn.execute_batch(
            "PRAGMA application_id = 1347372337;
             CREATE TABLE schema_version (one INTEGER PRIMARY KEY CHECK (one = 1),
                                          version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1, 0);",
        )
        .expect("version 0 file");
    }
    let mut store = Store::open(dir.db()).expect("open and migrate");
    assert_eq!(store.schema_version().expect("version"), 1);
    let (bid, header, txs) = block(0, 2, 0);
    store.put_block(0, &bid, &header, &txs, true).expect("put");
    drop(store);
    // Reopening a current file applies nothing and keeps the data.
    let store = Store::open(dir.db()).expect("reopen");
    assert_eq!(store.schema_version().expect("version"), 1);
    assert_eq!(store.tip().expect("tip"), Some((0, bid)));
}
