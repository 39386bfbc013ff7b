//! [`Acceptor`]: the responder side for inbound handshakes, with cheap rejection first and a
//! bounded table of half-open handshakes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::bucket::TokenBucket;

use super::cookie;
use super::peer::Link;
use super::session::Session;
use super::{LinkConfig, build_handshake, new_index};
use crate::hashname::{Hashname, Identity};
use crate::packet::{CookieReply, Handshake, HandshakeKind, MAC_LEN, Packet, PacketError, Pattern};
use wg_guard::cookie::CookieChecker;
use wg_guard::{Tai64N, WallClock};

const NOISE_BUF: usize = 65535;

/// The accept policy hook: called with the authenticated peer hashname and static key once a
/// handshake has proven them; `false` refuses the link.
pub type AcceptPolicy = Box<dyn Fn(&Hashname, &[u8; 32]) -> bool + Send + Sync>;

/// Limits of an [`Acceptor`].
#[derive(Debug, Clone)]
pub struct AcceptorConfig {
    /// Most half-open XX handshakes kept at once; new ones are refused (before any DH) when full.
    pub max_pending: usize,
    /// A half-open handshake is forgotten after this long.
    pub pending_timeout: Duration,
    /// Most per-source rate-limit buckets kept.
    pub max_sources: usize,
    /// Handshake initiations allowed per second per source (token refill rate).
    pub per_source_rate: u32,
    /// Burst of initiations allowed per source.
    pub per_source_burst: u32,
    /// Handshake initiations allowed per second over all sources.
    pub global_rate: u32,
    /// Burst over all sources.
    pub global_burst: u32,
    /// Whether XX initiations (from initiators that do not know our key) are answered at all.
    pub allow_xx: bool,
    /// Under load when more than this many initiations with a valid MAC1 arrive in one second
    /// (this second or the previous): initiations then need a valid MAC2 and are otherwise
    /// answered with a cookie reply, without any Diffie-Hellman (WireGuard paper §5.3, §5.4.7).
    /// `u32::MAX` never demands cookies; 0 always does.
    pub cookie_threshold: u32,
    /// Most initiator static keys whose greatest IK timestamp is remembered (the replay table,
    /// WireGuard paper §5.1). When full, the key seen least recently is forgotten.
    pub max_timestamps: usize,
    /// Configuration of the links this acceptor creates.
    pub link: LinkConfig,
}

impl Default for AcceptorConfig {
    fn default() -> Self {
        AcceptorConfig {
            max_pending: 256,
            pending_timeout: Duration::from_secs(5),
            max_sources: 1024,
            per_source_rate: 2,
            per_source_burst: 5,
            global_rate: 200,
            global_burst: 400,
            allow_xx: true,
            max_timestamps: 4096,
            cookie_threshold: 100,
            link: LinkConfig::default(),
        }
    }
}

/// Why an inbound packet produced nothing. Every refusal is counted in [`AcceptorStats`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// Not a packet.
    #[error("malformed packet: {0}")]
    Packet(#[from] PacketError),
    /// A transport packet or handshake response: route it to its [`Link`] instead.
    #[error("not an inbound handshake message")]
    NotForAcceptor,
    /// Over the per-source or global initiation rate.
    #[error("rate limited")]
    RateLimited,
    /// The half-open handshake table is full.
    #[error("pending handshake table full")]
    PendingFull,
    /// A final message for no pending handshake.
    #[error("no pending handshake with index {0}")]
    UnknownPending(u32),
    /// The Noise handshake failed (e.g. an IK initiation for another static key).
    #[error("handshake authentication failed")]
    BadAuth,
    /// The policy refused the peer, or XX is disabled.
    #[error("peer refused by policy")]
    Refused,
    /// An initiation whose MAC1 is wrong: random bytes, or an IK initiation for another static
    /// key (WireGuard paper §5.4.4). Dropped before any Diffie-Hellman.
    #[error("invalid MAC1")]
    BadMac1,
    /// An IK initiation whose TAI64N timestamp is not greater than the greatest accepted from
    /// the same static key: a replay (WireGuard paper §5.1). No link or session was created.
    #[error("replayed initiation (timestamp not newer than the last one)")]
    Replayed,
}

/// What an inbound handshake message produced.
#[derive(Debug)]
pub enum Accepted {
    /// Send this reply (XX message 2, or the repeated IK message 2 for a retransmitted
    /// initiation); the handshake continues.
    Reply(Vec<u8>),
    /// We are under load and the initiation had no valid MAC2: send this cookie reply back to
    /// the source; the initiation was not processed (WireGuard paper §5.4.7).
    CookieReply(Vec<u8>),
    /// A new link to the (authenticated) peer, and a reply to send if any (IK message 2).
    Link {
        /// The new link (IK: `Connecting` until the initiator's first transport packet; XX: `Up`).
        link: Box<Link>,
        /// The reply to send.
        reply: Option<Vec<u8>>,
    },
}

/// Counters of an [`Acceptor`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptorStats {
    /// Unparseable packets.
    pub garbage: u64,
    /// Truncated packets.
    pub truncated: u64,
    /// Packets that were not inbound handshake messages.
    pub not_for_acceptor: u64,
    /// Initiations refused by a rate limit (no DH done).
    pub rate_limited: u64,
    /// XX initiations refused because the pending table was full (no DH done).
    pub pending_full: u64,
    /// Final messages for unknown pending handshakes.
    pub unknown_pending: u64,
    /// Failed handshakes.
    pub bad_auth: u64,
    /// Peers refused by policy.
    pub refused: u64,
    /// Half-open handshakes expired.
    pub expired: u64,
    /// Links created by IK.
    pub accepted_ik: u64,
    /// Links created by XX.
    pub accepted_xx: u64,
    /// IK initiations rejected as replays (timestamp not newer, WireGuard paper §5.1); no link
    /// or session was created for them.
    pub replayed_initiations: u64,
    /// Byte-identical retransmissions of the latest IK initiation of a key, answered with the
    /// same response again (no new link or session).
    pub retransmitted_initiations: u64,
    /// Replay-table entries forgotten because the table was full.
    pub timestamps_evicted: u64,
    /// Initiations dropped for a wrong MAC1 (before any Diffie-Hellman).
    pub bad_mac1: u64,
    /// Cookie replies sent instead of processing an initiation (under load, no valid MAC2).
    pub cookie_replies: u64,
    /// Handshake messages that reached the Noise handshake, i.e. cost Diffie-Hellman work (XX
    /// message 1 and 3, IK message 1; retransmissions answered from the cache included).
    pub handshakes_processed: u64,
}

/// The replay-table entry of one initiator static key (WireGuard paper §5.1: the responder
/// keeps the greatest timestamp per initiator).
struct Seen {
    /// Greatest accepted timestamp.
    greatest: Tai64N,
    /// When it was accepted (for eviction and the retransmission window).
    at: Instant,
    /// The initiation that carried it (sender index and Noise bytes) and our response, so a
    /// byte-identical retransmission (the initiator lost our response) gets the same response.
    sender: u32,
    noise: Vec<u8>,
    response: Vec<u8>,
}

struct PendingXx {
    hs: snow::HandshakeState,
    remote_index: u32,
    created: Instant,
}

/// Accepts inbound handshakes for a local [`Identity`] (sans-IO).
///
/// Cheap checks come first: parsing, then per-source and global token buckets, then (XX) the
/// pending-table bound — all before any Diffie-Hellman. See the [module docs](super).
pub struct Acceptor {
    local: Identity,
    cfg: AcceptorConfig,
    policy: AcceptPolicy,
    pending: HashMap<u32, PendingXx>,
    sources: HashMap<u64, TokenBucket>,
    global: TokenBucket,
    stats: AcceptorStats,
    /// Wall clock for the links we create (their IK rekeys carry timestamps).
    clock: WallClock,
    /// Load meter and cookie secret (WireGuard paper §5.4.7).
    cookies: CookieChecker,
    /// MAC1 and cookie keys for IK (from our static key) and XX (from the public label).
    mac1_ik: [u8; 32],
    mac1_xx: [u8; 32],
    cookie_ik: [u8; 32],
    cookie_xx: [u8; 32],
    /// Replay table: initiator static key → greatest timestamp (bounded by
    /// [`AcceptorConfig::max_timestamps`]).
    seen: HashMap<[u8; 32], Seen>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("local", &self.local.hashname())
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// An acceptor for `local` with a policy hook. `wall` is the wall-clock time at `now`
    /// (see [`Link::connect`]); the links it creates use it for their rekey timestamps.
    pub fn new(
        now: Instant,
        wall: Tai64N,
        local: &Identity,
        cfg: AcceptorConfig,
        policy: AcceptPolicy,
    ) -> Acceptor {
        let global = TokenBucket::full(now, u64::from(cfg.global_burst));
        let pk = local.public_key();
        let cookies = CookieChecker::new(cfg.cookie_threshold);
        Acceptor {
            local: local.clone(),
            cfg,
            policy,
            pending: HashMap::new(),
            sources: HashMap::new(),
            global,
            stats: AcceptorStats::default(),
            clock: WallClock::new(now, wall),
            seen: HashMap::new(),
            cookies,
            mac1_ik: cookie::mac1_key(Pattern::IK, &pk),
            mac1_xx: cookie::mac1_key(Pattern::XX, &pk),
            cookie_ik: cookie::cookie_key(Pattern::IK, &pk),
            cookie_xx: cookie::cookie_key(Pattern::XX, &pk),
        }
    }

    /// Keys in the replay table now (never more than [`AcceptorConfig::max_timestamps`]).
    pub fn timestamps_len(&self) -> usize {
        self.seen.len()
    }

    /// The greatest IK timestamp accepted from `key`, if remembered.
    pub fn greatest_timestamp(&self, key: &[u8; 32]) -> Option<Tai64N> {
        self.seen.get(key).map(|s| s.greatest)
    }

    /// Raises the greatest timestamp remembered for `key` to `ts` (a driver reports the
    /// timestamps of rekey initiations its links accepted, so a replay of one that reaches the
    /// acceptor is rejected too). Never lowers it; does not add a key that is not in the table.
    pub fn note_timestamp(&mut self, key: &[u8; 32], ts: Tai64N) {
        if let Some(s) = self.seen.get_mut(key)
            && ts > s.greatest
        {
            s.greatest = ts;
            s.noise.clear();
            s.response.clear();
        }
    }

    /// Tells the acceptor that the driver did not keep the link it returned for `key`'s latest
    /// initiation: a retransmission of that initiation is then rejected as a replay instead of
    /// being answered with the response of a link that no longer exists. (The greatest
    /// timestamp is kept.)
    pub fn discard(&mut self, key: &[u8; 32]) {
        if let Some(s) = self.seen.get_mut(key) {
            s.noise.clear();
            s.response.clear();
        }
    }

    /// Records an accepted initiation, evicting the least recently accepted key when full.
    fn remember(&mut self, key: [u8; 32], entry: Seen) {
        if !self.seen.contains_key(&key) && self.seen.len() >= self.cfg.max_timestamps.max(1) {
            let oldest = self.seen.iter().min_by_key(|(_, s)| s.at).map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.seen.remove(&k);
                self.stats.timestamps_evicted += 1;
            }
        }
        self.seen.insert(key, entry);
    }

    /// A policy accepting every authenticated peer.
    pub fn allow_all() -> AcceptPolicy {
        Box::new(|_, _| true)
    }

    /// A policy accepting only the listed hashnames.
    pub fn allow_list(list: impl IntoIterator<Item = Hashname>) -> AcceptPolicy {
        let set: std::collections::HashSet<Hashname> = list.into_iter().collect();
        Box::new(move |h, _| set.contains(h))
    }

    /// Counters.
    pub fn stats(&self) -> &AcceptorStats {
        &self.stats
    }

    /// Half-open handshakes held now (never more than [`AcceptorConfig::max_pending`]).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether a half-open XX handshake with our index `index` is pending (a driver routes an
    /// XX message 3 here if so, else to the link owning `index`: a retransmitted message 3).
    pub fn has_pending(&self, index: u32) -> bool {
        self.pending.contains_key(&index)
    }

    /// Rate-limit buckets held now (never more than [`AcceptorConfig::max_sources`]).
    pub fn sources_len(&self) -> usize {
        self.sources.len()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next run (pending expiry).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.created + self.cfg.pending_timeout)
            .min()
    }

    /// Forgets expired half-open handshakes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.cfg.pending_timeout;
        let before = self.pending.len();
        self.pending.retain(|_, p| now < p.created + timeout);
        self.stats.expired += (before - self.pending.len()) as u64;
    }

    fn rate_ok(&mut self, now: Instant, source: u64) -> bool {
        let (rate, burst) = (self.cfg.per_source_rate, self.cfg.per_source_burst);
        if !self.sources.contains_key(&source) && self.sources.len() >= self.cfg.max_sources {
            // Forget sources whose buckets have refilled: they are idle.
            let refill_ms = u64::from(burst) * 1000 / u64::from(rate.max(1));
            self.sources.retain(|_, b| {
                u64::try_from(b.idle_for(now).as_millis()).unwrap_or(u64::MAX) < refill_ms
            });
            if self.sources.len() >= self.cfg.max_sources {
                return false;
            }
        }
        let b = self
            .sources
            .entry(source)
            .or_insert_with(|| TokenBucket::full(now, u64::from(burst)));
        if !b.take_one(now, u64::from(rate), u64::from(burst)) {
            return false;
        }
        self.global.take_one(
            now,
            u64::from(self.cfg.global_rate),
            u64::from(self.cfg.global_burst),
        )
    }

    /// Handles one inbound packet from `source` (an opaque token for the sender's address,
    /// used only for rate limiting).
    pub fn handle(
        &mut self,
        now: Instant,
        bytes: &[u8],
        source: u64,
    ) -> Result<Accepted, AcceptError> {
        let r = self.handle_inner(now, bytes, source);
        if let Err(e) = &r {
            let s = &mut self.stats;
            match e {
                AcceptError::Packet(PacketError::Truncated { .. } | PacketError::Empty) => {
                    s.truncated += 1
                }
                AcceptError::Packet(_) => s.garbage += 1,
                AcceptError::NotForAcceptor => s.not_for_acceptor += 1,
                AcceptError::RateLimited => s.rate_limited += 1,
                AcceptError::PendingFull => s.pending_full += 1,
                AcceptError::UnknownPending(_) => s.unknown_pending += 1,
                AcceptError::BadAuth => s.bad_auth += 1,
                AcceptError::Refused => s.refused += 1,
                AcceptError::Replayed => s.replayed_initiations += 1,
                AcceptError::BadMac1 => s.bad_mac1 += 1,
            }
        }
        r
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        bytes: &[u8],
        source: u64,
    ) -> Result<Accepted, AcceptError> {
        let Packet::Handshake(h) = Packet::parse(bytes)? else {
            return Err(AcceptError::NotForAcceptor);
        };
        match (h.kind, h.pattern) {
            (HandshakeKind::Init, pattern) => {
                // WireGuard paper §5.4.4: MAC1 first (one BLAKE2s), then, under load, MAC2 or a
                // cookie reply (§5.4.7) — all before the token buckets, so a spoofed flood
                // answered with cookies does not use up the global bucket of real peers.
                let (mac1_key, cookie_key) = match pattern {
                    Pattern::IK => (self.mac1_ik, self.cookie_ik),
                    Pattern::XX => (self.mac1_xx, self.cookie_xx),
                };
                if !cookie::mac1_ok(&mac1_key, bytes) {
                    return Err(AcceptError::BadMac1);
                }
                let src = source.to_le_bytes();
                if self.cookies.note_handshake(now)
                    && !self.cookies.check_msg_mac2(now, &src, bytes)
                {
                    let mac1 = h.macs.map_or([0u8; MAC_LEN], |m| m.mac1);
                    let (nonce, encrypted_cookie) =
                        self.cookies.seal_cookie(now, &src, &cookie_key, &mac1);
                    let reply = Packet::CookieReply(CookieReply {
                        receiver: h.sender,
                        nonce,
                        encrypted_cookie,
                    })
                    .to_vec()?;
                    self.stats.cookie_replies += 1;
                    return Ok(Accepted::CookieReply(reply));
                }
                self.handle_timeout(now);
                if !self.rate_ok(now, source) {
                    return Err(AcceptError::RateLimited);
                }
                match pattern {
                    Pattern::IK => self.init_ik(now, &h),
                    Pattern::XX => self.init_xx(now, &h),
                }
            }
            (HandshakeKind::Final, Pattern::XX) => self.final_xx(now, &h),
            _ => Err(AcceptError::NotForAcceptor),
        }
    }

    fn authenticated(&self, remote: Option<&[u8]>) -> Result<[u8; 32], AcceptError> {
        let key: [u8; 32] = remote
            .and_then(|r| r.try_into().ok())
            .ok_or(AcceptError::BadAuth)?;
        if (self.policy)(&Hashname::of_x25519(&key), &key) {
            Ok(key)
        } else {
            Err(AcceptError::Refused)
        }
    }

    fn init_ik(&mut self, now: Instant, h: &Handshake<'_>) -> Result<Accepted, AcceptError> {
        self.stats.handshakes_processed += 1;
        let secret = self.local.secret_bytes();
        let mut hs =
            build_handshake(Pattern::IK, &secret, None, false).map_err(|_| AcceptError::BadAuth)?;
        let mut buf = vec![0u8; NOISE_BUF];
        let n = hs
            .read_message(h.noise, &mut buf)
            .map_err(|_| AcceptError::BadAuth)?;
        let key = self.authenticated(hs.get_remote_static())?;
        // WireGuard paper §5.1 / §5.4.2: the initiation's encrypted payload is a TAI64N
        // timestamp; it must be greater than the greatest accepted from this key. Checked
        // before any link, session or response is made.
        let ts = buf
            .get(..n)
            .and_then(Tai64N::from_slice)
            .ok_or(AcceptError::BadAuth)?;
        if let Some(s) = self.seen.get(&key)
            && ts <= s.greatest
        {
            let window = self.cfg.link.handshake_give_up;
            if ts == s.greatest
                && s.sender == h.sender
                && s.noise == h.noise
                && !s.response.is_empty()
                && now < s.at + window
            {
                // The initiator retransmits message 1 unchanged until it gets a response
                // (LinkConfig::handshake_retry_initial): ours was lost. Answer with the same
                // response; the link made for the first copy is the one it confirms.
                self.stats.retransmitted_initiations += 1;
                return Ok(Accepted::Reply(s.response.clone()));
            }
            return Err(AcceptError::Replayed);
        }
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|_| AcceptError::BadAuth)?;
        let local_index = new_index();
        let reply = Packet::Handshake(Handshake {
            kind: HandshakeKind::Response,
            pattern: Pattern::IK,
            sender: local_index,
            receiver: h.sender,
            noise: &buf[..n],
            macs: None,
        })
        .to_vec()?;
        let ts_state = hs
            .into_stateless_transport_mode()
            .map_err(|_| AcceptError::BadAuth)?;
        let session = Session::new(ts_state, local_index, h.sender, false, now);
        self.remember(
            key,
            Seen {
                greatest: ts,
                at: now,
                sender: h.sender,
                noise: h.noise.to_vec(),
                response: reply.clone(),
            },
        );
        let link = Link::accepted(
            now,
            self.clock,
            &self.local,
            key,
            session,
            false,
            Some(ts),
            self.cfg.link.clone(),
        );
        self.stats.accepted_ik += 1;
        Ok(Accepted::Link {
            link: Box::new(link),
            reply: Some(reply),
        })
    }

    fn init_xx(&mut self, now: Instant, h: &Handshake<'_>) -> Result<Accepted, AcceptError> {
        if !self.cfg.allow_xx {
            return Err(AcceptError::Refused);
        }
        if self.pending.len() >= self.cfg.max_pending {
            return Err(AcceptError::PendingFull);
        }
        self.stats.handshakes_processed += 1;
        let secret = self.local.secret_bytes();
        let mut hs =
            build_handshake(Pattern::XX, &secret, None, false).map_err(|_| AcceptError::BadAuth)?;
        let mut buf = vec![0u8; NOISE_BUF];
        hs.read_message(h.noise, &mut buf)
            .map_err(|_| AcceptError::BadAuth)?;
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|_| AcceptError::BadAuth)?;
        let mut local_index = new_index();
        while self.pending.contains_key(&local_index) {
            local_index = new_index();
        }
        let reply = Packet::Handshake(Handshake {
            kind: HandshakeKind::Response,
            pattern: Pattern::XX,
            sender: local_index,
            receiver: h.sender,
            noise: &buf[..n],
            macs: None,
        })
        .to_vec()?;
        self.pending.insert(
            local_index,
            PendingXx {
                hs,
                remote_index: h.sender,
                created: now,
            },
        );
        Ok(Accepted::Reply(reply))
    }

    fn final_xx(&mut self, now: Instant, h: &Handshake<'_>) -> Result<Accepted, AcceptError> {
        self.handle_timeout(now);
        match self.pending.get(&h.receiver) {
            Some(p) if p.remote_index == h.sender => {}
            _ => return Err(AcceptError::UnknownPending(h.receiver)),
        }
        let Some(mut p) = self.pending.remove(&h.receiver) else {
            return Err(AcceptError::UnknownPending(h.receiver));
        };
        self.stats.handshakes_processed += 1;
        let mut buf = vec![0u8; NOISE_BUF];
        p.hs.read_message(h.noise, &mut buf)
            .map_err(|_| AcceptError::BadAuth)?;
        let key = self.authenticated(p.hs.get_remote_static())?;
        let ts =
            p.hs.into_stateless_transport_mode()
                .map_err(|_| AcceptError::BadAuth)?;
        let session = Session::new(ts, h.receiver, h.sender, false, now);
        let mut link = Link::accepted(
            now,
            self.clock,
            &self.local,
            key,
            session,
            true,
            None,
            self.cfg.link.clone(),
        );
        link.set_final_seen(h.sender, h.noise);
        self.stats.accepted_xx += 1;
        Ok(Accepted::Link {
            link: Box::new(link),
            reply: None,
        })
    }
}
