//! Encrypted BTHome v2 adverts (<https://bthome.io/encryption>).
//!
//! AES-128-CCM with the device's 16-byte bind key, a 4-byte MIC and no associated data.
//! The service data value (after the UUID) is
//!
//! ```text
//! device info (1) | ciphertext (n) | counter (4) | MIC (4)
//! ```
//!
//! and the 13-byte nonce is `MAC (6, as printed) || UUID (0xD2 0xFC) || device info (1) ||
//! counter (4, as sent)` (bthome.io/encryption, "Encrypting the input"). The counter is an
//! unsigned 32-bit little-endian integer that the sender must increase with every advert;
//! the spec leaves replay protection to the receiver: [`Decryptor`] rejects a counter that
//! is not strictly above the last one it accepted.

use aes::Aes128;
use ccm::Ccm;
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U4, U13};

use super::{Advertisement, Error, VERSION, device_info, device_info_byte, parse_objects};

/// AES-128-CCM with a 4-byte tag and a 13-byte nonce (bthome.io/encryption).
type BtHomeCcm = Ccm<Aes128, U4, U13>;

/// Bytes around the ciphertext: device info (1) + counter (4) + MIC (4).
const OVERHEAD: usize = 9;

/// The 13-byte nonce: MAC || 0xD2 0xFC || device info || counter (bthome.io/encryption).
fn nonce(mac: [u8; 6], info: u8, counter: [u8; 4]) -> [u8; 13] {
    let mut n = [0u8; 13];
    n[..6].copy_from_slice(&mac);
    n[6..8].copy_from_slice(&super::SERVICE_UUID.to_le_bytes());
    n[8] = info;
    n[9..].copy_from_slice(&counter);
    n
}

/// Encrypt BTHome objects (`plaintext`: id/value pairs, no device info byte) into a
/// complete encrypted service data value (without the UUID), for simulators and tests.
///
/// `counter` is written little-endian; the spec example's counter bytes `00112233` are
/// `u32::from_le_bytes([0x00, 0x11, 0x22, 0x33])`.
///
/// Fails only with [`Error::PlaintextTooLong`] (CCM with a 13-byte nonce is limited to
/// 65535 bytes; a BLE advert carries at most ~250).
pub fn encrypt(
    key: &[u8; 16],
    mac: [u8; 6],
    trigger_based: bool,
    counter: u32,
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let info = device_info_byte(true, trigger_based);
    let ctr = counter.to_le_bytes();
    let cipher = BtHomeCcm::new(GenericArray::from_slice(key));
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.push(info);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(1);
    let n = nonce(mac, info, ctr);
    let tag = cipher
        .encrypt_in_place_detached(GenericArray::from_slice(&n), b"", &mut body)
        .map_err(|_| Error::PlaintextTooLong(plaintext.len()))?;
    out.extend_from_slice(&body);
    out.extend_from_slice(&ctr);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Decrypts one device's adverts and enforces increasing counters (replay protection).
#[derive(Clone)]
pub struct Decryptor {
    mac: [u8; 6],
    cipher: BtHomeCcm,
    last_counter: Option<u32>,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Decryptor")
            .field("mac", &self.mac)
            .field("last_counter", &self.last_counter)
            .finish()
    }
}

impl Decryptor {
    /// A decryptor for the device with MAC `mac` (as printed) and bind key `key`.
    pub fn new(mac: [u8; 6], key: &[u8; 16]) -> Self {
        Decryptor {
            mac,
            cipher: BtHomeCcm::new(GenericArray::from_slice(key)),
            last_counter: None,
        }
    }

    /// Like [`Decryptor::new`], resuming after `last_counter` (e.g. persisted across restarts).
    pub fn with_last_counter(mac: [u8; 6], key: &[u8; 16], last_counter: u32) -> Self {
        Decryptor {
            last_counter: Some(last_counter),
            ..Self::new(mac, key)
        }
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The last counter accepted, if any.
    pub fn last_counter(&self) -> Option<u32> {
        self.last_counter
    }

    /// Check, decrypt and parse an encrypted service data value (without the UUID).
    ///
    /// Errors: [`Error::Empty`], [`Error::UnsupportedVersion`], [`Error::NotEncrypted`] (a
    /// plain advert from a device with a key), [`Error::EncryptedTooShort`],
    /// [`Error::Replay`] (counter not above the last accepted one; checked before the MIC,
    /// and the last counter only advances once the MIC verifies), [`Error::Mic`], or any
    /// parse error of the decrypted objects.
    pub fn decrypt(&mut self, data: &[u8]) -> Result<Advertisement, Error> {
        let (&info, _) = data.split_first().ok_or(Error::Empty)?;
        let (encrypted, _, version) = device_info(info);
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        if !encrypted {
            return Err(Error::NotEncrypted);
        }
        if data.len() < OVERHEAD {
            return Err(Error::EncryptedTooShort(data.len()));
        }
        let (head, mic) = data.split_at(data.len() - 4);
        let (head, ctr) = head.split_at(head.len() - 4);
        let ctr: [u8; 4] = ctr
            .try_into()
            .map_err(|_| Error::EncryptedTooShort(data.len()))?;
        let counter = u32::from_le_bytes(ctr);
        if let Some(last) = self.last_counter
            && counter <= last
        {
            return Err(Error::Replay { counter, last });
        }
        let mut body = head[1..].to_vec();
        let n = nonce(self.mac, info, ctr);
        self.cipher
            .decrypt_in_place_detached(
                GenericArray::from_slice(&n),
                b"",
                &mut body,
                GenericArray::from_slice(mic),
            )
            .map_err(|_| Error::Mic)?;
        self.last_counter = Some(counter);
        parse_objects(info, &body)
    }
}
