//! One transport keypair (WireGuard paper §5.4.6): two ChaCha20-Poly1305 keys from the Noise
//! split, the 64-bit send counter used as nonce, and the receive [`ReplayWindow`].

use std::time::Instant;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use zeroize::Zeroize;

use super::TunnelError;
use super::replay::ReplayWindow;
use super::wire::{DATA_HEADER_LEN, TAG_LEN, write_data_header};

/// WireGuard §6.1: `REJECT_AFTER_MESSAGES` = 2^64 − 2^13 − 1; a counter at or above it is never
/// used or accepted.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

/// WireGuard §5.4.6: the nonce is 32 zero bits followed by the little-endian 64-bit counter.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// A transport session. The ciphers zeroize their keys on drop (`chacha20poly1305`'s `zeroize`).
pub(crate) struct Session {
    /// Our index: the peer puts it in the receiver field of data for us.
    pub local_index: u32,
    /// The peer's index: we put it in the receiver field.
    pub remote_index: u32,
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
    /// Next counter to send.
    pub send_counter: u64,
    replay: ReplayWindow,
    /// When the handshake that made it completed.
    pub created: Instant,
    /// Whether we were the initiator (only the initiator rekeys on time, WireGuard §6.2).
    pub initiator: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("send_counter", &self.send_counter)
            .field("initiator", &self.initiator)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl Session {
    /// Builds a session from the Noise split `(k1, k2)` (Noise spec §5.2 `Split()`): the
    /// initiator sends with k1, the responder with k2. Both key arrays are zeroized.
    pub fn new(
        mut split: ([u8; 32], [u8; 32]),
        initiator: bool,
        local_index: u32,
        remote_index: u32,
        now: Instant,
    ) -> Self {
        let (send, recv) = if initiator {
            (&split.0, &split.1)
        } else {
            (&split.1, &split.0)
        };
        let s = Self {
            local_index,
            remote_index,
            send: ChaCha20Poly1305::new(send.into()),
            recv: ChaCha20Poly1305::new(recv.into()),
            send_counter: 0,
            replay: ReplayWindow::new(),
            created: now,
            initiator,
        };
        split.0.zeroize();
        split.1.zeroize();
        s
    }

    /// Encrypts `packet` (padded with zeros to a multiple of 16, WireGuard §5.4.6) into a
    /// complete data message in `out`; returns its length.
    pub fn encrypt(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, TunnelError> {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            return Err(TunnelError::SessionExhausted);
        }
        let padded = packet.len().div_ceil(16) * 16;
        let need = DATA_HEADER_LEN + padded + TAG_LEN;
        if out.len() < need {
            return Err(TunnelError::BufferTooSmall {
                need,
                have: out.len(),
            });
        }
        let counter = self.send_counter;
        write_data_header(out, self.remote_index, counter)?;
        let body = &mut out[DATA_HEADER_LEN..DATA_HEADER_LEN + padded];
        body[..packet.len()].copy_from_slice(packet);
        body[packet.len()..].fill(0);
        let tag = self
            .send
            .encrypt_in_place_detached(&nonce(counter), &[], body)
            .map_err(|_| TunnelError::PacketTooLarge(packet.len()))?;
        out[DATA_HEADER_LEN + padded..need].copy_from_slice(&tag);
        self.send_counter += 1;
        Ok(need)
    }

    /// Authenticates and decrypts `encrypted` (ciphertext + tag) with counter `counter` into
    /// `out`; returns the plaintext length. Replays are rejected before decryption (RFC 6479)
    /// and the window is only updated after authentication.
    pub fn decrypt(
        &mut self,
        counter: u64,
        encrypted: &[u8],
        out: &mut [u8],
    ) -> Result<usize, TunnelError> {
        if counter >= REJECT_AFTER_MESSAGES || !self.replay.check(counter) {
            return Err(TunnelError::Replay(counter));
        }
        if encrypted.len() < TAG_LEN {
            return Err(TunnelError::DecryptFailed);
        }
        let n = encrypted.len() - TAG_LEN;
        if out.len() < n {
            return Err(TunnelError::BufferTooSmall {
                need: n,
                have: out.len(),
            });
        }
        out[..n].copy_from_slice(&encrypted[..n]);
        let tag = Tag::from_slice(&encrypted[n..]);
        self.recv
            .decrypt_in_place_detached(&nonce(counter), &[], &mut out[..n], tag)
            .map_err(|_| TunnelError::DecryptFailed)?;
        if !self.replay.update(counter) {
            return Err(TunnelError::Replay(counter));
        }
        Ok(n)
    }
}
