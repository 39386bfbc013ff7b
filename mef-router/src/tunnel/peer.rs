//! [`Tunnel`]: the state machine for one peer (WireGuard paper §5.4 handshake, §6 timers).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt as _;
use wg_guard::WallClock;

use super::cookie::{COOKIE_LIFETIME, open_cookie_reply};
use super::keys::{
    LABEL_COOKIE, LABEL_MAC1, LocalKeys, PresharedKey, PrivateKey, PublicKey, Tai64N, hash_label,
    mac, mac_eq,
};
use super::session::Session;
use super::wire::{
    CookieReply, Data, INITIATION_LEN, INITIATION_NOISE_LEN, Initiation, MAC_LEN, Message,
    RESPONSE_LEN, RESPONSE_NOISE_LEN, Response,
};
use super::{MAX_PACKET, NOISE_PARAMS, PROLOGUE, TunnResult, TunnelError};

/// Timer constants and limits of one tunnel. The defaults are WireGuard's (§6.1); tests may
/// shorten them.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// Optional pre-shared key for `psk2` (all zeros when `None`).
    pub psk: Option<PresharedKey>,
    /// Send a keepalive when nothing was sent for this long (WireGuard's optional persistent
    /// keepalive, for NATs). Default `None`.
    pub persistent_keepalive: Option<Duration>,
    /// `REKEY_AFTER_TIME`: the initiator starts a new handshake when sending on older keys (120 s).
    pub rekey_after_time: Duration,
    /// `REJECT_AFTER_TIME`: keys are never used after this (180 s).
    pub reject_after_time: Duration,
    /// `REKEY_AFTER_MESSAGES`: rekey after this many messages (2^60).
    pub rekey_after_messages: u64,
    /// `REKEY_TIMEOUT`: retry an unanswered initiation after this plus jitter (5 s).
    pub rekey_timeout: Duration,
    /// Up to this much random jitter is added to each retry (333 ms).
    pub rekey_jitter: Duration,
    /// `REKEY_ATTEMPT_TIME`: give up retrying after this (90 s).
    pub rekey_attempt_time: Duration,
    /// `KEEPALIVE_TIMEOUT`: passive keepalive after receiving data and sending nothing (10 s).
    pub keepalive_timeout: Duration,
    /// Most packets queued while waiting for a handshake (oldest dropped first). Default 256.
    pub queue_limit: usize,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            psk: None,
            persistent_keepalive: None,
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(180),
            rekey_after_messages: 1 << 60,
            rekey_timeout: Duration::from_secs(5),
            rekey_jitter: Duration::from_millis(333),
            rekey_attempt_time: Duration::from_secs(90),
            keepalive_timeout: Duration::from_secs(10),
            queue_limit: 256,
        }
    }
}

/// Counters of one tunnel (exported as metrics by the daemon).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Initiations sent (including retries).
    pub initiations_sent: u64,
    /// Handshakes completed (as initiator on the response, as responder on confirmation).
    pub handshakes_completed: u64,
    /// Responses sent.
    pub responses_sent: u64,
    /// Handshakes abandoned after `REKEY_ATTEMPT_TIME`.
    pub handshake_timeouts: u64,
    /// Noise failures, stale or rate-limited initiations, unexpected responses, bad cookies.
    pub handshake_rejected: u64,
    /// Cookie replies received and accepted.
    pub cookies_received: u64,
    /// Data packets sent (including keepalives).
    pub tx_packets: u64,
    /// Bytes of plaintext IP packets sent.
    pub tx_bytes: u64,
    /// Data packets received and authenticated (including keepalives).
    pub rx_packets: u64,
    /// Bytes of plaintext IP packets received.
    pub rx_bytes: u64,
    /// Replayed or too old data packets.
    pub replays: u64,
    /// Data packets that failed authentication.
    pub decrypt_failures: u64,
    /// Authenticated payloads that were not valid IP packets.
    pub invalid_packets: u64,
    /// Data for unknown or expired sessions.
    pub no_session: u64,
    /// Packets dropped from the handshake queue (overflow or handshake timeout).
    pub queue_drops: u64,
    /// Keepalives sent.
    pub keepalives_sent: u64,
}

/// Coarse state of a tunnel, for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    /// No keys and no handshake in flight.
    Idle,
    /// An initiation is in flight.
    Handshaking,
    /// A current keypair is usable.
    Established,
}

impl std::fmt::Display for TunnelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TunnelState::Idle => "idle",
            TunnelState::Handshaking => "handshaking",
            TunnelState::Established => "established",
        })
    }
}

struct InFlight {
    hs: Box<snow::HandshakeState>,
    local_index: u32,
    retry_at: Instant,
}

/// A consumed initiation, ready for the peer it belongs to.
pub(crate) struct Consumed {
    pub hs: Box<snow::HandshakeState>,
    pub initiator: PublicKey,
    pub sender: u32,
    pub timestamp: Tai64N,
}

fn builder(params: &snow::params::NoiseParams) -> snow::Builder<'_> {
    snow::Builder::new(params.clone())
}

fn params() -> Result<snow::params::NoiseParams, TunnelError> {
    NOISE_PARAMS
        .parse()
        .map_err(|e: snow::Error| TunnelError::Noise(e.to_string()))
}

/// Responder side of message 1 (WireGuard §5.4.2): reads the Noise IK first message with our
/// static key, learning the initiator's static key and timestamp. MAC1/MAC2 are checked by the
/// caller beforehand.
pub(crate) fn consume_initiation(
    keys: &LocalKeys,
    init: &Initiation,
) -> Result<Consumed, TunnelError> {
    let p = params()?;
    let mut hs = builder(&p)
        .local_private_key(keys.private.as_bytes())?
        .prologue(PROLOGUE)?
        .build_responder()?;
    let mut payload = [0u8; 64];
    let n = hs.read_message(&init.noise, &mut payload)?;
    let ts: [u8; 12] = payload[..n]
        .try_into()
        .map_err(|_| TunnelError::Noise(format!("initiation payload of {n} bytes, expected 12")))?;
    let rs = hs
        .get_remote_static()
        .and_then(|s| <[u8; 32]>::try_from(s).ok())
        .ok_or_else(|| TunnelError::Noise("no remote static key".into()))?;
    Ok(Consumed {
        hs: Box::new(hs),
        initiator: PublicKey(rs),
        sender: init.sender,
        timestamp: Tai64N::from_bytes(&ts),
    })
}

/// Whether MAC1 of a handshake message (`raw`, full length) is keyed to `mac1_key`.
pub(crate) fn mac1_ok(mac1_key: &[u8; 32], raw: &[u8]) -> bool {
    if raw.len() < 2 * MAC_LEN {
        return false;
    }
    let n = raw.len() - 2 * MAC_LEN;
    let mut m = [0u8; MAC_LEN];
    m.copy_from_slice(&raw[n..n + MAC_LEN]);
    mac_eq(&mac(mac1_key, &raw[..n]), &m)
}

/// The tunnel to one peer: handshake state, previous/current/next keypairs, timers, queue.
///
/// Methods by kind (see the [module docs](super) for the polling order):
/// * inputs: [`encapsulate`](Self::encapsulate) (an IP packet to send),
///   [`decapsulate`](Self::decapsulate) (a datagram from the peer),
///   [`update_timers`](Self::update_timers) (the deadline passed);
/// * outputs: [`poll_transmit`](Self::poll_transmit), [`next_deadline`](Self::next_deadline);
/// * getters: [`state`](Self::state), [`stats`](Self::stats), [`peer_public`](Self::peer_public).
pub struct Tunnel {
    keys: Arc<LocalKeys>,
    peer: PublicKey,
    peer_mac1_key: [u8; 32],
    peer_cookie_key: [u8; 32],
    psk: PresharedKey,
    tag: u32,
    index_counter: u8,
    cfg: TunnelConfig,
    handshake: Option<InFlight>,
    attempts_since: Option<Instant>,
    previous: Option<Session>,
    current: Option<Session>,
    next: Option<Session>,
    greatest_timestamp: Option<Tai64N>,
    last_initiation_consumed: Option<Instant>,
    cookie: Option<([u8; MAC_LEN], Instant)>,
    last_mac1: Option<[u8; MAC_LEN]>,
    queue: VecDeque<Vec<u8>>,
    clock: WallClock,
    rekey_requested: Option<Instant>,
    last_sent: Option<Instant>,
    last_received: Option<Instant>,
    last_data_sent: Option<Instant>,
    last_data_received: Option<Instant>,
    stats: TunnelStats,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("peer", &self.peer)
            .field("state", &self.state())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// A tunnel from `static_secret` to `peer_public`. `now`/`wall` anchor the TAI64N clock:
    /// the timestamp sent at instant `t` is `wall + (t - now)`. Uses peer tag 1.
    pub fn new(
        static_secret: PrivateKey,
        peer_public: PublicKey,
        cfg: TunnelConfig,
        now: Instant,
        wall: Tai64N,
    ) -> Self {
        Self::with_keys(
            Arc::new(LocalKeys::new(static_secret)),
            peer_public,
            1,
            cfg,
            now,
            wall,
        )
    }

    pub(crate) fn with_keys(
        keys: Arc<LocalKeys>,
        peer: PublicKey,
        tag: u32,
        cfg: TunnelConfig,
        now: Instant,
        wall: Tai64N,
    ) -> Self {
        Self {
            keys,
            peer_mac1_key: hash_label(LABEL_MAC1, &peer),
            peer_cookie_key: hash_label(LABEL_COOKIE, &peer),
            peer,
            psk: cfg.psk.clone().unwrap_or_default(),
            tag,
            index_counter: rand::rng().random(),
            cfg,
            handshake: None,
            attempts_since: None,
            previous: None,
            current: None,
            next: None,
            greatest_timestamp: None,
            last_initiation_consumed: None,
            cookie: None,
            last_mac1: None,
            queue: VecDeque::new(),
            clock: WallClock::new(now, wall),
            rekey_requested: None,
            last_sent: None,
            last_received: None,
            last_data_sent: None,
            last_data_received: None,
            stats: TunnelStats::default(),
        }
    }

    /// The peer's static public key.
    pub fn peer_public(&self) -> &PublicKey {
        &self.peer
    }

    /// Counters.
    pub fn stats(&self) -> &TunnelStats {
        &self.stats
    }

    /// Packets waiting for a handshake.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Coarse state.
    pub fn state(&self) -> TunnelState {
        if self.current.is_some() {
            TunnelState::Established
        } else if self.handshake.is_some() {
            TunnelState::Handshaking
        } else {
            TunnelState::Idle
        }
    }

    /// When the current keypair was made, if any (for status output).
    pub fn session_started(&self) -> Option<Instant> {
        self.current.as_ref().map(|s| s.created)
    }

    /// When an authenticated packet was last received.
    pub fn last_received(&self) -> Option<Instant> {
        self.last_received
    }

    fn new_index(&mut self) -> u32 {
        self.index_counter = self.index_counter.wrapping_add(1);
        (self.tag << 8) | u32::from(self.index_counter)
    }

    fn usable(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.created) < self.cfg.reject_after_time
    }

    fn current_usable(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| self.usable(s, now))
    }

    /// Encrypts an IP packet for the peer. Without a usable keypair the packet is queued and an
    /// initiation is returned (if none is in flight). WireGuard §6.2: the initiator of the
    /// current keypair asks for a rekey when it is older than `REKEY_AFTER_TIME` or has sent
    /// `REKEY_AFTER_MESSAGES`; the initiation comes from the next
    /// [`update_timers`](Self::update_timers) (the deadline becomes `now`).
    pub fn encapsulate<'a>(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &'a mut [u8],
    ) -> TunnResult<'a> {
        if packet.len() > MAX_PACKET {
            return TunnResult::Err(TunnelError::PacketTooLarge(packet.len()));
        }
        if self.current_usable(now) {
            return match self.send_data(now, packet, out) {
                Ok(n) => TunnResult::WriteToNetwork(&mut out[..n]),
                Err(e) => TunnResult::Err(e),
            };
        }
        if self.queue.len() >= self.cfg.queue_limit {
            self.queue.pop_front();
            self.stats.queue_drops += 1;
        }
        self.queue.push_back(packet.to_vec());
        if self.handshake.is_some() || self.next_pending(now) {
            return TunnResult::Done;
        }
        self.initiate(now, out)
    }

    /// A responder keypair waiting for confirmation, made less than `REKEY_TIMEOUT` ago.
    fn next_pending(&self, now: Instant) -> bool {
        self.next
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.created) < self.cfg.rekey_timeout)
    }

    fn send_data(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<usize, TunnelError> {
        let Some(s) = self.current.as_mut() else {
            return Err(TunnelError::SessionExpired);
        };
        let n = s.encrypt(packet, out)?;
        let age = now.saturating_duration_since(s.created);
        if s.initiator
            && (age >= self.cfg.rekey_after_time || s.send_counter >= self.cfg.rekey_after_messages)
            && self.handshake.is_none()
            && self.rekey_requested.is_none()
        {
            self.rekey_requested = Some(now);
        }
        self.stats.tx_packets += 1;
        self.last_sent = Some(now);
        if packet.is_empty() {
            self.stats.keepalives_sent += 1;
        } else {
            self.stats.tx_bytes += packet.len() as u64;
            self.last_data_sent = Some(now);
        }
        Ok(n)
    }

    /// Sends one packet queued during a handshake, if a keypair is now usable.
    pub fn poll_transmit<'a>(&mut self, now: Instant, out: &'a mut [u8]) -> TunnResult<'a> {
        if !self.current_usable(now) {
            return TunnResult::Done;
        }
        let Some(p) = self.queue.pop_front() else {
            return TunnResult::Done;
        };
        match self.send_data(now, &p, out) {
            Ok(n) => TunnResult::WriteToNetwork(&mut out[..n]),
            Err(e) => TunnResult::Err(e),
        }
    }

    /// The TAI64N timestamp for an initiation sent at `now` (WireGuard §5.1), strictly
    /// increasing.
    fn timestamp(&mut self, now: Instant) -> Tai64N {
        self.clock.next(now)
    }

    /// WireGuard §5.4.2: builds and emits a handshake initiation with a fresh ephemeral key.
    fn initiate<'a>(&mut self, now: Instant, out: &'a mut [u8]) -> TunnResult<'a> {
        match self.build_initiation(now, out) {
            Ok(n) => TunnResult::WriteToNetwork(&mut out[..n]),
            Err(e) => TunnResult::Err(e),
        }
    }

    fn build_initiation(&mut self, now: Instant, out: &mut [u8]) -> Result<usize, TunnelError> {
        if out.len() < INITIATION_LEN {
            return Err(TunnelError::BufferTooSmall {
                need: INITIATION_LEN,
                have: out.len(),
            });
        }
        let p = params()?;
        let mut hs = builder(&p)
            .local_private_key(self.keys.private.as_bytes())?
            .remote_public_key(&self.peer.0)?
            .psk(2, self.psk.as_bytes())?
            .prologue(PROLOGUE)?
            .build_initiator()?;
        let ts = self.timestamp(now).to_bytes();
        let mut noise = [0u8; INITIATION_NOISE_LEN];
        let n = hs.write_message(&ts, &mut noise)?;
        if n != INITIATION_NOISE_LEN {
            return Err(TunnelError::Noise(format!("initiation of {n} bytes")));
        }
        let local_index = self.new_index();
        let mut msg = Initiation {
            sender: local_index,
            noise,
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        msg.emit(out)?;
        // WireGuard §5.4.4: mac1 over the message up to mac1, mac2 up to mac2 (with a fresh cookie).
        let m1 = INITIATION_LEN - 2 * MAC_LEN;
        msg.mac1 = mac(&self.peer_mac1_key, &out[..m1]);
        out[m1..m1 + MAC_LEN].copy_from_slice(&msg.mac1);
        if let Some((c, at)) = self.cookie
            && now.saturating_duration_since(at) < COOKIE_LIFETIME
        {
            msg.mac2 = mac(&c, &out[..m1 + MAC_LEN]);
            out[m1 + MAC_LEN..INITIATION_LEN].copy_from_slice(&msg.mac2);
        }
        self.last_mac1 = Some(msg.mac1);
        let jitter = self.cfg.rekey_jitter.mul_f64(rand::rng().random::<f64>());
        self.handshake = Some(InFlight {
            hs: Box::new(hs),
            local_index,
            retry_at: now + self.cfg.rekey_timeout + jitter,
        });
        self.attempts_since.get_or_insert(now);
        self.rekey_requested = None;
        self.stats.initiations_sent += 1;
        self.last_sent = Some(now);
        Ok(INITIATION_LEN)
    }

    /// Handles one datagram from the peer (any message type). Handshake messages must carry a
    /// MAC1 for our key; no cookie is demanded here (that is [`super::TunnelSet`]'s job, which
    /// knows source addresses and load).
    pub fn decapsulate<'a>(
        &mut self,
        now: Instant,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> TunnResult<'a> {
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(e) => return TunnResult::Err(e.into()),
        };
        match msg {
            Message::Initiation(init) => {
                if !mac1_ok(&self.keys.mac1_key, datagram) {
                    return TunnResult::Err(TunnelError::InvalidMac1);
                }
                match consume_initiation(&self.keys, &init) {
                    Ok(c) if c.initiator == self.peer => self.accept_initiation(now, c, out),
                    Ok(_) => TunnResult::Err(TunnelError::UnknownPeer),
                    Err(e) => {
                        self.stats.handshake_rejected += 1;
                        TunnResult::Err(e)
                    }
                }
            }
            Message::Response(r) => {
                if !mac1_ok(&self.keys.mac1_key, datagram) {
                    return TunnResult::Err(TunnelError::InvalidMac1);
                }
                self.handle_response(now, &r, out)
            }
            Message::CookieReply(c) => self.handle_cookie(&c, now),
            Message::Data(d) => self.handle_data(now, &d, out),
        }
    }

    /// Responder side of the handshake (WireGuard §5.4.3): checks the timestamp, writes the
    /// response, keeps the new keypair as *next* until confirmed.
    pub(crate) fn accept_initiation<'a>(
        &mut self,
        now: Instant,
        mut c: Consumed,
        out: &'a mut [u8],
    ) -> TunnResult<'a> {
        if self.greatest_timestamp.is_some_and(|g| c.timestamp <= g) {
            self.stats.handshake_rejected += 1;
            return TunnResult::Err(TunnelError::StaleTimestamp);
        }
        if self
            .last_initiation_consumed
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(20))
        {
            self.stats.handshake_rejected += 1;
            return TunnResult::Err(TunnelError::RateLimited);
        }
        if out.len() < RESPONSE_LEN {
            return TunnResult::Err(TunnelError::BufferTooSmall {
                need: RESPONSE_LEN,
                have: out.len(),
            });
        }
        let mut noise = [0u8; RESPONSE_NOISE_LEN];
        let written =
            c.hs.set_psk(2, self.psk.as_bytes())
                .and_then(|()| c.hs.write_message(&[], &mut noise));
        match written {
            Ok(RESPONSE_NOISE_LEN) => {}
            Ok(n) => return TunnResult::Err(TunnelError::Noise(format!("response of {n} bytes"))),
            Err(e) => {
                self.stats.handshake_rejected += 1;
                return TunnResult::Err(e.into());
            }
        }
        self.greatest_timestamp = Some(c.timestamp);
        self.last_initiation_consumed = Some(now);
        let local_index = self.new_index();
        let split = c.hs.dangerously_get_raw_split();
        self.next = Some(Session::new(split, false, local_index, c.sender, now));
        let mut msg = Response {
            sender: local_index,
            receiver: c.sender,
            noise,
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        if let Err(e) = msg.emit(out) {
            return TunnResult::Err(e.into());
        }
        let m1 = RESPONSE_LEN - 2 * MAC_LEN;
        msg.mac1 = mac(&self.peer_mac1_key, &out[..m1]);
        out[m1..m1 + MAC_LEN].copy_from_slice(&msg.mac1);
        if let Some((ck, at)) = self.cookie
            && now.saturating_duration_since(at) < COOKIE_LIFETIME
        {
            let m2 = mac(&ck, &out[..m1 + MAC_LEN]);
            out[m1 + MAC_LEN..RESPONSE_LEN].copy_from_slice(&m2);
        }
        self.stats.responses_sent += 1;
        self.last_sent = Some(now);
        self.last_received = Some(now);
        TunnResult::WriteToNetwork(&mut out[..RESPONSE_LEN])
    }

    /// Initiator side (WireGuard §5.4.3): completes the handshake, rotates keypairs, and sends
    /// the first queued packet or a keepalive (which confirms the keypair to the responder).
    pub(crate) fn handle_response<'a>(
        &mut self,
        now: Instant,
        r: &Response,
        out: &'a mut [u8],
    ) -> TunnResult<'a> {
        let Some(hs) = self.handshake.take_if(|h| h.local_index == r.receiver) else {
            self.stats.handshake_rejected += 1;
            return TunnResult::Err(TunnelError::Unexpected("response", r.receiver));
        };
        let InFlight {
            mut hs,
            local_index,
            retry_at,
        } = hs;
        let mut payload = [0u8; 16];
        match hs.read_message(&r.noise, &mut payload) {
            Ok(0) => {}
            Ok(_) | Err(_) => {
                // Keep waiting for a genuine response to the same initiation.
                self.handshake = Some(InFlight {
                    hs,
                    local_index,
                    retry_at,
                });
                self.stats.handshake_rejected += 1;
                return TunnResult::Err(TunnelError::Noise("invalid response".into()));
            }
        }
        let split = hs.dangerously_get_raw_split();
        self.previous = self.current.take();
        self.current = Some(Session::new(split, true, local_index, r.sender, now));
        self.next = None;
        self.attempts_since = None;
        self.stats.handshakes_completed += 1;
        self.last_received = Some(now);
        let first = self.queue.pop_front().unwrap_or_default();
        match self.send_data(now, &first, out) {
            Ok(n) => TunnResult::WriteToNetwork(&mut out[..n]),
            Err(e) => TunnResult::Err(e),
        }
    }

    /// WireGuard §5.4.7: stores the cookie from a reply to our in-flight initiation; the next
    /// retry carries MAC2.
    pub(crate) fn handle_cookie<'a>(&mut self, c: &CookieReply, now: Instant) -> TunnResult<'a> {
        let ours = self
            .handshake
            .as_ref()
            .is_some_and(|h| h.local_index == c.receiver);
        let Some(last_mac1) = self.last_mac1.filter(|_| ours) else {
            self.stats.handshake_rejected += 1;
            return TunnResult::Err(TunnelError::Unexpected("cookie reply", c.receiver));
        };
        match open_cookie_reply(&self.peer_cookie_key, c, &last_mac1) {
            Some(cookie) => {
                self.cookie = Some((cookie, now));
                self.stats.cookies_received += 1;
                TunnResult::Done
            }
            None => {
                self.stats.handshake_rejected += 1;
                TunnResult::Err(TunnelError::InvalidCookie)
            }
        }
    }

    /// WireGuard §5.4.6: decrypts a data message with the keypair its index names.
    pub(crate) fn handle_data<'a>(
        &mut self,
        now: Instant,
        d: &Data<'_>,
        out: &'a mut [u8],
    ) -> TunnResult<'a> {
        let reject = self.cfg.reject_after_time;
        let slot = [&mut self.current, &mut self.next, &mut self.previous]
            .into_iter()
            .position(|s| s.as_ref().is_some_and(|s| s.local_index == d.receiver));
        let session = match slot {
            Some(0) => self.current.as_mut(),
            Some(1) => self.next.as_mut(),
            Some(_) => self.previous.as_mut(),
            None => None,
        };
        let Some(session) = session else {
            self.stats.no_session += 1;
            return TunnResult::Err(TunnelError::NoSession(d.receiver));
        };
        if now.saturating_duration_since(session.created) >= reject {
            self.stats.no_session += 1;
            return TunnResult::Err(TunnelError::SessionExpired);
        }
        let n = match session.decrypt(d.counter, d.encrypted, out) {
            Ok(n) => n,
            Err(e) => {
                match e {
                    TunnelError::Replay(_) => self.stats.replays += 1,
                    _ => self.stats.decrypt_failures += 1,
                }
                return TunnResult::Err(e);
            }
        };
        if slot == Some(1) {
            // §6.3: the initiator used the new keypair, so it is confirmed.
            self.previous = self.current.take();
            self.current = self.next.take();
            self.stats.handshakes_completed += 1;
        }
        self.stats.rx_packets += 1;
        self.last_received = Some(now);
        if let Some(c) = &self.current
            && c.initiator
            && self.handshake.is_none()
            && now.saturating_duration_since(c.created)
                >= self
                    .cfg
                    .reject_after_time
                    .saturating_sub(self.cfg.keepalive_timeout + self.cfg.rekey_timeout)
        {
            self.rekey_requested.get_or_insert(now);
        }
        if n == 0 {
            return TunnResult::Done; // keepalive
        }
        let Some(len) = ip_packet_len(&out[..n]) else {
            self.stats.invalid_packets += 1;
            return TunnResult::Err(TunnelError::InvalidPacket);
        };
        self.stats.rx_bytes += len as u64;
        self.last_data_received = Some(now);
        TunnResult::WriteToTunnel(&mut out[..len])
    }

    /// Runs the timers of WireGuard §6 at `now`. Returns at most one message to send; call it
    /// again until it returns [`TunnResult::Done`] or [`TunnResult::Err`].
    pub fn update_timers<'a>(&mut self, now: Instant, out: &'a mut [u8]) -> TunnResult<'a> {
        let reject = self.cfg.reject_after_time;
        for s in [&mut self.previous, &mut self.current, &mut self.next] {
            if s.as_ref()
                .is_some_and(|x| now.saturating_duration_since(x.created) >= reject)
            {
                *s = None; // dropping the ciphers zeroizes the keys
            }
        }
        if let Some(h) = &self.handshake
            && now >= h.retry_at
        {
            if self
                .attempts_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.rekey_attempt_time)
            {
                self.handshake = None;
                self.attempts_since = None;
                self.stats.queue_drops += self.queue.len() as u64;
                self.queue.clear();
                self.last_data_sent = None;
                self.stats.handshake_timeouts += 1;
                return TunnResult::Err(TunnelError::ConnectionExpired);
            }
            return self.initiate(now, out);
        }
        if self.handshake.is_some() {
            return TunnResult::Done;
        }
        let usable = self.current_usable(now);
        if self.rekey_requested.is_some()
            || (!usable && !self.queue.is_empty() && !self.next_pending(now))
        {
            return self.initiate(now, out);
        }
        // §6.2: sent data but heard nothing for KEEPALIVE + REKEY_TIMEOUT: new handshake.
        if let Some(t) = self.sent_unanswered_deadline()
            && now >= t
        {
            self.last_data_sent = None;
            return self.initiate(now, out);
        }
        if usable
            && let Some(t) = self.keepalive_deadline()
            && now >= t
        {
            return match self.send_data(now, &[], out) {
                Ok(n) => TunnResult::WriteToNetwork(&mut out[..n]),
                Err(e) => TunnResult::Err(e),
            };
        }
        if !usable && self.cfg.persistent_keepalive.is_some() && !self.next_pending(now) {
            return self.initiate(now, out);
        }
        TunnResult::Done
    }

    fn sent_unanswered_deadline(&self) -> Option<Instant> {
        let sent = self.last_data_sent?;
        if self.last_received.is_some_and(|r| r >= sent) {
            return None;
        }
        Some(sent + self.cfg.keepalive_timeout + self.cfg.rekey_timeout)
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        let passive = self.last_data_received.and_then(|r| {
            (self.last_sent.is_none_or(|s| s < r)).then_some(r + self.cfg.keepalive_timeout)
        });
        let persistent = self
            .cfg
            .persistent_keepalive
            .and_then(|k| self.last_sent.map(|s| s + k));
        match (passive, persistent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When [`update_timers`](Self::update_timers) next has work, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut add = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        for s in [&self.previous, &self.current, &self.next]
            .into_iter()
            .flatten()
        {
            add(Some(s.created + self.cfg.reject_after_time));
        }
        if let Some(h) = &self.handshake {
            add(Some(h.retry_at));
            return d;
        }
        add(self.rekey_requested);
        if self.current.is_some() {
            add(self.keepalive_deadline());
        }
        add(self.sent_unanswered_deadline());
        if !self.queue.is_empty() && self.current.is_none() {
            add(self
                .next
                .as_ref()
                .map(|s| s.created + self.cfg.rekey_timeout));
        }
        d
    }
}

/// The length of the IP packet at the start of `b` (padding follows it), from the IPv4 total
/// length or IPv6 payload length; `None` if `b` does not start with a consistent IP header.
pub fn ip_packet_len(b: &[u8]) -> Option<usize> {
    let version = b.first()? >> 4;
    let len = match version {
        4 => {
            let ihl = usize::from(b.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
            (ihl >= 20 && total >= ihl).then_some(total)?
        }
        6 => 40 + usize::from(u16::from_be_bytes([*b.get(4)?, *b.get(5)?])),
        _ => return None,
    };
    (len <= b.len()).then_some(len)
}
