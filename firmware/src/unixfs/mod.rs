//! UnixFS v1 files, byte-compatible with `ipfs add --cid-version=1` (kubo / boxo defaults).
//!
//! * [`importer`]: fixed 256 KiB chunks, raw leaves, balanced DAG with at most 174 links/node.
//! * [`reader`]: rebuilds a file from its root CID, verifying every block against its CID.
//! * [`dagpb`]: the dag-pb and UnixFS `Data` protobuf codecs.
//!
//! Specs: UnixFS <https://github.com/ipfs/specs/blob/main/UNIXFS.md>, dag-pb
//! <https://ipld.io/specs/codecs/dag-pb/spec/>, CID <https://github.com/multiformats/cid>.

pub mod dagpb;
pub mod importer;
pub mod reader;

use std::collections::HashMap;

use cid::Cid;
use cid::multihash::Multihash;
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use importer::{ImportError, Importer, ImporterConfig, LeafFormat, import};
pub use reader::{ExportError, export, export_to_vec};

/// Multicodec `raw` (0x55): a block that is just bytes.
pub const RAW_CODEC: u64 = 0x55;
/// Multicodec `dag-pb` (0x70).
pub const DAG_PB_CODEC: u64 = 0x70;
/// Multihash code of sha2-256 (0x12).
pub const SHA2_256: u64 = 0x12;

/// A block's bytes do not match the multihash in its CID, or the hash function is unsupported.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The CID names a hash function other than sha2-256.
    #[error("unsupported multihash code {0:#x}")]
    UnsupportedHash(u64),
    /// The bytes hash to a different digest.
    #[error("block does not match its CID")]
    Mismatch,
}

/// CIDv1 of `data` under `codec` with a sha2-256 multihash.
pub fn cid_v1(codec: u64, data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    // A 32-byte digest always fits the 64-byte multihash buffer, so `wrap` cannot fail here;
    // fall back to the default (empty identity) multihash rather than panic.
    let mh = Multihash::<64>::wrap(SHA2_256, &digest).unwrap_or_default();
    Cid::new_v1(codec, mh)
}

/// Checks that `data` hashes to the multihash in `cid` (sha2-256 only).
pub fn verify_block(cid: &Cid, data: &[u8]) -> Result<(), VerifyError> {
    let mh = cid.hash();
    if mh.code() != SHA2_256 {
        return Err(VerifyError::UnsupportedHash(mh.code()));
    }
    if mh.digest() == Sha256::digest(data).as_slice() {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Where imported blocks go.
pub trait BlockSink {
    /// Stores one block; `cid` was computed from `data`.
    fn put_block(&mut self, cid: &Cid, data: &[u8]) -> std::io::Result<()>;
}

impl<F: FnMut(&Cid, &[u8]) -> std::io::Result<()>> BlockSink for F {
    fn put_block(&mut self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        self(cid, data)
    }
}

/// Where the reader fetches blocks from.
pub trait BlockSource {
    /// The block named `cid`, if present (it is verified by the caller, not trusted).
    fn get(&self, cid: &Cid) -> Option<Vec<u8>>;

    /// Whether the block is present (without reading it, where the source can).
    fn has(&self, cid: &Cid) -> bool {
        self.get(cid).is_some()
    }
}

/// An in-memory block map, both a [`BlockSink`] and a [`BlockSource`] (tests, small images).
#[derive(Debug, Clone, Default)]
pub struct MemoryBlocks {
    /// The blocks, keyed by CID.
    pub blocks: HashMap<Cid, Vec<u8>>,
    /// CIDs in the order they were first put (the import order, children before parents).
    pub order: Vec<Cid>,
}

impl BlockSink for MemoryBlocks {
    fn put_block(&mut self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        if !self.blocks.contains_key(cid) {
            self.order.push(*cid);
            self.blocks.insert(*cid, data.to_vec());
        }
        Ok(())
    }
}

impl BlockSource for MemoryBlocks {
    fn get(&self, cid: &Cid) -> Option<Vec<u8>> {
        self.blocks.get(cid).cloned()
    }

    fn has(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }
}
