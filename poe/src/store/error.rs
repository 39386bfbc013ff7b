//! The store's typed errors.

use core::fmt;
use std::string::String;

/// What went wrong in a [`super::Store`] operation.
///
/// Every variant says which operation failed and why; a damaged database file gives
/// [`StoreError::Corrupt`] (never a panic).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error that is not corruption (I/O, locking, full disk, ...).
    #[error("store: {op}: {source}")]
    Sqlite {
        /// The operation that failed, e.g. `"put_block: insert tx"`.
        op: &'static str,
        /// The error from SQLite.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not a database, or its pages or rows are damaged, or a row holds a value
    /// the schema forbids (a block id that is not 32 bytes, a negative height, ...).
    #[error("store: corrupt database ({op}): {reason}")]
    Corrupt {
        /// The operation that found the damage.
        op: &'static str,
        /// What was found.
        reason: String,
    },
    /// The file is an SQLite database but not a POE store (another application's file).
    #[error("store: not a POE store: {reason}")]
    NotAStore {
        /// Why the file was rejected.
        reason: String,
    },
    /// The file was written by a newer version of the store (its schema version is higher
    /// than the highest migration this code knows).
    #[error("store: schema version {found} is newer than the supported version {supported}")]
    UnsupportedVersion {
        /// Version found in the file.
        found: i64,
        /// Highest version this code can read and write.
        supported: i64,
    },
    /// The database could not be put in write-ahead-log mode (needed for crash safety).
    #[error("store: journal mode is {mode:?}, expected \"wal\"")]
    NoWal {
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// SQLite did not apply a setting the store's guarantees rest on.
    #[error("store: PRAGMA {name} is {found} after setting it")]
    Pragma {
        /// The pragma (`synchronous`, `foreign_keys`).
        name: &'static str,
        /// The value SQLite reports.
        found: i64,
    },
    /// A different block is already final at this height (a safety violation upstream, or a
    /// wrong block from a peer): the store keeps the final one.
    #[error("store: conflict at height {height}: block {} is final, refused block {}",
        Hex(.existing), Hex(.new))]
    Conflict {
        /// The height.
        height: u64,
        /// The final block's id.
        existing: [u8; 32],
        /// The refused block's id.
        new: [u8; 32],
    },
    /// The block id is already stored at another height.
    #[error("store: block {} is already stored at height {stored_height}, refused at height {height}",
        Hex(.block_id))]
    BlockIdElsewhere {
        /// The block id.
        block_id: [u8; 32],
        /// Where it is stored.
        stored_height: u64,
        /// Where it was to be put.
        height: u64,
    },
    /// The same block id was put again with a different transaction list.
    #[error("store: block at height {height} was put again with different transactions ({reason})")]
    TxMismatch {
        /// The block's height.
        height: u64,
        /// The first difference found.
        reason: String,
    },
    /// A transaction id is already stored, in another block or twice in this one.
    #[error("store: transaction {} is already stored at height {stored_height} (putting height {height})",
        Hex(.id))]
    TxElsewhere {
        /// The transaction id.
        id: [u8; 32],
        /// The height of the block that holds it.
        stored_height: u64,
        /// The height of the block being put.
        height: u64,
    },
    /// No block is stored at this height.
    #[error("store: no block at height {height}")]
    NotFound {
        /// The height asked for.
        height: u64,
    },
    /// A number does not fit the store's representation (heights are SQLite integers, so at
    /// most `i64::MAX`; at most `u32::MAX` transactions per block).
    #[error("store: {what} {value} is out of range")]
    OutOfRange {
        /// What the number is.
        what: &'static str,
        /// The number.
        value: u64,
    },
}

impl StoreError {
    /// Wraps an SQLite error, classifying damage (`SQLITE_CORRUPT`, `SQLITE_NOTADB`) as
    /// [`StoreError::Corrupt`].
    pub(crate) fn sqlite(op: &'static str, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &source {
            rusqlite::Error::SqliteFailure(e, _)
                if matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
            {
                StoreError::Corrupt {
                    op,
                    reason: std::format!("{source}"),
                }
            }
            // A column of the wrong type: the schema's invariants are broken.
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..) => StoreError::Corrupt {
                op,
                reason: std::format!("{source}"),
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

/// Prints the first 8 bytes of an id in hex (enough to tell ids apart in a message).
struct Hex<'a>(&'a [u8; 32]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}
