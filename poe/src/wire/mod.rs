//! The wire format of POE messages (docs/POE.md): plain data types in [`types`], encoding and
//! strict decoding in [`codec`] (errors in [`WireError`]), identifiers and signed bytes in
//! [`ids`].
//!
//! # Format (version 1)
//!
//! - Integers are big-endian (`i64` two's complement); `Hash`, `NodeId`, keys, signatures and
//!   other fixed-size arrays are their bytes, with no prefix.
//! - A byte string (`Vec<u8>`) is a `u32` length then the bytes; at most
//!   [`codec::MAX_BYTES`] (16 KiB).
//! - A list is a `u32` item count then the items; at most [`codec::MAX_TXS`] transactions per
//!   block, [`codec::MAX_VOTES`] votes per certificate, [`codec::MAX_READINGS`] readings per
//!   batch, [`codec::MAX_APPROVALS`] approvals per membership change.
//! - `Option`: tag 0 (`None`) or tag 1 then the value.
//! - Enums: a tag byte then the variant's fields. `Level`: 1, 2 (the level's number).
//!   `Phase`: `Prepare` 1, `Commit` 2. `TxBody`: `SensorBatch` 0, `FirmwareAnchor` 1,
//!   `Membership` 2, `Evidence` 3. `Evidence`: `DoubleVote` 0, `DoubleBlock` 1. `Message`:
//!   `Ticket` 0, `Tx` 1, `Block` 2, `Seal` 3, `Vote` 4, `Certificate` 5, `Evidence` 6,
//!   `GetBlocks` 7 (`from` u64, `count` u32 at most [`codec::MAX_GET_BLOCKS`]), `Repropose` 8
//!   (a [`Reproposal`]: ticket, block, certificate).
//! - Structs: their fields in declaration order. A [`BlockHeader`] is `version || height ||
//!   prev_hash || tx_root || tx_count || members_root || time_ms || ticket || clerk_sig (64 bytes) || seal
//!   (Option) || commit (Option)`; its `block_id` is the SHA-256 of the same bytes without
//!   `clerk_sig` and with both options `None` (tag 0), and `clerk_sig` is the ed25519
//!   signature of the ticket's node over `"POE1-block" || block_id`
//!   ([`BlockHeader::signing_bytes`]).
//! - The top-level messages ([`Transaction`], [`BlockHeader`], [`Block`], [`Vote`],
//!   [`Certificate`], [`Ticket`], [`Seal`], [`Evidence`], [`Reproposal`], [`Message`]) start with the version
//!   byte [`codec::VERSION`] = 1, also where they are nested in another message: a value has
//!   the same bytes wherever it appears (a block's transactions are their own encodings, the
//!   Merkle leaves of `tx_root`).
//!
//! Decoding is strict, so every value has exactly one encoding and `decode` then `encode`
//! gives back the input: the whole buffer is one value (no trailing bytes), tags and versions
//! are known, lengths are within the limits and the input, and certificate voters are strictly
//! increasing.

pub mod codec;
pub mod error;
pub mod ids;
pub mod types;

pub use codec::{Decode, Encode, Reader};
pub use error::{CertificateError, WireError};
pub use ids::{block_signing_bytes, membership_signing_bytes};
pub use types::*;
