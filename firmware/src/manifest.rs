//! Signed firmware manifests.
//!
//! A [`Manifest`] names one firmware image: the device model it is for, its [`Version`], the CID
//! of its UnixFS root, its size, release notes and release time. The manufacturer signs the
//! manifest's canonical encoding with its ed25519 key ([`SignedManifest`]); a device accepts a
//! manifest only if it verifies against the manufacturer key it was configured with.
//!
//! # Canonical encoding (format 1)
//!
//! All integers are big-endian; strings are UTF-8 without control characters.
//!
//! | bytes        | field                                                       |
//! |--------------|-------------------------------------------------------------|
//! | 4            | magic `"MEFM"`                                              |
//! | 1            | format version, `1`                                         |
//! | 1            | `model` length `m`, 1..=[`MAX_MODEL_LEN`]                   |
//! | m            | `model`                                                     |
//! | 4 + 4 + 4    | `version`: major, minor, patch (`u32` each)                 |
//! | 1            | `root` length `c`, 1..=[`MAX_CID_LEN`]                      |
//! | c            | `root`: binary CID, version 1, in its canonical form        |
//! | 8            | `size` (`u64`)                                              |
//! | 8            | `released_ms` (`u64`, milliseconds since the Unix epoch)    |
//! | 2            | `notes` length `n`, 0..=[`MAX_NOTES_LEN`]                   |
//! | n            | `notes`                                                     |
//!
//! A [`SignedManifest`] is the manifest encoding followed by the 32-byte signer public key and
//! the 64-byte ed25519 signature. The signature covers [`SIGNING_DOMAIN`] `||` the manifest
//! encoding. Decoding is strict: every length is bounded, nothing may follow the last field,
//! and a value has exactly one encoding (so `decode(b).encode() == b` for every accepted `b`).

use std::fmt;
use std::str::FromStr;

use cid::Cid;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Magic bytes opening a manifest encoding.
pub const MAGIC: &[u8; 4] = b"MEFM";
/// The encoding format version this module writes and accepts.
pub const FORMAT_VERSION: u8 = 1;
/// Domain separation prefix of the signed bytes.
pub const SIGNING_DOMAIN: &[u8; 16] = b"MEF-FW-MANIFEST1";
/// Longest model name, in bytes.
pub const MAX_MODEL_LEN: usize = 64;
/// Longest root CID, in bytes.
pub const MAX_CID_LEN: usize = 128;
/// Longest release notes, in bytes.
pub const MAX_NOTES_LEN: usize = 4096;
/// Longest manifest encoding.
pub const MAX_MANIFEST_LEN: usize =
    4 + 1 + 1 + MAX_MODEL_LEN + 12 + 1 + MAX_CID_LEN + 8 + 8 + 2 + MAX_NOTES_LEN;
/// Length of the signer key plus signature following a manifest in a [`SignedManifest`].
pub const SIGNATURE_TRAILER_LEN: usize = 32 + 64;

/// Why a manifest could not be built, decoded or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The input ended before the named field was complete.
    #[error("manifest truncated in {0}")]
    Truncated(&'static str),
    /// The input does not start with [`MAGIC`].
    #[error("not a manifest (bad magic)")]
    BadMagic,
    /// The format version is not [`FORMAT_VERSION`].
    #[error("unsupported manifest format version {0}")]
    UnsupportedFormat(u8),
    /// A length field is out of its bounds.
    #[error("{field} length {len} out of bounds")]
    BadLength {
        /// The field.
        field: &'static str,
        /// The length found.
        len: usize,
    },
    /// A string field is not UTF-8 or contains control characters.
    #[error("{0} is not valid text")]
    BadText(&'static str),
    /// The root is not a canonical binary CID version 1.
    #[error("root is not a canonical CIDv1")]
    BadCid,
    /// Bytes follow the last field.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// The signer is not the configured manufacturer key.
    #[error("manifest signed by an unexpected key")]
    WrongSigner,
    /// The signer bytes are not a valid ed25519 public key.
    #[error("signer is not a valid ed25519 key")]
    BadSignerKey,
    /// The signature does not verify.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// A version string is not `major.minor.patch`.
    #[error("bad version string {0:?}")]
    BadVersion(String),
    /// The JSON form could not be parsed or produced.
    #[error("manifest JSON: {0}")]
    Json(String),
}

/// A firmware version, ordered by major, then minor, then patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Incompatible changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
    /// Fixes.
    pub patch: u32,
}

impl Version {
    /// A version from its three parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = ManifestError;

    /// Parses `major.minor.patch` (decimal, no sign, no leading `+`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ManifestError::BadVersion(s.chars().take(32).collect());
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, ManifestError> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = Version::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One firmware image as announced by its manufacturer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The device model the image is for (1..=[`MAX_MODEL_LEN`] bytes of text).
    pub model: String,
    /// The image's version.
    pub version: Version,
    /// CID (version 1) of the image's UnixFS root.
    #[serde(with = "cid_string")]
    pub root: Cid,
    /// Size of the image file in bytes.
    pub size: u64,
    /// Release notes (at most [`MAX_NOTES_LEN`] bytes of text; newlines and tabs allowed).
    pub notes: String,
    /// Release time, milliseconds since the Unix epoch.
    pub released_ms: u64,
}

/// Text check: `model` admits no control characters at all, `notes` admits `\n` and `\t`.
fn check_text(field: &'static str, s: &str, allow_ws: bool) -> Result<(), ManifestError> {
    let ok = s
        .chars()
        .all(|c| !c.is_control() || (allow_ws && (c == '\n' || c == '\t')));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadText(field))
    }
}

impl Manifest {
    /// Checks every field's bounds (the conditions [`Manifest::decode`] enforces).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.model.is_empty() || self.model.len() > MAX_MODEL_LEN {
            return Err(ManifestError::BadLength {
                field: "model",
                len: self.model.len(),
            });
        }
        check_text("model", &self.model, false)?;
        if self.root.version() != cid::Version::V1 {
            return Err(ManifestError::BadCid);
        }
        let cid_len = self.root.encoded_len();
        if cid_len > MAX_CID_LEN {
            return Err(ManifestError::BadLength {
                field: "root",
                len: cid_len,
            });
        }
        if self.notes.len() > MAX_NOTES_LEN {
            return Err(ManifestError::BadLength {
                field: "notes",
                len: self.notes.len(),
            });
        }
        check_text("notes", &self.notes, true)
    }

    /// The canonical encoding (see the module docs). Fails only if [`Manifest::validate`] fails.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        let cid = self.root.to_bytes();
        let mut out = Vec::with_capacity(48 + self.model.len() + cid.len() + self.notes.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(self.model.len() as u8);
        out.extend_from_slice(self.model.as_bytes());
        for part in [self.version.major, self.version.minor, self.version.patch] {
            out.extend_from_slice(&part.to_be_bytes());
        }
        out.push(cid.len() as u8);
        out.extend_from_slice(&cid);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.released_ms.to_be_bytes());
        out.extend_from_slice(&(self.notes.len() as u16).to_be_bytes());
        out.extend_from_slice(self.notes.as_bytes());
        Ok(out)
    }

    /// Decodes exactly one manifest from `bytes` (no trailing bytes allowed).
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut r = Reader { buf: bytes };
        let m = Self::decode_from(&mut r)?;
        if !r.buf.is_empty() {
            return Err(ManifestError::TrailingBytes(r.buf.len()));
        }
        Ok(m)
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, ManifestError> {
        if r.take(4, "magic")? != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let format = r.u8("format")?;
        if format != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedFormat(format));
        }
        let model_len = r.u8("model length")? as usize;
        if model_len == 0 || model_len > MAX_MODEL_LEN {
            return Err(ManifestError::BadLength {
                field: "model",
                len: model_len,
            });
        }
        let model = r.text(model_len, "model", false)?;
        let version = Version::new(r.u32("version")?, r.u32("version")?, r.u32("version")?);
        let cid_len = r.u8("root length")? as usize;
        if cid_len == 0 || cid_len > MAX_CID_LEN {
            return Err(ManifestError::BadLength {
                field: "root",
                len: cid_len,
            });
        }
        let cid_bytes = r.take(cid_len, "root")?;
        let root = Cid::try_from(cid_bytes).map_err(|_| ManifestError::BadCid)?;
        if root.version() != cid::Version::V1 || root.to_bytes() != cid_bytes {
            return Err(ManifestError::BadCid);
        }
        let size = r.u64("size")?;
        let released_ms = r.u64("released_ms")?;
        let notes_len = r.u16("notes length")? as usize;
        if notes_len > MAX_NOTES_LEN {
            return Err(ManifestError::BadLength {
                field: "notes",
                len: notes_len,
            });
        }
        let notes = r.text(notes_len, "notes", true)?;
        Ok(Self {
            model,
            version,
            root,
            size,
            notes,
            released_ms,
        })
    }

    /// The bytes a manufacturer signs: [`SIGNING_DOMAIN`] `||` [`Manifest::encode`].
    pub fn signing_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        let mut out = SIGNING_DOMAIN.to_vec();
        out.extend_from_slice(&self.encode()?);
        Ok(out)
    }

    /// Signs this manifest with the manufacturer key.
    pub fn sign(self, key: &SigningKey) -> Result<SignedManifest, ManifestError> {
        let signature = key.sign(&self.signing_bytes()?).to_bytes();
        Ok(SignedManifest {
            manifest: self,
            signer: key.verifying_key().to_bytes(),
            signature,
        })
    }

    /// Whether this image is an update for a device of `model` running `installed`: same model,
    /// strictly greater version.
    pub fn is_update_for(&self, model: &str, installed: Version) -> bool {
        self.model == model && self.version > installed
    }

    /// Whether this manifest is for the same model as `other` and carries a strictly greater
    /// version. Manifests for different models are never newer than each other.
    pub fn is_newer_than(&self, other: &Manifest) -> bool {
        self.is_update_for(&other.model, other.version)
    }

    /// The manifest as pretty JSON, for humans (not the signed form).
    pub fn to_json(&self) -> Result<String, ManifestError> {
        serde_json::to_string_pretty(self).map_err(|e| ManifestError::Json(e.to_string()))
    }

    /// Parses the JSON form and checks the same bounds as [`Manifest::decode`].
    pub fn from_json(s: &str) -> Result<Self, ManifestError> {
        let m: Self = serde_json::from_str(s).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }
}

/// A manifest with the manufacturer's ed25519 signature over its signing bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The signed manifest.
    pub manifest: Manifest,
    /// The signer's ed25519 public key.
    #[serde(with = "hex_array")]
    pub signer: [u8; 32],
    /// The ed25519 signature over [`Manifest::signing_bytes`].
    #[serde(with = "hex_array")]
    pub signature: [u8; 64],
}

impl SignedManifest {
    /// Encoding: the manifest encoding, then `signer` (32 bytes), then `signature` (64 bytes).
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        let mut out = self.manifest.encode()?;
        out.extend_from_slice(&self.signer);
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// Decodes exactly one signed manifest (does not verify the signature; see
    /// [`SignedManifest::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut r = Reader { buf: bytes };
        let manifest = Manifest::decode_from(&mut r)?;
        let signer = r.array::<32>("signer")?;
        let signature = r.array::<64>("signature")?;
        if !r.buf.is_empty() {
            return Err(ManifestError::TrailingBytes(r.buf.len()));
        }
        Ok(Self {
            manifest,
            signer,
            signature,
        })
    }

    /// Verifies the signature against the configured manufacturer key and returns the manifest.
    /// A different signer is [`ManifestError::WrongSigner`]; any change to a signed byte is
    /// [`ManifestError::BadSignature`]. Uses strict ed25519 verification (no malleable or
    /// small-order signatures).
    pub fn verify(&self, manufacturer: &VerifyingKey) -> Result<&Manifest, ManifestError> {
        if self.signer != manufacturer.to_bytes() {
            return Err(ManifestError::WrongSigner);
        }
        let key =
            VerifyingKey::from_bytes(&self.signer).map_err(|_| ManifestError::BadSignerKey)?;
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.manifest.signing_bytes()?, &sig)
            .map_err(|_| ManifestError::BadSignature)?;
        Ok(&self.manifest)
    }

    /// Decodes and verifies in one step.
    pub fn decode_verified(
        bytes: &[u8],
        manufacturer: &VerifyingKey,
    ) -> Result<Self, ManifestError> {
        let signed = Self::decode(bytes)?;
        signed.verify(manufacturer)?;
        Ok(signed)
    }

    /// The signed manifest as pretty JSON (keys and signature in lowercase hex).
    pub fn to_json(&self) -> Result<String, ManifestError> {
        serde_json::to_string_pretty(self).map_err(|e| ManifestError::Json(e.to_string()))
    }

    /// Parses the JSON form (does not verify the signature).
    pub fn from_json(s: &str) -> Result<Self, ManifestError> {
        let m: Self = serde_json::from_str(s).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.manifest.validate()?;
        Ok(m)
    }
}

/// Bounded cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ManifestError> {
        if self.buf.len() < n {
            return Err(ManifestError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ManifestError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ManifestError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ManifestError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ManifestError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ManifestError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn text(
        &mut self,
        n: usize,
        field: &'static str,
        allow_ws: bool,
    ) -> Result<String, ManifestError> {
        let s =
            std::str::from_utf8(self.take(n, field)?).map_err(|_| ManifestError::BadText(field))?;
        check_text(field, s, allow_ws)?;
        Ok(s.to_owned())
    }
}

/// Serde helper: a CID as its default string form (base32 for CIDv1).
mod cid_string {
    use cid::Cid;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(cid: &Cid, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(cid)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cid, D::Error> {
        let s = String::deserialize(d)?;
        Cid::try_from(s.as_str()).map_err(serde::de::Error::custom)
    }
}

/// Serde helper: a fixed-size byte array as lowercase hex.
mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(a: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("expected {} hex digits", 2 * N));
        if s.len() != 2 * N || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; N];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}
