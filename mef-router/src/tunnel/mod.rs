//! A sans-IO router-to-router tunnel in WireGuard's design ("WireGuard: Next Generation Kernel
//! Network Tunnel", J. A. Donenfeld, NDSS 2017; section numbers below refer to it).
//!
//! Seed 003 has MEF routers "decrypt at the ingress, encrypt at the egress"; this module is that
//! encryption. Nothing here opens a socket or reads a clock: every input takes `now`, every output
//! is written into a caller-supplied buffer and described by a [`TunnResult`] (boringtun's `Tunn`
//! API shape), and [`Tunnel::next_deadline`] says when to call [`Tunnel::update_timers`].
//!
//! * Handshake: Noise `IKpsk2_25519_ChaChaPoly_BLAKE2s` (Noise spec rev. 34 §7.5 pattern IK, §9
//!   the `psk2` modifier) through `snow`, exactly WireGuard's choice (§5.4). IK lets the initiator
//!   authenticate in the first message and hide its identity; `psk2` mixes an optional pre-shared
//!   key (all zeros when unset, as in WireGuard) into the final keys, a hedge against a future
//!   break of X25519. The prologue is [`PROLOGUE`], so these handshakes never interoperate with
//!   WireGuard's or with other protocols.
//! * Messages ([`wire`]): initiation, response, cookie reply, transport data, with WireGuard's
//!   layouts; session indices route every message to its keypair (§5.4.2).
//! * Transport (§5.4.6, [`session`]): ChaCha20-Poly1305, nonce = 64-bit counter, plaintext padded
//!   to 16 bytes; an RFC 6479 anti-replay window of 4032 counters ([`replay`]).
//! * Timers (§6, [`TunnelConfig`]): rekey after 120 s or 2^60 messages, keys rejected after
//!   180 s, handshake retried every 5 s plus up to 333 ms jitter for 90 s, passive keepalive after
//!   10 s, new handshake when 15 s pass after sending without hearing back.
//! * Keypairs: previous / current / next (§6.3 "key rotation"): the responder keeps the new
//!   keypair as *next* until the initiator's first data message confirms it, and the previous
//!   keypair keeps decrypting packets still in flight.
//! * DoS (§5.3, [`cookie`]): MAC1 always checked; MAC2 + cookie replies when [`TunnelSet`] is
//!   under load; TAI64N timestamps ([`Tai64N`], passed in) reject replayed initiations (§5.1).
//!
//! Polling order, for both [`Tunnel`] and [`TunnelSet`]: after every `encapsulate`,
//! `decapsulate` or `update_timers` that did not return [`TunnResult::Err`], drain
//! [`Tunnel::poll_transmit`] until it returns [`TunnResult::Done`] (it flushes packets queued
//! while no session existed), then re-read [`Tunnel::next_deadline`].
//!
//! Session index layout: `peer tag << 8 | rolling counter`, where the tag (1..2^24) identifies the
//! peer inside a [`TunnelSet`] (boringtun does the same). This reveals a peer's slot number to an
//! observer but lets a data packet be routed without a table lookup.

pub mod cookie;
pub mod keys;
pub mod peer;
pub mod replay;
pub mod session;
pub mod set;
pub mod wire;

use thiserror::Error;

pub use keys::{KeyError, LocalKeys, PresharedKey, PrivateKey, PublicKey, Tai64N};
pub use peer::{Tunnel, TunnelConfig, TunnelState, TunnelStats};
pub use set::{PeerId, SetStats, TunnelSet, TunnelSetConfig};
pub use wire::{Message, WireError};

/// The Noise protocol name (Noise spec §8).
pub const NOISE_PARAMS: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// The Noise prologue (Noise spec §6), our analogue of WireGuard's identifier string (§5.4.1).
pub const PROLOGUE: &[u8] = b"MEF router tunnel v1";
/// Largest IP packet accepted for encapsulation.
pub const MAX_PACKET: usize = 65_535;
/// Bytes the tunnel adds to an IP packet besides padding: data header + tag.
pub const OVERHEAD: usize = wire::DATA_HEADER_LEN + wire::TAG_LEN;

/// What the caller must do with the output buffer after a tunnel call.
#[derive(Debug)]
pub enum TunnResult<'a> {
    /// Nothing to do.
    Done,
    /// The input was rejected, or a timer gave up; nothing to send. Counted in the stats.
    Err(TunnelError),
    /// Send these bytes to the peer's UDP endpoint.
    WriteToNetwork(&'a mut [u8]),
    /// Deliver this decrypted IP packet (IPv4 or IPv6, padding removed) to the TUN device.
    WriteToTunnel(&'a mut [u8]),
}

impl TunnResult<'_> {
    /// Whether this is [`TunnResult::Done`].
    pub fn is_done(&self) -> bool {
        matches!(self, TunnResult::Done)
    }
}

/// Why a tunnel call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TunnelError {
    /// The datagram is not a well-formed tunnel message.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// MAC1 does not match our public key: random bytes, or a sender configured with the wrong
    /// public key for us (WireGuard §5.4.4).
    #[error("invalid MAC1 (not addressed to our public key)")]
    InvalidMac1,
    /// The initiator's static key is not one of our peers.
    #[error("handshake from an unknown static key")]
    UnknownPeer,
    /// The initiation's timestamp is not newer than the greatest seen from this peer: a replayed
    /// initiation (WireGuard §5.1).
    #[error("replayed initiation (timestamp not newer than the last one)")]
    StaleTimestamp,
    /// More than 50 initiations per second from one peer (WireGuard's `INITIATIONS_PER_SECOND`).
    #[error("initiation rate limited")]
    RateLimited,
    /// The Noise handshake failed (wrong keys, tampering).
    #[error("noise handshake failed: {0}")]
    Noise(String),
    /// A response or cookie reply for no handshake of ours in flight.
    #[error("unexpected {0} for session index {1:#x}")]
    Unexpected(&'static str, u32),
    /// A cookie reply that does not authenticate.
    #[error("invalid cookie reply")]
    InvalidCookie,
    /// Data for a session index we do not have (expired or never existed).
    #[error("no session with index {0:#x}")]
    NoSession(u32),
    /// The session's keys are older than `REJECT_AFTER_TIME`.
    #[error("session expired")]
    SessionExpired,
    /// The counter was already received or is behind the window (RFC 6479).
    #[error("replayed or too old counter {0}")]
    Replay(u64),
    /// The data message does not authenticate (tampered, or wrong keys).
    #[error("data message failed authentication")]
    DecryptFailed,
    /// The decrypted payload is not an IPv4/IPv6 packet of consistent length.
    #[error("decrypted payload is not a valid IP packet")]
    InvalidPacket,
    /// The output buffer is too small.
    #[error("output buffer of {have} bytes, need {need}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The packet is larger than [`MAX_PACKET`].
    #[error("packet of {0} bytes is too large")]
    PacketTooLarge(usize),
    /// The send counter reached `REJECT_AFTER_MESSAGES`.
    #[error("session exhausted its nonces")]
    SessionExhausted,
    /// No handshake completed within `REKEY_ATTEMPT_TIME` (90 s); queued packets were dropped.
    #[error("handshake did not complete within the attempt time")]
    ConnectionExpired,
    /// A peer's tag does not fit in 24 bits, or too many peers.
    #[error("peer tag out of range")]
    TooManyPeers,
}

impl From<snow::Error> for TunnelError {
    fn from(e: snow::Error) -> Self {
        TunnelError::Noise(e.to_string())
    }
}
