//! Streaming UnixFS file importer matching `ipfs add --cid-version=1` defaults.
//!
//! boxo defaults (`ipld/unixfs/importer/helpers`, `chunker`, `importer/balanced`):
//! * fixed-size chunker, 262,144 bytes (`chunker.DefaultBlockSize`);
//! * raw leaves (CIDv1 implies `--raw-leaves`): each chunk is a `raw` (0x55) block;
//! * `DefaultLinksPerBlock` = 174 links per internal node;
//! * balanced layout: the first leaf is the root while the file fits one chunk; each time the
//!   tree is full and more data arrives, the old root becomes the first child of a new root one
//!   level higher, whose remaining children are filled depth-first ("balanced/builder.go");
//! * internal nodes are dag-pb with UnixFS `Data { Type: File, filesize, blocksizes }` (no inline
//!   `Data`), links with `Name: ""` and `Tsize` = the child's `Size()`: raw block length, or for
//!   a dag-pb child its encoded length plus the `Tsize` of all its links (boxo `ProtoNode.Size`);
//! * the empty file is a single empty raw block (`bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku`).
//!
//! Memory is bounded: one chunk buffer plus at most 174 pending links per tree level.

use std::io::Read;

use cid::Cid;
use thiserror::Error;

use super::dagpb::{DataType, PbLink, PbNode, UnixFsData};
use super::{BlockSink, DAG_PB_CODEC, RAW_CODEC, cid_v1};

/// Chunk size of kubo's default fixed-size chunker (`size-262144`).
pub const CHUNK_SIZE: usize = 262_144;
/// Maximum links per internal node (boxo `helpers.DefaultLinksPerBlock`).
pub const MAX_LINKS: usize = 174;

/// How leaves are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeafFormat {
    /// `raw` (0x55) blocks holding the chunk bytes (`--raw-leaves`, the CIDv1 default).
    #[default]
    Raw,
    /// dag-pb blocks `PBNode { Data: UnixFS { Type: File, Data: chunk, filesize } }`
    /// (`--raw-leaves=false`, boxo `NewLeafNode`); the empty chunk omits `Data`.
    UnixFs,
}

/// Importer parameters; [`ImporterConfig::default`] is `ipfs add --cid-version=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImporterConfig {
    /// Fixed chunk size in bytes (`--chunker=size-N`); at least 1.
    pub chunk_size: usize,
    /// Links per internal node; at least 2.
    pub max_links: usize,
    /// Leaf encoding.
    pub leaves: LeafFormat,
}

impl Default for ImporterConfig {
    fn default() -> Self {
        ImporterConfig {
            chunk_size: CHUNK_SIZE,
            max_links: MAX_LINKS,
            leaves: LeafFormat::Raw,
        }
    }
}

/// An import failure.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The block sink failed.
    #[error("block sink: {0}")]
    Sink(#[source] std::io::Error),
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Read(#[source] std::io::Error),
    /// An internal invariant of the tree builder failed (a bug, reported rather than panicking).
    #[error("importer invariant violated")]
    Internal,
}

/// A link to a finished child, pending in its parent.
#[derive(Debug, Clone, Copy)]
struct Child {
    cid: Cid,
    /// File bytes below the child (its `blocksizes` entry).
    file_size: u64,
    /// The child's cumulative block size (the link `Tsize`).
    tsize: u64,
}

/// Streaming importer: feed bytes with [`Importer::write`], then call [`Importer::finish`].
#[derive(Debug)]
pub struct Importer<S: BlockSink> {
    sink: S,
    config: ImporterConfig,
    buf: Vec<u8>,
    /// `levels[i]`: finished nodes of depth `i` (leaves are depth 0) awaiting a parent.
    levels: Vec<Vec<Child>>,
}

impl<S: BlockSink> Importer<S> {
    /// A new importer emitting blocks (children before parents) into `sink`.
    pub fn new(sink: S) -> Self {
        Self::with_config(sink, ImporterConfig::default())
    }

    /// A new importer with non-default parameters (`chunk_size` and `max_links` are clamped to
    /// at least 1 and 2).
    pub fn with_config(sink: S, mut config: ImporterConfig) -> Self {
        config.chunk_size = config.chunk_size.max(1);
        config.max_links = config.max_links.max(2);
        Importer {
            sink,
            config,
            buf: Vec::with_capacity(config.chunk_size),
            levels: vec![Vec::new()],
        }
    }

    /// Feeds file bytes.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), ImportError> {
        while !data.is_empty() {
            // A full buffer is only flushed once more data arrives, so that a file of exactly
            // N chunks does not grow an extra level (boxo checks `db.Done()` first).
            if self.buf.len() >= self.config.chunk_size {
                self.flush_leaf()?;
            }
            let take = self
                .config
                .chunk_size
                .saturating_sub(self.buf.len())
                .min(data.len());
            let (head, tail) = data.split_at(take);
            self.buf.extend_from_slice(head);
            data = tail;
        }
        Ok(())
    }

    /// Emits the buffered chunk as a leaf.
    fn flush_leaf(&mut self) -> Result<(), ImportError> {
        let size = self.buf.len() as u64;
        let child = match self.config.leaves {
            LeafFormat::Raw => {
                let cid = cid_v1(RAW_CODEC, &self.buf);
                self.sink
                    .put_block(&cid, &self.buf)
                    .map_err(ImportError::Sink)?;
                Child {
                    cid,
                    file_size: size,
                    tsize: size,
                }
            }
            LeafFormat::UnixFs => {
                let data = UnixFsData {
                    data_type: DataType::File,
                    data: (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf)),
                    filesize: Some(size),
                    blocksizes: Vec::new(),
                };
                let bytes = PbNode {
                    links: Vec::new(),
                    data: Some(data.encode()),
                }
                .encode();
                let cid = cid_v1(DAG_PB_CODEC, &bytes);
                self.sink
                    .put_block(&cid, &bytes)
                    .map_err(ImportError::Sink)?;
                Child {
                    cid,
                    file_size: size,
                    tsize: bytes.len() as u64,
                }
            }
        };
        self.buf.clear();
        self.push(0, child)
    }

    /// Adds `child` to level `level`, first closing that level into a parent if it is full.
    fn push(&mut self, level: usize, child: Child) -> Result<(), ImportError> {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        if self
            .levels
            .get(level)
            .is_some_and(|l| l.len() >= self.config.max_links)
        {
            let full = self
                .levels
                .get_mut(level)
                .map(std::mem::take)
                .unwrap_or_default();
            let parent = self.emit_node(&full)?;
            self.push(level + 1, parent)?;
        }
        if let Some(l) = self.levels.get_mut(level) {
            l.push(child);
        }
        Ok(())
    }

    /// Encodes and emits an internal UnixFS `File` node over `children`.
    fn emit_node(&mut self, children: &[Child]) -> Result<Child, ImportError> {
        let data = UnixFsData {
            data_type: DataType::File,
            data: None,
            filesize: Some(children.iter().map(|c| c.file_size).sum()),
            blocksizes: children.iter().map(|c| c.file_size).collect(),
        };
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    hash: c.cid,
                    name: Some(String::new()),
                    tsize: Some(c.tsize),
                })
                .collect(),
            data: Some(data.encode()),
        };
        let bytes = node.encode();
        let cid = cid_v1(DAG_PB_CODEC, &bytes);
        self.sink
            .put_block(&cid, &bytes)
            .map_err(ImportError::Sink)?;
        Ok(Child {
            cid,
            file_size: data.filesize.unwrap_or(0),
            tsize: bytes.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
        })
    }

    /// Finishes the file: returns the root CID and the sink.
    pub fn finish(self) -> Result<(Cid, S), ImportError> {
        self.finish_with_size().map(|(cid, _, sink)| (cid, sink))
    }

    /// Like [`Importer::finish`], also returning the root's cumulative DAG size (its `Tsize`).
    pub fn finish_with_size(mut self) -> Result<(Cid, u64, S), ImportError> {
        // The last (possibly short, possibly empty-file) chunk is always a leaf.
        self.flush_leaf()?;
        let mut level = 0;
        while level < self.levels.len() {
            let is_top = level + 1 >= self.levels.len();
            let pending = self
                .levels
                .get_mut(level)
                .map(std::mem::take)
                .unwrap_or_default();
            if is_top
                && pending.len() == 1
                && let Some(root) = pending.first()
            {
                return Ok((root.cid, root.tsize, self.sink));
            }
            if !pending.is_empty() {
                let parent = self.emit_node(&pending)?;
                self.push(level + 1, parent)?;
            }
            level += 1;
        }
        // Unreachable: every level passes at least one node up until a single root remains.
        Err(ImportError::Internal)
    }
}

/// Imports everything `reader` yields, emitting blocks into `sink`; returns the root CID.
pub fn import<R: Read, S: BlockSink>(mut reader: R, sink: S) -> Result<(Cid, S), ImportError> {
    let mut imp = Importer::new(sink);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImportError::Read(e)),
        };
        imp.write(buf.get(..n).unwrap_or_default())?;
    }
    imp.finish()
}
