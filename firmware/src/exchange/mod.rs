//! A block exchange in the spirit of Bitswap 1.2: fetch a UnixFS DAG from several peers in
//! parallel, verifying every block against its CID, and serve blocks to others.
//!
//! * [`message`]: the wire message (our own compact binary format, not Bitswap's protobuf).
//! * [`session`]: the sans-IO fetch [`Session`] (bytes and `now` in; bytes, events and a
//!   deadline out).
//! * [`server`]: the sans-IO [`Server`] answering peers' wants from a
//!   [`BlockSource`].
//!
//! No sockets, threads or clocks live here: the caller moves the bytes and supplies the time.

pub mod message;
pub mod server;
pub mod session;

use cid::Cid;

use crate::blockstore::Blockstore;
use crate::unixfs::{BlockSource, MemoryBlocks};

pub use message::{Block, Message, MessageError, Presence, PresenceKind, WantEntry, WantKind};
pub use server::{Server, ServerConfig};
pub use session::{FailReason, PenaltyReason, Progress, Session, SessionConfig, SessionEvent};

/// Identifies a peer to a [`Session`] or [`Server`] (the caller's connection handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// Blocks a resumed session already holds (typically the blockstore of an interrupted fetch).
pub trait HeldBlocks {
    /// Whether the block is held (raw leaves are then skipped without being read).
    fn has(&self, cid: &Cid) -> bool;
    /// The held block's bytes (needed for dag-pb nodes, to learn their children).
    fn get(&self, cid: &Cid) -> Option<Vec<u8>>;
}

impl HeldBlocks for MemoryBlocks {
    fn has(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }
    fn get(&self, cid: &Cid) -> Option<Vec<u8>> {
        BlockSource::get(self, cid)
    }
}

impl HeldBlocks for Blockstore {
    /// A blockstore I/O error counts as "not held" (the block is fetched again).
    fn has(&self, cid: &Cid) -> bool {
        Blockstore::has(self, cid).unwrap_or(false)
    }
    fn get(&self, cid: &Cid) -> Option<Vec<u8>> {
        Blockstore::get(self, cid).ok().flatten()
    }
}
