//! Encrypted point-to-point links between gateways: a sans-IO Noise state machine per peer.
//!
//! # Design note
//!
//! **Patterns.** A link is a Noise handshake (Noise rev 34) with
//! `Noise_IK_25519_ChaChaPoly_BLAKE2s` when the initiator already knows the responder's static
//! key — the normal case, since we connect *by hashname* and the hashname's key comes from
//! discovery or configuration — and `Noise_XX_25519_ChaChaPoly_BLAKE2s` when it does not
//! (Noise rev 34 §7.5, interactive patterns). IK is one round trip and encrypts the
//! initiator's identity to the responder's static key (rev 34 §7.7, identity hiding: "IK"
//! row); an IK initiation addressed to a different static key fails to decrypt at `es`/`ss`
//! (§7.1), which is how a wrong-key responder is rejected. XX is 1.5 round trips, and the
//! responder learns the initiator's static key in message 3, derives its [`Hashname`] and asks
//! the [`Acceptor`]'s policy hook whether to accept it. Rekeys are always IK (both sides know
//! both keys by then). BLAKE2s and ChaChaPoly match WireGuard (WireGuard paper §5.4).
//!
//! **Key confirmation.** An IK responder has not seen proof that the initiator holds the new
//! session keys (an IK message 1 can be replayed, rev 34 §7.8 payload security property 1 for
//! message 1 only). Like WireGuard (paper §5.4.7), the responder's new session is therefore
//! *unconfirmed* and unusable for sending until the first authenticated transport packet
//! arrives on it; the initiator sends an empty keepalive right after the handshake so this
//! happens at once. XX message 3 is the responder's confirmation; the XX *initiator* in turn
//! keeps message 3 and retransmits it on the handshake retry timer until an authenticated
//! transport packet arrives from the responder, which sends a keepalive as soon as message 3
//! made its link and answers a byte-identical retransmitted message 3 with another keepalive
//! (no new session). Without that confirmation within [`LinkConfig::handshake_give_up`] the
//! initiator's link goes Down ([`DownReason::HandshakeTimeout`]).
//!
//! **Replayed initiations** (WireGuard paper §5.1 "Replay attack", §5.4.2). The payload of IK
//! message 1 — first handshake and rekeys — is a 12-byte TAI64N timestamp, encrypted by the
//! `es`/`ss` keys (rev 34 §7.7). The core reads no clock: [`Link::connect`],
//! [`Acceptor::new`] (and the mesh node) take the wall-clock time at their `now`, and every
//! later timestamp is that plus the elapsed [`Instant`](std::time::Instant) time, strictly
//! increasing (`wg_guard::WallClock`). The [`Acceptor`] keeps the greatest timestamp per
//! initiator static key and rejects an initiation whose timestamp is not greater
//! ([`AcceptError::Replayed`]) after authenticating it but before any link, session or response
//! exists. The table holds at most [`AcceptorConfig::max_timestamps`] keys (default 4,096,
//! about 300 bytes each); when full, the key accepted least recently is forgotten. Entries are
//! only made for keys the policy accepted, at most the token buckets' rate; a replay for a
//! forgotten key degrades to the key-confirmation case above (an unconfirmed link that never
//! confirms). A [`Link`] checks rekey initiations against the greatest timestamp it has seen
//! from its peer ([`LinkError::ReplayedInitiation`]). Because a [`Link`] retransmits message 1
//! unchanged, the acceptor answers a byte-identical copy of the latest initiation of a key
//! within [`LinkConfig::handshake_give_up`] with the same response (no second link; the driver
//! calls [`Acceptor::discard`] if it dropped that link), and a link answers a retransmitted
//! rekey initiation the same way while its new session is unconfirmed.
//!
//! **Cookies under load** (WireGuard paper §5.3, §5.4.4, §5.4.7; shared code in `wg-guard`).
//! Every initiation ends with MAC1 and MAC2. MAC1 is keyed by the responder's static key, so
//! the [`Acceptor`] (and a [`Link`], for rekeys) drops random bytes and initiations for another
//! key with one BLAKE2s, before any Diffie-Hellman. Under load (more than
//! [`AcceptorConfig::cookie_threshold`] initiations per second) an initiation needs a MAC2
//! keyed by a cookie bound to its source token; otherwise it is answered with a cookie reply
//! ([`Accepted::CookieReply`]) and not processed. The initiator decrypts the cookie with the
//! MAC1 it sent and its next retransmission carries MAC2. This comes before the token buckets,
//! so a spoofed flood answered with cookies leaves the global bucket to real peers. XX
//! initiators do not know the responder's key: XX keys use a public label instead (see
//! [`cookie`]), so their MAC1 only drops random bytes while MAC2 still binds the cookie to the
//! source.
//!
//! **Nonces.** Transport packets carry their 64-bit counter explicitly and are decrypted with
//! snow's `StatelessTransportState` using that counter as the nonce (rev 34 §5.1: `n` is the
//! nonce; §11.4 out-of-order transport messages). Counters stop at `2^64 - 2^13` (nonce
//! `2^64 - 1` is reserved, §5.1; WireGuard's REJECT-AFTER-MESSAGES, paper §6.1).
//!
//! **Replay window.** RFC 6479 ring bitmap of 2048 bits (32 × 64-bit words), accepting
//! counters up to 1984 behind the highest seen; a counter is only recorded after the AEAD
//! authenticates (RFC 4303 §3.4.3). Replayed and too-old packets are dropped and counted.
//!
//! **Rekey.** A new IK handshake starts when the current session has sent
//! [`LinkConfig::rekey_after_packets`] packets (either side), or is
//! [`LinkConfig::rekey_after_time`] old (the side that initiated the current session; the
//! WireGuard paper §6.2 REKEY-AFTER-MESSAGES / REKEY-AFTER-TIME). Data keeps flowing on the old
//! session meanwhile (state [`LinkState::Rekeying`]); once the new one is up the old one is
//! kept for [`LinkConfig::old_session_grace`] to accept packets still in flight (WireGuard keeps
//! "previous" keypairs the same way, paper §6.3). Simultaneous rekeys are resolved by keeping
//! the initiation from the side with the smaller static public key.
//!
//! **Timers.** Handshake messages are retransmitted after [`LinkConfig::handshake_retry_initial`],
//! doubling up to [`LinkConfig::handshake_retry_max`]; after [`LinkConfig::handshake_give_up`]
//! without success the link goes [`LinkState::Down`] with [`DownReason::HandshakeTimeout`]
//! (compare WireGuard's REKEY-TIMEOUT / REKEY-ATTEMPT-TIME, paper §6.1, which uses a fixed 5 s
//! instead of back-off). An empty transport packet (keepalive) is sent after
//! [`LinkConfig::keepalive_interval`] without sending anything (paper §6.5); no packet
//! received for [`LinkConfig::dead_after`] takes the link down with [`DownReason::PeerTimeout`].
//!
//! **Bounds.** An [`Acceptor`] keeps at most [`AcceptorConfig::max_pending`] half-open XX
//! handshakes (expired after [`AcceptorConfig::pending_timeout`]) and refuses new ones when
//! full *before* any Diffie-Hellman; it also rate-limits handshake initiations per source
//! token and globally with token buckets (at most [`AcceptorConfig::max_sources`] buckets) so
//! a flood of initiations from unknown keys neither grows memory nor buys unbounded DH work.
//! The replay table is bounded by [`AcceptorConfig::max_timestamps`] (above). A link holds at
//! most three sessions (previous, current, next), one pending handshake, one retransmitted XX
//! message 3 and one cookie.
//!
//! Rekey initiations arriving at a [`Link`] are MAC1- and replay-checked, and at most
//! [`LinkConfig::max_rekey_inits_per_sec`] of them per second reach the Diffie-Hellman that
//! decrypts their timestamp (a replayed one is refused only after it).
//!
//! **Not (yet) here:** two links of the same identity to the same peer starting initiations
//! at the very same [`Instant`](std::time::Instant) carry equal timestamps and the second is
//! rejected (each link has its own clock; the mesh node derives them from one). Session indices
//! come from `rand::random` and are not checked for collisions across links (the driver's
//! routing table should). Session keys live inside `snow`'s transport state; our own copies of
//! the static secret are zeroized (`x25519_dalek::StaticSecret`, `zeroize::Zeroizing`), the
//! cookie secret is zeroized (`wg_guard`), and no `Debug` impl prints keys.

mod acceptor;
pub mod cookie;
mod peer;
pub mod replay;
mod session;

use std::time::Duration;

pub use acceptor::{AcceptError, AcceptPolicy, Accepted, Acceptor, AcceptorConfig, AcceptorStats};
pub use peer::Link;
pub use wg_guard::Tai64N;

use crate::hashname::Hashname;
use crate::packet::{PacketError, Pattern};

/// Timers and thresholds of a [`Link`].
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Start a rekey after this many packets sent on a session.
    pub rekey_after_packets: u64,
    /// Start a rekey when a session we initiated is this old.
    pub rekey_after_time: Duration,
    /// First handshake retransmission delay.
    pub handshake_retry_initial: Duration,
    /// Cap on the doubled retransmission delay.
    pub handshake_retry_max: Duration,
    /// Give up a handshake (link goes Down) after this long.
    pub handshake_give_up: Duration,
    /// Send a keepalive after this long without sending.
    pub keepalive_interval: Duration,
    /// Link goes Down after this long without receiving an authenticated packet.
    pub dead_after: Duration,
    /// Keep the previous session this long after a rekey, for packets in flight.
    pub old_session_grace: Duration,
    /// Rekey initiations a link runs the Noise handshake for (one Diffie-Hellman each) per
    /// second; further ones are dropped before any DH ([`LinkError::RateLimited`], counted in
    /// [`LinkStats::rate_limited_rekeys`]). A real peer sends one per rekey, retransmitted at
    /// most every [`LinkConfig::handshake_retry_initial`]; replays of old initiations, which
    /// are refused only after the DH that decrypts their timestamp, are what this bounds.
    pub max_rekey_inits_per_sec: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            rekey_after_packets: 1 << 60,
            rekey_after_time: Duration::from_secs(120),
            handshake_retry_initial: Duration::from_secs(1),
            handshake_retry_max: Duration::from_secs(8),
            handshake_give_up: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(10),
            dead_after: Duration::from_secs(60),
            old_session_grace: Duration::from_secs(10),
            max_rekey_inits_per_sec: 4,
        }
    }
}

/// A link's externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// First handshake in progress (or, on the responder, waiting for key confirmation).
    Connecting,
    /// Established.
    Up,
    /// Established, with a rekey handshake in progress; data still flows.
    Rekeying,
    /// Finished; the link will not come back (make a new one).
    Down(DownReason),
}

/// Why a link went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    /// No handshake completed within [`LinkConfig::handshake_give_up`].
    HandshakeTimeout,
    /// Nothing authenticated received within [`LinkConfig::dead_after`].
    PeerTimeout,
    /// Closed locally with [`Link::close`].
    Closed,
    /// The session ran out of nonces and no rekey succeeded.
    NoncesExhausted,
}

/// What a link reports through [`Link::poll_event`]. (Received data is returned directly by
/// [`Link::handle`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The first handshake completed and was confirmed; `peer` is the authenticated hashname.
    Up {
        /// The peer's hashname (from its static key).
        peer: Hashname,
    },
    /// A rekey completed; a new session is current.
    Rekeyed,
    /// The link went down.
    Down {
        /// Why.
        reason: DownReason,
    },
}

/// Why a received packet was dropped or an operation refused. Every drop is also counted in
/// [`LinkStats`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a packet.
    #[error("malformed packet: {0}")]
    Packet(#[from] PacketError),
    /// Addressed to a session index this link does not have.
    #[error("unknown session index {0}")]
    UnknownSession(u32),
    /// Counter already received.
    #[error("replayed packet")]
    Replayed,
    /// Counter behind the replay window.
    #[error("packet too old for the replay window")]
    TooOld,
    /// AEAD or handshake authentication failed.
    #[error("authentication failed")]
    BadAuth,
    /// A handshake message we did not expect (wrong state, pattern or index).
    #[error("unexpected handshake message")]
    UnexpectedHandshake,
    /// The handshake completed with a static key other than the expected peer's.
    #[error("peer static key mismatch")]
    WrongPeer,
    /// No usable session yet.
    #[error("link not connected")]
    NotConnected,
    /// The link is down.
    #[error("link is down")]
    Down,
    /// An IK rekey initiation whose TAI64N timestamp is not greater than the greatest accepted
    /// from this peer: a replay (WireGuard paper §5.1).
    #[error("replayed initiation (timestamp not newer than the last one)")]
    ReplayedInitiation,
    /// More rekey initiations this second than [`LinkConfig::max_rekey_inits_per_sec`]:
    /// dropped before any Diffie-Hellman.
    #[error("rekey initiation rate-limited")]
    RateLimited,
    /// A rekey initiation whose MAC1 is not keyed by our static key (WireGuard paper §5.4.4).
    #[error("invalid MAC1")]
    BadMac1,
    /// Payload larger than a Noise message allows.
    #[error("payload too large")]
    TooLarge,
}

/// Counters of a [`Link`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Transport packets sent (data and keepalives).
    pub packets_sent: u64,
    /// Authenticated transport packets received (data and keepalives).
    pub packets_received: u64,
    /// Keepalives sent.
    pub keepalives_sent: u64,
    /// Keepalives received.
    pub keepalives_received: u64,
    /// Unparseable packets (unknown type, bad reserved bytes...).
    pub garbage: u64,
    /// Packets shorter than their header.
    pub truncated: u64,
    /// Replayed counters dropped.
    pub replayed: u64,
    /// Counters behind the window dropped.
    pub too_old: u64,
    /// Packets that failed AEAD or handshake authentication.
    pub bad_auth: u64,
    /// Packets for unknown session indices.
    pub unknown_session: u64,
    /// Handshake messages that did not fit the state.
    pub unexpected_handshake: u64,
    /// Handshake messages (re)transmitted.
    pub handshakes_sent: u64,
    /// Handshakes completed (first one and rekeys).
    pub handshakes_completed: u64,
    /// Rekeys completed.
    pub rekeys: u64,
    /// Rekey initiations rejected because their timestamp was not newer (replays, WireGuard
    /// paper §5.1).
    pub replayed_initiations: u64,
    /// Cookie replies accepted (the responder was under load, WireGuard paper §5.4.7).
    pub cookies_received: u64,
    /// Rekey initiations dropped before any Diffie-Hellman by
    /// [`LinkConfig::max_rekey_inits_per_sec`].
    pub rate_limited_rekeys: u64,
}

/// Builds a snow handshake state.
pub(crate) fn build_handshake(
    pattern: Pattern,
    local_secret: &[u8; 32],
    remote_static: Option<&[u8; 32]>,
    initiator: bool,
) -> Result<snow::HandshakeState, snow::Error> {
    let params: snow::params::NoiseParams = pattern.noise_name().parse()?;
    let mut b = snow::Builder::new(params).local_private_key(local_secret)?;
    if let Some(rs) = remote_static {
        b = b.remote_public_key(rs)?;
    }
    if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
}

/// A fresh non-zero session index (0 means "none" on the wire).
pub(crate) fn new_index() -> u32 {
    loop {
        let i: u32 = rand::random();
        if i != 0 {
            return i;
        }
    }
}

/// Counts a parse failure in the right bucket.
pub(crate) fn count_parse_error(stats: &mut LinkStats, e: &PacketError) {
    match e {
        PacketError::Truncated { .. } | PacketError::Empty => stats.truncated += 1,
        _ => stats.garbage += 1,
    }
}
