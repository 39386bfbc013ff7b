//! Crash-safe file writes: temp file in the target directory, fsync, rename, fsync directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::BlockstoreError;

/// Prefix of temp files; anything starting with it is a leftover from an interrupted write.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temp path in `dir` (unique within this process; `create_new` guards across processes).
pub(crate) fn temp_path(dir: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

/// Writes `data` to a new temp file in `dir`, fsyncs it and returns its path. The caller checks
/// the file and then [`commit`]s it or removes it.
pub(crate) fn write_temp(dir: &Path, data: &[u8]) -> Result<PathBuf, BlockstoreError> {
    let tmp = temp_path(dir);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(BlockstoreError::io("create temp file", &tmp))?;
    let res = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(BlockstoreError::io("write temp file", &tmp));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map(|()| tmp)
}

/// Renames `tmp` to `dest` (same directory) and fsyncs the directory.
pub(crate) fn commit(tmp: &Path, dest: &Path) -> Result<(), BlockstoreError> {
    if let Err(e) = fs::rename(tmp, dest) {
        let _ = fs::remove_file(tmp);
        return Err(BlockstoreError::io("rename", dest)(e));
    }
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Fsyncs a directory so renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BlockstoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BlockstoreError::io("fsync directory", dir))
}

/// Writes `data` to `dest` atomically (temp + fsync + rename + directory fsync).
pub(crate) fn write_atomic(dest: &Path, data: &[u8]) -> Result<(), BlockstoreError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = write_temp(dir, data)?;
    commit(&tmp, dest)
}

/// Removes leftover temp files directly in `dir`; returns how many.
pub(crate) fn clean_temps(dir: &Path) -> Result<usize, BlockstoreError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(BlockstoreError::io("read directory", dir))? {
        let entry = entry.map_err(BlockstoreError::io("read directory", dir))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let p = entry.path();
            fs::remove_file(&p).map_err(BlockstoreError::io("remove temp file", &p))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}
