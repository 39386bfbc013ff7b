//! Blockstore errors.

use std::path::PathBuf;

use cid::Cid;

/// Why a blockstore operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockstoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CID's multihash is not sha2-256 (the only hash this store verifies).
    #[error("unsupported multihash code {code:#x} (length {len}) in {cid}")]
    UnsupportedHash {
        /// The CID.
        cid: Cid,
        /// Its multihash code.
        code: u64,
        /// Its digest length.
        len: u8,
    },
    /// The bytes offered for a CID do not hash to it; nothing was stored.
    #[error("block bytes do not hash to {0}")]
    HashMismatch(Cid),
    /// A stored block no longer hashes to its CID (or is unreadable as a block).
    #[error("stored block {cid} is corrupt: {reason}")]
    Corrupt {
        /// The block's CID.
        cid: Cid,
        /// What is wrong.
        reason: &'static str,
    },
    /// The block is larger than [`super::MAX_BLOCK_SIZE`].
    #[error("block of {0} bytes exceeds the maximum block size")]
    TooLarge(usize),
    /// A pin file is malformed.
    #[error("pin file {path} is malformed: {reason}")]
    BadPinFile {
        /// The pin file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

impl BlockstoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
