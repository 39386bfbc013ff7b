//! [`TunnelSet`]: the responder front end for many peers. It checks MAC1 on every handshake
//! message, demands MAC2 and sends cookie replies under load (WireGuard paper §5.3), routes
//! initiations to the peer whose static key they carry (cryptokey routing, §2) and every other
//! message by its session index.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::cookie::CookieChecker;
use super::keys::{LocalKeys, PrivateKey, PublicKey, Tai64N};
use super::peer::{Tunnel, TunnelConfig, consume_initiation, mac1_ok};
use super::wire::{MAC_LEN, Message};
use super::{TunnResult, TunnelError};

/// Index of a peer in a [`TunnelSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// Configuration of a [`TunnelSet`].
#[derive(Debug, Clone)]
pub struct TunnelSetConfig {
    /// "Under load" threshold: more handshake messages with a valid MAC1 than this within one
    /// second make the set demand MAC2 (cookies). Default 100.
    pub handshake_load_threshold: u32,
}

impl Default for TunnelSetConfig {
    fn default() -> Self {
        Self {
            handshake_load_threshold: 100,
        }
    }
}

/// Counters of messages the set rejected before they reached a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetStats {
    /// Datagrams that are not tunnel messages.
    pub malformed: u64,
    /// Handshake messages with a wrong MAC1.
    pub bad_mac1: u64,
    /// Cookie replies sent (handshake messages without a valid MAC2 under load).
    pub cookie_replies_sent: u64,
    /// Initiations that failed Noise decryption.
    pub bad_initiations: u64,
    /// Initiations from static keys that are not peers.
    pub unknown_peers: u64,
    /// Messages whose session index names no peer.
    pub unknown_index: u64,
}

/// A set of tunnels sharing one static key and one UDP socket.
#[derive(Debug)]
pub struct TunnelSet {
    keys: Arc<LocalKeys>,
    peers: Vec<Tunnel>,
    by_key: HashMap<PublicKey, usize>,
    cookies: CookieChecker,
    stats: SetStats,
}

impl TunnelSet {
    /// An empty set with our static private key.
    pub fn new(static_secret: PrivateKey, cfg: TunnelSetConfig) -> Self {
        Self {
            keys: Arc::new(LocalKeys::new(static_secret)),
            peers: Vec::new(),
            by_key: HashMap::new(),
            cookies: CookieChecker::new(cfg.handshake_load_threshold),
            stats: SetStats::default(),
        }
    }

    /// Our static public key.
    pub fn public_key(&self) -> PublicKey {
        self.keys.public
    }

    /// Adds a peer (or returns the existing one for this key). `now`/`wall` anchor its TAI64N
    /// clock (see [`Tunnel::new`]).
    pub fn add_peer(
        &mut self,
        public: PublicKey,
        cfg: TunnelConfig,
        now: Instant,
        wall: Tai64N,
    ) -> Result<PeerId, TunnelError> {
        if let Some(&i) = self.by_key.get(&public) {
            return Ok(PeerId(i));
        }
        let i = self.peers.len();
        let tag = u32::try_from(i + 1).map_err(|_| TunnelError::TooManyPeers)?;
        if tag >= 1 << 24 {
            return Err(TunnelError::TooManyPeers);
        }
        self.peers.push(Tunnel::with_keys(
            self.keys.clone(),
            public,
            tag,
            cfg,
            now,
            wall,
        ));
        self.by_key.insert(public, i);
        Ok(PeerId(i))
    }

    /// The peers, in [`PeerId`] order.
    pub fn peers(&self) -> &[Tunnel] {
        &self.peers
    }

    /// One peer.
    pub fn peer(&self, id: PeerId) -> Option<&Tunnel> {
        self.peers.get(id.0)
    }

    /// One peer, mutably (for `encapsulate`, `update_timers`, `poll_transmit`).
    pub fn peer_mut(&mut self, id: PeerId) -> Option<&mut Tunnel> {
        self.peers.get_mut(id.0)
    }

    /// Rejection counters.
    pub fn stats(&self) -> &SetStats {
        &self.stats
    }

    /// The earliest deadline of any peer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers.iter().filter_map(Tunnel::next_deadline).min()
    }

    fn peer_by_index(&mut self, index: u32) -> Option<usize> {
        let tag = (index >> 8) as usize;
        let i = tag.checked_sub(1).filter(|&i| i < self.peers.len());
        if i.is_none() {
            self.stats.unknown_index += 1;
        }
        i
    }

    /// Handles a datagram from UDP source `src`. Returns the peer it belonged to (if it got that
    /// far) and what to do. A [`TunnResult::WriteToNetwork`] without a peer is a cookie reply:
    /// send it back to `src`.
    pub fn decapsulate<'a>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> (Option<PeerId>, TunnResult<'a>) {
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                return (None, TunnResult::Err(e.into()));
            }
        };
        let handshake = matches!(msg, Message::Initiation(_) | Message::Response(_));
        if handshake {
            if !mac1_ok(&self.keys.mac1_key, datagram) {
                self.stats.bad_mac1 += 1;
                return (None, TunnResult::Err(TunnelError::InvalidMac1));
            }
            // §5.3: under load, only messages whose MAC2 proves a round trip are processed.
            if self.cookies.note_handshake(now) {
                let n = datagram.len() - MAC_LEN;
                let mut mac2 = [0u8; MAC_LEN];
                mac2.copy_from_slice(&datagram[n..]);
                if !self.cookies.check_mac2(now, src, &datagram[..n], &mac2) {
                    let mut mac1 = [0u8; MAC_LEN];
                    mac1.copy_from_slice(&datagram[n - MAC_LEN..n]);
                    let sender = match &msg {
                        Message::Initiation(i) => i.sender,
                        Message::Response(r) => r.sender,
                        _ => 0,
                    };
                    let reply = self.cookies.reply(now, src, &self.keys, sender, &mac1);
                    self.stats.cookie_replies_sent += 1;
                    return match reply.emit(out) {
                        Ok(n) => (None, TunnResult::WriteToNetwork(&mut out[..n])),
                        Err(e) => (None, TunnResult::Err(e.into())),
                    };
                }
            }
        }
        match msg {
            Message::Initiation(init) => {
                let c = match consume_initiation(&self.keys, &init) {
                    Ok(c) => c,
                    Err(e) => {
                        self.stats.bad_initiations += 1;
                        return (None, TunnResult::Err(e));
                    }
                };
                let Some(&i) = self.by_key.get(&c.initiator) else {
                    self.stats.unknown_peers += 1;
                    return (None, TunnResult::Err(TunnelError::UnknownPeer));
                };
                (
                    Some(PeerId(i)),
                    self.peers[i].accept_initiation(now, c, out),
                )
            }
            Message::Response(r) => match self.peer_by_index(r.receiver) {
                Some(i) => (Some(PeerId(i)), self.peers[i].handle_response(now, &r, out)),
                None => (None, TunnResult::Err(TunnelError::NoSession(r.receiver))),
            },
            Message::CookieReply(c) => match self.peer_by_index(c.receiver) {
                Some(i) => (Some(PeerId(i)), self.peers[i].handle_cookie(&c, now)),
                None => (None, TunnResult::Err(TunnelError::NoSession(c.receiver))),
            },
            Message::Data(d) => match self.peer_by_index(d.receiver) {
                Some(i) => (Some(PeerId(i)), self.peers[i].handle_data(now, &d, out)),
                None => (None, TunnResult::Err(TunnelError::NoSession(d.receiver))),
            },
        }
    }
}
