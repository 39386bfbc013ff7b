//! The schema and its migrations.
//!
//! The file carries `PRAGMA application_id` = "MGW1" and a one-row `schema_version` table.
//! [`MIGRATIONS`]`[i]` takes the schema from version `i` to `i + 1`; opening a file applies the
//! missing ones in one transaction, so a crash mid-migration leaves the old version intact. A
//! later change appends a migration and never edits an existing one.
//!
//! Tables (version 1):
//! - `readings`: the queue. `seq` is `AUTOINCREMENT`, so a sequence number is never reused,
//!   even after the readings it numbered were confirmed and deleted. Values are stored as their
//!   IEEE-754 bits (`value_bits`, `snr_bits`) so every `f64`/`f32` (NaN, -0.0) survives exactly.
//! - `batches`: batches handed to the uplink and not yet confirmed, each a range of `seq`.
//!   Readings above the highest `last_seq` are unsent; batches never overlap.
//! - `dedup`: the de-duplication window, one row per (source, device, frame id, quantity,
//!   value).
//! - `devices`: last seen time per device (bounded), for the status.
//! - `counters`: totals since the store was created (appended, duplicates, ...).

use rusqlite::Connection;
use sqlite_durable::Schema;

use super::error::StoreError;

/// `PRAGMA application_id` of a gateway store: "MGW1" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x4D47_5731;

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE readings (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        source     INTEGER NOT NULL CHECK (source IN (0, 1)),
        device     BLOB    NOT NULL CHECK (length(device) = 8),
        time_ms    INTEGER NOT NULL CHECK (time_ms >= 0),
        quantity   TEXT    NOT NULL,
        value_bits INTEGER NOT NULL,
        unit       TEXT    NOT NULL,
        frame_id   INTEGER CHECK (frame_id BETWEEN 0 AND 4294967295),
        rssi_dbm   INTEGER CHECK (rssi_dbm BETWEEN -32768 AND 32767),
        snr_bits   INTEGER CHECK (snr_bits BETWEEN 0 AND 4294967295),
        freq_hz    INTEGER,
        data_rate  TEXT,
        gw_eui     BLOB    CHECK (gw_eui IS NULL OR length(gw_eui) = 8),
        bytes      INTEGER NOT NULL CHECK (bytes > 0)
    );
    CREATE TABLE batches (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        first_seq INTEGER NOT NULL,
        last_seq  INTEGER NOT NULL CHECK (last_seq >= first_seq),
        readings  INTEGER NOT NULL CHECK (readings > 0),
        bytes     INTEGER NOT NULL CHECK (bytes > 0)
    );
    CREATE UNIQUE INDEX batches_by_first ON batches (first_seq);
    CREATE TABLE dedup (
        source     INTEGER NOT NULL,
        device     BLOB    NOT NULL,
        frame_id   INTEGER NOT NULL,
        quantity   TEXT    NOT NULL,
        value_bits INTEGER NOT NULL,
        seen_ms    INTEGER NOT NULL,
        PRIMARY KEY (source, device, frame_id, quantity, value_bits)
    ) WITHOUT ROWID;
    CREATE INDEX dedup_by_seen ON dedup (seen_ms);
    CREATE TABLE devices (
        source   INTEGER NOT NULL,
        device   BLOB    NOT NULL,
        last_ms  INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        readings INTEGER NOT NULL,
        PRIMARY KEY (source, device)
    ) WITHOUT ROWID;
    CREATE INDEX devices_by_last ON devices (last_ms);
    CREATE TABLE counters (
        name  TEXT    PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL CHECK (value >= 0)
    ) WITHOUT ROWID;",
];

/// The schema: application id and migrations (applied by [`sqlite_durable::Schema::migrate`]).
pub(crate) const SCHEMA: Schema = Schema {
    kind: "gateway",
    application_id: APPLICATION_ID,
    migrations: MIGRATIONS,
};

/// Checks that the file is a gateway store (or empty) and brings its schema to the latest.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    Ok(SCHEMA.migrate(conn)?)
}

/// Reads the schema version (for tests and diagnostics).
pub(crate) fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(sqlite_durable::schema_version(conn)?)
}
