//! [`Link`]: the per-peer sans-IO state machine (handshakes, sessions, timers).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::cookie;
use super::session::{RecvError, Session};
use super::{
    DownReason, LinkConfig, LinkError, LinkEvent, LinkState, LinkStats, build_handshake,
    count_parse_error, new_index,
};
use crate::hashname::{Hashname, Identity};
use crate::link::replay::ReplayError;
use crate::packet::{CookieReply, Handshake, HandshakeKind, MAC_LEN, Packet, Pattern, TAG_LEN};
use wg_guard::{Tai64N, WallClock};

/// Room for a Noise handshake message (Noise rev 34 §3: at most 65535 bytes).
const NOISE_BUF: usize = 65535;
/// Largest transport payload (a Noise message minus its tag).
const MAX_PAYLOAD: usize = 65535 - TAG_LEN;

/// An initiator handshake in progress.
struct Pending {
    hs: snow::HandshakeState,
    pattern: Pattern,
    local_index: u32,
    /// Message 1, retransmitted unchanged until answered (except for MAC2 once we hold a
    /// cookie).
    packet: Vec<u8>,
    /// Its MAC1: the associated data of a cookie reply to it (WireGuard paper §5.4.7).
    mac1: [u8; MAC_LEN],
    /// When this handshake (cycle) began: the give-up clock.
    started: Instant,
    retry_at: Instant,
    backoff: Duration,
}

/// XX message 3 we sent, retransmitted until the responder proves it has the session (an
/// authenticated transport packet from it), because a lost message 3 leaves the responder
/// without the session (Noise rev 34 §7.5: XX's third message is the responder's only proof).
struct FinalRetx {
    packet: Vec<u8>,
    /// When message 3 was first sent: the give-up clock.
    started: Instant,
    retry_at: Instant,
    backoff: Duration,
}

/// What produced our unconfirmed `next` session (to answer a retransmitted initiation with
/// the same response instead of a new session).
struct NextOrigin {
    sender: u32,
    ephemeral: Vec<u8>,
    response: Vec<u8>,
}

/// Which session a transport packet is addressed to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Current,
    Next,
    Previous,
}

/// A Noise link to one peer: a sans-IO state machine (see the [module docs](super)).
///
/// Feed it received packets with [`handle`](Self::handle) and the clock with
/// [`handle_timeout`](Self::handle_timeout); drain [`poll_transmit`](Self::poll_transmit) and
/// [`poll_event`](Self::poll_event) after each call, and wake it at
/// [`poll_timeout`](Self::poll_timeout).
pub struct Link {
    cfg: LinkConfig,
    local: Identity,
    peer_static: Option<[u8; 32]>,
    state: LinkState,
    created: Instant,
    previous: Option<(Session, Instant)>,
    current: Option<Session>,
    next: Option<Session>,
    next_origin: Option<NextOrigin>,
    pending: Option<Pending>,
    /// The cookie from the peer's last cookie reply and when it came (WireGuard paper §5.4.7):
    /// our initiations carry MAC2 with it for [`cookie::COOKIE_LIFETIME`].
    cookie: Option<([u8; MAC_LEN], Instant)>,
    /// XX initiator: message 3 awaiting the responder's confirmation.
    final_retx: Option<FinalRetx>,
    /// XX responder: the message 3 that made our session (sender index and Noise bytes), so a
    /// retransmitted copy is answered with a keepalive instead of being dropped.
    final_seen: Option<(u32, Vec<u8>)>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<LinkEvent>,
    stats: LinkStats,
    last_sent: Instant,
    last_received: Instant,
    /// Our wall clock for the TAI64N timestamps of the IK initiations we send (WireGuard §5.1).
    clock: WallClock,
    /// The greatest TAI64N timestamp seen in an IK initiation from the peer (the first one, if
    /// the acceptor made this link, then every accepted rekey); a rekey initiation whose
    /// timestamp is not greater is a replay (WireGuard §5.1, §5.4.2).
    peer_timestamp: Option<Tai64N>,
    /// Rekey initiations handshaken in the current one-second window, and its start
    /// ([`LinkConfig::max_rekey_inits_per_sec`]).
    rekey_window: (Option<Instant>, u32),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("local", &self.local.hashname())
            .field("peer", &self.peer())
            .field("state", &self.state)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

fn noise_err(_: snow::Error) -> LinkError {
    LinkError::BadAuth
}

impl Link {
    fn blank(
        now: Instant,
        clock: WallClock,
        local: &Identity,
        peer_static: Option<[u8; 32]>,
        cfg: LinkConfig,
    ) -> Link {
        Link {
            cfg,
            local: local.clone(),
            peer_static,
            state: LinkState::Connecting,
            created: now,
            previous: None,
            current: None,
            next: None,
            next_origin: None,
            pending: None,
            cookie: None,
            final_retx: None,
            final_seen: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stats: LinkStats::default(),
            last_sent: now,
            last_received: now,
            clock,
            peer_timestamp: None,
            rekey_window: (None, 0),
        }
    }

    /// Starts an IK handshake to a peer whose static key we know; returns the link and the
    /// first packet to send (it is *not* also queued in `poll_transmit`).
    ///
    /// `wall` is the wall-clock time at `now` (the driver reads it, e.g. [`Tai64N::now`]; a
    /// simulation passes a deterministic value): IK initiations carry the TAI64N timestamp
    /// `wall + (t - now)` for a later instant `t` (WireGuard paper §5.1), so it must not go
    /// backwards across restarts of this identity or the peer rejects our initiations as
    /// replays.
    pub fn connect(
        now: Instant,
        wall: Tai64N,
        local: &Identity,
        remote_static: [u8; 32],
        cfg: LinkConfig,
    ) -> Result<(Link, Vec<u8>), LinkError> {
        let mut link = Link::blank(
            now,
            WallClock::new(now, wall),
            local,
            Some(remote_static),
            cfg,
        );
        let first = link.start_handshake(now, Pattern::IK, 0)?;
        Ok((link, first))
    }

    /// Starts an XX handshake to a peer whose static key we do not know (the peer's hashname
    /// is learned from message 2 and reported in [`LinkEvent::Up`]). `wall` is as for
    /// [`connect`](Self::connect) (later rekeys are IK and carry timestamps).
    pub fn connect_unknown(
        now: Instant,
        wall: Tai64N,
        local: &Identity,
        cfg: LinkConfig,
    ) -> Result<(Link, Vec<u8>), LinkError> {
        let mut link = Link::blank(now, WallClock::new(now, wall), local, None, cfg);
        let first = link.start_handshake(now, Pattern::XX, 0)?;
        Ok((link, first))
    }

    /// A link created by the [`Acceptor`](super::Acceptor) for a completed inbound handshake.
    /// `confirmed` is false for IK (wait for the first transport packet), true for XX.
    /// `peer_timestamp` is the TAI64N timestamp of the IK initiation (None for XX).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accepted(
        now: Instant,
        clock: WallClock,
        local: &Identity,
        peer_static: [u8; 32],
        session: Session,
        confirmed: bool,
        peer_timestamp: Option<Tai64N>,
        cfg: LinkConfig,
    ) -> Link {
        let mut link = Link::blank(now, clock, local, Some(peer_static), cfg);
        link.peer_timestamp = peer_timestamp;
        link.stats.handshakes_completed = u64::from(confirmed);
        if confirmed {
            link.current = Some(session);
            link.state = LinkState::Up;
            link.events.push_back(LinkEvent::Up {
                peer: Hashname::of_x25519(&peer_static),
            });
            // XX responder: a keepalive right away tells the initiator that message 3 arrived
            // (it retransmits message 3 until it hears from us).
            link.send_keepalive(now);
        } else {
            link.next = Some(session);
        }
        link
    }

    /// XX responder: remembers the message 3 that created this link, so that a retransmitted
    /// copy (our keepalive was lost) is answered with another keepalive.
    pub(crate) fn set_final_seen(&mut self, sender: u32, noise: &[u8]) {
        self.final_seen = Some((sender, noise.to_vec()));
    }

    /// Builds and records a handshake message 1 (also the rekey path). `hint` is the peer's
    /// current index (0 for a first handshake).
    fn start_handshake(
        &mut self,
        now: Instant,
        pattern: Pattern,
        hint: u32,
    ) -> Result<Vec<u8>, LinkError> {
        let secret = self.local.secret_bytes();
        let remote = if pattern == Pattern::IK {
            self.peer_static.as_ref()
        } else {
            None
        };
        let mut hs = build_handshake(pattern, &secret, remote, true).map_err(noise_err)?;
        let mut buf = vec![0u8; NOISE_BUF];
        // IK message 1 carries the encrypted TAI64N timestamp as its payload (WireGuard paper
        // §5.1, §5.4.2: `timestamp` after `s` in the initiation); XX message 1 is sent before
        // any key is known, so it carries none (see the module docs).
        let payload = match pattern {
            Pattern::IK => self.clock.next(now).to_bytes().to_vec(),
            Pattern::XX => Vec::new(),
        };
        let n = hs.write_message(&payload, &mut buf).map_err(noise_err)?;
        let local_index = new_index();
        let mut packet = Packet::Handshake(Handshake {
            kind: HandshakeKind::Init,
            pattern,
            sender: local_index,
            receiver: hint,
            noise: &buf[..n],
            macs: None,
        })
        .to_vec()?;
        // WireGuard paper §5.4.4: MAC1 keyed by the responder's key (a public label for XX,
        // see `cookie`), MAC2 by a fresh cookie if the responder sent us one.
        let responder = remote.copied().unwrap_or([0u8; 32]);
        let fresh = self.fresh_cookie(now);
        let mac1 = cookie::seal_init(&mut packet, pattern, &responder, fresh.as_ref())
            .ok_or(LinkError::TooLarge)?;
        let (started, backoff) = match &self.pending {
            Some(p) => (p.started, p.backoff),
            None => (now, self.cfg.handshake_retry_initial),
        };
        self.pending = Some(Pending {
            hs,
            pattern,
            local_index,
            packet: packet.clone(),
            mac1,
            started,
            retry_at: now + backoff,
            backoff,
        });
        self.stats.handshakes_sent += 1;
        self.last_sent = now;
        Ok(packet)
    }

    /// The cookie to put in MAC2, if we hold one younger than its lifetime.
    fn fresh_cookie(&self, now: Instant) -> Option<[u8; MAC_LEN]> {
        self.cookie
            .filter(|(_, at)| now.saturating_duration_since(*at) < cookie::COOKIE_LIFETIME)
            .map(|(c, _)| c)
    }

    fn start_rekey(&mut self, now: Instant) {
        if self.pending.is_some()
            || self.peer_static.is_none()
            || matches!(self.state, LinkState::Down(_))
        {
            return;
        }
        let hint = self.current.as_ref().map_or(0, |s| s.remote_index);
        if let Ok(p) = self.start_handshake(now, Pattern::IK, hint) {
            self.transmit.push_back(p);
            self.state = LinkState::Rekeying;
        }
    }

    fn go_down(&mut self, reason: DownReason) {
        if matches!(self.state, LinkState::Down(_)) {
            return;
        }
        tracing::debug!(peer = ?self.peer(), ?reason, "mesh link down");
        self.state = LinkState::Down(reason);
        self.previous = None;
        self.current = None;
        self.next = None;
        self.next_origin = None;
        self.pending = None;
        self.final_retx = None;
        self.final_seen = None;
        self.events.push_back(LinkEvent::Down { reason });
    }

    /// Closes the link locally ([`DownReason::Closed`]); keys are dropped.
    pub fn close(&mut self) {
        self.go_down(DownReason::Closed);
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The peer's static public key, once known.
    pub fn peer_static(&self) -> Option<[u8; 32]> {
        self.peer_static
    }

    /// The peer's hashname, once its static key is known.
    pub fn peer(&self) -> Option<Hashname> {
        self.peer_static.as_ref().map(Hashname::of_x25519)
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The greatest TAI64N timestamp accepted in an IK initiation from the peer (WireGuard
    /// paper §5.1), for a driver that keeps one replay table per peer key (the mesh feeds it
    /// back to its [`Acceptor`](super::Acceptor) so a rekey initiation replayed with a stale
    /// routing hint is rejected there too).
    pub fn peer_timestamp(&self) -> Option<Tai64N> {
        self.peer_timestamp
    }

    /// Whether a packet addressed to `index` belongs to this link (for a driver's routing table).
    pub fn owns_index(&self, index: u32) -> bool {
        index != 0 && self.local_indices().contains(&index)
    }

    /// Our session indices in use (current, next, previous, pending handshake).
    pub fn local_indices(&self) -> Vec<u32> {
        let mut v = Vec::with_capacity(4);
        v.extend(self.current.as_ref().map(|s| s.local_index));
        v.extend(self.next.as_ref().map(|s| s.local_index));
        v.extend(self.previous.as_ref().map(|(s, _)| s.local_index));
        v.extend(self.pending.as_ref().map(|p| p.local_index));
        v
    }

    /// Encrypts `payload` for the peer on the current session and returns the packet. May
    /// queue a rekey initiation in [`poll_transmit`](Self::poll_transmit).
    pub fn send(&mut self, now: Instant, payload: &[u8]) -> Result<Vec<u8>, LinkError> {
        if matches!(self.state, LinkState::Down(_)) {
            return Err(LinkError::Down);
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(LinkError::TooLarge);
        }
        let session = self.current.as_mut().ok_or(LinkError::NotConnected)?;
        let Some(packet) = session.seal(payload) else {
            self.start_rekey(now);
            return Err(LinkError::NotConnected);
        };
        let sent = session.sent();
        self.stats.packets_sent += 1;
        self.last_sent = now;
        if sent >= self.cfg.rekey_after_packets {
            self.start_rekey(now);
        }
        Ok(packet)
    }

    /// Handles one received packet. Returns the plaintext of a data packet, `None` for
    /// keepalives and handshake messages; every error is a dropped (and counted) packet.
    pub fn handle(&mut self, now: Instant, bytes: &[u8]) -> Result<Option<Vec<u8>>, LinkError> {
        if matches!(self.state, LinkState::Down(_)) {
            return Err(LinkError::Down);
        }
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                count_parse_error(&mut self.stats, &e);
                return Err(e.into());
            }
        };
        match packet {
            Packet::Transport(t) => self.recv_transport(now, t.receiver, t.counter, t.ciphertext),
            Packet::CookieReply(c) => {
                let r = self.recv_cookie(now, &c);
                match &r {
                    Err(LinkError::UnexpectedHandshake) => self.stats.unexpected_handshake += 1,
                    Err(_) => self.stats.bad_auth += 1,
                    Ok(()) => self.stats.cookies_received += 1,
                }
                r.map(|()| None)
            }
            Packet::Handshake(h) => {
                let r = match h.kind {
                    HandshakeKind::Response => self.recv_response(now, &h),
                    HandshakeKind::Init if h.pattern == Pattern::IK => {
                        self.recv_rekey_init(now, &h, bytes)
                    }
                    HandshakeKind::Final if h.pattern == Pattern::XX => {
                        self.recv_duplicate_final(now, &h)
                    }
                    _ => Err(LinkError::UnexpectedHandshake),
                };
                match &r {
                    Err(LinkError::UnexpectedHandshake) => self.stats.unexpected_handshake += 1,
                    Err(LinkError::BadAuth | LinkError::WrongPeer | LinkError::BadMac1) => {
                        self.stats.bad_auth += 1
                    }
                    Err(LinkError::ReplayedInitiation) => self.stats.replayed_initiations += 1,
                    Err(LinkError::RateLimited) => self.stats.rate_limited_rekeys += 1,
                    _ => {}
                }
                r.map(|()| None)
            }
        }
    }

    fn recv_transport(
        &mut self,
        now: Instant,
        receiver: u32,
        counter: u64,
        ciphertext: &[u8],
    ) -> Result<Option<Vec<u8>>, LinkError> {
        let slot = if self
            .current
            .as_ref()
            .is_some_and(|s| s.local_index == receiver)
        {
            Slot::Current
        } else if self
            .next
            .as_ref()
            .is_some_and(|s| s.local_index == receiver)
        {
            Slot::Next
        } else if self
            .previous
            .as_ref()
            .is_some_and(|(s, _)| s.local_index == receiver)
        {
            Slot::Previous
        } else {
            self.stats.unknown_session += 1;
            return Err(LinkError::UnknownSession(receiver));
        };
        let session = match slot {
            Slot::Current => self.current.as_mut(),
            Slot::Next => self.next.as_mut(),
            Slot::Previous => self.previous.as_mut().map(|(s, _)| s),
        };
        let Some(session) = session else {
            return Err(LinkError::UnknownSession(receiver));
        };
        let plain = match session.open(counter, ciphertext) {
            Ok(p) => p,
            Err(RecvError::Replay(ReplayError::Replayed)) => {
                self.stats.replayed += 1;
                return Err(LinkError::Replayed);
            }
            Err(RecvError::Replay(ReplayError::TooOld)) => {
                self.stats.too_old += 1;
                return Err(LinkError::TooOld);
            }
            Err(RecvError::BadAuth) => {
                self.stats.bad_auth += 1;
                return Err(LinkError::BadAuth);
            }
        };
        self.last_received = now;
        self.stats.packets_received += 1;
        if slot == Slot::Current {
            // The XX responder has our session: message 3 arrived (or data did, which it
            // could only decrypt after message 3).
            self.final_retx = None;
        }
        if slot == Slot::Next {
            self.promote_next(now);
        }
        if plain.is_empty() {
            self.stats.keepalives_received += 1;
            Ok(None)
        } else {
            Ok(Some(plain))
        }
    }

    /// Key confirmation of our responder session: it becomes current.
    fn promote_next(&mut self, now: Instant) {
        let Some(next) = self.next.take() else { return };
        self.next_origin = None;
        self.install(now, next);
    }

    /// Makes `session` current, keeping the old one for in-flight packets, and reports it.
    fn install(&mut self, now: Instant, session: Session) {
        if let Some(old) = self.current.replace(session) {
            self.previous = Some((old, now + self.cfg.old_session_grace));
        }
        self.stats.handshakes_completed += 1;
        self.last_received = now;
        tracing::debug!(peer = ?self.peer(), state = ?self.state, "mesh link session installed");
        match self.state {
            LinkState::Connecting => {
                self.state = LinkState::Up;
                if let Some(peer) = self.peer() {
                    self.events.push_back(LinkEvent::Up { peer });
                }
            }
            _ => {
                self.stats.rekeys += 1;
                if self.pending.is_none() {
                    self.state = LinkState::Up;
                }
                self.events.push_back(LinkEvent::Rekeyed);
            }
        }
    }

    fn recv_response(&mut self, now: Instant, h: &Handshake<'_>) -> Result<(), LinkError> {
        if !self
            .pending
            .as_ref()
            .is_some_and(|p| p.local_index == h.receiver && p.pattern == h.pattern)
        {
            return Err(LinkError::UnexpectedHandshake);
        }
        let Some(mut p) = self.pending.take() else {
            return Err(LinkError::UnexpectedHandshake);
        };
        let mut buf = vec![0u8; NOISE_BUF];
        if p.hs.read_message(h.noise, &mut buf).is_err() {
            // A forged or corrupted response may leave snow's state unusable: start this
            // handshake afresh (same give-up clock and back-off) and send the new message 1.
            self.pending = Some(p);
            let hint = self.current.as_ref().map_or(0, |s| s.remote_index);
            let pattern = self.pending.as_ref().map_or(Pattern::IK, |p| p.pattern);
            if let Ok(pkt) = self.start_handshake(now, pattern, hint) {
                self.transmit.push_back(pkt);
            }
            return Err(LinkError::BadAuth);
        }
        let remote: Option<[u8; 32]> =
            p.hs.get_remote_static()
                .and_then(|r| <[u8; 32]>::try_from(r).ok());
        let Some(remote) = remote else {
            return Err(LinkError::BadAuth);
        };
        match self.peer_static {
            Some(expected) if expected != remote => {
                self.pending = Some(p);
                return Err(LinkError::WrongPeer);
            }
            _ => self.peer_static = Some(remote),
        }
        if p.pattern == Pattern::XX {
            let n = p.hs.write_message(&[], &mut buf).map_err(noise_err)?;
            let fin = Packet::Handshake(Handshake {
                kind: HandshakeKind::Final,
                pattern: Pattern::XX,
                sender: p.local_index,
                receiver: h.sender,
                noise: &buf[..n],
                macs: None,
            })
            .to_vec()?;
            self.transmit.push_back(fin.clone());
            self.stats.handshakes_sent += 1;
            let backoff = self.cfg.handshake_retry_initial;
            self.final_retx = Some(FinalRetx {
                packet: fin,
                started: now,
                retry_at: now + backoff,
                backoff,
            });
        }
        let ts = p.hs.into_stateless_transport_mode().map_err(noise_err)?;
        let session = Session::new(ts, p.local_index, h.sender, true, now);
        self.install(now, session);
        if p.pattern == Pattern::IK {
            // Key confirmation for the responder (WireGuard paper §5.4.7).
            self.send_keepalive(now);
        }
        Ok(())
    }

    /// A cookie reply to our pending initiation (WireGuard paper §5.4.7): decrypt the cookie
    /// with the responder's cookie key and the MAC1 we sent, and keep it; the next
    /// retransmission (on the retry timer, as in WireGuard) carries MAC2.
    fn recv_cookie(&mut self, now: Instant, c: &CookieReply) -> Result<(), LinkError> {
        let Some(p) = self
            .pending
            .as_ref()
            .filter(|p| p.local_index == c.receiver)
        else {
            return Err(LinkError::UnexpectedHandshake);
        };
        let responder = self.peer_static.unwrap_or([0u8; 32]);
        let key = cookie::cookie_key(p.pattern, &responder);
        let tau = cookie::open_cookie(&key, &c.nonce, &c.encrypted_cookie, &p.mac1)
            .ok_or(LinkError::BadAuth)?;
        self.cookie = Some((tau, now));
        Ok(())
    }

    fn recv_rekey_init(
        &mut self,
        now: Instant,
        h: &Handshake<'_>,
        bytes: &[u8],
    ) -> Result<(), LinkError> {
        let Some(peer_static) = self.peer_static else {
            return Err(LinkError::UnexpectedHandshake);
        };
        // WireGuard paper §5.4.4: MAC1 (keyed by our static key) before any Diffie-Hellman.
        if !cookie::mac1_ok(
            &cookie::mac1_key(Pattern::IK, &self.local.public_key()),
            bytes,
        ) {
            return Err(LinkError::BadMac1);
        }
        if !matches!(self.state, LinkState::Up | LinkState::Rekeying) {
            return Err(LinkError::UnexpectedHandshake);
        }
        let ephemeral = h.noise.get(..32).unwrap_or(h.noise);
        if let Some(o) = &self.next_origin
            && o.sender == h.sender
            && o.ephemeral == ephemeral
        {
            // Retransmitted initiation: answer with the same response.
            self.transmit.push_back(o.response.clone());
            self.stats.handshakes_sent += 1;
            return Ok(());
        }
        // The DH below is the cost a replayed (or forged-but-MAC1-valid) initiation buys: at
        // most `max_rekey_inits_per_sec` of them per second.
        let (start, count) = &mut self.rekey_window;
        if start.is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1)) {
            *start = Some(now);
            *count = 0;
        }
        if *count >= self.cfg.max_rekey_inits_per_sec {
            return Err(LinkError::RateLimited);
        }
        *count += 1;
        let secret = self.local.secret_bytes();
        let mut hs = build_handshake(Pattern::IK, &secret, None, false).map_err(noise_err)?;
        let mut buf = vec![0u8; NOISE_BUF];
        let n = hs.read_message(h.noise, &mut buf).map_err(noise_err)?;
        if hs.get_remote_static() != Some(&peer_static[..]) {
            return Err(LinkError::WrongPeer);
        }
        // WireGuard paper §5.1 / §5.4.2: a rekey initiation must carry a timestamp greater than
        // every one accepted from this peer, else it is a replay; checked after the Noise
        // message authenticated it (the timestamp is encrypted to us by `es`/`ss`).
        let ts = buf
            .get(..n)
            .and_then(Tai64N::from_slice)
            .ok_or(LinkError::BadAuth)?;
        if self.peer_timestamp.is_some_and(|g| ts <= g) {
            return Err(LinkError::ReplayedInitiation);
        }
        if self.pending.is_some() {
            // Simultaneous rekeys: the initiation of the smaller static key wins.
            if self.local.public_key() < peer_static {
                return Err(LinkError::UnexpectedHandshake);
            }
            self.pending = None;
        }
        let n = hs.write_message(&[], &mut buf).map_err(noise_err)?;
        let local_index = new_index();
        let response = Packet::Handshake(Handshake {
            kind: HandshakeKind::Response,
            pattern: Pattern::IK,
            sender: local_index,
            receiver: h.sender,
            noise: &buf[..n],
            macs: None,
        })
        .to_vec()?;
        let ts_state = hs.into_stateless_transport_mode().map_err(noise_err)?;
        self.peer_timestamp = Some(ts);
        self.next = Some(Session::new(ts_state, local_index, h.sender, false, now));
        self.next_origin = Some(NextOrigin {
            sender: h.sender,
            ephemeral: ephemeral.to_vec(),
            response: response.clone(),
        });
        self.transmit.push_back(response);
        self.stats.handshakes_sent += 1;
        Ok(())
    }

    /// A retransmitted XX message 3 for the session we already made from it (our keepalive
    /// was lost): answer with a keepalive, the initiator's proof that we have the session. Only
    /// a byte-identical copy of the message 3 we accepted is answered.
    fn recv_duplicate_final(&mut self, now: Instant, h: &Handshake<'_>) -> Result<(), LinkError> {
        let ours = self
            .current
            .as_ref()
            .is_some_and(|s| s.local_index == h.receiver && s.remote_index == h.sender);
        match &self.final_seen {
            Some((sender, noise)) if ours && *sender == h.sender && noise.as_slice() == h.noise => {
                self.send_keepalive(now);
                Ok(())
            }
            _ => Err(LinkError::UnexpectedHandshake),
        }
    }

    fn send_keepalive(&mut self, now: Instant) {
        if let Some(s) = self.current.as_mut()
            && let Some(p) = s.seal(&[])
        {
            self.transmit.push_back(p);
            self.stats.packets_sent += 1;
            self.stats.keepalives_sent += 1;
            self.last_sent = now;
        }
    }

    /// The next packet to send (handshake retransmissions, rekeys, keepalives, XX message 3).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, LinkState::Down(_)) {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        if let Some(p) = &self.pending {
            at(p.retry_at);
            at(p.started + self.cfg.handshake_give_up);
        }
        if let Some(f) = &self.final_retx {
            at(f.retry_at);
            at(f.started + self.cfg.handshake_give_up);
        }
        if self.current.is_none() && self.pending.is_none() {
            at(self.created + self.cfg.handshake_give_up);
        }
        if let Some((_, exp)) = &self.previous {
            at(*exp);
        }
        if let Some(s) = &self.current {
            at(self.last_received + self.cfg.dead_after);
            at(self.last_sent + self.cfg.keepalive_interval);
            if s.initiator && self.pending.is_none() {
                at(s.created + self.cfg.rekey_after_time);
            }
        }
        t
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, LinkState::Down(_)) {
            return;
        }
        let fresh = self.fresh_cookie(now);
        let responder = self.peer_static.unwrap_or([0u8; 32]);
        if let Some(p) = self.pending.as_mut() {
            if now >= p.started + self.cfg.handshake_give_up {
                self.go_down(DownReason::HandshakeTimeout);
                return;
            }
            if now >= p.retry_at {
                if let Some(c) = fresh {
                    // Same message 1, MAC2 now keyed by the cookie (WireGuard paper §5.4.7).
                    cookie::seal_init(&mut p.packet, p.pattern, &responder, Some(&c));
                }
                self.transmit.push_back(p.packet.clone());
                self.stats.handshakes_sent += 1;
                p.backoff = (p.backoff * 2).min(self.cfg.handshake_retry_max);
                p.retry_at = now + p.backoff;
                self.last_sent = now;
            }
        }
        if let Some(f) = self.final_retx.as_mut() {
            if now >= f.started + self.cfg.handshake_give_up {
                // The responder never confirmed message 3: it has no session.
                self.go_down(DownReason::HandshakeTimeout);
                return;
            }
            if now >= f.retry_at {
                self.transmit.push_back(f.packet.clone());
                self.stats.handshakes_sent += 1;
                f.backoff = (f.backoff * 2).min(self.cfg.handshake_retry_max);
                f.retry_at = now + f.backoff;
            }
        }
        if self.current.is_none()
            && self.pending.is_none()
            && now >= self.created + self.cfg.handshake_give_up
        {
            self.go_down(DownReason::HandshakeTimeout);
            return;
        }
        if self.previous.as_ref().is_some_and(|(_, exp)| now >= *exp) {
            self.previous = None;
        }
        let Some((initiator, created)) = self.current.as_ref().map(|s| (s.initiator, s.created))
        else {
            return;
        };
        if now >= self.last_received + self.cfg.dead_after {
            self.go_down(DownReason::PeerTimeout);
            return;
        }
        if initiator && now >= created + self.cfg.rekey_after_time {
            self.start_rekey(now);
        }
        if now >= self.last_sent + self.cfg.keepalive_interval {
            self.send_keepalive(now);
        }
    }
}
