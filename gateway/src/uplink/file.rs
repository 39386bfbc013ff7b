//! An uplink that appends batches to a file, one JSON object per line, fsynced.
//!
//! Useful for tests across processes (a writer killed mid-forward) and for debugging. Each
//! line is a [`FileBatch`]: the batch header, the readings (for humans; JSON numbers, so a NaN
//! or infinite value reads back as `null`) and `signed`, the hex of
//! [`Batch::signing_bytes`], which is what [`FileBatch::verify`] checks the signature over.
//!
//! `submit` returns after the line is written and `fsync`ed. A line torn by a crash (no final
//! newline) is cut off when the file is next opened and skipped by [`FileUplink::read`]. The
//! file is append-only and not de-duplicated: a batch re-sent after a crash appears twice
//! (same `first_seq`), which is exactly the at-least-once boundary a receiver must handle.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{Ack, Uplink, UplinkError};
use crate::reading::Reading;
use crate::store::{BATCH_DOMAIN, Batch, BatchError};

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileBatch {
    /// Gateway public key, hex.
    pub gateway: String,
    /// Batch id.
    pub id: u64,
    /// First sequence number.
    pub first_seq: u64,
    /// Last sequence number.
    pub last_seq: u64,
    /// `(seq, reading)` pairs in order.
    pub readings: Vec<(u64, Reading)>,
    /// The signature, hex.
    pub signature: String,
    /// The signed bytes, hex.
    pub signed: String,
}

impl FileBatch {
    /// The line for `batch`.
    pub fn from_batch(batch: &Batch) -> Result<FileBatch, BatchError> {
        Ok(FileBatch {
            gateway: hex(&batch.gateway),
            id: batch.id,
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            readings: batch
                .readings
                .iter()
                .map(|q| (q.seq, q.reading.clone()))
                .collect(),
            signature: hex(&batch.signature),
            signed: hex(&batch.signing_bytes()?),
        })
    }

    /// Checks the signature over `signed` with `key`, and that `signed` starts with the
    /// domain, this key, and this line's id and range.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), BatchError> {
        let signed = unhex(&self.signed).ok_or(BatchError::BadSignature)?;
        let sig: [u8; 64] = unhex(&self.signature)
            .and_then(|s| s.try_into().ok())
            .ok_or(BatchError::BadSignature)?;
        let mut head = BATCH_DOMAIN.to_vec();
        head.extend_from_slice(&key.to_bytes());
        head.extend_from_slice(&self.id.to_be_bytes());
        head.extend_from_slice(&self.first_seq.to_be_bytes());
        head.extend_from_slice(&self.last_seq.to_be_bytes());
        if !signed.starts_with(&head) {
            return Err(BatchError::WrongGateway);
        }
        key.verify(&signed, &Signature::from_bytes(&sig))
            .map_err(|_| BatchError::BadSignature)
    }
}

/// Appends each submitted batch to a file as a JSON line, fsynced before `submit` returns.
#[derive(Debug)]
pub struct FileUplink {
    file: File,
    path: PathBuf,
}

impl FileUplink {
    /// Opens (or creates) the file for appending, first cutting off a torn last line.
    pub fn open(path: impl AsRef<Path>) -> Result<FileUplink, UplinkError> {
        let path = path.as_ref().to_owned();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole != text.len() {
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok(FileUplink { file, path })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every whole line of the file at `path` (a torn last line is skipped). Errors:
    /// I/O, or [`UplinkError::Rejected`] for a whole line that is not a [`FileBatch`].
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<FileBatch>, UplinkError> {
        let text = std::fs::read(path)?;
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        text[..whole]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).map_err(|e| UplinkError::Rejected {
                    batch_id: 0,
                    reason: format!("unreadable line: {e}"),
                })
            })
            .collect()
    }
}

impl Uplink for FileUplink {
    fn submit(&mut self, batch: &Batch) -> Result<Ack, UplinkError> {
        let line = FileBatch::from_batch(batch).map_err(|e| UplinkError::Rejected {
            batch_id: batch.id,
            reason: e.to_string(),
        })?;
        let mut bytes = serde_json::to_vec(&line).map_err(|e| UplinkError::Rejected {
            batch_id: batch.id,
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        Ok(Ack {
            batch_id: batch.id,
            duplicate: false,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}
