//! On-disk content-addressed blockstore with pinning and garbage collection.
//!
//! Layout under the store's root directory:
//!
//! ```text
//! blocks/<shard>/<cid>    one file per block; <cid> is the CIDv1 in base32 ("bafk…"),
//!                         <shard> its next-to-last two characters (as kubo's flatfs)
//! pins/<root cid>.pin     the blocks of one pinned image (see the `pins` format)
//! ```
//!
//! Writes are crash-safe: a block is written to a temp file in its shard directory, fsynced,
//! re-read and checked against the CID's sha2-256 digest, renamed into place, and the directory
//! fsynced — a block file is visible only complete and verified. Temp files left by a crash are
//! removed by [`Blockstore::open`]. Reads re-verify the digest and report a mismatch as
//! [`BlockstoreError::Corrupt`].
//!
//! A CIDv0 is stored under its CIDv1 (dag-pb) equivalent, so both names find the same block.
//! The store assumes a single process uses the directory at a time; [`Blockstore::gc`] frees
//! every block not pinned when it runs (pin an image before collecting).

mod error;
mod fsutil;
mod pins;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use cid::Cid;
use cid::multihash::Multihash;
use sha2::{Digest, Sha256};

pub use error::BlockstoreError;

/// Multicodec code of sha2-256, the one hash the store verifies.
pub const SHA2_256: u64 = 0x12;
/// Multicodec code of raw blocks.
pub const RAW: u64 = 0x55;
/// Multicodec code of dag-pb blocks.
pub const DAG_PB: u64 = 0x70;
/// Largest block accepted (2 MiB, the Bitswap block size limit).
pub const MAX_BLOCK_SIZE: usize = 2 << 20;

/// The CIDv1 with sha2-256 of `data` under `codec`.
pub fn cid_of(codec: u64, data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    // A 32-byte digest always fits the 64-byte multihash.
    let mh = Multihash::<64>::wrap(SHA2_256, &digest).unwrap_or_default();
    Cid::new_v1(codec, mh)
}

/// Block count and total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Number of blocks stored.
    pub blocks: u64,
    /// Sum of their sizes in bytes.
    pub bytes: u64,
}

/// What [`Blockstore::gc`] freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcReport {
    /// Blocks removed.
    pub blocks_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Blocks kept (reachable from a pin).
    pub blocks_kept: u64,
}

/// A content-addressed blockstore in a directory. A clone is another handle on the same
/// directory (what a fetch session reads held blocks through while the engine writes): opening
/// again would repeat the crash cleanup's walk over every shard.
#[derive(Debug, Clone)]
pub struct Blockstore {
    root: PathBuf,
    blocks: PathBuf,
    pins: PathBuf,
    temps_cleaned: usize,
}

/// The canonical CID (v1) and the 32-byte digest a block must hash to.
fn canonical(cid: &Cid) -> Result<(Cid, [u8; 32]), BlockstoreError> {
    let mh = cid.hash();
    let digest: [u8; 32] = match (mh.code(), <[u8; 32]>::try_from(mh.digest())) {
        (SHA2_256, Ok(d)) => d,
        _ => {
            return Err(BlockstoreError::UnsupportedHash {
                cid: *cid,
                code: mh.code(),
                len: mh.size(),
            });
        }
    };
    let v1 = match cid.version() {
        cid::Version::V0 => Cid::new_v1(DAG_PB, *mh),
        cid::Version::V1 => *cid,
    };
    Ok((v1, digest))
}

/// The file name of a canonical CID (its base32 string) and its shard.
fn key_and_shard(cid: &Cid) -> (String, String) {
    let key = cid.to_string();
    let n = key.len();
    let shard = key
        .get(n.saturating_sub(3)..n.saturating_sub(1))
        .unwrap_or("__")
        .to_owned();
    (key, shard)
}

impl Blockstore {
    /// Opens (creating if needed) the store at `root` and removes temp files left by a crash.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, BlockstoreError> {
        let root = root.as_ref().to_path_buf();
        let blocks = root.join("blocks");
        let pins = root.join("pins");
        for dir in [&root, &blocks, &pins] {
            fs::create_dir_all(dir).map_err(BlockstoreError::io("create directory", dir))?;
        }
        let mut temps_cleaned = fsutil::clean_temps(&pins)? + fsutil::clean_temps(&blocks)?;
        for shard in Self::shard_dirs(&blocks)? {
            temps_cleaned += fsutil::clean_temps(&shard)?;
        }
        if temps_cleaned > 0 {
            tracing::info!(temps_cleaned, root = %root.display(), "blockstore: removed leftover temp files");
        }
        Ok(Self {
            root,
            blocks,
            pins,
            temps_cleaned,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many leftover temp files [`Blockstore::open`] removed.
    pub fn temps_cleaned(&self) -> usize {
        self.temps_cleaned
    }

    fn shard_dirs(blocks: &Path) -> Result<Vec<PathBuf>, BlockstoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(blocks).map_err(BlockstoreError::io("read directory", blocks))? {
            let entry = entry.map_err(BlockstoreError::io("read directory", blocks))?;
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    fn block_path(&self, canonical: &Cid) -> (PathBuf, PathBuf) {
        let (key, shard) = key_and_shard(canonical);
        let dir = self.blocks.join(shard);
        (dir.join(key), dir)
    }

    /// Whether a block file for `cid` exists (not verified; see [`Blockstore::get`]).
    pub fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        let (c, _) = canonical(cid)?;
        let (path, _) = self.block_path(&c);
        path.try_exists()
            .map_err(BlockstoreError::io("stat", &path))
    }

    /// Stores `data` as the block `cid`. Refuses bytes that do not hash to `cid`
    /// ([`BlockstoreError::HashMismatch`]) without writing anything. Returns `false` if a valid
    /// copy was already stored; a corrupt stored copy is replaced.
    pub fn put(&self, cid: &Cid, data: &[u8]) -> Result<bool, BlockstoreError> {
        let (c, digest) = canonical(cid)?;
        if data.len() > MAX_BLOCK_SIZE {
            return Err(BlockstoreError::TooLarge(data.len()));
        }
        if Sha256::digest(data).as_slice() != digest {
            return Err(BlockstoreError::HashMismatch(*cid));
        }
        if matches!(self.get(&c), Ok(Some(_))) {
            return Ok(false);
        }
        let (path, dir) = self.block_path(&c);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(BlockstoreError::io("create directory", &dir))?;
            fsutil::sync_dir(&self.blocks)?;
        }
        let tmp = fsutil::write_temp(&dir, data)?;
        // Check what reached the disk, not what we meant to write.
        match Self::read_verified(&tmp, &c, &digest) {
            Ok(_) => {}
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        fsutil::commit(&tmp, &path)?;
        Ok(true)
    }

    /// Computes the CIDv1 of `data` under `codec`, stores it and returns the CID.
    pub fn put_data(&self, codec: u64, data: &[u8]) -> Result<Cid, BlockstoreError> {
        let cid = cid_of(codec, data);
        self.put(&cid, data)?;
        Ok(cid)
    }

    fn read_verified(
        path: &Path,
        cid: &Cid,
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, BlockstoreError> {
        let f = File::open(path).map_err(BlockstoreError::io("open block", path))?;
        let mut data = Vec::new();
        f.take(MAX_BLOCK_SIZE as u64 + 1)
            .read_to_end(&mut data)
            .map_err(BlockstoreError::io("read block", path))?;
        if data.len() > MAX_BLOCK_SIZE {
            return Err(BlockstoreError::Corrupt {
                cid: *cid,
                reason: "larger than the maximum block size",
            });
        }
        if Sha256::digest(&data).as_slice() != digest {
            return Err(BlockstoreError::Corrupt {
                cid: *cid,
                reason: "bytes do not hash to the CID",
            });
        }
        Ok(data)
    }

    /// The block `cid`, verified against its CID; `None` if absent. A stored block that no longer
    /// matches is [`BlockstoreError::Corrupt`].
    pub fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, BlockstoreError> {
        let (c, digest) = canonical(cid)?;
        let (path, _) = self.block_path(&c);
        match path.try_exists() {
            Ok(true) => Self::read_verified(&path, cid, &digest).map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(BlockstoreError::io("stat", &path)(e)),
        }
    }

    /// Removes the block `cid` (pins are not consulted); returns whether it existed.
    pub fn delete(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        let (c, _) = canonical(cid)?;
        let (path, dir) = self.block_path(&c);
        match fs::remove_file(&path) {
            Ok(()) => {
                fsutil::sync_dir(&dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BlockstoreError::io("remove block", &path)(e)),
        }
    }

    /// Pins the image rooted at `root` whose blocks are `blocks` (the root is always included):
    /// [`Blockstore::gc`] keeps them until [`Blockstore::unpin`]. Pinning a root again replaces
    /// its block list. The blocks need not be present yet. Persisted crash-safely.
    pub fn pin(&self, root: &Cid, blocks: &[Cid]) -> Result<(), BlockstoreError> {
        let (r, _) = canonical(root)?;
        let mut keys = Vec::with_capacity(blocks.len());
        for b in blocks {
            let (c, _) = canonical(b)?;
            if c != r {
                keys.push(c.to_string());
            }
        }
        keys.sort();
        keys.dedup();
        pins::write(&self.pins, &r.to_string(), &keys)
    }

    /// Removes the pin of `root`; returns whether it was pinned. Its blocks stay until
    /// [`Blockstore::gc`].
    pub fn unpin(&self, root: &Cid) -> Result<bool, BlockstoreError> {
        let (r, _) = canonical(root)?;
        let path = pins::path(&self.pins, &r.to_string());
        match fs::remove_file(&path) {
            Ok(()) => {
                fsutil::sync_dir(&self.pins)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BlockstoreError::io("remove pin file", &path)(e)),
        }
    }

    /// The pinned image roots.
    pub fn pinned_roots(&self) -> Result<Vec<Cid>, BlockstoreError> {
        pins::list(&self.pins)?
            .iter()
            .map(|p| pins::read(p, |_| {}))
            .collect()
    }

    /// The blocks pinned under `root` (root first), or `None` if it is not pinned.
    pub fn pinned_blocks(&self, root: &Cid) -> Result<Option<Vec<Cid>>, BlockstoreError> {
        let (r, _) = canonical(root)?;
        let path = pins::path(&self.pins, &r.to_string());
        if !path
            .try_exists()
            .map_err(BlockstoreError::io("stat", &path))?
        {
            return Ok(None);
        }
        let mut out = Vec::new();
        pins::read(&path, |c| out.push(c))?;
        Ok(Some(out))
    }

    /// Removes every block not pinned by any root. Memory: the set of pinned CIDs (about 40 bytes
    /// per pinned block) plus one directory listing at a time.
    pub fn gc(&self) -> Result<GcReport, BlockstoreError> {
        let mut live: HashSet<Cid> = HashSet::new();
        for p in pins::list(&self.pins)? {
            pins::read(&p, |c| {
                live.insert(c);
            })?;
        }
        let mut report = GcReport::default();
        for shard in Self::shard_dirs(&self.blocks)? {
            let mut removed_here = false;
            for entry in
                fs::read_dir(&shard).map_err(BlockstoreError::io("read directory", &shard))?
            {
                let entry = entry.map_err(BlockstoreError::io("read directory", &shard))?;
                let name = entry.file_name();
                let Some(cid) = name.to_str().and_then(|n| Cid::try_from(n).ok()) else {
                    continue; // not a block file (temp files are removed on open)
                };
                if live.contains(&cid) {
                    report.blocks_kept += 1;
                    continue;
                }
                let path = entry.path();
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).map_err(BlockstoreError::io("remove block", &path))?;
                removed_here = true;
                report.blocks_removed += 1;
                report.bytes_freed += len;
            }
            if removed_here {
                fsutil::sync_dir(&shard)?;
            }
        }
        tracing::debug!(?report, "blockstore gc");
        Ok(report)
    }

    /// Number and total size of the stored blocks (walks the store).
    pub fn stats(&self) -> Result<Stats, BlockstoreError> {
        let mut stats = Stats::default();
        for shard in Self::shard_dirs(&self.blocks)? {
            for entry in
                fs::read_dir(&shard).map_err(BlockstoreError::io("read directory", &shard))?
            {
                let entry = entry.map_err(BlockstoreError::io("read directory", &shard))?;
                let name = entry.file_name();
                if name.to_str().and_then(|n| Cid::try_from(n).ok()).is_none() {
                    continue;
                }
                stats.blocks += 1;
                stats.bytes += entry
                    .metadata()
                    .map_err(BlockstoreError::io("stat", entry.path()))?
                    .len();
            }
        }
        Ok(stats)
    }
}
