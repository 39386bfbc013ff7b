//! One device's whole exchange: a [`Server`] over its block store, at most one fetch
//! [`Session`] at a time, and the framing of both onto per-peer reliable byte streams.
//!
//! The [`Engine`] is sans-IO like its parts. Its caller (a mesh driver, the `sim-netem`
//! harness, a test network) owns one reliable, ordered, authenticated stream per peer (a mesh
//! reliable channel) and:
//!
//! * calls [`Engine::connect`] / [`Engine::disconnect`] as streams come and go;
//! * feeds received stream bytes to [`Engine::handle_bytes`];
//! * writes [`Engine::peek_transmit`] bytes to a peer's stream while it has room, then
//!   [`Engine::advance_transmit`] by what it wrote. Replies are produced only when a peer's
//!   stream has drained, so a block is read from the store only when it can be sent
//!   (bounded memory, and the transport's congestion control shares the uplink);
//! * drives time with [`Engine::poll_timeout`] / [`Engine::handle_timeout`];
//! * drains [`Engine::poll_event`], closing the stream of a peer on
//!   [`EngineEvent::Disconnect`].
//!
//! Verified blocks go into the store and are announced to peers that asked for them
//! ([`Server::notify`]), so a device serves what it has as soon as it has it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use cid::Cid;
use thiserror::Error;

use super::PeerId;
use super::frame::{Deframer, FrameError, frame_into};
use super::message::{Message, MessageError};
use super::server::{ServedStats, Server, ServerConfig};
use super::session::{
    FailReason, PeerKind, PenaltyReason, Progress, Session, SessionConfig, SessionEvent,
};
use crate::unixfs::{BlockSink, BlockSource};

/// Why a fetch ended without the whole DAG.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FetchError {
    /// The session gave up.
    #[error(transparent)]
    Session(#[from] FailReason),
    /// A verified block could not be stored.
    #[error("storing block {cid}: {reason}")]
    Store {
        /// The block.
        cid: Cid,
        /// The I/O error, as text.
        reason: String,
    },
    /// [`Engine::fetch`] was called while another fetch runs.
    #[error("a fetch of {0} is already running")]
    Busy(Cid),
}

/// Why the engine wants a peer's stream closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The stream does not frame (oversized or empty frame).
    BadFrame(FrameError),
    /// A frame is not a valid message.
    Garbage(MessageError),
    /// It reached the session's fault limit (corrupt blocks).
    Faults,
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// A fetched block was verified and stored.
    BlockStored {
        /// The block.
        cid: Cid,
        /// Its length.
        len: usize,
    },
    /// The fetch of `root` has every block in the store.
    Complete {
        /// The root.
        root: Cid,
    },
    /// The fetch of `root` ended without every block.
    Failed {
        /// The root.
        root: Cid,
        /// Why.
        error: FetchError,
    },
    /// A peer misbehaved or was slow (see [`PenaltyReason`]).
    Penalised {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: PenaltyReason,
    },
    /// Close this peer's stream; the engine has forgotten it.
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: DisconnectReason,
    },
}

/// Per-peer byte counters (stream payload, frame headers included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    /// Bytes written to the peer's stream.
    pub sent: u64,
    /// Bytes received from it.
    pub received: u64,
}

/// Engine-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// What the server sent.
    pub served: ServedStats,
    /// Stream bytes written, all peers.
    pub sent: u64,
    /// Stream bytes received, all peers.
    pub received: u64,
    /// Peers disconnected for bad frames or undecodable messages.
    pub garbage_peers: u64,
    /// Peers disconnected for corrupt blocks.
    pub faulty_peers: u64,
}

#[derive(Debug)]
struct Conn {
    kind: PeerKind,
    rx: Deframer,
    tx: Vec<u8>,
    tx_start: usize,
    traffic: PeerTraffic,
}

/// One device's exchange. See the module docs.
#[derive(Debug)]
pub struct Engine<B: BlockSource + BlockSink> {
    server: Server<B>,
    session: Option<Session>,
    last_progress: Progress,
    peers: BTreeMap<PeerId, Conn>,
    events: VecDeque<EngineEvent>,
    stats: EngineStats,
}

impl<B: BlockSource + BlockSink> Engine<B> {
    /// An engine serving from and fetching into `store`.
    pub fn new(store: B, server: ServerConfig) -> Self {
        Self {
            server: Server::new(store, server),
            session: None,
            last_progress: Progress::default(),
            peers: BTreeMap::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
        }
    }

    /// The block store.
    pub fn store(&self) -> &B {
        self.server.source()
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            served: self.server.served(),
            ..self.stats
        }
    }

    /// Byte counters of a connected peer.
    pub fn traffic(&self, peer: PeerId) -> Option<PeerTraffic> {
        self.peers.get(&peer).map(|c| c.traffic)
    }

    /// Progress of the running fetch (or the last one).
    pub fn progress(&self) -> Progress {
        self.session
            .as_ref()
            .map_or(self.last_progress, Session::progress)
    }

    /// Whether a fetch is running.
    pub fn is_fetching(&self) -> bool {
        self.session.is_some()
    }

    /// A stream to `peer` is open.
    pub fn connect(&mut self, now: Instant, peer: PeerId, kind: PeerKind) {
        self.peers.entry(peer).or_insert(Conn {
            kind,
            rx: Deframer::new(),
            tx: Vec::new(),
            tx_start: 0,
            traffic: PeerTraffic::default(),
        });
        if let Some(s) = &mut self.session {
            s.add_peer_as(now, peer, kind);
        }
        self.drain_session();
    }

    /// The stream to `peer` is gone.
    pub fn disconnect(&mut self, now: Instant, peer: PeerId) {
        self.peers.remove(&peer);
        self.server.remove_peer(peer);
        if let Some(s) = &mut self.session {
            s.remove_peer(now, peer);
        }
        self.drain_session();
    }

    /// Starts fetching the DAG under `root` from the connected peers (and those connecting
    /// later). `held` lists blocks already in the store (an interrupted fetch), which are not
    /// requested again.
    pub fn fetch(
        &mut self,
        now: Instant,
        root: Cid,
        cfg: SessionConfig,
        held: Option<Box<dyn BlockSource>>,
    ) -> Result<(), FetchError> {
        if let Some(s) = &self.session {
            return Err(FetchError::Busy(*s.root()));
        }
        let mut s = match held {
            Some(h) => Session::resume(root, cfg, h),
            None => Session::new(root, cfg),
        };
        for (peer, conn) in &self.peers {
            s.add_peer_as(now, *peer, conn.kind);
        }
        self.session = Some(s);
        self.drain_session();
        Ok(())
    }

    /// Abandons the running fetch (blocks already stored stay).
    pub fn cancel_fetch(&mut self) {
        if let Some(s) = self.session.take() {
            self.last_progress = s.progress();
        }
    }

    /// Bytes received on `peer`'s stream.
    pub fn handle_bytes(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) {
        let Some(conn) = self.peers.get_mut(&peer) else {
            return;
        };
        conn.traffic.received += bytes.len() as u64;
        self.stats.received += bytes.len() as u64;
        conn.rx.push(bytes);
        loop {
            let Some(conn) = self.peers.get_mut(&peer) else {
                return;
            };
            match conn.rx.next_frame() {
                Ok(Some(frame)) => match Message::decode(&frame) {
                    Ok(msg) => self.handle_message(now, peer, msg),
                    Err(e) => {
                        self.drop_peer(now, peer, DisconnectReason::Garbage(e));
                        return;
                    }
                },
                Ok(None) => return,
                Err(e) => {
                    self.drop_peer(now, peer, DisconnectReason::BadFrame(e));
                    return;
                }
            }
        }
    }

    fn handle_message(&mut self, now: Instant, peer: PeerId, mut msg: Message) {
        if !msg.wantlist.is_empty() || msg.full {
            let wants = Message {
                full: msg.full,
                wantlist: std::mem::take(&mut msg.wantlist),
                ..Message::default()
            };
            self.server.handle(peer, wants);
        }
        if let Some(s) = &mut self.session
            && !(msg.presences.is_empty() && msg.blocks.is_empty())
        {
            s.handle(now, peer, msg);
        }
        self.drain_session();
    }

    /// Up to `max` bytes to write next to `peer`'s stream (empty if none). Call
    /// [`Engine::advance_transmit`] with what was written.
    pub fn peek_transmit(&mut self, peer: PeerId, max: usize) -> &[u8] {
        let needs_refill = self
            .peers
            .get(&peer)
            .is_some_and(|c| c.tx_start >= c.tx.len());
        if needs_refill {
            self.refill(peer);
        }
        match self.peers.get(&peer) {
            Some(c) => {
                let end = c.tx.len().min(c.tx_start.saturating_add(max));
                &c.tx[c.tx_start..end]
            }
            None => &[],
        }
    }

    /// `n` bytes of [`Engine::peek_transmit`] were written to `peer`'s stream.
    pub fn advance_transmit(&mut self, peer: PeerId, n: usize) {
        let Some(c) = self.peers.get_mut(&peer) else {
            return;
        };
        let n = n.min(c.tx.len() - c.tx_start);
        c.tx_start += n;
        c.traffic.sent += n as u64;
        self.stats.sent += n as u64;
        if c.tx_start >= c.tx.len() {
            c.tx.clear();
            c.tx_start = 0;
        }
    }

    /// Whether anything may be waiting to be written to `peer`.
    pub fn wants_transmit(&self, peer: PeerId) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|c| c.tx_start < c.tx.len())
            || self.server.has_transmit(peer)
            || self.session.as_ref().is_some_and(|s| s.has_transmit(peer))
    }

    /// Frames the next messages for `peer`: the session's wants first (small and
    /// latency-sensitive), then one server reply.
    fn refill(&mut self, peer: PeerId) {
        let Some(conn) = self.peers.get_mut(&peer) else {
            return;
        };
        conn.tx.clear();
        conn.tx_start = 0;
        if let Some(s) = &mut self.session {
            while let Some(msg) = s.poll_transmit_to(peer) {
                // Wantlists are far below MAX_FRAME (at most MAX_ENTRIES entries).
                if let Err(e) = frame_into(&mut conn.tx, &msg) {
                    tracing::warn!(?peer, error = %e, "want message not sent");
                }
            }
        }
        if let Some(reply) = self.server.poll_transmit_to(peer)
            && let Err(e) = frame_into(&mut conn.tx, &reply)
        {
            // Only a ServerConfig::max_message_bytes above MAX_FRAME can get here.
            tracing::warn!(?peer, error = %e, "reply not sent: lower max_message_bytes");
        }
    }

    /// When [`Engine::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.as_ref().and_then(Session::poll_timeout)
    }

    /// Drives the session's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(s) = &mut self.session {
            s.handle_timeout(now);
        }
        self.drain_session();
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    fn drop_peer(&mut self, now: Instant, peer: PeerId, reason: DisconnectReason) {
        match reason {
            DisconnectReason::Faults => self.stats.faulty_peers += 1,
            _ => self.stats.garbage_peers += 1,
        }
        self.events
            .push_back(EngineEvent::Disconnect { peer, reason });
        self.disconnect(now, peer);
    }

    /// Moves session events out: stores verified blocks, ends the fetch.
    fn drain_session(&mut self) {
        loop {
            let Some(s) = &mut self.session else {
                return;
            };
            let Some(ev) = s.poll_event() else {
                return;
            };
            let root = *s.root();
            match ev {
                SessionEvent::BlockVerified { cid, data } => {
                    if let Err(e) = self.server.source_mut().put_block(&cid, &data) {
                        self.end_fetch(
                            root,
                            Err(FetchError::Store {
                                cid,
                                reason: e.to_string(),
                            }),
                        );
                        return;
                    }
                    self.server.notify(&cid);
                    self.events.push_back(EngineEvent::BlockStored {
                        cid,
                        len: data.len(),
                    });
                }
                SessionEvent::PeerPenalised { peer, reason } => {
                    self.events
                        .push_back(EngineEvent::Penalised { peer, reason });
                }
                SessionEvent::PeerDisconnected { peer } => {
                    self.stats.faulty_peers += 1;
                    self.peers.remove(&peer);
                    self.server.remove_peer(peer);
                    self.events.push_back(EngineEvent::Disconnect {
                        peer,
                        reason: DisconnectReason::Faults,
                    });
                }
                SessionEvent::Complete => self.end_fetch(root, Ok(())),
                SessionEvent::Failed { reason } => self.end_fetch(root, Err(reason.into())),
            }
        }
    }

    fn end_fetch(&mut self, root: Cid, result: Result<(), FetchError>) {
        if let Some(s) = self.session.take() {
            self.last_progress = s.progress();
        }
        self.events.push_back(match result {
            Ok(()) => EngineEvent::Complete { root },
            Err(error) => EngineEvent::Failed { root, error },
        });
    }
}
