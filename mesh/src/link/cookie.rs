//! MAC1/MAC2 and cookie replies for mesh handshake initiations (WireGuard paper §5.3 "Cookie
//! MACs", §5.4.4, §5.4.7 "Under Load: Cookie Reply Message"), on the shared `wg-guard` code.
//!
//! Every `Init` ends with `mac1 | mac2` ([`crate::packet::Macs`]). MAC1 is keyed by
//! `HASH("mac1----" || responder static key)` for IK, so the [`Acceptor`](super::Acceptor)
//! drops random bytes and initiations meant for another key with one BLAKE2s, before any
//! Diffie-Hellman. Under load it also demands MAC2, keyed by a cookie bound to the sender's
//! source token, and answers initiations without it with a cookie reply instead of processing
//! them; the cookie is encrypted under `HASH("cookie--" || responder static key)`.
//!
//! **XX.** An XX initiator does not know the responder's static key, so neither MAC1 nor the
//! cookie encryption can be keyed by it. XX initiations use the same construction keyed by the
//! public label [`XX_LABEL`] instead. Their MAC1 therefore only rejects random or corrupted
//! bytes (anyone can compute it; the acceptor's per-source and global token buckets and the
//! bounded pending table remain XX's protection against deliberate floods), but MAC2 keeps its
//! full value: the cookie is bound to the source token, so under load a flooder spoofing
//! sources still never gets an XX initiation processed. What XX loses is only the encryption of
//! the cookie to our key: an on-path observer that sees the cookie reply to a victim's address
//! can use that cookie from the same address.

use wg_guard::cookie::{LABEL_COOKIE, LABEL_MAC1, MAC_LEN, hash_label};

use crate::packet::Pattern;

pub use wg_guard::cookie::{COOKIE_LIFETIME, mac1_ok, open_cookie, seal_macs};

/// The public stand-in for the responder's static key in XX MAC1 and cookie keys.
pub const XX_LABEL: &[u8] = b"MEF mesh XX initiation: responder key unknown";

/// The MAC1 key of an initiation with `pattern` to `responder` (its static key; ignored for XX).
pub fn mac1_key(pattern: Pattern, responder: &[u8; 32]) -> [u8; 32] {
    match pattern {
        Pattern::IK => hash_label(LABEL_MAC1, responder),
        Pattern::XX => hash_label(LABEL_MAC1, XX_LABEL),
    }
}

/// The cookie encryption key of a cookie reply to an initiation with `pattern` to `responder`.
pub fn cookie_key(pattern: Pattern, responder: &[u8; 32]) -> [u8; 32] {
    match pattern {
        Pattern::IK => hash_label(LABEL_COOKIE, responder),
        Pattern::XX => hash_label(LABEL_COOKIE, XX_LABEL),
    }
}

/// Fills MAC1 (and MAC2 if `cookie` is given) of an emitted `Init` for `responder` (any value
/// for XX); returns MAC1. `None` if `packet` is shorter than the two MACs.
pub fn seal_init(
    packet: &mut [u8],
    pattern: Pattern,
    responder: &[u8; 32],
    cookie: Option<&[u8; MAC_LEN]>,
) -> Option<[u8; MAC_LEN]> {
    seal_macs(packet, &mac1_key(pattern, responder), cookie)
}
