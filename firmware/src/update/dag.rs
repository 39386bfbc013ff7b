//! An image's DAG: walking it, pinning it in the blockstore, exporting it as a CAR.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;

use cid::Cid;

use super::UpdateError;
use crate::blockstore::{Blockstore, BlockstoreError};
use crate::car::{CarError, CarWriter};
use crate::unixfs::dagpb::PbNode;
use crate::unixfs::reader::MAX_DEPTH;
use crate::unixfs::{BlockSource, DAG_PB_CODEC, ExportError, RAW_CODEC, verify_block};

/// A [`Blockstore`] as a [`BlockSource`]. The trait has no error channel, so a store failure
/// (I/O, or a stored block that no longer matches its CID) reads as an absent block and is kept
/// here: after a [`ExportError::Missing`], [`StoreBlocks::explain`] tells the two apart.
#[derive(Debug)]
pub struct StoreBlocks<'a> {
    store: &'a Blockstore,
    error: RefCell<Option<BlockstoreError>>,
}

impl<'a> StoreBlocks<'a> {
    /// Reads blocks from `store`.
    pub fn new(store: &'a Blockstore) -> Self {
        Self {
            store,
            error: RefCell::new(None),
        }
    }

    /// The first store error met since the last call, if any.
    pub fn take_error(&self) -> Option<BlockstoreError> {
        self.error.borrow_mut().take()
    }

    /// Turns an export failure into an [`UpdateError`], reporting a store error met while
    /// reading as [`UpdateError::Blockstore`] rather than as a missing block.
    pub fn explain(&self, source: ExportError) -> UpdateError {
        match (self.take_error(), source) {
            (Some(e), ExportError::Missing(_)) => UpdateError::Blockstore(e),
            (_, source) => UpdateError::Export(source),
        }
    }
}

impl BlockSource for StoreBlocks<'_> {
    fn get(&self, cid: &Cid) -> Option<Vec<u8>> {
        match self.store.get(cid) {
            Ok(block) => block,
            Err(e) => {
                tracing::warn!(%cid, error = %e, "blockstore read failed");
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn has(&self, cid: &Cid) -> bool {
        match self.store.has(cid) {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(%cid, error = %e, "blockstore lookup failed");
                self.error.borrow_mut().get_or_insert(e);
                false
            }
        }
    }
}

/// Visits every block of the DAG rooted at `root` once, parents before children and children in
/// link order (the order of `ipfs dag export`), each verified against its CID. Only raw and
/// dag-pb blocks are accepted, at most [`MAX_DEPTH`] levels deep. An error from `visit` stops
/// the walk as [`ExportError::Write`].
pub fn walk_dag<B: BlockSource + ?Sized>(
    source: &B,
    root: &Cid,
    visit: impl FnMut(&Cid, &[u8]) -> std::io::Result<()>,
) -> Result<(), ExportError> {
    walk(source, root, true, visit)
}

/// Whether every block of the DAG rooted at `root` is in `source`, reading and verifying only
/// its dag-pb nodes (raw leaves are checked with [`BlockSource::has`]): what to ask before
/// deciding to fetch, without reading the whole image.
pub fn is_complete<B: BlockSource + ?Sized>(source: &B, root: &Cid) -> bool {
    walk(source, root, false, |_, _| Ok(())).is_ok()
}

/// [`walk_dag`]; with `read_leaves` false, raw leaves are only checked for presence and
/// visited with empty data.
fn walk<B: BlockSource + ?Sized>(
    source: &B,
    root: &Cid,
    read_leaves: bool,
    mut visit: impl FnMut(&Cid, &[u8]) -> std::io::Result<()>,
) -> Result<(), ExportError> {
    let mut seen = HashSet::new();
    let mut stack = vec![(*root, 0usize)];
    while let Some((cid, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(ExportError::TooDeep);
        }
        if !seen.insert(cid) {
            continue;
        }
        let codec = cid.codec();
        if codec != RAW_CODEC && codec != DAG_PB_CODEC {
            return Err(ExportError::UnsupportedCodec { cid, codec });
        }
        if codec == RAW_CODEC && !read_leaves {
            if !source.has(&cid) {
                return Err(ExportError::Missing(cid));
            }
            visit(&cid, &[]).map_err(ExportError::Write)?;
            continue;
        }
        let block = source.get(&cid).ok_or(ExportError::Missing(cid))?;
        verify_block(&cid, &block).map_err(|source| ExportError::Corrupt { cid, source })?;
        visit(&cid, &block).map_err(ExportError::Write)?;
        if codec == DAG_PB_CODEC {
            let node =
                PbNode::decode(&block).map_err(|source| ExportError::Decode { cid, source })?;
            stack.extend(node.links.iter().rev().map(|l| (l.hash, depth + 1)));
        }
    }
    Ok(())
}

/// The CIDs of every block of the DAG rooted at `root`, root first (see [`walk_dag`]).
pub fn dag_blocks<B: BlockSource + ?Sized>(
    source: &B,
    root: &Cid,
) -> Result<Vec<Cid>, ExportError> {
    let mut out = Vec::new();
    walk_dag(source, root, |cid, _| {
        out.push(*cid);
        Ok(())
    })?;
    Ok(out)
}

/// Writes the DAG rooted at `root` as a CARv1 with that single root, blocks in [`walk_dag`]
/// order; returns the writer and the number of blocks.
pub fn write_dag_car<W: Write, B: BlockSource + ?Sized>(
    out: W,
    source: &B,
    root: &Cid,
) -> Result<(W, usize), ExportError> {
    let car_io = |e: CarError| match e {
        CarError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    };
    let mut car = CarWriter::new(out, std::slice::from_ref(root))
        .map_err(|e| ExportError::Write(car_io(e)))?;
    let mut blocks = 0usize;
    walk_dag(source, root, |cid, data| {
        blocks += 1;
        car.write_block(cid, data).map_err(car_io)
    })?;
    let out = car.finish().map_err(|e| ExportError::Write(car_io(e)))?;
    Ok((out, blocks))
}

/// Pins the complete image `root` in `store`: walks its DAG (every block must be present and
/// valid) and pins the blocks found. Returns how many blocks are pinned.
pub fn pin_image(store: &Blockstore, root: &Cid) -> Result<usize, UpdateError> {
    let source = StoreBlocks::new(store);
    let blocks = dag_blocks(&source, root).map_err(|e| source.explain(e))?;
    store.pin(root, &blocks)?;
    Ok(blocks.len())
}

/// What [`replace_pin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinReport {
    /// Blocks pinned under the new root.
    pub blocks_pinned: usize,
    /// Whether the previous root was pinned and is now unpinned.
    pub previous_unpinned: bool,
}

/// After a fetch of `new_root` completes: pins it ([`pin_image`]), then unpins `previous` (if
/// given and different) so that [`Blockstore::gc`] reclaims the blocks only it used. The new pin
/// is durable before the old one goes, so a crash in between keeps both.
pub fn replace_pin(
    store: &Blockstore,
    new_root: &Cid,
    previous: Option<&Cid>,
) -> Result<PinReport, UpdateError> {
    let blocks_pinned = pin_image(store, new_root)?;
    let previous_unpinned = match previous {
        Some(prev) if prev != new_root => store.unpin(prev)?,
        _ => false,
    };
    Ok(PinReport {
        blocks_pinned,
        previous_unpinned,
    })
}
