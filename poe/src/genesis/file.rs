//! The genesis file, `genesis.toml` (docs/POE.md, "Genesis file"; issue 4: "a genesis file
//! lists level-1 and level-2 public keys"):
//!
//! ```toml
//! # POE genesis (docs/POE.md "Genesis file")
//! chain = "mef-devnet"
//! time_ms = 1700000000000
//! expected_candidates = 4
//! expected_sealers = 3
//!
//! [[member]]
//! level = 1
//! ed25519 = "<64 hex characters>"
//! rsa = "<base64 of the PKCS#1 DER RSAPublicKey>"
//! # attestation = "<base64>"   (optional, reserved for hardware attestation)
//! ```
//!
//! Unknown keys are refused; [`Genesis::from_toml`] also applies every rule of
//! [`Genesis::validate`], so a file that loads is a valid genesis.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::{Genesis, GenesisError};
use crate::verify::Params;
use crate::wire::{Level, Member};

/// Why a genesis file was refused. Member indices count from 0 in file order (the `n`-th
/// `[[member]]` table is index `n - 1`).
#[derive(Debug, thiserror::Error)]
pub enum GenesisFileError {
    /// The file could not be read.
    #[error("cannot read genesis file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not the genesis schema (a missing or unknown key, a wrong type).
    #[error("genesis TOML{}: {message}", line.map(|l| std::format!(" line {l}")).unwrap_or_default())]
    Toml {
        /// The `toml` crate's message.
        message: String,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
    },
    /// A hex field has a character that is not a hex digit.
    #[error("member {index}: {field} is not hex")]
    Hex {
        /// The member.
        index: usize,
        /// The field (`ed25519`).
        field: &'static str,
    },
    /// A hex field has the wrong number of characters.
    #[error("member {index}: {field} has {len} characters, {expected} expected")]
    Length {
        /// The member.
        index: usize,
        /// The field (`ed25519`).
        field: &'static str,
        /// Its length in characters.
        len: usize,
        /// The length it must have.
        expected: usize,
    },
    /// A base64 field does not decode (standard alphabet, canonical padding).
    #[error("member {index}: {field} is not base64")]
    Base64 {
        /// The member.
        index: usize,
        /// The field (`rsa` or `attestation`).
        field: &'static str,
    },
    /// A member's level is neither 1 nor 2.
    #[error("member {index}: level {level} (must be 1 or 2)")]
    Level {
        /// The member.
        index: usize,
        /// The level given.
        level: i64,
    },
    /// The file parses but the genesis breaks a rule of [`Genesis::validate`].
    #[error("invalid genesis: {0}")]
    Invalid(#[from] GenesisError),
}

/// The file's top level.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisToml {
    chain: String,
    time_ms: u64,
    expected_candidates: u64,
    expected_sealers: u64,
    #[serde(default)]
    member: Vec<MemberToml>,
}

/// One `[[member]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberToml {
    level: i64,
    ed25519: String,
    rsa: String,
    #[serde(default)]
    attestation: Option<String>,
}

impl Genesis {
    /// Parses and validates a genesis file (docs/POE.md, "Genesis file"). Never panics: any
    /// input is a [`Genesis`] that passed [`Genesis::validate`] or a typed error.
    pub fn from_toml(text: &str) -> Result<Genesis, GenesisFileError> {
        let file: GenesisToml = toml::from_str(text).map_err(|e| GenesisFileError::Toml {
            message: e.message().to_string(),
            line: e
                .span()
                .and_then(|s| text.get(..s.start))
                .map(|before| before.matches('\n').count() + 1),
        })?;
        let members = file
            .member
            .iter()
            .enumerate()
            .map(|(index, m)| member(index, m))
            .collect::<Result<Vec<_>, _>>()?;
        let genesis = Genesis {
            chain: file.chain,
            time_ms: file.time_ms,
            params: Params {
                expected_candidates: param(file.expected_candidates, "expected_candidates")?,
                expected_sealers: param(file.expected_sealers, "expected_sealers")?,
            },
            members,
        };
        genesis.validate()?;
        Ok(genesis)
    }

    /// The genesis as a file that [`Genesis::from_toml`] reads back to an equal value (if the
    /// genesis is valid): the header comment, the scalars, then one `[[member]]` table per
    /// member in order (`attestation` only when nonempty).
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# POE genesis (docs/POE.md \"Genesis file\")\n");
        // Writing to a String cannot fail.
        let _ = writeln!(out, "chain = {}", quote(&self.chain));
        let _ = writeln!(out, "time_ms = {}", self.time_ms);
        let _ = writeln!(
            out,
            "expected_candidates = {}",
            self.params.expected_candidates
        );
        let _ = writeln!(out, "expected_sealers = {}", self.params.expected_sealers);
        for m in &self.members {
            let _ = writeln!(out, "\n[[member]]");
            let _ = writeln!(out, "level = {}", m.level.to_byte());
            let _ = writeln!(out, "ed25519 = \"{}\"", hex(&m.ed25519));
            let _ = writeln!(out, "rsa = \"{}\"", BASE64.encode(&m.rsa_der));
            if !m.attestation.is_empty() {
                let _ = writeln!(out, "attestation = \"{}\"", BASE64.encode(&m.attestation));
            }
        }
        out
    }

    /// Reads and parses the genesis file at `path` ([`Genesis::from_toml`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Genesis, GenesisFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| GenesisFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Genesis::from_toml(&text)
    }
}

/// One `[[member]]` table as a [`Member`].
fn member(index: usize, m: &MemberToml) -> Result<Member, GenesisFileError> {
    let level = match m.level {
        1 => Level::One,
        2 => Level::Two,
        level => return Err(GenesisFileError::Level { index, level }),
    };
    let b64 = |field: &'static str, s: &str| {
        BASE64
            .decode(s)
            .map_err(|_| GenesisFileError::Base64 { index, field })
    };
    Ok(Member {
        level,
        ed25519: unhex32(index, "ed25519", &m.ed25519)?,
        rsa_der: b64("rsa", &m.rsa)?,
        attestation: match &m.attestation {
            Some(a) => b64("attestation", a)?,
            None => Vec::new(),
        },
    })
}

/// A parameter as a `usize` (only a 32-bit target can refuse one).
fn param(v: u64, name: &'static str) -> Result<usize, GenesisError> {
    usize::try_from(v).map_err(|_| GenesisError::OutOfRange(name))
}

/// 32 bytes from 64 hex digits (either case).
fn unhex32(index: usize, field: &'static str, s: &str) -> Result<[u8; 32], GenesisFileError> {
    let len = s.chars().count();
    if len != 64 {
        return Err(GenesisFileError::Length {
            index,
            field,
            len,
            expected: 64,
        });
    }
    let mut out = [0u8; 32];
    // 64 characters that are all hex digits are 64 ASCII bytes.
    let digits: Vec<u8> = s
        .chars()
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or(GenesisFileError::Hex { index, field })?;
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = pair[0] << 4 | pair[1];
    }
    Ok(out)
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A TOML basic string (a valid chain name needs no escapes; others are escaped so that the
/// output stays TOML).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
