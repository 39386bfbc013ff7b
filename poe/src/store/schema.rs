//! The schema and its migrations.
//!
//! The file carries `PRAGMA application_id` = "POE1" and a one-row `schema_version` table.
//! [`MIGRATIONS`]`[i]` takes the schema from version `i` to `i + 1`; opening a file applies the
//! missing ones in one transaction, so a crash mid-migration leaves the old version intact. A
//! future change appends a migration and never edits an existing one.

use std::format;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::error::{StoreError, sql};

/// `PRAGMA application_id` of a POE store: "POE1" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x504F_4531;

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // Version 1: blocks, their transactions, and a key-value table for node state.
    "CREATE TABLE blocks (
        height   INTEGER PRIMARY KEY CHECK (height >= 0),
        block_id BLOB    NOT NULL UNIQUE CHECK (length(block_id) = 32),
        header   BLOB    NOT NULL,
        final    INTEGER NOT NULL CHECK (final IN (0, 1))
    );
    CREATE INDEX blocks_final ON blocks (height) WHERE final = 1;
    CREATE TABLE txs (
        id     BLOB    PRIMARY KEY NOT NULL CHECK (length(id) = 32),
        height INTEGER NOT NULL REFERENCES blocks (height) ON DELETE CASCADE,
        idx    INTEGER NOT NULL CHECK (idx >= 0),
        body   BLOB    NOT NULL
    );
    CREATE UNIQUE INDEX txs_by_height ON txs (height, idx);
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL
    );",
];

/// The schema version this code writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Checks that the file is a POE store (or empty) and brings its schema to [`LATEST`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("open: begin migration"))?;
    let app_id: i32 = tx
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sql("open: read application_id"))?;
    let has_version_table: bool = tx
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )
        .map_err(sql("open: read schema"))?;
    let version = if app_id == 0 && !has_version_table {
        let tables: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(sql("open: read schema"))?;
        if tables != 0 {
            return Err(StoreError::NotAStore {
                reason: format!("{tables} table(s) but no application_id or schema_version"),
            });
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql("open: set application_id"))?;
        tx.execute_batch(
            "CREATE TABLE schema_version (
                one     INTEGER PRIMARY KEY CHECK (one = 1),
                version INTEGER NOT NULL
            );
            INSERT INTO schema_version (one, version) VALUES (1, 0);",
        )
        .map_err(sql("open: create schema_version"))?;
        0
    } else if app_id != APPLICATION_ID {
        return Err(StoreError::NotAStore {
            reason: format!("application_id is {app_id:#010x}, expected {APPLICATION_ID:#010x}"),
        });
    } else if !has_version_table {
        return Err(StoreError::corrupt(
            "open",
            "POE store without a schema_version table",
        ));
    } else {
        tx.query_row(
            "SELECT version FROM schema_version WHERE one = 1",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(sql("open: read schema_version"))?
        .ok_or_else(|| StoreError::corrupt("open", "schema_version has no row"))?
    };
    if version > LATEST {
        return Err(StoreError::UnsupportedVersion {
            found: version,
            supported: LATEST,
        });
    }
    let start = usize::try_from(version)
        .map_err(|_| StoreError::corrupt("open", format!("schema version {version}")))?;
    for migration in &MIGRATIONS[start..] {
        tx.execute_batch(migration)
            .map_err(sql("open: apply migration"))?;
    }
    if start < MIGRATIONS.len() {
        tx.execute(
            "UPDATE schema_version SET version = ?1 WHERE one = 1",
            [LATEST],
        )
        .map_err(sql("open: write schema_version"))?;
    }
    tx.commit().map_err(sql("open: commit migration"))
}

/// Reads the schema version (for tests and diagnostics).
pub(crate) fn version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT version FROM schema_version WHERE one = 1",
        [],
        |r| r.get(0),
    )
    .map_err(sql("schema_version"))
}
