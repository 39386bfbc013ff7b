//! A block exchange in the spirit of Bitswap 1.2: fetch a UnixFS DAG from several peers in
//! parallel, verifying every block against its CID, and serve blocks to others.
//!
//! * [`message`]: the wire message (our own compact binary format, not Bitswap's protobuf).
//! * [`session`]: the sans-IO fetch [`Session`] (bytes and `now` in; bytes, events and a
//!   deadline out).
//! * [`server`]: the sans-IO [`Server`] answering peers' wants from a
//!   [`BlockSource`].
//! * [`frame`]: length-prefixed framing on a reliable stream.
//! * [`engine`]: one device's [`Engine`] (server + session + framing over per-peer streams),
//!   what a transport adapter drives.
//!
//! No sockets, threads or clocks live here: the caller moves the bytes and supplies the time.

pub mod engine;
pub mod frame;
pub mod message;
pub mod server;
pub mod session;

use cid::Cid;

use crate::blockstore::Blockstore;
use crate::unixfs::{BlockSink, BlockSource};

pub use engine::{DisconnectReason, Engine, EngineEvent, EngineStats, FetchError, PeerTraffic};
pub use frame::{Deframer, FrameError};
pub use message::{Block, Message, MessageError, Presence, PresenceKind, WantEntry, WantKind};
pub use server::{ServedStats, Server, ServerConfig};
pub use session::{
    FailReason, PeerKind, PenaltyReason, Progress, Session, SessionConfig, SessionEvent,
};

/// The mesh channel type (a reliable channel) the exchange runs on between devices.
pub const CHANNEL_KIND: &str = "fw-exchange";

/// Send buffer of an exchange channel: room for two 256 KiB blocks, so a peer's stream never
/// waits on the server while its channel drains (the mesh default, 256 KiB, holds less than
/// one block message).
pub const CHANNEL_SEND_BUFFER: usize = 512 * 1024;

/// Receive buffer (and largest window) of an exchange channel: a 50 Mbit/s downlink at 160 ms
/// of round trip.
pub const CHANNEL_RECV_BUFFER: usize = 1024 * 1024;

/// Identifies a peer to a [`Session`] or [`Server`] (the caller's connection handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl BlockSource for Blockstore {
    /// A blockstore I/O error counts as "absent" (the block is fetched again, or not served).
    fn get(&self, cid: &Cid) -> Option<Vec<u8>> {
        Blockstore::get(self, cid).ok().flatten()
    }
    fn has(&self, cid: &Cid) -> bool {
        Blockstore::has(self, cid).unwrap_or(false)
    }
}

impl BlockSink for Blockstore {
    /// Stores a block the caller has verified (the blockstore verifies it again).
    fn put_block(&mut self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        self.put(cid, data)
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}
