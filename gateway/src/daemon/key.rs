//! The gateway's batch-signing key: an ed25519 secret key, stored as one base64 line in a file
//! of mode 0600 (`mef-gateway keygen`).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use zeroize::Zeroize;

/// Why a key could not be made, written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be created, written or read (an existing file is never overwritten).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not hold a base64 32-byte key.
    #[error("{path}: not a base64 ed25519 secret key (32 bytes)")]
    Format {
        /// The file.
        path: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A fresh key from the OS's random source (`/dev/urandom`, Linux).
pub fn generate() -> Result<SigningKey, KeyError> {
    let path = Path::new("/dev/urandom");
    let mut seed = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io(path))?;
    let key = SigningKey::from_bytes(&seed);
    seed.zeroize();
    Ok(key)
}

/// Writes `key` to `path` (mode 0600, refusing to overwrite an existing file).
pub fn write(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    let mut line = STANDARD.encode(key.to_bytes());
    let r = writeln!(f, "{line}").and_then(|()| f.sync_all());
    line.zeroize();
    r.map_err(io(path))
}

/// Reads a key written by [`write()`].
pub fn read(path: &Path) -> Result<SigningKey, KeyError> {
    let mut text = std::fs::read_to_string(path).map_err(io(path))?;
    let decoded = STANDARD.decode(text.trim());
    text.zeroize();
    let mut bytes = decoded.map_err(|_| KeyError::Format {
        path: path.display().to_string(),
    })?;
    let arr: Result<[u8; 32], _> = bytes.as_slice().try_into();
    let key = arr.map(|a| SigningKey::from_bytes(&a));
    bytes.zeroize();
    key.map_err(|_| KeyError::Format {
        path: path.display().to_string(),
    })
}

/// The public key, base64 (what a receiver verifies batches with).
pub fn public_base64(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().to_bytes())
}
