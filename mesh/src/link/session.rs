//! One established Noise transport session: keys, counters and the replay window.

use std::time::Instant;

use snow::StatelessTransportState;

use super::replay::{ReplayError, ReplayWindow};
use crate::packet::{Packet, TAG_LEN, Transport};

/// Largest counter we use: Noise reserves nonce `2^64 - 1` (Noise rev 34 §5.1), and we stop a
/// little earlier, like WireGuard's `REJECT-AFTER-MESSAGES` (WireGuard paper §6.1).
pub(crate) const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

/// Why a transport packet was not accepted by a session.
#[derive(Debug)]
pub(crate) enum RecvError {
    Replay(ReplayError),
    BadAuth,
}

/// An established session (one Noise handshake's transport keys).
pub(crate) struct Session {
    /// Our index: peers address transport packets to it.
    pub(crate) local_index: u32,
    /// The peer's index: we address our transport packets to it.
    pub(crate) remote_index: u32,
    /// Whether we were the Noise initiator of this session.
    pub(crate) initiator: bool,
    /// When the handshake completed.
    pub(crate) created: Instant,
    transport: StatelessTransportState,
    send_counter: u64,
    window: ReplayWindow,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("send_counter", &self.send_counter)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        transport: StatelessTransportState,
        local_index: u32,
        remote_index: u32,
        initiator: bool,
        now: Instant,
    ) -> Self {
        Session {
            local_index,
            remote_index,
            initiator,
            created: now,
            transport,
            send_counter: 0,
            window: ReplayWindow::new(),
        }
    }

    /// Packets sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.send_counter
    }

    /// Encrypts `payload` into a transport packet with the next counter as nonce.
    pub(crate) fn seal(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            return None;
        }
        let counter = self.send_counter;
        let mut ct = vec![0u8; payload.len() + TAG_LEN];
        let n = self
            .transport
            .write_message(counter, payload, &mut ct)
            .ok()?;
        ct.truncate(n);
        self.send_counter += 1;
        Packet::Transport(Transport {
            receiver: self.remote_index,
            counter,
            ciphertext: &ct,
        })
        .to_vec()
        .ok()
    }

    /// Checks the window, decrypts, then marks the counter seen (RFC 4303 §3.4.3 order).
    pub(crate) fn open(&mut self, counter: u64, ciphertext: &[u8]) -> Result<Vec<u8>, RecvError> {
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(RecvError::Replay(ReplayError::TooOld));
        }
        self.window.check(counter).map_err(RecvError::Replay)?;
        let mut out = vec![0u8; ciphertext.len()];
        let n = self
            .transport
            .read_message(counter, ciphertext, &mut out)
            .map_err(|_| RecvError::BadAuth)?;
        out.truncate(n);
        self.window.update(counter).map_err(RecvError::Replay)?;
        Ok(out)
    }
}
