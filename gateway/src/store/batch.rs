//! Uplink batches and their signed, canonical encoding.
//!
//! # The signed bytes
//!
//! A batch's signature is ed25519 (RFC 8032, `ed25519-dalek`, pure Ed25519 — no prehash)
//! by the gateway's key over [`Batch::signing_bytes`]; all integers big-endian:
//!
//! ```text
//! "MEF-GW-BATCH1"            13 bytes, ASCII, the domain separator and format version
//! gateway public key         32 bytes
//! batch id                   u64
//! first_seq                  u64
//! last_seq                   u64
//! reading count              u32
//! readings                   count × reading encoding, in sequence order
//! ```
//!
//! One reading ([`encode_reading`]):
//!
//! ```text
//! seq                        u64
//! source                     u8     0 = BLE, 1 = LoRa
//! device                     8 bytes
//! time_ms                    u64
//! quantity                   u16 length || UTF-8 bytes
//! value                      u64    IEEE-754 bits of the f64
//! unit                       u16 length || UTF-8 bytes
//! frame_id                   u8 0 | u8 1 || u32
//! rssi_dbm                   u8 0 | u8 1 || i16
//! snr_db                     u8 0 | u8 1 || u32 (IEEE-754 bits of the f32)
//! frequency_hz               u8 0 | u8 1 || u64
//! data_rate                  u8 0 | u8 1 || u16 length || UTF-8 bytes
//! gateway_eui                u8 0 | u8 1 || 8 bytes
//! ```
//!
//! The encoding is injective (every variable field is length-prefixed, every optional field
//! tagged), so a signature binds the batch's exact contents and position in the queue. The
//! same batch re-sent after a crash or an uplink failure has the same id, range, readings and
//! (ed25519 being deterministic) the same signature.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::reading::{Reading, Source};

/// The domain separator and format version at the start of the signed bytes.
pub const BATCH_DOMAIN: &[u8; 13] = b"MEF-GW-BATCH1";

/// A reading as queued: its sequence number and the reading.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedReading {
    /// The store's sequence number: increasing in append order, never reused.
    pub seq: u64,
    /// The reading.
    pub reading: Reading,
}

/// A signed batch of the oldest unsent readings, handed to an [`crate::uplink::Uplink`].
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The batch id (increasing, never reused). A batch re-sent after a restart or an uplink
    /// failure keeps its id and its sequence range.
    pub id: u64,
    /// Sequence number of the first reading.
    pub first_seq: u64,
    /// Sequence number of the last reading.
    pub last_seq: u64,
    /// The readings, in sequence order.
    pub readings: Vec<QueuedReading>,
    /// The gateway's public key (the signer).
    pub gateway: [u8; 32],
    /// ed25519 signature over [`Batch::signing_bytes`].
    pub signature: [u8; 64],
}

/// Why a batch's signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The batch names a different gateway key than the one expected.
    #[error("batch is signed by another gateway key")]
    WrongGateway,
    /// The batch's gateway field is not a valid ed25519 public key.
    #[error("batch gateway key is not a valid ed25519 point")]
    BadKey,
    /// The signature does not verify over the batch's bytes (tampered or corrupt).
    #[error("batch signature does not verify")]
    BadSignature,
    /// A string field is longer than its 16-bit length prefix allows.
    #[error("batch reading field {field} is {len} bytes (at most 65535)")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
}

impl Batch {
    /// Builds and signs a batch.
    pub(crate) fn sign(
        key: &SigningKey,
        id: u64,
        first_seq: u64,
        last_seq: u64,
        readings: Vec<QueuedReading>,
    ) -> Result<Batch, BatchError> {
        let mut batch = Batch {
            id,
            first_seq,
            last_seq,
            readings,
            gateway: key.verifying_key().to_bytes(),
            signature: [0; 64],
        };
        let bytes = batch.signing_bytes()?;
        batch.signature = key.sign(&bytes).to_bytes();
        Ok(batch)
    }

    /// The bytes the signature covers (see the [module docs](self)).
    ///
    /// Errors: [`BatchError::FieldTooLong`] when a string does not fit its length prefix (the
    /// store refuses such readings on append, so only a hand-built batch can hit this).
    pub fn signing_bytes(&self) -> Result<Vec<u8>, BatchError> {
        let mut out = Vec::with_capacity(13 + 32 + 28 + self.readings.len() * 64);
        out.extend_from_slice(BATCH_DOMAIN);
        out.extend_from_slice(&self.gateway);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.extend_from_slice(&self.last_seq.to_be_bytes());
        let count = u32::try_from(self.readings.len()).map_err(|_| BatchError::FieldTooLong {
            field: "readings",
            len: self.readings.len(),
        })?;
        out.extend_from_slice(&count.to_be_bytes());
        for q in &self.readings {
            encode_reading(&mut out, q.seq, &q.reading)?;
        }
        Ok(out)
    }

    /// Verifies the signature with the batch's own `gateway` key, which must equal
    /// `expected` (the key the receiver knows this gateway by).
    pub fn verify(&self, expected: &VerifyingKey) -> Result<(), BatchError> {
        if self.gateway != expected.to_bytes() {
            return Err(BatchError::WrongGateway);
        }
        let key = VerifyingKey::from_bytes(&self.gateway).map_err(|_| BatchError::BadKey)?;
        let bytes = self.signing_bytes()?;
        key.verify(&bytes, &Signature::from_bytes(&self.signature))
            .map_err(|_| BatchError::BadSignature)
    }
}

/// Appends the canonical encoding of one reading (see the [module docs](self)).
pub fn encode_reading(out: &mut Vec<u8>, seq: u64, r: &Reading) -> Result<(), BatchError> {
    out.extend_from_slice(&seq.to_be_bytes());
    out.push(source_code(r.source));
    out.extend_from_slice(&r.device.0);
    out.extend_from_slice(&r.time_ms.to_be_bytes());
    put_str(out, "quantity", &r.quantity)?;
    out.extend_from_slice(&r.value.to_bits().to_be_bytes());
    put_str(out, "unit", &r.unit)?;
    put_opt(out, r.frame_id, |o, v| {
        o.extend_from_slice(&v.to_be_bytes())
    });
    let m = &r.radio;
    put_opt(out, m.rssi_dbm, |o, v| {
        o.extend_from_slice(&v.to_be_bytes())
    });
    put_opt(out, m.snr_db, |o, v| {
        o.extend_from_slice(&v.to_bits().to_be_bytes())
    });
    put_opt(out, m.frequency_hz, |o, v| {
        o.extend_from_slice(&v.to_be_bytes())
    });
    match &m.data_rate {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, "data_rate", s)?;
        }
    }
    put_opt(out, m.gateway_eui, |o, v| o.extend_from_slice(&v));
    Ok(())
}

/// The length of [`encode_reading`]'s output (what a reading counts against
/// [`super::Limits::max_bytes`]).
pub fn encoded_len(r: &Reading) -> usize {
    let m = &r.radio;
    8 + 1
        + 8
        + 8
        + 2
        + r.quantity.len()
        + 8
        + 2
        + r.unit.len()
        + 1
        + r.frame_id.map_or(0, |_| 4)
        + 1
        + m.rssi_dbm.map_or(0, |_| 2)
        + 1
        + m.snr_db.map_or(0, |_| 4)
        + 1
        + m.frequency_hz.map_or(0, |_| 8)
        + 1
        + m.data_rate.as_ref().map_or(0, |s| 2 + s.len())
        + 1
        + m.gateway_eui.map_or(0, |_| 8)
}

/// The source's code in the encoding and the database.
pub(crate) fn source_code(s: Source) -> u8 {
    match s {
        Source::Ble => 0,
        Source::Lora => 1,
    }
}

/// Checks that the reading's strings fit their 16-bit length prefixes.
pub(crate) fn check_lengths(r: &Reading) -> Result<(), BatchError> {
    let fields = [
        ("quantity", r.quantity.len()),
        ("unit", r.unit.len()),
        (
            "data_rate",
            r.radio.data_rate.as_ref().map_or(0, String::len),
        ),
    ];
    for (field, len) in fields {
        if len > usize::from(u16::MAX) {
            return Err(BatchError::FieldTooLong { field, len });
        }
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), BatchError> {
    let len = u16::try_from(s.len()).map_err(|_| BatchError::FieldTooLong {
        field,
        len: s.len(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, f: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            f(out, v);
        }
    }
}
