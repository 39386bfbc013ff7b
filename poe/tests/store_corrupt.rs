//! `poe::store::Store` on damaged or foreign files: typed errors, never a panic.

use std::path::Path;

use poe::store::{Store, StoreError};

mod common;
use common::TempDir;

/// Deterministic filler bytes (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn tx_id(height: u64, i: u64) -> [u8; 32] {
    let mut id = [b'T'; 32];
    id[..8].copy_from_slice(&height.to_be_bytes());
    id[8..16].copy_from_slice(&i.to_be_bytes());
    id
}

/// A store with 40 final blocks of 12 transactions (several hundred pages), closed so the
/// WAL is checkpointed into the main file.
fn populated(path: &Path) {
    let mut store = Store::open(path).expect("open");
    for h in 0..40u64 {
        let mut bid = [b'B'; 32];
        bid[..8].copy_from_slice(&h.to_be_bytes());
        let txs: Vec<_> = (0..12u64)
            .map(|i| (tx_id(h, i), noise(h * 100 + i, 700)))
            .collect();
        store
            .put_block(h, &bid, b"header", &txs, true)
            .expect("put");
    }
    drop(store);
    assert!(
        !Path::new(&format!("{}-wal", path.display())).exists(),
        "WAL checkpointed and removed on close"
    );
}

/// Runs every read on `store`; returns the errors (each must be `Corrupt`).
fn read_everything(store: &Store) -> Vec<StoreError> {
    let mut errors = Vec::new();
    let mut note = |r: Result<(), StoreError>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };
    for h in 0..40u64 {
        note(store.block_by_height(h).map(drop));
        note(store.header_by_height(h).map(drop));
        note(store.tx(&tx_id(h, 3)).map(drop));
    }
    note(store.tip().map(drop));
    note(store.stats().map(drop));
    note(store.meta("k").map(drop));
    note(store.check());
    errors
}

fn assert_corrupt(e: &StoreError) {
    assert!(
        matches!(e, StoreError::Corrupt { .. }),
        "expected Corrupt, got {e:?}"
    );
}

#[test]
fn garbage_file_is_a_corrupt_error() {
    let dir = TempDir::new("store_corrupt", "garbage");
    std::fs::write(dir.db(), noise(42, 16 * 1024)).expect("write");
    let err = Store::open(dir.db()).expect_err("garbage accepted");
    assert_corrupt(&err);
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn damaged_header_page_is_a_corrupt_error() {
    let dir = TempDir::new("store_corrupt", "header");
    populated(&dir.db());
    let mut bytes = std::fs::read(dir.db()).expect("read");
    bytes[..100].copy_from_slice(&noise(7, 100));
    std::fs::write(dir.db(), &bytes).expect("write");
    assert_corrupt(&Store::open(dir.db()).expect_err("damaged header accepted"));
}

#[test]
fn damaged_pages_give_corrupt_errors_not_panics() {
    let dir = TempDir::new("store_corrupt", "pages");
    populated(&dir.db());
    // Keep the schema and every table's root page; the pages after them (the rows of the
    // transactions and their index) become noise.
    let last_root: i64 = {
        let conn = rusqlite::Connection::open(dir.db()).expect("raw open");
        conn.query_row("SELECT max(rootpage) FROM sqlite_schema", [], |r| r.get(0))
            .expect("root pages")
    };
    let last_root = usize::try_from(last_root).expect("page number");
    let mut bytes = std::fs::read(dir.db()).expect("read");
    let page = 4096;
    let from = last_root * page;
    assert!(bytes.len() > from + 20 * page, "{} bytes", bytes.len());
    let tail = bytes.len() - from;
    bytes[from..].copy_from_slice(&noise(9, tail));
    std::fs::write(dir.db(), &bytes).expect("write");

    // Opening reads only the schema and the small tables; what reads the damaged pages must
    // fail with a typed error.
    let store = Store::open(dir.db()).expect("schema pages are intact");
    let errors = read_everything(&store);
    assert!(!errors.is_empty(), "damage went unnoticed");
    errors.iter().for_each(assert_corrupt);
    assert_corrupt(&store.check().expect_err("check passed"));
    assert_corrupt(
        &store
            .block_by_height(5)
            .expect_err("read of a damaged page"),
    );
}

#[test]
fn truncated_file_gives_corrupt_errors_not_panics() {
    let dir = TempDir::new("store_corrupt", "truncated");
    populated(&dir.db());
    let len = std::fs::metadata(dir.db()).expect("stat").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.db())
        .expect("open file");
    file.set_len(len / 3).expect("truncate");
    drop(file);
    match Store::open(dir.db()) {
        Err(e) => assert_corrupt(&e),
        Ok(store) => {
            let errors = read_everything(&store);
            assert!(!errors.is_empty(), "truncation went unnoticed");
            errors.iter().for_each(assert_corrupt);
            assert_corrupt(&store.check().expect_err("check passed"));
        }
    }
}

#[test]
fn rows_breaking_the_schema_are_corrupt_errors() {
    let dir = TempDir::new("store_corrupt", "rows");
    populated(&dir.db());
    {
        let conn = rusqlite::Connection::open(dir.db()).expect("raw open");
        conn.execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE blocks SET block_id = x'0102' WHERE height = 1;
             UPDATE blocks SET final = 7 WHERE height = 2;
             UPDATE blocks SET header = 'text, not a blob' WHERE height = 3;
             DELETE FROM txs WHERE height = 4 AND idx = 5;
             UPDATE txs SET idx = -1 WHERE height = 5 AND idx = 0;
             UPDATE blocks SET block_id = x'03' WHERE height = 39;",
        )
        .expect("damage rows");
    }
    let store = Store::open(dir.db()).expect("open");
    assert_corrupt(&store.block_by_height(1).expect_err("short block id"));
    assert_corrupt(&store.block_by_height(2).expect_err("final flag 7"));
    assert_corrupt(&store.block_by_height(3).expect_err("text header"));
    assert_corrupt(&store.header_by_height(3).expect_err("text header"));
    assert_corrupt(&store.block_by_height(4).expect_err("missing tx 5"));
    assert_corrupt(&store.block_by_height(5).expect_err("negative index"));
    assert_corrupt(&store.tx(&tx_id(5, 0)).expect_err("negative index"));
    assert_corrupt(&store.tip().expect_err("tip with short block id"));
    // Sound rows still read.
    assert_eq!(
        store
            .block_by_height(6)
            .expect("read")
            .expect("present")
            .txs
            .len(),
        12
    );
}

#[test]
fn foreign_sqlite_file_is_not_a_store() {
    let dir = TempDir::new("store_corrupt", "foreign");
    {
        let conn = rusqlite::Connection::open(dir.db()).expect("raw open");
        conn.execute_batch("CREATE TABLE contacts (name TEXT);")
            .expect("create");
    }
    assert!(matches!(
        Store::open(dir.db()),
        Err(StoreError::NotAStore { .. })
    ));

    let other = dir.0.join("other.db");
    {
        let conn = rusqlite::Connection::open(&other).expect("raw open");
        conn.execute_batch("PRAGMA application_id = 1234;")
            .expect("app id");
    }
    match Store::open(&other) {
        Err(StoreError::NotAStore { reason }) => assert!(reason.contains("application_id")),
        r => panic!("expected NotAStore, got {r:?}"),
    }
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = TempDir::new("store_corrupt", "newer");
    populated(&dir.db());
    {
        let conn = rusqlite::Connection::open(dir.db()).expect("raw open");
        conn.execute("UPDATE schema_version SET version = 99", [])
            .expect("bump");
    }
    match Store::open(dir.db()) {
        Err(StoreError::UnsupportedVersion { found, supported }) => {
            assert_eq!((found, supported), (99, 1))
        }
        r => panic!("expected UnsupportedVersion, got {r:?}"),
    }
}

#[test]
fn empty_file_becomes_a_new_store_and_a_directory_is_an_error() {
    let dir = TempDir::new("store_corrupt", "empty");
    std::fs::write(dir.db(), b"").expect("write");
    let store = Store::open(dir.db()).expect("empty file is a new database");
    assert_eq!(store.tip().expect("tip"), None);
    assert_eq!(store.schema_version().expect("version"), 1);
    drop(store);

    let err = Store::open(&dir.0).expect_err("a directory opened as a store");
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");
}

#[test]
fn store_identity_without_version_table_is_corrupt() {
    let dir = TempDir::new("store_corrupt", "no_version");
    {
        let conn = rusqlite::Connection::open(dir.db()).expect("raw open");
        conn.execute_batch("PRAGMA application_id = 1347372337; CREATE TABLE x (y);")
            .expect("create");
    }
    assert_corrupt(&Store::open(dir.db()).expect_err("accepted"));
}
