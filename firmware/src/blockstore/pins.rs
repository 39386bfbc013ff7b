//! Pin files: one per pinned image root, `pins/<root cid>.pin`, written crash-safely.
//!
//! Format (text, one CID per line in its base32 string form):
//!
//! ```text
//! mef-fw-pin 1
//! <root cid>
//! <block cid>      (zero or more lines)
//! end <number of block lines>
//! ```
//!
//! The `end` line makes a truncated file detectable even if it were not written atomically.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use cid::Cid;

use super::error::BlockstoreError;
use super::fsutil;

const HEADER: &str = "mef-fw-pin 1";
const SUFFIX: &str = ".pin";
/// Longest line accepted in a pin file (a CID string is far shorter).
const MAX_LINE: u64 = 256;

/// The pin file of `root` in `dir`.
pub(crate) fn path(dir: &Path, root_key: &str) -> PathBuf {
    dir.join(format!("{root_key}{SUFFIX}"))
}

/// Writes the pin file for `root` listing `blocks`.
pub(crate) fn write(dir: &Path, root_key: &str, blocks: &[String]) -> Result<(), BlockstoreError> {
    let mut text = String::with_capacity(64 * (blocks.len() + 3));
    text.push_str(HEADER);
    text.push('\n');
    text.push_str(root_key);
    text.push('\n');
    for b in blocks {
        text.push_str(b);
        text.push('\n');
    }
    text.push_str(&format!("end {}\n", blocks.len()));
    fsutil::write_atomic(&path(dir, root_key), text.as_bytes())
}

/// Streams the block CIDs of the pin file at `p` into `each` (the root is included); returns the
/// root. Memory is bounded by one line.
pub(crate) fn read(p: &Path, mut each: impl FnMut(Cid)) -> Result<Cid, BlockstoreError> {
    let bad = |reason| BlockstoreError::BadPinFile {
        path: p.to_owned(),
        reason,
    };
    let f = File::open(p).map_err(BlockstoreError::io("open pin file", p))?;
    let mut r = BufReader::new(f);
    let mut line = String::new();
    let mut next_line = |line: &mut String| -> Result<bool, BlockstoreError> {
        line.clear();
        let n = (&mut r)
            .take(MAX_LINE)
            .read_line(line)
            .map_err(BlockstoreError::io("read pin file", p))?;
        if n == 0 {
            return Ok(false);
        }
        if !line.ends_with('\n') {
            return Err(bad("line too long or unterminated"));
        }
        line.pop();
        Ok(true)
    };
    if !next_line(&mut line)? || line != HEADER {
        return Err(bad("missing header"));
    }
    if !next_line(&mut line)? {
        return Err(bad("missing root"));
    }
    let root = Cid::try_from(line.as_str()).map_err(|_| bad("bad root CID"))?;
    each(root);
    let mut count: u64 = 0;
    loop {
        if !next_line(&mut line)? {
            return Err(bad("truncated (no end line)"));
        }
        if let Some(n) = line.strip_prefix("end ") {
            if n.parse::<u64>().ok() != Some(count) {
                return Err(bad("block count mismatch"));
            }
            break;
        }
        let cid = Cid::try_from(line.as_str()).map_err(|_| bad("bad block CID"))?;
        each(cid);
        count += 1;
    }
    if next_line(&mut line)? {
        return Err(bad("data after end line"));
    }
    Ok(root)
}

/// Paths of all pin files in `dir`.
pub(crate) fn list(dir: &Path) -> Result<Vec<PathBuf>, BlockstoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(BlockstoreError::io("read directory", dir))? {
        let entry = entry.map_err(BlockstoreError::io("read directory", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(SUFFIX) && !name.starts_with(fsutil::TEMP_PREFIX) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}
