//! The peers table: what the node knows about each hashname (key, addresses, router hints,
//! observed candidate addresses) and its link(s) to it.

use std::net::SocketAddr;
use std::time::Instant;

use crate::channel::Channels;
use crate::hashname::Hashname;
use crate::link::{Link, LinkState};

/// How a peer's link packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight to this address.
    Direct(SocketAddr),
    /// Wrapped in `PEER`/`CONNECT` control messages through this router.
    Relayed(Hashname),
}

/// A peer's connection state as seen by [`super::Mesh::peers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Known, no link.
    Idle,
    /// A connection was asked for and waits for a key or a router.
    Waiting,
    /// Handshake in progress.
    Connecting,
    /// Link up.
    Up,
}

/// What [`super::Mesh::peers`] reports per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// Connection state.
    pub state: PeerState,
    /// Current path of the link, if any.
    pub path: Option<Path>,
}

/// Most addresses, candidates, router hints and refusing routers kept per peer.
pub(super) const MAX_ADDRS: usize = 4;
/// Most unconfirmed extra links per peer (retransmitted or simultaneous initiations).
pub(super) const MAX_SPARES: usize = 2;

/// One link with its channel mux and path.
#[derive(Debug)]
pub(super) struct LinkSlot {
    pub link: Link,
    pub chans: Channels,
    pub path: Path,
    /// Link up (confirmed) and reported.
    pub up: bool,
    /// We initiated it.
    pub initiator: bool,
    /// When a direct-only handshake should fall back to a relay.
    pub fallback_at: Option<Instant>,
    /// Next direct probe while relayed.
    pub next_probe: Option<Instant>,
    /// Probe rounds sent while relayed.
    pub probe_rounds: u32,
}

impl LinkSlot {
    pub(super) fn is_down(&self) -> bool {
        matches!(self.link.state(), LinkState::Down(_))
    }
}

/// Everything known about one hashname.
#[derive(Debug)]
pub(super) struct Peer {
    pub key: Option<[u8; 32]>,
    /// Configured or discovered addresses.
    pub addrs: Vec<SocketAddr>,
    /// Addresses routers observed it at (telehash "paths" learned through `connect`).
    pub candidates: Vec<SocketAddr>,
    /// Routers it is reachable through (telehash "peer" path hints).
    pub routers: Vec<Hashname>,
    /// Routers that refused to introduce us to it during the current attempt.
    pub refused_by: Vec<Hashname>,
    /// The main link.
    pub link: Option<LinkSlot>,
    /// Unconfirmed inbound links that may replace the main one once confirmed.
    pub spares: Vec<LinkSlot>,
    /// A connection is wanted (since), waiting for a key or a router.
    pub want: Option<Instant>,
    /// Next retry of a waiting connection.
    pub retry_at: Option<Instant>,
    /// Session indices routed to this peer.
    pub routed: Vec<u32>,
    /// Added by the application (never evicted to make room).
    pub pinned: bool,
}

impl Peer {
    pub(super) fn new(key: Option<[u8; 32]>) -> Peer {
        Peer {
            key,
            addrs: Vec::new(),
            candidates: Vec::new(),
            routers: Vec::new(),
            refused_by: Vec::new(),
            link: None,
            spares: Vec::new(),
            want: None,
            retry_at: None,
            routed: Vec::new(),
            pinned: false,
        }
    }

    pub(super) fn info(&self) -> PeerInfo {
        match &self.link {
            Some(s) if s.up => PeerInfo {
                state: PeerState::Up,
                path: Some(s.path),
            },
            Some(s) => PeerInfo {
                state: PeerState::Connecting,
                path: Some(s.path),
            },
            None if self.want.is_some() => PeerInfo {
                state: PeerState::Waiting,
                path: None,
            },
            None => PeerInfo {
                state: PeerState::Idle,
                path: None,
            },
        }
    }

    /// Whether this peer can serve as a router: link up over a direct path.
    pub(super) fn is_direct_up(&self) -> bool {
        matches!(&self.link, Some(s) if s.up && matches!(s.path, Path::Direct(_)))
    }

    /// The direct address of the link, if any.
    pub(super) fn direct_addr(&self) -> Option<SocketAddr> {
        match &self.link {
            Some(LinkSlot {
                path: Path::Direct(a),
                ..
            }) => Some(*a),
            _ => None,
        }
    }
}

/// Pushes `item` into a bounded list without duplicates (dropping the oldest when full).
pub(super) fn push_bounded<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if list.contains(&item) {
        return;
    }
    if list.len() >= MAX_ADDRS {
        list.remove(0);
    }
    list.push(item);
}
