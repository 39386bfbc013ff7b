//! Staging a verified image: temp file, verify, fsync, atomic rename, directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cid::Cid;

use super::{UpdateError, VerifiedUpdate};
use crate::manifest::{MAX_MODEL_LEN, Manifest, Version};
use crate::unixfs::{BlockSource, ExportError, export};

/// Prefix of temp files in the staging directory; [`Stager::open`] removes leftovers.
pub const TEMP_PREFIX: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The staged file names of `manifest`: `<model>-<version>.bin` and `<model>-<version>.manifest`.
/// The model must be 1..=[`MAX_MODEL_LEN`] ASCII letters, digits, `-`, `_`, `.` or `+`, not
/// starting with `.` (so it is one path component that is neither hidden nor a temp name).
pub fn staged_name(manifest: &Manifest) -> Result<(String, String), UpdateError> {
    let m = &manifest.model;
    let ok = !m.is_empty()
        && m.len() <= MAX_MODEL_LEN
        && !m.starts_with('.')
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if !ok {
        return Err(UpdateError::UnsafeModelName(m.chars().take(80).collect()));
    }
    let base = format!("{m}-{}", manifest.version);
    Ok((format!("{base}.bin"), format!("{base}.manifest")))
}

/// A staged image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedImage {
    /// The image file (`<model>-<version>.bin`).
    pub path: PathBuf,
    /// The signed manifest next to it (`<model>-<version>.manifest`).
    pub manifest_path: PathBuf,
    /// The image size in bytes (equal to the manifest's).
    pub size: u64,
    /// The image's root CID (the manifest's).
    pub root: Cid,
    /// The staged version.
    pub version: Version,
}

/// Stages verified images in a directory.
///
/// [`Stager::stage`] writes the image to a `.tmp-…` file in the directory, rebuilding it with
/// the verifying reader, checks its length against the manifest, fsyncs it, writes the signed
/// manifest the same way, renames the image and then the manifest to their final names and
/// fsyncs the directory. On any error the temp files are removed and nothing is left under the
/// final names, so a final name only ever holds an image whose every block matched the signed
/// root CID. The manifest is renamed last: its presence marks a completed staging. Staging the
/// same version again replaces the files (atomically, with identical verified bytes).
///
/// One process should stage into a directory at a time (temp names are unique per process, but
/// [`Stager::open`] removes every temp file it finds).
#[derive(Debug)]
pub struct Stager {
    dir: PathBuf,
    temps_cleaned: usize,
}

/// Removes a file if it exists, ignoring errors (cleanup on an error path).
fn discard(path: &Path) {
    let _ = fs::remove_file(path);
}

fn sync_dir(dir: &Path) -> Result<(), UpdateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(UpdateError::io("fsync directory", dir))
}

/// Counts bytes, reports progress, and refuses to grow past the manifest's size.
struct LimitedWriter<'a, W: Write> {
    inner: W,
    written: u64,
    limit: u64,
    exceeded: bool,
    progress: &'a mut dyn FnMut(u64),
}

impl<W: Write> Write for LimitedWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.written);
        if buf.len() as u64 > room {
            self.exceeded = true;
            return Err(std::io::Error::other("image larger than the manifest size"));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        (self.progress)(self.written);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Stager {
    /// Opens (creating if needed) the staging directory and removes temp files left by a crash.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, UpdateError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(UpdateError::io("create directory", &dir))?;
        let mut temps_cleaned = 0;
        for entry in fs::read_dir(&dir).map_err(UpdateError::io("read directory", &dir))? {
            let entry = entry.map_err(UpdateError::io("read directory", &dir))?;
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if is_file && entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let p = entry.path();
                fs::remove_file(&p).map_err(UpdateError::io("remove temp file", &p))?;
                temps_cleaned += 1;
            }
        }
        if temps_cleaned > 0 {
            sync_dir(&dir)?;
            tracing::info!(temps_cleaned, dir = %dir.display(), "staging: removed leftover temp files");
        }
        Ok(Self { dir, temps_cleaned })
    }

    /// The staging directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest image already staged here for `policy`'s model: a `<model>-<version>.manifest`
    /// signed by one of its trusted keys whose image file sits next to it with the manifest's
    /// size (the manifest is renamed last, so its presence marks a completed staging). Other
    /// models, untrusted or unreadable manifests and images of the wrong size are skipped. A
    /// device that restarts learns from this what it already installed.
    pub fn newest(&self, policy: &super::UpdatePolicy) -> Result<Option<StagedImage>, UpdateError> {
        let mut best: Option<StagedImage> = None;
        for entry in
            fs::read_dir(&self.dir).map_err(UpdateError::io("read directory", &self.dir))?
        {
            let entry = entry.map_err(UpdateError::io("read directory", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) || !name.ends_with(".manifest") {
                continue;
            }
            let manifest_path = entry.path();
            let Some(staged) = self.verify_staged(policy, &manifest_path) else {
                continue;
            };
            if best.as_ref().is_none_or(|b| staged.version > b.version) {
                best = Some(staged);
            }
        }
        Ok(best)
    }

    /// A staged image, if `manifest_path` is a manifest `policy` trusts for its model, under its
    /// canonical name, next to an image of the right size.
    fn verify_staged(
        &self,
        policy: &super::UpdatePolicy,
        manifest_path: &Path,
    ) -> Option<StagedImage> {
        let max =
            (crate::manifest::MAX_MANIFEST_LEN + crate::manifest::SIGNATURE_TRAILER_LEN) as u64;
        if fs::metadata(manifest_path).ok()?.len() > max {
            return None; // not read: no manifest is that long
        }
        let bytes = fs::read(manifest_path).ok()?;
        let signed = crate::manifest::SignedManifest::decode(&bytes).ok()?;
        let manifest = super::authenticate(&signed, &policy.trusted).ok()?;
        policy.check_model(manifest).ok()?;
        let (path, canonical) = self.paths(manifest).ok()?;
        if canonical != manifest_path {
            return None;
        }
        let size = fs::metadata(&path).ok()?.len();
        (size == manifest.size).then_some(StagedImage {
            path,
            manifest_path: canonical,
            size,
            root: manifest.root,
            version: manifest.version,
        })
    }

    /// How many leftover temp files [`Stager::open`] removed.
    pub fn temps_cleaned(&self) -> usize {
        self.temps_cleaned
    }

    /// Where `manifest`'s image and signed manifest are (or would be) staged.
    pub fn paths(&self, manifest: &Manifest) -> Result<(PathBuf, PathBuf), UpdateError> {
        let (bin, man) = staged_name(manifest)?;
        Ok((self.dir.join(bin), self.dir.join(man)))
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{TEMP_PREFIX}{}-{n}-{name}", std::process::id()))
    }

    /// Rebuilds `update`'s image from `blocks`, verifying every block, and stages it (see the
    /// type docs).
    pub fn stage<B: BlockSource + ?Sized>(
        &self,
        update: &VerifiedUpdate,
        blocks: &B,
    ) -> Result<StagedImage, UpdateError> {
        self.stage_with_progress(update, blocks, &mut |_| {})
    }

    /// [`Stager::stage`], calling `progress` with the image bytes written so far.
    pub fn stage_with_progress<B: BlockSource + ?Sized>(
        &self,
        update: &VerifiedUpdate,
        blocks: &B,
        progress: &mut dyn FnMut(u64),
    ) -> Result<StagedImage, UpdateError> {
        let manifest = update.manifest();
        let (bin_name, man_name) = staged_name(manifest)?;
        let (final_bin, final_man) = (self.dir.join(&bin_name), self.dir.join(&man_name));
        let manifest_bytes = update.signed().encode().map_err(UpdateError::Manifest)?;

        let tmp_bin = self.temp_path(&bin_name);
        let size = match self.write_image(&tmp_bin, manifest, blocks, progress) {
            Ok(size) => size,
            Err(e) => {
                discard(&tmp_bin);
                return Err(e);
            }
        };
        let tmp_man = self.temp_path(&man_name);
        if let Err(e) = write_synced(&tmp_man, &manifest_bytes) {
            discard(&tmp_man);
            discard(&tmp_bin);
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp_bin, &final_bin) {
            discard(&tmp_man);
            discard(&tmp_bin);
            return Err(UpdateError::io("rename", &final_bin)(e));
        }
        if let Err(e) = fs::rename(&tmp_man, &final_man) {
            discard(&tmp_man);
            discard(&final_bin);
            return Err(UpdateError::io("rename", &final_man)(e));
        }
        if let Err(e) = sync_dir(&self.dir) {
            discard(&final_man);
            discard(&final_bin);
            return Err(e);
        }
        tracing::debug!(path = %final_bin.display(), size, root = %manifest.root, "staged firmware image");
        Ok(StagedImage {
            path: final_bin,
            manifest_path: final_man,
            size,
            root: manifest.root,
            version: manifest.version,
        })
    }

    /// Exports the image into `tmp` (created new), checks its size and fsyncs it.
    fn write_image<B: BlockSource + ?Sized>(
        &self,
        tmp: &Path,
        manifest: &Manifest,
        blocks: &B,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, UpdateError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(UpdateError::io("create temp file", tmp))?;
        let mut w = LimitedWriter {
            inner: BufWriter::with_capacity(256 * 1024, file),
            written: 0,
            limit: manifest.size,
            exceeded: false,
            progress,
        };
        match export(blocks, &manifest.root, &mut w) {
            Ok(_) => {}
            Err(ExportError::Write(_)) if w.exceeded => {
                return Err(UpdateError::TooLarge {
                    expected: manifest.size,
                });
            }
            Err(ExportError::Write(e)) => return Err(UpdateError::io("write", tmp)(e)),
            Err(source) => return Err(UpdateError::Export(source)),
        }
        if w.written != manifest.size {
            return Err(UpdateError::SizeMismatch {
                expected: manifest.size,
                actual: w.written,
            });
        }
        let written = w.written;
        let file = w
            .inner
            .into_inner()
            .map_err(|e| UpdateError::io("write", tmp)(e.into_error()))?;
        file.sync_all().map_err(UpdateError::io("fsync", tmp))?;
        Ok(written)
    }
}

/// Writes `data` to the new file `path` and fsyncs it.
fn write_synced(path: &Path, data: &[u8]) -> Result<(), UpdateError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(UpdateError::io("create temp file", path))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(UpdateError::io("write", path))
}
