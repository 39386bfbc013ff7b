//! [`Acceptor`]: the responder side for inbound handshakes, with cheap rejection first and a
//! bounded table of half-open handshakes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::peer::Link;
use super::session::Session;
use super::{LinkConfig, build_handshake, new_index};
use crate::hashname::{Hashname, Identity};
use crate::packet::{Handshake, HandshakeKind, Packet, PacketError, Pattern};

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
}

/// What an inbound handshake message produced.
#[derive(Debug)]
pub enum Accepted {
    /// Send this reply (XX message 2); the handshake continues.
    Reply(Vec<u8>),
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
}

/// A token bucket in milli-tokens.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli: u64,
    last: Instant,
}

impl Bucket {
    fn full(now: Instant, burst: u32) -> Bucket {
        Bucket {
            milli: u64::from(burst) * 1000,
            last: now,
        }
    }

    fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let ms =
            u64::try_from(now.saturating_duration_since(self.last).as_millis()).unwrap_or(u64::MAX);
        self.milli = self
            .milli
            .saturating_add(ms.saturating_mul(u64::from(rate)))
            .min(u64::from(burst) * 1000);
        self.last = now;
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
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
    sources: HashMap<u64, Bucket>,
    global: Bucket,
    stats: AcceptorStats,
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
    /// An acceptor for `local` with a policy hook.
    pub fn new(
        now: Instant,
        local: &Identity,
        cfg: AcceptorConfig,
        policy: AcceptPolicy,
    ) -> Acceptor {
        let global = Bucket::full(now, cfg.global_burst);
        Acceptor {
            local: local.clone(),
            cfg,
            policy,
            pending: HashMap::new(),
            sources: HashMap::new(),
            global,
            stats: AcceptorStats::default(),
        }
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
                u64::try_from(now.saturating_duration_since(b.last).as_millis()).unwrap_or(u64::MAX)
                    < refill_ms
            });
            if self.sources.len() >= self.cfg.max_sources {
                return false;
            }
        }
        let b = self
            .sources
            .entry(source)
            .or_insert_with(|| Bucket::full(now, burst));
        if !b.take(now, rate, burst) {
            return false;
        }
        self.global
            .take(now, self.cfg.global_rate, self.cfg.global_burst)
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
        let secret = self.local.secret_bytes();
        let mut hs =
            build_handshake(Pattern::IK, &secret, None, false).map_err(|_| AcceptError::BadAuth)?;
        let mut buf = vec![0u8; NOISE_BUF];
        hs.read_message(h.noise, &mut buf)
            .map_err(|_| AcceptError::BadAuth)?;
        let key = self.authenticated(hs.get_remote_static())?;
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
        })
        .to_vec()?;
        let ts = hs
            .into_stateless_transport_mode()
            .map_err(|_| AcceptError::BadAuth)?;
        let session = Session::new(ts, local_index, h.sender, false, now);
        let link = Link::accepted(now, &self.local, key, session, false, self.cfg.link.clone());
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
        let mut buf = vec![0u8; NOISE_BUF];
        p.hs.read_message(h.noise, &mut buf)
            .map_err(|_| AcceptError::BadAuth)?;
        let key = self.authenticated(p.hs.get_remote_static())?;
        let ts =
            p.hs.into_stateless_transport_mode()
                .map_err(|_| AcceptError::BadAuth)?;
        let session = Session::new(ts, h.receiver, h.sender, false, now);
        let link = Link::accepted(now, &self.local, key, session, true, self.cfg.link.clone());
        self.stats.accepted_xx += 1;
        Ok(Accepted::Link {
            link: Box::new(link),
            reply: None,
        })
    }
}
