//! The update flow: decide whether a signed manifest is an update, then stage the verified image.
//!
//! Issue 7 (seed 004, the firmware scenario: the manufacturer records the hash of the latest
//! firmware, devices fetch the image from a content-addressed peer-to-peer file system and check
//! it against the hash): "a gateway sees a newer signed manifest for its model, fetches the DAG,
//! verifies the whole image, and only then stages it (atomic rename)". "Nothing unverified ever
//! reaches the staging area"; "a lying peer cannot make a gateway stage a wrong image".
//!
//! * [`UpdatePolicy::check`] authenticates a [`SignedManifest`] against the trusted manufacturer
//!   keys and compares model and version. Only it makes a [`VerifiedUpdate`], the one input
//!   [`Stager::stage`] takes, so an unauthenticated manifest cannot be staged.
//! * [`Stager`] rebuilds the image from any [`BlockSource`](crate::unixfs::BlockSource) with the
//!   verifying reader (every block checked against its CID, the root CID being the signed one),
//!   checks its size against the manifest, and only then renames it into the staging directory.
//! * [`dag`]: walking an image's DAG, pinning it in the [`Blockstore`](crate::blockstore::Blockstore)
//!   (and unpinning the previous version), exporting it as a CAR, and [`StoreBlocks`], the
//!   blockstore as a block source.
//!
//! Sans-IO apart from the staging directory: fetching blocks is the caller's business (the
//! [`exchange`](crate::exchange) session, a CAR, the local store).

pub mod dag;
mod stage;

use ed25519_dalek::VerifyingKey;

use crate::blockstore::BlockstoreError;
use crate::manifest::{Manifest, ManifestError, SignedManifest, Version};
use crate::unixfs::ExportError;

pub use dag::{
    PinReport, StoreBlocks, dag_blocks, is_complete, pin_image, replace_pin, walk_dag,
    write_dag_car,
};
pub use stage::{StagedImage, Stager, staged_name};

/// Why an update was refused or could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The manifest's signer is none of the trusted manufacturer keys.
    #[error("manifest signed by an untrusted key ({})", hex(signer))]
    UntrustedSigner {
        /// The signer's public key as found in the manifest.
        signer: [u8; 32],
    },
    /// The signer is trusted but the signature does not verify (the manifest was altered).
    #[error("manifest signature does not verify")]
    BadSignature,
    /// The manifest is malformed (encoding or field bounds).
    #[error("malformed manifest: {0}")]
    Manifest(#[source] ManifestError),
    /// The manifest is for another device model.
    #[error("manifest is for model {found:?}, this device is {expected:?}")]
    WrongModel {
        /// The device's model.
        expected: String,
        /// The manifest's model.
        found: String,
    },
    /// The manifest's version is older than the running one; downgrades are refused.
    #[error("downgrade refused: manifest version {offered} is older than the running {current}")]
    Downgrade {
        /// The manifest's version.
        offered: Version,
        /// The running version.
        current: Version,
    },
    /// The model name cannot be used in a staged file name (see [`staged_name`]).
    #[error("model name {0:?} cannot name a staged file")]
    UnsafeModelName(String),
    /// The rebuilt image is shorter or longer than the manifest says.
    #[error("image is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The manifest's size.
        expected: u64,
        /// The rebuilt image's size.
        actual: u64,
    },
    /// The image grew past the manifest's size (export stopped there).
    #[error("image is larger than the manifest's {expected} bytes")]
    TooLarge {
        /// The manifest's size.
        expected: u64,
    },
    /// The image could not be rebuilt: a block is missing, does not match its CID, or the DAG
    /// is not a well-formed UnixFS file.
    #[error("rebuilding the image: {0}")]
    Export(#[source] ExportError),
    /// A filesystem operation in the staging directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The blockstore failed.
    #[error("blockstore: {0}")]
    Blockstore(#[from] BlockstoreError),
}

impl UpdateError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A manifest that [`UpdatePolicy::check`] authenticated and found newer than the running
/// version. Only `check` makes one, so holding one proves the checks passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUpdate {
    signed: Box<SignedManifest>,
}

impl VerifiedUpdate {
    /// The authenticated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.signed.manifest
    }

    /// The manifest with its signature (what [`Stager::stage`] writes next to the image).
    pub fn signed(&self) -> &SignedManifest {
        &self.signed
    }

    /// Unwraps the signed manifest.
    pub fn into_signed(self) -> SignedManifest {
        *self.signed
    }
}

/// What [`UpdatePolicy::check`] decided about an authentic manifest for this model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The manifest is newer than the running version: fetch and stage it.
    Update(VerifiedUpdate),
    /// The manifest names the running version: nothing to do.
    UpToDate {
        /// The running (and offered) version.
        version: Version,
    },
}

/// A device's update rules: its model, running version and trusted manufacturer keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePolicy {
    /// The device model; manifests for other models are refused.
    pub model: String,
    /// The running firmware version; only strictly newer versions are updates.
    pub current: Version,
    /// The manufacturer keys a manifest may be signed with.
    pub trusted: Vec<VerifyingKey>,
}

impl UpdatePolicy {
    /// A policy for `model` running `current`, trusting `trusted`.
    pub fn new(model: impl Into<String>, current: Version, trusted: Vec<VerifyingKey>) -> Self {
        Self {
            model: model.into(),
            current,
            trusted,
        }
    }

    /// Authenticates `signed` (see [`authenticate`]), then compares model and version: another
    /// model is [`UpdateError::WrongModel`], an older version [`UpdateError::Downgrade`], the same
    /// version [`Decision::UpToDate`], a newer one [`Decision::Update`].
    pub fn check(&self, signed: &SignedManifest) -> Result<Decision, UpdateError> {
        let manifest = authenticate(signed, &self.trusted)?;
        self.check_model(manifest)?;
        if manifest.version == self.current {
            return Ok(Decision::UpToDate {
                version: self.current,
            });
        }
        check_version(manifest.version, self.current)?;
        Ok(Decision::Update(VerifiedUpdate {
            signed: Box::new(signed.clone()),
        }))
    }

    /// [`UpdateError::WrongModel`] unless `manifest` is for this policy's model.
    pub fn check_model(&self, manifest: &Manifest) -> Result<(), UpdateError> {
        if manifest.model == self.model {
            Ok(())
        } else {
            Err(UpdateError::WrongModel {
                expected: self.model.clone(),
                found: manifest.model.clone(),
            })
        }
    }
}

/// [`UpdateError::Downgrade`] if `offered` is older than `current`; `Ok(true)` if newer,
/// `Ok(false)` if equal.
pub fn check_version(offered: Version, current: Version) -> Result<bool, UpdateError> {
    match offered.cmp(&current) {
        std::cmp::Ordering::Less => Err(UpdateError::Downgrade { offered, current }),
        std::cmp::Ordering::Equal => Ok(false),
        std::cmp::Ordering::Greater => Ok(true),
    }
}

/// Checks that `signed` is signed by one of `trusted` (strict ed25519 over the manifest's
/// signing bytes) and that its fields are within bounds; returns the manifest.
pub fn authenticate<'a>(
    signed: &'a SignedManifest,
    trusted: &[VerifyingKey],
) -> Result<&'a Manifest, UpdateError> {
    let key = trusted
        .iter()
        .find(|k| k.to_bytes() == signed.signer)
        .ok_or(UpdateError::UntrustedSigner {
            signer: signed.signer,
        })?;
    signed.verify(key).map_err(|e| match e {
        ManifestError::BadSignature | ManifestError::BadSignerKey | ManifestError::WrongSigner => {
            UpdateError::BadSignature
        }
        other => UpdateError::Manifest(other),
    })
}
