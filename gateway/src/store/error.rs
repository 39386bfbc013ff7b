//! The store's typed errors.

/// What went wrong in a [`super::Store`] operation.
///
/// Every variant says which operation failed and why. A damaged file gives
/// [`StoreError::Corrupt`], a full disk [`StoreError::DiskFull`], a full queue
/// [`StoreError::QueueFull`]; none of them panics, and a failed call writes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The queue holds as many readings or bytes as its [`super::Limits`] allow: the whole
    /// `append` call was refused (nothing of it was written) and counted in
    /// [`super::QueueStats::full_rejections`]. The caller keeps the readings or drops them
    /// knowingly; the store never drops them silently.
    #[error(
        "store: queue full: {queued} readings / {bytes} bytes queued, {incoming} readings / \
         {incoming_bytes} bytes refused (limits {max_readings} readings / {max_bytes} bytes)"
    )]
    QueueFull {
        /// Readings queued (unsent and in flight).
        queued: u64,
        /// Bytes queued.
        bytes: u64,
        /// Readings of the refused call (after de-duplication).
        incoming: u64,
        /// Bytes of the refused call.
        incoming_bytes: u64,
        /// The reading limit.
        max_readings: u64,
        /// The byte limit.
        max_bytes: u64,
    },
    /// The disk (or the file-size limit) is full: the transaction was rolled back.
    #[error("store: {op}: disk full: {source}")]
    DiskFull {
        /// The operation that failed.
        op: &'static str,
        /// The error from SQLite (`SQLITE_FULL`).
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite reported another error that is not corruption (I/O, locking, ...).
    #[error("store: {op}: {source}")]
    Sqlite {
        /// The operation that failed, e.g. `"append: insert reading"`.
        op: &'static str,
        /// The error from SQLite.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not a database, its pages are damaged, or a row holds a value the schema
    /// forbids.
    #[error("store: corrupt database ({op}): {reason}")]
    Corrupt {
        /// The operation that found the damage.
        op: &'static str,
        /// What was found.
        reason: String,
    },
    /// The file is an SQLite database but not a gateway store.
    #[error("store: not a gateway store: {reason}")]
    NotAStore {
        /// Why the file was rejected.
        reason: String,
    },
    /// The file was written by a newer version of the store.
    #[error("store: schema version {found} is newer than the supported version {supported}")]
    UnsupportedVersion {
        /// Version found in the file.
        found: i64,
        /// Highest version this code can read and write.
        supported: i64,
    },
    /// The database could not be put in write-ahead-log mode.
    #[error("store: journal mode is {mode:?}, expected \"wal\"")]
    NoWal {
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// SQLite did not apply a setting the store's guarantees rest on.
    #[error("store: PRAGMA {name} is {found} after setting it")]
    Pragma {
        /// The pragma.
        name: &'static str,
        /// The value SQLite reports.
        found: i64,
    },
    /// A reading cannot be stored: a field does not fit the encoding (a quantity, unit or
    /// data-rate string over 65535 bytes, a time over `i64::MAX`).
    #[error("store: reading {index} of the call is invalid: {reason}")]
    InvalidReading {
        /// Index of the reading in the `append` call.
        index: usize,
        /// What does not fit.
        reason: String,
    },
    /// `confirm` was given a batch id that is not in flight (already confirmed, never made,
    /// or requeued and not yet handed out again).
    #[error("store: batch {batch_id} is not in flight")]
    UnknownBatch {
        /// The batch id.
        batch_id: u64,
    },
    /// The limits are unusable (a zero limit, a zero batch size).
    #[error("store: invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// Wraps an SQLite error: damage (`SQLITE_CORRUPT`, `SQLITE_NOTADB`, a column of the
    /// wrong type) becomes [`StoreError::Corrupt`], `SQLITE_FULL` [`StoreError::DiskFull`].
    pub(crate) fn sqlite(op: &'static str, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &source {
            rusqlite::Error::SqliteFailure(e, _)
                if matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
            {
                StoreError::Corrupt {
                    op,
                    reason: source.to_string(),
                }
            }
            rusqlite::Error::SqliteFailure(e, _) if e.code == ErrorCode::DiskFull => {
                StoreError::DiskFull { op, source }
            }
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt {
                op,
                reason: source.to_string(),
            },
            _ => StoreError::Sqlite { op, source },
        }
    }

    /// A [`StoreError::Corrupt`] for a row that breaks the schema's invariants.
    pub(crate) fn corrupt(op: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            op,
            reason: reason.into(),
        }
    }

    /// Whether the error is [`StoreError::QueueFull`].
    pub fn is_queue_full(&self) -> bool {
        matches!(self, StoreError::QueueFull { .. })
    }
}

impl From<sqlite_durable::SchemaError> for StoreError {
    /// The shared set-up's errors, as this store's (SQLite's own classified as every other
    /// SQLite error of this store: damage as `Corrupt`).
    fn from(e: sqlite_durable::SchemaError) -> Self {
        use sqlite_durable::SchemaError as S;
        match e {
            S::Sqlite { op, source } => StoreError::sqlite(op, source),
            S::Corrupt { op, reason } => StoreError::Corrupt { op, reason },
            S::NotAStore { reason, .. } => StoreError::NotAStore { reason },
            S::UnsupportedVersion { found, supported } => {
                StoreError::UnsupportedVersion { found, supported }
            }
            S::NoWal { mode } => StoreError::NoWal { mode },
            S::Pragma { name, found } => StoreError::Pragma { name, found },
        }
    }
}

/// `map_err` helper: `.map_err(sql("op"))`.
pub(crate) fn sql(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::sqlite(op, e)
}
