//! MAC1/MAC2 and cookie replies under load (WireGuard paper §5.3 "Cookie MACs", §5.4.4
//! "Cookie MACs", §5.4.7 "Under Load: Cookie Reply Message").
//!
//! Every handshake message carries MAC1, keyed by `HASH(LABEL_MAC1 || S_pub)` of the
//! *receiver's* static public key: checking it costs one BLAKE2s, so random bytes are dropped
//! before any Diffie-Hellman. When the responder is under load (more than a configured number
//! of handshake messages in the current or the previous second) it also demands MAC2, keyed by
//! a *cookie* `τ = MAC(R, source)` where `R` is a random secret rotated every two minutes and
//! `source` identifies the sender's address. A message without a valid MAC2 is answered with a
//! cookie reply (τ encrypted with XChaCha20-Poly1305 under `HASH(LABEL_COOKIE || S_pub)`, the
//! message's MAC1 as associated data) and not processed. A real peer decrypts the cookie and
//! its next message carries a valid MAC2; a flooder spoofing source addresses never receives
//! the cookie for those addresses, so it only costs the responder MAC checks.
//!
//! This module is the transport-independent part: the caller frames the messages and chooses
//! the `source` bytes (an IP address and port, or any token a spoofer cannot receive at).

use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{Digest, Mac};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand::Rng as _;

/// Length of MAC1, MAC2 and the cookie τ (WireGuard §5.4.4: 16-byte keyed BLAKE2s).
pub const MAC_LEN: usize = 16;
/// Length of a cookie reply's nonce (XChaCha20-Poly1305, WireGuard §5.4.7).
pub const COOKIE_NONCE_LEN: usize = 24;
/// Length of an encrypted cookie: τ plus the Poly1305 tag.
pub const ENCRYPTED_COOKIE_LEN: usize = MAC_LEN + 16;
/// WireGuard §5.4.4: `LABEL_MAC1`.
pub const LABEL_MAC1: &[u8] = b"mac1----";
/// WireGuard §5.4.4: `LABEL_COOKIE`.
pub const LABEL_COOKIE: &[u8] = b"cookie--";
/// How long a cookie secret `R` (responder) and a received cookie (initiator) live: two minutes
/// (WireGuard §5.4.7, §6.1).
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);

/// `HASH(label || key)` with BLAKE2s-256 (WireGuard §5.4.4): the MAC1 key with
/// [`LABEL_MAC1`], the cookie encryption key with [`LABEL_COOKIE`].
pub fn hash_label(label: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, label);
    Digest::update(&mut h, key);
    h.finalize().into()
}

/// `MAC(key, data)`: keyed BLAKE2s with a 16-byte output (WireGuard §5.4.4). `key` is at most 32
/// bytes (the cookie is 16, the MAC1 key 32); a longer key yields all zeros, which no check
/// accepts as a MAC of ours.
pub fn mac(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let Ok(mut m) = <Blake2sMac<U16> as blake2::digest::KeyInit>::new_from_slice(key) else {
        return [0u8; MAC_LEN];
    };
    Mac::update(&mut m, data);
    m.finalize().into_bytes().into()
}

/// Constant-time equality of two MACs.
pub fn mac_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the two MACs at the end of `msg` (`... | mac1 | mac2`) have a valid MAC1 for
/// `mac1_key` (computed over everything before MAC1). False if `msg` is too short.
pub fn mac1_ok(mac1_key: &[u8; 32], msg: &[u8]) -> bool {
    let Some(n) = msg.len().checked_sub(2 * MAC_LEN) else {
        return false;
    };
    let mut m = [0u8; MAC_LEN];
    m.copy_from_slice(&msg[n..n + MAC_LEN]);
    mac_eq(&mac(mac1_key, &msg[..n]), &m)
}

/// Fills the two MACs at the end of `msg` (`... | mac1 | mac2`, the last 32 bytes): MAC1 under
/// `mac1_key`, MAC2 under `cookie` if one is given (else zeros), WireGuard §5.4.4. Returns
/// MAC1 (the initiator keeps it to open a cookie reply), or `None` if `msg` is too short.
pub fn seal_macs(
    msg: &mut [u8],
    mac1_key: &[u8; 32],
    cookie: Option<&[u8; MAC_LEN]>,
) -> Option<[u8; MAC_LEN]> {
    let n = msg.len().checked_sub(2 * MAC_LEN)?;
    let m1 = mac(mac1_key, &msg[..n]);
    msg[n..n + MAC_LEN].copy_from_slice(&m1);
    let m2 = cookie.map_or([0u8; MAC_LEN], |c| mac(c, &msg[..n + MAC_LEN]));
    msg[n + MAC_LEN..n + 2 * MAC_LEN].copy_from_slice(&m2);
    Some(m1)
}

/// Responder side: the load meter and the rotating cookie secret `R`. Sans-IO: every call
/// takes `now`; the secret is drawn from `rand`'s thread RNG and zeroized on drop.
pub struct CookieChecker {
    secret: zeroize::Zeroizing<[u8; 32]>,
    secret_born: Option<Instant>,
    window_start: Option<Instant>,
    count: u32,
    prev_count: u32,
    threshold: u32,
}

impl std::fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("CookieChecker")
            .field("count", &self.count)
            .field("prev_count", &self.prev_count)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl CookieChecker {
    /// A checker that considers itself under load when more than `threshold_per_sec` handshake
    /// messages (with a valid MAC1) arrive within one second (0: always under load).
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

    /// τ = MAC(R, source), rotating R every [`COOKIE_LIFETIME`] (WireGuard §5.4.7).
    fn cookie(&mut self, now: Instant, source: &[u8]) -> [u8; MAC_LEN] {
        let stale = self
            .secret_born
            .is_none_or(|b| now.saturating_duration_since(b) >= COOKIE_LIFETIME);
        if stale {
            rand::rng().fill_bytes(&mut self.secret[..]);
            self.secret_born = Some(now);
        }
        mac(&self.secret[..], source)
    }

    /// Whether `mac2` is `MAC(τ, msg_before_mac2)` for the cookie of `source`.
    pub fn check_mac2(
        &mut self,
        now: Instant,
        source: &[u8],
        msg_before_mac2: &[u8],
        mac2: &[u8; MAC_LEN],
    ) -> bool {
        let tau = self.cookie(now, source);
        mac_eq(&mac(&tau, msg_before_mac2), mac2)
    }

    /// Whether the MAC2 at the end of `msg` (`... | mac1 | mac2`) is valid for `source`.
    pub fn check_msg_mac2(&mut self, now: Instant, source: &[u8], msg: &[u8]) -> bool {
        let Some(n) = msg.len().checked_sub(MAC_LEN) else {
            return false;
        };
        let mut m2 = [0u8; MAC_LEN];
        m2.copy_from_slice(&msg[n..]);
        self.check_mac2(now, source, &msg[..n], &m2)
    }

    /// The body of a cookie reply to a message from `source` whose MAC1 was `mac1`: a fresh
    /// random nonce and τ encrypted under `cookie_key` (`HASH(LABEL_COOKIE || our S_pub)`)
    /// with `mac1` as associated data (WireGuard §5.4.7).
    pub fn seal_cookie(
        &mut self,
        now: Instant,
        source: &[u8],
        cookie_key: &[u8; 32],
        mac1: &[u8; MAC_LEN],
    ) -> ([u8; COOKIE_NONCE_LEN], [u8; ENCRYPTED_COOKIE_LEN]) {
        let tau = self.cookie(now, source);
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aead = XChaCha20Poly1305::new(cookie_key.into());
        let mut buf = tau;
        let mut encrypted = [0u8; ENCRYPTED_COOKIE_LEN];
        // Encrypting 16 bytes cannot fail (the only error is a length overflow).
        if let Ok(tag) =
            aead.encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, &mut buf[..])
        {
            encrypted[..MAC_LEN].copy_from_slice(&buf);
            encrypted[MAC_LEN..].copy_from_slice(&tag);
        }
        (nonce, encrypted)
    }
}

/// Initiator side: decrypts a cookie reply's body with `cookie_key` (`HASH(LABEL_COOKIE ||
/// responder S_pub)`) and the MAC1 we last sent. `None` if it does not authenticate.
pub fn open_cookie(
    cookie_key: &[u8; 32],
    nonce: &[u8; COOKIE_NONCE_LEN],
    encrypted: &[u8; ENCRYPTED_COOKIE_LEN],
    last_mac1: &[u8; MAC_LEN],
) -> Option<[u8; MAC_LEN]> {
    let aead = XChaCha20Poly1305::new(cookie_key.into());
    let mut cookie = [0u8; MAC_LEN];
    cookie.copy_from_slice(&encrypted[..MAC_LEN]);
    let tag = Tag::from_slice(&encrypted[MAC_LEN..]);
    aead.decrypt_in_place_detached(XNonce::from_slice(nonce), last_mac1, &mut cookie[..], tag)
        .ok()?;
    Some(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_seal_and_check() {
        let key = hash_label(LABEL_MAC1, &[7u8; 32]);
        let mut msg = vec![1u8; 40 + 2 * MAC_LEN];
        let m1 = seal_macs(&mut msg, &key, None).expect("long enough");
        assert!(mac1_ok(&key, &msg));
        assert_eq!(&msg[40..56], &m1);
        assert_eq!(&msg[56..], &[0u8; MAC_LEN]);
        msg[3] ^= 1;
        assert!(!mac1_ok(&key, &msg));
        assert!(!mac1_ok(&key, &[0u8; 31]));
        assert!(seal_macs(&mut [0u8; 31], &key, None).is_none());
    }

    #[test]
    fn cookie_round_trip_and_mac2() {
        let now = Instant::now();
        let mut c = CookieChecker::new(1);
        assert!(!c.note_handshake(now));
        assert!(
            c.note_handshake(now),
            "second message in a second is over 1"
        );
        let ck = hash_label(LABEL_COOKIE, &[9u8; 32]);
        let mac1 = [5u8; MAC_LEN];
        let (nonce, enc) = c.seal_cookie(now, b"src", &ck, &mac1);
        let tau = open_cookie(&ck, &nonce, &enc, &mac1).expect("opens");
        assert!(open_cookie(&ck, &nonce, &enc, &[6u8; MAC_LEN]).is_none());
        let mk = hash_label(LABEL_MAC1, &[9u8; 32]);
        let mut msg = vec![2u8; 20 + 2 * MAC_LEN];
        seal_macs(&mut msg, &mk, Some(&tau));
        assert!(c.check_msg_mac2(now, b"src", &msg));
        assert!(
            !c.check_msg_mac2(now, b"other", &msg),
            "cookie is per source"
        );
        // After the secret rotates the old cookie is worthless.
        assert!(!c.check_msg_mac2(now + COOKIE_LIFETIME, b"src", &msg));
    }
}
