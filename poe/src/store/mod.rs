//! The node's block store: SQLite (bundled), write-ahead log, `synchronous = FULL`.
//!
//! A [`Store`] keeps blocks as bytes (it does not depend on [`crate::wire`]): per height one
//! block (id, encoded header, whether it is final) and its transactions (id, index, encoding),
//! plus a small key-value table ([`Store::put_meta`]) for node state such as the membership set
//! and vote locks.
//!
//! # Durability and atomicity
//!
//! - [`Store::put_block`] writes the header and every transaction in **one** SQLite transaction:
//!   after a crash (process killed, power cut) a block is either entirely present or absent.
//! - The journal is a write-ahead log with `synchronous = FULL`: when a write method returns
//!   `Ok`, the change is on disk (fsynced) and survives a crash.
//! - `foreign_keys` is on: a transaction row cannot outlive its block.
//! - A damaged file gives [`StoreError::Corrupt`] from whichever call finds the damage, never a
//!   panic; [`Store::check`] scans the whole file.
//!
//! # Rules for blocks
//!
//! - Putting the same block id again at the same height is idempotent (it may upgrade a
//!   non-final block to final, or replace a non-final block's header, e.g. with one carrying
//!   the commit certificate); the transactions must be the same.
//! - A different block at a height whose block is **final** is refused
//!   ([`StoreError::Conflict`]); a different block at a height whose block is not final
//!   replaces it (the node's candidate changed before finality).
//! - [`Store::tip`] is the highest final block.

mod error;
mod schema;

use std::borrow::ToOwned;
use std::format;
use std::path::{Path, PathBuf};
use std::vec::Vec;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

pub use error::StoreError;
use error::sql;

/// A 32-byte id (block id or transaction id); the same type as `poe::wire::Hash`.
type Id = [u8; 32];

/// A block as stored: its id, encoded header, finality and transactions in block order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlock {
    /// Height of the block.
    pub height: u64,
    /// The block id (`BlockHeader::block_id`).
    pub block_id: [u8; 32],
    /// The encoded header, as last put.
    pub header: Vec<u8>,
    /// Whether the block is final (has a commit certificate).
    pub is_final: bool,
    /// `(id, encoding)` of each transaction, in block order.
    pub txs: Vec<([u8; 32], Vec<u8>)>,
}

/// What [`Store::put_block`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// No block was stored at the height; the block was written.
    Inserted,
    /// The same block was stored; nothing changed.
    Unchanged,
    /// The same block was stored, not final: its header or finality was updated.
    Updated,
    /// A different, non-final block was stored at the height; it and its transactions were
    /// replaced.
    Replaced,
}

/// Sizes of the store, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Blocks stored (final or not).
    pub blocks: u64,
    /// Final blocks stored.
    pub final_blocks: u64,
    /// Transactions stored.
    pub txs: u64,
    /// Size of the main database file (page count × page size), in bytes.
    pub db_bytes: u64,
    /// Size of the write-ahead log file, in bytes (0 when there is none).
    pub wal_bytes: u64,
}

/// The node's block store (see the [module docs](self)).
///
/// One `Store` is one SQLite connection; it is `Send` but not `Sync`. Several processes may
/// open the same file (SQLite locks it), though a node normally has one writer.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store at `path`: sets WAL mode, `synchronous = FULL` and
    /// `foreign_keys = ON`, checks that the file is a POE store and applies pending schema
    /// migrations.
    ///
    /// Errors: [`StoreError::Corrupt`] when the file is not a database or is damaged,
    /// [`StoreError::NotAStore`] for another application's SQLite file,
    /// [`StoreError::UnsupportedVersion`] for a newer schema, [`StoreError::NoWal`] when WAL
    /// cannot be enabled, [`StoreError::Sqlite`] for I/O errors.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_owned();
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open"))?;
        sqlite_durable::configure(&conn, true)?;
        schema::migrate(&mut conn)?;
        Ok(Store { conn, path })
    }

    /// The path the store was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file (after migrations, the latest this code knows).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema::version(&self.conn)
    }

    /// Puts a block: its header and all of `txs` (`(id, encoding)` in block order) in one
    /// transaction, durable when this returns `Ok` (see the [module docs](self) for the
    /// rules on re-puts and conflicts).
    ///
    /// Errors: [`StoreError::Conflict`] when a different block is final at `height`;
    /// [`StoreError::TxMismatch`] when the same block id comes with other transactions;
    /// [`StoreError::BlockIdElsewhere`] / [`StoreError::TxElsewhere`] when the block id or a
    /// transaction id is already stored at another height (or twice in `txs`);
    /// [`StoreError::OutOfRange`] for `height > i64::MAX` or more than `u32::MAX`
    /// transactions. On error nothing is written.
    pub fn put_block(
        &mut self,
        height: u64,
        block_id: &[u8; 32],
        header_bytes: &[u8],
        txs: &[([u8; 32], Vec<u8>)],
        is_final: bool,
    ) -> Result<PutOutcome, StoreError> {
        let h = sql_height(height)?;
        if u32::try_from(txs.len()).is_err() {
            return Err(StoreError::OutOfRange {
                what: "transaction count",
                value: txs.len() as u64,
            });
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("put_block: begin"))?;
        let existing = tx
            .prepare_cached("SELECT block_id, final, header FROM blocks WHERE height = ?1")
            .and_then(|mut st| {
                st.query_row([h], |r| {
                    Ok((
                        id_col(r, 0, "put_block"),
                        final_col(r, 1, "put_block"),
                        r.get::<_, Vec<u8>>(2),
                    ))
                })
                .optional()
            })
            .map_err(sql("put_block: read block"))?;
        let outcome = match existing {
            None => {
                insert_block(&tx, height, block_id, header_bytes, txs, is_final)?;
                PutOutcome::Inserted
            }
            Some((stored_id, stored_final, stored_header)) => {
                let stored_id = stored_id?;
                let stored_final = stored_final?;
                let stored_header = stored_header.map_err(sql("put_block: read header"))?;
                if stored_id == *block_id {
                    same_txs(&tx, height, txs)?;
                    if stored_final || (stored_header == header_bytes && !is_final) {
                        PutOutcome::Unchanged
                    } else {
                        tx.prepare_cached(
                            "UPDATE blocks SET header = ?2, final = ?3 WHERE height = ?1",
                        )
                        .and_then(|mut st| st.execute(params![h, header_bytes, is_final]))
                        .map_err(sql("put_block: update block"))?;
                        PutOutcome::Updated
                    }
                } else if stored_final {
                    return Err(StoreError::Conflict {
                        height,
                        existing: stored_id,
                        new: *block_id,
                    });
                } else {
                    // ON DELETE CASCADE removes the old block's transactions.
                    tx.prepare_cached("DELETE FROM blocks WHERE height = ?1")
                        .and_then(|mut st| st.execute([h]))
                        .map_err(sql("put_block: delete replaced block"))?;
                    insert_block(&tx, height, block_id, header_bytes, txs, is_final)?;
                    PutOutcome::Replaced
                }
            }
        };
        tx.commit().map_err(sql("put_block: commit"))?;
        Ok(outcome)
    }

    /// Marks the block at `height` final (durable when this returns `Ok`); idempotent. To keep
    /// the header that carries the commit certificate, put the block again with that header
    /// and `is_final = true` instead.
    ///
    /// Errors: [`StoreError::NotFound`] when no block is stored at `height`.
    pub fn mark_final(&mut self, height: u64) -> Result<(), StoreError> {
        let h = sql_height(height)?;
        let changed = self
            .conn
            .prepare_cached("UPDATE blocks SET final = 1 WHERE height = ?1")
            .and_then(|mut st| st.execute([h]))
            .map_err(sql("mark_final"))?;
        if changed == 0 {
            return Err(StoreError::NotFound { height });
        }
        Ok(())
    }

    /// The block at `height` with its transactions, if stored.
    pub fn block_by_height(&self, height: u64) -> Result<Option<StoredBlock>, StoreError> {
        let Ok(h) = sql_height(height) else {
            return Ok(None);
        };
        self.read_block(
            "SELECT height, block_id, header, final FROM blocks WHERE height = ?1",
            h,
        )
    }

    /// The block with id `block_id` with its transactions, if stored.
    pub fn block_by_id(&self, block_id: &[u8; 32]) -> Result<Option<StoredBlock>, StoreError> {
        self.read_block(
            "SELECT height, block_id, header, final FROM blocks WHERE block_id = ?1",
            &block_id[..],
        )
    }

    /// The encoded header of the block at `height`, if stored.
    pub fn header_by_height(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Ok(h) = sql_height(height) else {
            return Ok(None);
        };
        self.conn
            .prepare_cached("SELECT header FROM blocks WHERE height = ?1")
            .and_then(|mut st| st.query_row([h], |r| r.get(0)).optional())
            .map_err(sql("header_by_height"))
    }

    /// The transaction with id `id`, if stored: `(encoding, block height, index in block)`.
    pub fn tx(&self, id: &[u8; 32]) -> Result<Option<(Vec<u8>, u64, u32)>, StoreError> {
        const OP: &str = "tx";
        let row = self
            .conn
            .prepare_cached("SELECT body, height, idx FROM txs WHERE id = ?1")
            .and_then(|mut st| {
                st.query_row([&id[..]], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0),
                        height_col(r, 1, OP),
                        idx_col(r, 2, OP),
                    ))
                })
                .optional()
            })
            .map_err(sql(OP))?;
        match row {
            None => Ok(None),
            Some((body, height, idx)) => Ok(Some((body.map_err(sql(OP))?, height?, idx?))),
        }
    }

    /// The highest final block: `(height, block_id)`, or `None` when no block is final.
    pub fn tip(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        const OP: &str = "tip";
        let row = self
            .conn
            .prepare_cached(
                "SELECT height, block_id FROM blocks WHERE final = 1 \
                 ORDER BY height DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([], |r| Ok((height_col(r, 0, OP), id_col(r, 1, OP))))
                    .optional()
            })
            .map_err(sql(OP))?;
        match row {
            None => Ok(None),
            Some((height, id)) => Ok(Some((height?, id?))),
        }
    }

    /// Sets `key` to `value` in the key-value table (durable when this returns `Ok`).
    pub fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut st| st.execute(params![key, value]))
            .map_err(sql("put_meta"))?;
        Ok(())
    }

    /// The value of `key` in the key-value table, if set.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .map_err(sql("meta"))
    }

    /// Removes `key` from the key-value table; returns whether it was set.
    pub fn delete_meta(&mut self, key: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM meta WHERE key = ?1")
            .and_then(|mut st| st.execute([key]))
            .map_err(sql("delete_meta"))?;
        Ok(n > 0)
    }

    /// Counts and sizes for metrics. Counting is linear in the number of rows (SQLite keeps no
    /// row counts): call it at metrics intervals, not per block.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        const OP: &str = "stats";
        let count = |q: &str| -> Result<u64, StoreError> {
            let n: i64 = self.conn.query_row(q, [], |r| r.get(0)).map_err(sql(OP))?;
            u64::try_from(n).map_err(|_| StoreError::corrupt(OP, format!("count {n}")))
        };
        let blocks = count("SELECT count(*) FROM blocks")?;
        let final_blocks = count("SELECT count(*) FROM blocks WHERE final = 1")?;
        let txs = count("SELECT count(*) FROM txs")?;
        let page_count = count("PRAGMA page_count")?;
        let page_size = count("PRAGMA page_size")?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        Ok(StoreStats {
            blocks,
            final_blocks,
            txs,
            db_bytes: page_count.saturating_mul(page_size),
            wal_bytes,
        })
    }

    /// Scans the whole file (`PRAGMA integrity_check` and `foreign_key_check`): `Ok` when it
    /// is sound, [`StoreError::Corrupt`] with SQLite's findings otherwise. Linear in the file
    /// size; for start-up checks and tools, not the hot path.
    pub fn check(&self) -> Result<(), StoreError> {
        const OP: &str = "check";
        sqlite_durable::integrity_check(&self.conn)?;
        let orphans: i64 = self
            .conn
            .prepare("PRAGMA foreign_key_check")
            .and_then(|mut st| {
                let mut rows = st.query([])?;
                let mut n = 0i64;
                while rows.next()?.is_some() {
                    n += 1;
                }
                Ok(n)
            })
            .map_err(sql(OP))?;
        if orphans != 0 {
            return Err(StoreError::corrupt(
                OP,
                format!("{orphans} transaction row(s) without their block"),
            ));
        }
        Ok(())
    }

    /// Reads one block row selected by `query` (one parameter) and its transactions.
    fn read_block(
        &self,
        query: &str,
        param: impl rusqlite::ToSql,
    ) -> Result<Option<StoredBlock>, StoreError> {
        const OP: &str = "read block";
        let row = self
            .conn
            .prepare_cached(query)
            .and_then(|mut st| {
                st.query_row([param], |r| {
                    Ok((
                        height_col(r, 0, OP),
                        id_col(r, 1, OP),
                        r.get::<_, Vec<u8>>(2),
                        final_col(r, 3, OP),
                    ))
                })
                .optional()
            })
            .map_err(sql(OP))?;
        let Some((height, block_id, header, is_final)) = row else {
            return Ok(None);
        };
        let height = height?;
        let txs = read_txs(&self.conn, height)?;
        Ok(Some(StoredBlock {
            height,
            block_id: block_id?,
            header: header.map_err(sql(OP))?,
            is_final: is_final?,
            txs,
        }))
    }
}

/// Inserts a block row and its transactions (inside the caller's transaction).
fn insert_block(
    conn: &Connection,
    height: u64,
    block_id: &Id,
    header: &[u8],
    txs: &[(Id, Vec<u8>)],
    is_final: bool,
) -> Result<(), StoreError> {
    let h = sql_height(height)?;
    let elsewhere = conn
        .prepare_cached("SELECT height FROM blocks WHERE block_id = ?1")
        .and_then(|mut st| {
            st.query_row([&block_id[..]], |r| Ok(height_col(r, 0, "put_block")))
                .optional()
        })
        .map_err(sql("put_block: look up block id"))?;
    if let Some(stored_height) = elsewhere {
        return Err(StoreError::BlockIdElsewhere {
            block_id: *block_id,
            stored_height: stored_height?,
            height,
        });
    }
    conn.prepare_cached(
        "INSERT INTO blocks (height, block_id, header, final) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut st| st.execute(params![h, &block_id[..], header, is_final]))
    .map_err(sql("put_block: insert block"))?;
    let mut insert = conn
        .prepare_cached("INSERT INTO txs (id, height, idx, body) VALUES (?1, ?2, ?3, ?4)")
        .map_err(sql("put_block: prepare tx insert"))?;
    for (idx, (id, body)) in txs.iter().enumerate() {
        // `idx < txs.len() <= u32::MAX`, checked by the caller.
        let idx = idx as i64;
        match insert.execute(params![&id[..], h, idx, body]) {
            Ok(_) => {}
            Err(e) if is_constraint(&e) => {
                let stored_height = conn
                    .prepare_cached("SELECT height FROM txs WHERE id = ?1")
                    .and_then(|mut st| {
                        st.query_row([&id[..]], |r| Ok(height_col(r, 0, "put_block")))
                            .optional()
                    })
                    .map_err(sql("put_block: look up tx id"))?;
                return match stored_height {
                    Some(stored_height) => Err(StoreError::TxElsewhere {
                        id: *id,
                        stored_height: stored_height?,
                        height,
                    }),
                    None => Err(StoreError::sqlite("put_block: insert tx", e)),
                };
            }
            Err(e) => return Err(StoreError::sqlite("put_block: insert tx", e)),
        }
    }
    Ok(())
}

/// Checks that the stored transactions at `height` are exactly `txs`.
fn same_txs(conn: &Connection, height: u64, txs: &[(Id, Vec<u8>)]) -> Result<(), StoreError> {
    let stored = read_txs(conn, height)?;
    if stored.len() != txs.len() {
        return Err(StoreError::TxMismatch {
            height,
            reason: format!("{} stored, {} given", stored.len(), txs.len()),
        });
    }
    for (i, (a, b)) in stored.iter().zip(txs).enumerate() {
        if a.0 != b.0 || a.1 != b.1 {
            return Err(StoreError::TxMismatch {
                height,
                reason: format!("transaction {i} differs"),
            });
        }
    }
    Ok(())
}

/// The transactions of the block at `height`, in block order; checks that the indices are
/// exactly `0..n` (a gap means a damaged file).
fn read_txs(conn: &Connection, height: u64) -> Result<Vec<(Id, Vec<u8>)>, StoreError> {
    const OP: &str = "read txs";
    let h = sql_height(height)?;
    let mut st = conn
        .prepare_cached("SELECT idx, id, body FROM txs WHERE height = ?1 ORDER BY idx")
        .map_err(sql(OP))?;
    let mut rows = st.query([h]).map_err(sql(OP))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql(OP))? {
        let idx = idx_col(r, 0, OP)?;
        if u64::from(idx) != out.len() as u64 {
            return Err(StoreError::corrupt(
                OP,
                format!(
                    "block at height {height}: transaction index {idx} where {} was expected",
                    out.len()
                ),
            ));
        }
        let id = id_col(r, 1, OP)?;
        let body: Vec<u8> = r.get(2).map_err(sql(OP))?;
        out.push((id, body));
    }
    Ok(out)
}

/// Heights are stored as SQLite integers (signed 64-bit).
fn sql_height(height: u64) -> Result<i64, StoreError> {
    i64::try_from(height).map_err(|_| StoreError::OutOfRange {
        what: "height",
        value: height,
    })
}

/// Whether `e` is a constraint violation (unique or primary key).
fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// Reads a 32-byte blob column; anything else is corruption.
fn id_col(r: &Row<'_>, i: usize, op: &'static str) -> Result<Id, StoreError> {
    match r.get_ref(i).map_err(sql(op))? {
        ValueRef::Blob(b) => <Id>::try_from(b)
            .map_err(|_| StoreError::corrupt(op, format!("id of {} bytes", b.len()))),
        other => Err(StoreError::corrupt(
            op,
            format!("id of type {}", other.data_type()),
        )),
    }
}

/// Reads a non-negative integer column as a height.
fn height_col(r: &Row<'_>, i: usize, op: &'static str) -> Result<u64, StoreError> {
    let v = int_col(r, i, op)?;
    u64::try_from(v).map_err(|_| StoreError::corrupt(op, format!("height {v}")))
}

/// Reads a transaction index column.
fn idx_col(r: &Row<'_>, i: usize, op: &'static str) -> Result<u32, StoreError> {
    let v = int_col(r, i, op)?;
    u32::try_from(v).map_err(|_| StoreError::corrupt(op, format!("transaction index {v}")))
}

/// Reads the `final` column (0 or 1).
fn final_col(r: &Row<'_>, i: usize, op: &'static str) -> Result<bool, StoreError> {
    match int_col(r, i, op)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(StoreError::corrupt(op, format!("final flag {v}"))),
    }
}

/// Reads an integer column; anything else is corruption.
fn int_col(r: &Row<'_>, i: usize, op: &'static str) -> Result<i64, StoreError> {
    match r.get_ref(i).map_err(sql(op))? {
        ValueRef::Integer(v) => Ok(v),
        other => Err(StoreError::corrupt(
            op,
            format!("integer column of type {}", other.data_type()),
        )),
    }
}
