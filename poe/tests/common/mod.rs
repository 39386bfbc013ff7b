//! Shared helpers of the store tests.

use std::path::PathBuf;

/// A fresh directory under cargo's per-target temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `<suite>-<name>-<pid>`, emptied first.
    pub fn new(suite: &str, name: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{suite}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// The database path inside it.
    #[allow(dead_code)]
    pub fn db(&self) -> PathBuf {
        self.0.join("poe.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
