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

//!
//! The MACs, the load meter, the rotating secret and the cookie encryption live in the shared
//! crate `wg-guard` (the mesh links use them too); this module adapts them to the tunnel's
//! socket addresses and wire types.

use std::net::SocketAddr;
use std::time::Instant;

pub use wg_guard::cookie::COOKIE_LIFETIME;

use super::keys::LocalKeys;
use super::wire::{CookieReply, MAC_LEN};

/// Responder side: the load meter and the rotating cookie secret.
#[derive(Debug)]
pub struct CookieChecker(wg_guard::cookie::CookieChecker);

impl CookieChecker {
    /// A checker that considers itself under load when more than `threshold_per_sec` handshake
    /// messages with a valid MAC1 arrive within one second (0: always under load).
    pub fn new(threshold_per_sec: u32) -> Self {
        Self(wg_guard::cookie::CookieChecker::new(threshold_per_sec))
    }

    /// Counts one handshake message arriving at `now` and says whether we are under load
    /// (this second or the previous one over the threshold).
    pub fn note_handshake(&mut self, now: Instant) -> bool {
        self.0.note_handshake(now)
    }

    /// Whether `mac2` is `MAC(τ, msg_before_mac2)` for the cookie of `src`.
    pub fn check_mac2(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg_before_mac2: &[u8],
        mac2: &[u8; MAC_LEN],
    ) -> bool {
        self.0
            .check_mac2(now, &addr_bytes(src), msg_before_mac2, mac2)
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
        let (nonce, encrypted_cookie) =
            self.0
                .seal_cookie(now, &addr_bytes(src), &keys.cookie_key, mac1);
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
    wg_guard::cookie::open_cookie(
        peer_cookie_key,
        &reply.nonce,
        &reply.encrypted_cookie,
        last_mac1,
    )
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
