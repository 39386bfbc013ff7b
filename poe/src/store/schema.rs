//! The schema and its migrations.
//!
//! The file carries `PRAGMA application_id` = "POE1" and a one-row `schema_version` table.
//! [`MIGRATIONS`]`[i]` takes the schema from version `i` to `i + 1`; opening a file applies the
//! missing ones in one transaction, so a crash mid-migration leaves the old version intact. A
//! future change appends a migration and never edits an existing one.

use rusqlite::Connection;
use sqlite_durable::Schema;

use super::error::StoreError;

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

/// The schema: application id and migrations (applied by [`sqlite_durable::Schema::migrate`]).
pub(crate) const SCHEMA: Schema = Schema {
    kind: "POE",
    application_id: APPLICATION_ID,
    migrations: MIGRATIONS,
};

/// Checks that the file is a POE store (or empty) and brings its schema to the latest.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    Ok(SCHEMA.migrate(conn)?)
}

/// Reads the schema version (for tests and diagnostics).
pub(crate) fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(sqlite_durable::schema_version(conn)?)
}
