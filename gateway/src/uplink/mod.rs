//! Uplinks: where the store's signed batches go (the chain, a collector), and the
//! [`Forwarder`] that moves them there.
//!
//! The [`Uplink`] trait is **synchronous**: the store is a synchronous SQLite connection and
//! every forwarding step (take a batch, submit, confirm) must run in order on it, so a
//! blocking call keeps the step simple, testable without a runtime, and object safe
//! (`&mut dyn Uplink`). The daemon runs the forwarder on its own thread (or in
//! `spawn_blocking`); a network uplink blocks with a timeout, and an async client can sit
//! behind a channel.
//!
//! Delivery contract: `submit` returning `Ok` means the receiver has the batch durably. The
//! forwarder then confirms it in the store. A crash or a lost acknowledgement between the two
//! re-sends the same batch (same id, `first_seq`, `last_seq`, signature): receivers
//! de-duplicate by (gateway key, `first_seq`) — see [`crate::store`].

mod file;
mod forwarder;
mod memory;

pub use file::{FileBatch, FileUplink};
pub use forwarder::{Forwarder, ForwarderConfig, PumpOutcome, PumpState};
pub use memory::TestUplink;

use crate::store::Batch;

/// The receiver's acknowledgement of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The batch acknowledged.
    pub batch_id: u64,
    /// The receiver already had this batch (a re-send after a crash or a lost ack).
    pub duplicate: bool,
}

/// Why an uplink did not take a batch. The batch stays stored and is re-sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UplinkError {
    /// The uplink is unreachable (no network, the collector is down, a timeout).
    #[error("uplink down: {reason}")]
    Down {
        /// What happened.
        reason: String,
    },
    /// The receiver refused the batch (bad signature, unknown gateway, ...).
    #[error("uplink rejected batch {batch_id}: {reason}")]
    Rejected {
        /// The batch.
        batch_id: u64,
        /// The receiver's reason.
        reason: String,
    },
    /// A local I/O error (the file uplink).
    #[error("uplink I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A destination for signed batches.
pub trait Uplink {
    /// Delivers `batch`; `Ok` only once the receiver holds it durably. Receiving a batch
    /// already held (same gateway and `first_seq`) must succeed with `duplicate = true`.
    fn submit(&mut self, batch: &Batch) -> Result<Ack, UplinkError>;
}
