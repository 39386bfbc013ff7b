//! Rebuilds a UnixFS file from its root CID, verifying every block against its CID.
//!
//! UNIXFS.md, "Reading a file": a `raw` block is file bytes; a dag-pb `File` (or legacy `Raw`)
//! node's bytes are its inline `Data` followed by the bytes of each link, in link order. Here each
//! link's contribution must equal its `blocksizes` entry and the node's total its `filesize`, so a
//! malformed tree is rejected rather than silently producing a different file.
//!
//! Memory: blocks are fetched and written one at a time; the walk is depth-first with at most
//! [`MAX_DEPTH`] levels, each holding one decoded node.

use std::io::Write;

use cid::Cid;
use thiserror::Error;

use super::dagpb::{DataType, DecodeError, PbNode, UnixFsData};
use super::{BlockSource, DAG_PB_CODEC, RAW_CODEC, VerifyError, verify_block};

/// Deepest tree accepted (a 174-ary tree of 256 KiB chunks exceeds any real file long before).
pub const MAX_DEPTH: usize = 32;

/// An export failure.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The block source does not have this block.
    #[error("missing block {0}")]
    Missing(Cid),
    /// The block's bytes do not match its CID.
    #[error("corrupt block {cid}: {source}")]
    Corrupt {
        /// The block's CID.
        cid: Cid,
        /// Why it does not verify.
        #[source]
        source: VerifyError,
    },
    /// The block is not valid dag-pb / UnixFS.
    #[error("malformed node {cid}: {source}")]
    Decode {
        /// The node's CID.
        cid: Cid,
        /// The decoding error.
        #[source]
        source: DecodeError,
    },
    /// The node is valid but not part of a UnixFS file, or its sizes are inconsistent.
    #[error("malformed node {cid}: {reason}")]
    Malformed {
        /// The node's CID.
        cid: Cid,
        /// What is wrong.
        reason: &'static str,
    },
    /// A CID codec other than raw or dag-pb.
    #[error("unsupported codec {codec:#x} in {cid}")]
    UnsupportedCodec {
        /// The CID.
        cid: Cid,
        /// Its codec.
        codec: u64,
    },
    /// The tree is deeper than [`MAX_DEPTH`].
    #[error("tree deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Write(#[source] std::io::Error),
}

/// Writes the file rooted at `root` to `out`; returns the number of bytes written.
pub fn export<B: BlockSource + ?Sized, W: Write>(
    source: &B,
    root: &Cid,
    out: &mut W,
) -> Result<u64, ExportError> {
    walk(source, root, out, 0)
}

/// Exports into memory (convenience for small files and tests).
pub fn export_to_vec<B: BlockSource + ?Sized>(
    source: &B,
    root: &Cid,
) -> Result<Vec<u8>, ExportError> {
    let mut out = Vec::new();
    export(source, root, &mut out)?;
    Ok(out)
}

fn walk<B: BlockSource + ?Sized, W: Write>(
    source: &B,
    cid: &Cid,
    out: &mut W,
    depth: usize,
) -> Result<u64, ExportError> {
    if depth > MAX_DEPTH {
        return Err(ExportError::TooDeep);
    }
    let block = source.get(cid).ok_or(ExportError::Missing(*cid))?;
    verify_block(cid, &block).map_err(|source| ExportError::Corrupt { cid: *cid, source })?;
    match cid.codec() {
        RAW_CODEC => {
            out.write_all(&block).map_err(ExportError::Write)?;
            Ok(block.len() as u64)
        }
        DAG_PB_CODEC => {
            let node = PbNode::decode(&block)
                .map_err(|source| ExportError::Decode { cid: *cid, source })?;
            drop(block);
            let malformed = |reason| ExportError::Malformed { cid: *cid, reason };
            let data = node
                .data
                .as_deref()
                .ok_or_else(|| malformed("dag-pb node without UnixFS Data"))?;
            let fs = UnixFsData::decode(data)
                .map_err(|source| ExportError::Decode { cid: *cid, source })?;
            if !matches!(fs.data_type, DataType::File | DataType::Raw) {
                return Err(malformed("not a UnixFS file"));
            }
            if fs.blocksizes.len() != node.links.len() {
                return Err(malformed("blocksizes and links differ in number"));
            }
            let mut written = 0u64;
            if let Some(inline) = &fs.data {
                out.write_all(inline).map_err(ExportError::Write)?;
                written = inline.len() as u64;
            }
            for (link, &expected) in node.links.iter().zip(&fs.blocksizes) {
                let n = walk(source, &link.hash, out, depth + 1)?;
                if n != expected {
                    return Err(malformed("child size differs from blocksizes"));
                }
                written = written
                    .checked_add(n)
                    .ok_or_else(|| malformed("size overflow"))?;
            }
            if fs.filesize.is_some_and(|total| total != written) {
                return Err(malformed("filesize differs from content"));
            }
            Ok(written)
        }
        codec => Err(ExportError::UnsupportedCodec { cid: *cid, codec }),
    }
}
