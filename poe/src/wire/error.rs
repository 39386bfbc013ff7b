//! Why a decode failed ([`WireError`]).

/// A decoding error: the input is not the canonical encoding of the requested type.
///
/// Field and message names are the Rust names (`"Transaction.nonce"`, `"Block"`), so an error
/// says where in the input decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ends before `field` is complete (or a length prefix or count claims more bytes
    /// than are left).
    #[error("truncated at {field}: needs {needed} bytes, {remaining} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs (for a count, the least its items can take).
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A length prefix or item count is above the limit of docs/POE.md.
    #[error("{field} has length {len}, above the limit of {max}")]
    TooLong {
        /// The byte string or list.
        field: &'static str,
        /// The length (bytes or items) in the prefix.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// An enum or `Option` tag with no meaning.
    #[error("unknown tag {tag} for {field}")]
    BadTag {
        /// The enum (or optional field).
        field: &'static str,
        /// The tag byte read.
        tag: u8,
    },
    /// A top-level message with a version other than [`super::codec::VERSION`].
    #[error(
        "unsupported version {version} of {message} (expected {})",
        super::codec::VERSION
    )]
    BadVersion {
        /// The message type.
        message: &'static str,
        /// The version byte read.
        version: u8,
    },
    /// Bytes left after a complete value (decoding takes the whole buffer).
    #[error("{count} trailing bytes after {message}")]
    TrailingBytes {
        /// The decoded type.
        message: &'static str,
        /// How many bytes follow it.
        count: usize,
    },
    /// A list that must be strictly increasing (certificate voters) is not.
    #[error("{field} not strictly increasing at index {index}")]
    Unordered {
        /// The list.
        field: &'static str,
        /// Index of the first item not greater than its predecessor.
        index: usize,
    },
}

/// Why votes cannot be aggregated into a [`super::types::Certificate`]
/// ([`super::types::Certificate::from_votes`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// No votes were given (a certificate's phase, height, round and block come from them).
    #[error("no votes to aggregate")]
    Empty,
    /// More votes than a certificate may hold.
    #[error("{count} votes, above the limit of {max}")]
    TooMany {
        /// Votes given.
        count: usize,
        /// [`super::codec::MAX_VOTES`].
        max: u32,
    },
    /// A vote for another (phase, height, round, block) than the first vote.
    #[error("vote {index} is for another phase, height, round or block than vote 0")]
    Mismatch {
        /// Index of the vote in the input.
        index: usize,
    },
    /// Two votes by one voter.
    #[error("vote {index} is by a voter who already voted")]
    DuplicateVoter {
        /// Index of the later vote in the input.
        index: usize,
    },
}
