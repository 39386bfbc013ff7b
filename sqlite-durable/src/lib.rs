//! SQLite set up for a store that acknowledges data only once it is on disk, shared by the
//! POE block store and the gateway's reading queue:
//!
//! * [`configure`]: write-ahead log and `synchronous = FULL` (a commit that returned is
//!   fsynced), both read back and checked, a busy timeout and a bound on the WAL's size;
//! * [`Schema`]: a file marked with `PRAGMA application_id` and a one-row `schema_version`
//!   table; [`Schema::migrate`] refuses another application's file and a newer schema, and
//!   applies the missing migrations in one transaction (a crash mid-migration leaves the old
//!   version intact);
//! * [`integrity_check`]: `PRAGMA integrity_check`, for start-up checks and tools.
//!
//! Errors are [`SchemaError`]s; each store maps them into its own typed error (and classifies
//! the SQLite ones its own way: damage, a full disk).

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// How long a statement waits for another connection's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// After a checkpoint, a WAL grown past this (a big block, a burst of readings) is truncated
/// back to it.
pub const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Why a store file could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// SQLite failed during `op`.
    #[error("{op}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is damaged (found by `op`).
    #[error("corrupt database ({op}): {reason}")]
    Corrupt {
        /// What found it.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file belongs to another application (or is not empty and unmarked).
    #[error("not a {kind} store: {reason}")]
    NotAStore {
        /// The store kind ([`Schema::kind`]).
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// The file's schema is newer than this code.
    #[error("schema version {found} is newer than the supported version {supported}")]
    UnsupportedVersion {
        /// The file's version.
        found: i64,
        /// The newest this code knows.
        supported: i64,
    },
    /// The write-ahead log could not be enabled.
    #[error("journal mode is {mode:?}, expected \"wal\"")]
    NoWal {
        /// The mode SQLite reports.
        mode: String,
    },
    /// A pragma read back differently from what was set.
    #[error("PRAGMA {name} is {found} after setting it")]
    Pragma {
        /// The pragma.
        name: &'static str,
        /// What it reads back as.
        found: i64,
    },
}

fn sql(op: &'static str) -> impl Fn(rusqlite::Error) -> SchemaError {
    move |source| SchemaError::Sqlite { op, source }
}

/// Sets the pragmas a durable store's guarantees rest on and checks that they took: WAL,
/// `synchronous = FULL`, with `foreign_keys` also `foreign_keys = ON`; then the busy timeout
/// and the WAL size limit.
pub fn configure(conn: &Connection, foreign_keys: bool) -> Result<(), SchemaError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("open: busy_timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sql("open: journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SchemaError::NoWal { mode });
    }
    let mut wanted = vec![("synchronous", 2i64)]; // 2 = FULL
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql("open: synchronous"))?;
    if foreign_keys {
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql("open: foreign_keys"))?;
        wanted.push(("foreign_keys", 1));
    }
    for (name, want) in wanted {
        let found: i64 = conn
            .pragma_query_value(None, name, |r| r.get(0))
            .map_err(sql("open: read pragma"))?;
        if found != want {
            return Err(SchemaError::Pragma { name, found });
        }
    }
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(sql("open: journal_size_limit"))
}

/// A store's schema: its application id and migrations.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// The store kind, for messages ("POE", "gateway").
    pub kind: &'static str,
    /// `PRAGMA application_id` of its files.
    pub application_id: i32,
    /// Migration `i` takes the schema from version `i` to `i + 1`. A change appends one and
    /// never edits an existing one.
    pub migrations: &'static [&'static str],
}

impl Schema {
    /// The version this code writes.
    pub fn latest(&self) -> i64 {
        self.migrations.len() as i64
    }

    /// Checks that the file is this store's (or empty) and brings its schema to
    /// [`Schema::latest`], in one immediate transaction.
    pub fn migrate(&self, conn: &mut Connection) -> Result<(), SchemaError> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("open: begin migration"))?;
        let app_id: i32 = tx
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(sql("open: read application_id"))?;
        let count_tables = |filter: &str| -> Result<i64, SchemaError> {
            tx.query_row(
                &format!("SELECT count(*) FROM sqlite_schema WHERE type = 'table' {filter}"),
                [],
                |r| r.get(0),
            )
            .map_err(sql("open: read schema"))
        };
        let not_a_store = |reason: String| SchemaError::NotAStore {
            kind: self.kind,
            reason,
        };
        let has_version_table = count_tables("AND name = 'schema_version'")? > 0;
        let version = if app_id == 0 && !has_version_table {
            let tables = count_tables("")?;
            if tables != 0 {
                return Err(not_a_store(format!(
                    "{tables} table(s) but no application_id or schema_version"
                )));
            }
            tx.pragma_update(None, "application_id", self.application_id)
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
        } else if app_id != self.application_id {
            return Err(not_a_store(format!(
                "application_id is {app_id:#010x}, expected {:#010x}",
                self.application_id
            )));
        } else if !has_version_table {
            return Err(SchemaError::Corrupt {
                op: "open",
                reason: format!("{} store without a schema_version table", self.kind),
            });
        } else {
            tx.query_row(
                "SELECT version FROM schema_version WHERE one = 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(sql("open: read schema_version"))?
            .ok_or_else(|| SchemaError::Corrupt {
                op: "open",
                reason: "schema_version has no row".into(),
            })?
        };
        let latest = self.latest();
        if version > latest {
            return Err(SchemaError::UnsupportedVersion {
                found: version,
                supported: latest,
            });
        }
        let start = usize::try_from(version).map_err(|_| SchemaError::Corrupt {
            op: "open",
            reason: format!("schema version {version}"),
        })?;
        for migration in &self.migrations[start..] {
            tx.execute_batch(migration)
                .map_err(sql("open: apply migration"))?;
        }
        if start < self.migrations.len() {
            tx.execute(
                "UPDATE schema_version SET version = ?1 WHERE one = 1",
                [latest],
            )
            .map_err(sql("open: write schema_version"))?;
        }
        tx.commit().map_err(sql("open: commit migration"))
    }
}

/// The file's schema version (for tests and diagnostics).
pub fn schema_version(conn: &Connection) -> Result<i64, SchemaError> {
    conn.query_row(
        "SELECT version FROM schema_version WHERE one = 1",
        [],
        |r| r.get(0),
    )
    .map_err(sql("schema_version"))
}

/// `PRAGMA integrity_check` over the whole file: `Ok` when SQLite finds it sound, else
/// [`SchemaError::Corrupt`] (`op` "check") with its findings. Linear in the file size.
pub fn integrity_check(conn: &Connection) -> Result<(), SchemaError> {
    const OP: &str = "check";
    let findings: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql(OP))?;
    if findings.len() != 1 || findings[0] != "ok" {
        return Err(SchemaError::Corrupt {
            op: OP,
            reason: findings.join("; "),
        });
    }
    Ok(())
}
