//! Cookies under load (WireGuard paper §5.3 "Cookie MACs" and §5.4.7 "Under Load: Cookie Reply
//! Message").
//!
//! Every handshake message carries MAC1, keyed by a hash of the *receiver's* public key: checking
//! it costs one BLAKE2s, so random bytes are dropped before any Diffie-Hellman. When the responder
//! is under load (more than a configured number of handshake messages in the current second) it
//! also demands MAC2, keyed by a *cookie* `τ = MAC(R, source address)` where `R` is a random
//! secret rotated every two minutes. A message without a valid MAC2 is answered with a cookie reply
//! (the cookie encrypted with XChaCha20-Poly1305 under `HASH(LABEL_COOKIE || S_pub)`, the
//! message's MAC1 as associated data) and not processed. A real peer decrypts the cookie, stores
//! it, and its next initiation carries a valid MAC2; a flooder spoofing source addresses never
//! sees the cookie for its address, so it can only cost us MAC checks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand::Rng as _;

use super::keys::{LocalKeys, mac, mac_eq};
use super::wire::{CookieReply, MAC_LEN};

/// How long a cookie secret `R` (responder) and a received cookie (initiator) live: two minutes
/// (WireGuard §5.4.7, §6.1 `COOKIE_SECRET`/`REKEY_AFTER_TIME`).
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);

/// Responder side: the load meter and the rotating cookie secret.
#[derive(Debug)]
pub struct CookieChecker {
    secret: zeroize::Zeroizing<[u8; 32]>,
    secret_born: Option<Instant>,
    window_start: Option<Instant>,
    count: u32,
    prev_count: u32,
    threshold: u32,
}

impl CookieChecker {
    /// A checker that considers itself under load when more than `threshold_per_sec` handshake
    /// messages with a valid MAC1 arrive within one second (0: always under load).
    pub fn new(threshold_per_sec: u32) -> Self {
        Self {
            secret: zeroize::Zeroizing::new([0u8; 32]),
            secret_born: None,
            window_start: None,
            count: 0,
            prev_count: 0,
            threshold: threshold_per_sec,
        }
    }

    /// Counts one handshake message arriving at `now` and says whether we are under load
    /// (this second or the previous one over the threshold).
    pub fn note_handshake(&mut self, now: Instant) -> bool {
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < Duration::from_secs(1) => {}
            Some(s) if now.saturating_duration_since(s) < Duration::from_secs(2) => {
                self.prev_count = self.count;
                self.count = 0;
                self.window_start = Some(s + Duration::from_secs(1));
            }
            _ => {
                self.prev_count = 0;
                self.count = 0;
                self.window_start = Some(now);
            }
        }
        self.count = self.count.saturating_add(1);
        self.count > self.threshold || self.prev_count > self.threshold
    }

    fn cookie(&mut self, now: Instant, src: SocketAddr) -> [u8; MAC_LEN] {
        let stale = self
            .secret_born
            .is_none_or(|b| now.saturating_duration_since(b) >= COOKIE_LIFETIME);
        if stale {
            rand::rng().fill_bytes(&mut self.secret[..]);
            self.secret_born = Some(now);
        }
        mac(&self.secret[..], &addr_bytes(src))
    }

    /// Whether `mac2` is `MAC(τ, msg_before_mac2)` for the cookie of `src`.
    pub fn check_mac2(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg_before_mac2: &[u8],
        mac2: &[u8; MAC_LEN],
    ) -> bool {
        let tau = self.cookie(now, src);
        mac_eq(&mac(&tau, msg_before_mac2), mac2)
    }

    /// Builds the cookie reply to a message from `src` with session index `receiver` and MAC1
    /// `mac1` (WireGuard §5.4.7).
    pub fn reply(
        &mut self,
        now: Instant,
        src: SocketAddr,
        keys: &LocalKeys,
        receiver: u32,
        mac1: &[u8; MAC_LEN],
    ) -> CookieReply {
        let tau = self.cookie(now, src);
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let aead = XChaCha20Poly1305::new((&keys.cookie_key).into());
        let mut buf = tau;
        let mut encrypted_cookie = [0u8; 32];
        // Encrypting 16 bytes cannot fail (the only error is a length overflow).
        if let Ok(tag) =
            aead.encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, &mut buf[..])
        {
            encrypted_cookie[..16].copy_from_slice(&buf);
            encrypted_cookie[16..].copy_from_slice(&tag);
        }
        CookieReply {
            receiver,
            nonce,
            encrypted_cookie,
        }
    }
}

/// Initiator side: decrypts a cookie reply with `HASH(LABEL_COOKIE || peer S_pub)`
/// (`peer_cookie_key`) and the MAC1 we last sent. `None` if it does not authenticate.
pub fn open_cookie_reply(
    peer_cookie_key: &[u8; 32],
    reply: &CookieReply,
    last_mac1: &[u8; MAC_LEN],
) -> Option<[u8; MAC_LEN]> {
    let aead = XChaCha20Poly1305::new(peer_cookie_key.into());
    let mut cookie = [0u8; MAC_LEN];
    cookie.copy_from_slice(&reply.encrypted_cookie[..16]);
    let tag = Tag::from_slice(&reply.encrypted_cookie[16..]);
    aead.decrypt_in_place_detached(
        XNonce::from_slice(&reply.nonce),
        last_mac1,
        &mut cookie[..],
        tag,
    )
    .ok()?;
    Some(cookie)
}

/// The source address as bytes for the cookie MAC: IP octets then the port, big-endian.
fn addr_bytes(src: SocketAddr) -> Vec<u8> {
    let mut v = match src.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend_from_slice(&src.port().to_be_bytes());
    v
}
