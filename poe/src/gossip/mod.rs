//! A sans-IO gossip core modelled on libp2p **gossipsub v1.1** (docs/POE.md, module contracts).
//!
//! # The model
//!
//! Peers join **topics** (strings of 1 to [`MAX_TOPIC_LEN`] bytes). For every topic it is
//! subscribed to, a node keeps a **mesh** of about `D` ([`GossipConfig::mesh_n`]) of the peers
//! that announced the topic; full messages are pushed eagerly to mesh peers only. Once per
//! **heartbeat** ([`GossipConfig::heartbeat_interval`]) the mesh is repaired: below `D_lo` it
//! GRAFTs random candidates up to `D`, above `D_hi` it PRUNEs random members down to `D`
//! (gossipsub spec, "Mesh Maintenance"). A pruned peer is not re-grafted before a backoff
//! ([`GossipConfig::prune_backoff`]), in either direction (gossipsub v1.1, "Prune Backoff").
//!
//! At the same heartbeat the node **gossips**: to `D_lazy` random topic peers *outside* the
//! mesh it sends IHAVE with the ids of the messages in the newest `history_gossip` windows of
//! its message cache; a peer missing one of them answers IWANT and gets the full message from
//! the cache (`history_length` windows, one per heartbeat). Publishing to a topic the node is
//! not subscribed to uses a **fanout** set of `D` topic peers, kept for
//! [`GossipConfig::fanout_ttl`] after the last publish.
//!
//! A message's id ([`MessageId`]) is SHA-256 of the topic and data, length-prefixed, so
//! republishing identical data is a duplicate. A **seen cache**, bounded both in count and in
//! time ([`GossipConfig::seen_capacity`], [`GossipConfig::seen_ttl`]), drops duplicates before
//! they are delivered or forwarded: every node delivers each message at most once while its id
//! is remembered.
//!
//! # Large messages
//!
//! Messages of at least [`GossipConfig::large_message_threshold`] bytes (1 KiB by default) are
//! relayed as [`GossipConfig::large_message_mode`] says ([`LargeMessageMode`]):
//!
//! - `Push`: like any message, to every mesh peer but the sender (gossipsub v1.1).
//! - `IDontWant` (gossipsub v1.2, "IDONTWANT Message"): on the first copy the node sends
//!   IDONTWANT(id) to every mesh peer at once, queued ahead of its own push; a peer that told
//!   this node IDONTWANT(id) is skipped when it relays that message. Each peer's set holds at
//!   most [`GossipConfig::max_idontwant_ids`] ids, each for `history_length` heartbeats, from
//!   at most [`GossipConfig::max_idontwant_messages`] frames per heartbeat (v1.2's
//!   `max_idontwant_messages`). Received IDONTWANT is honoured in every mode.
//! - `AnnounceFirst` (the default; this module's extension): the node sends IHAVE(id) to its
//!   mesh peers instead of the message (not to peers that announced it to this node: they have
//!   it); a peer pulls it with IWANT from the first announcer and, when no answer came within
//!   [`GossipConfig::iwant_timeout`], from the next one it remembers (at most
//!   [`GossipConfig::max_announcers`] per message; the pulls are bounded by
//!   `max_pending_iwant`). The publisher pushes its own message to its mesh. Each hop costs a
//!   round trip more than a push, and each node receives about one full copy instead of about
//!   `D`.
//!
//! Which default, and why, is measured in docs/BENCHMARKS.md (`mef bench poe`, the network).
//!
//! # What is guaranteed, and what is not
//!
//! - Within a connected overlay, a message is delivered to every subscribed node if the mesh of
//!   every topic is connected, or if the missing nodes hear an IHAVE for it while it is in some
//!   neighbour's gossip window (the newest `history_gossip` heartbeats since *that neighbour*
//!   received it) and the answer arrives while it is still in that neighbour's cache.
//! - Like gossipsub, this core guarantees **nothing for messages older than the gossip window**:
//!   after a partition heals, messages published on one side more than about
//!   `history_gossip × heartbeat_interval` before the heal are never advertised again, so the
//!   other side never gets them. The consensus layer must catch up by other means (fetching
//!   blocks by height from a peer's store) or publish fresh messages (`tests/gossip_sim.rs`
//!   checks both halves of this statement).
//! - No message is delivered twice to the application while its id is in the seen cache; after
//!   it expires (count or time), a late copy is delivered again.
//! - Messages are not authenticated here: `from` in [`GossipEvent::Message`] is the neighbour
//!   that delivered it, as named by the driver. POE messages carry their own signatures.
//!
//! # Driving it
//!
//! Follows the house sans-IO discipline (quinn-proto): inputs are [`Gossip::add_peer`],
//! [`Gossip::remove_peer`], [`Gossip::subscribe`], [`Gossip::publish`], [`Gossip::handle`] and
//! [`Gossip::handle_timeout`]; after each one the driver drains [`Gossip::poll_transmit`] (or
//! [`Gossip::flush`] into a [`Transport`]) and [`Gossip::poll_event`], then sleeps until
//! [`Gossip::poll_timeout`]. The heartbeat clock starts at the first input that carries a
//! `now` (call `handle_timeout(now)` once at start). No clock is read, nothing is random but
//! the seeded ChaCha stream ([`GossipConfig::seed`] mixed with the node's id), and every
//! collection iterated is ordered, so a run replays exactly.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use poe::gossip::{Gossip, GossipConfig, GossipEvent, PeerId};
//!
//! let (a, b) = (PeerId::from_u64(1), PeerId::from_u64(2));
//! let mut na = Gossip::new(GossipConfig::default(), a)?;
//! let mut nb = Gossip::new(GossipConfig::default(), b)?;
//! na.add_peer(b);
//! nb.add_peer(a);
//! na.subscribe("poe/blocks")?;
//! nb.subscribe("poe/blocks")?;
//! // A zero-latency "network": move frames until both sides are quiet.
//! let pump = |now, na: &mut Gossip, nb: &mut Gossip| loop {
//!     let mut moved = false;
//!     while let Some((_, bytes)) = na.poll_transmit() {
//!         nb.handle(now, a, &bytes).expect("valid frame");
//!         moved = true;
//!     }
//!     while let Some((_, bytes)) = nb.poll_transmit() {
//!         na.handle(now, b, &bytes).expect("valid frame");
//!         moved = true;
//!     }
//!     if !moved {
//!         break;
//!     }
//! };
//! let t0 = Instant::now();
//! na.handle_timeout(t0); // start the heartbeat clocks
//! nb.handle_timeout(t0);
//! pump(t0, &mut na, &mut nb);
//! let t1 = t0 + Duration::from_secs(1);
//! na.handle_timeout(t1); // heartbeat: b announced the topic, so a grafts it
//! nb.handle_timeout(t1);
//! pump(t1, &mut na, &mut nb);
//! na.publish(t1, "poe/blocks", b"block 1")?;
//! pump(t1, &mut na, &mut nb);
//! assert_eq!(
//!     nb.poll_event(),
//!     Some(GossipEvent::Message { topic: "poe/blocks".into(), data: b"block 1".to_vec(), from: a })
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Bounds
//!
//! Every buffer has a limit and a counter in [`GossipStats`]: the seen cache (count and TTL),
//! the message cache (windows, count and bytes), each peer's outbound queue (frames and bytes),
//! the event queue (count and bytes), the topics a peer may announce, IHAVE/IWANT lengths and
//! per-heartbeat budgets, the outstanding IWANT requests and their fallback announcers, each
//! peer's IDONTWANT set (ids and frames per heartbeat), and the size of a message and of a
//! frame. Messages on topics this node does not follow leave no state at all.
//!
//! # Left out of gossipsub v1.1
//!
//! Peer scoring (and with it `D_score`, opportunistic grafting, graylisting), `D_out`, peer
//! exchange in PRUNE, flood publishing and `gossip_factor` (IHAVE goes to exactly `D_lazy`
//! peers). Of v1.2 it has IDONTWANT (above), not the protocol-id negotiation. The node keeps v1.1's prune backoff (a GRAFT during it is answered
//! with PRUNE) and caps IHAVE frames and IWANT answers per peer per heartbeat. Framing is this
//! module's own ([`frame`]), not gossipsub's protobuf, and there are no signatures or
//! sequence numbers: the id is content-derived, so identical data on a topic is one message.

mod cache;
mod config;
mod engine;
pub mod frame;

pub use self::cache::{MessageCache, SeenCache};
pub use self::config::{ConfigError, GossipConfig, LargeMessageMode};
pub use self::engine::{Gossip, GossipStats, HandleError, PublishError, SubscribeError};
pub use self::frame::{Frame, FrameError, MAX_TOPIC_LEN, Subscription};

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest, Sha256};

/// A peer of the gossip overlay: 32 bytes, in POE the peer's `NodeId` (SHA-256 of its ed25519
/// key). Drivers map it to their own addresses (sim-netem endpoints, tunnels, mesh nodes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// A peer id whose first eight bytes are `n` big-endian and the rest zero (tests, simulators).
    pub fn from_u64(n: u64) -> Self {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        PeerId(b)
    }
}

impl From<[u8; 32]> for PeerId {
    fn from(b: [u8; 32]) -> Self {
        PeerId(b)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// The id of a gossiped message: SHA-256 over `"POE1-gossip" || len(topic) (u32 BE) || topic
/// || data`. Identical topic and data give the same id, so they are de-duplicated.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub [u8; 32]);

impl MessageId {
    /// Domain prefix of the id hash.
    pub const DOMAIN: &'static [u8] = b"POE1-gossip";

    /// The id of `data` published on `topic`.
    pub fn new(topic: &str, data: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(Self::DOMAIN);
        // A topic is at most MAX_TOPIC_LEN bytes, so the cast cannot truncate.
        h.update((topic.len() as u32).to_be_bytes());
        h.update(topic.as_bytes());
        h.update(data);
        MessageId(h.finalize().into())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// What the gossip core hands to the application ([`Gossip::poll_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipEvent {
    /// A new message on a subscribed topic (each id at most once while it is in the seen
    /// cache). A node's own publications are not delivered back to it.
    Message {
        /// The topic it was published on.
        topic: String,
        /// The payload.
        data: Vec<u8>,
        /// The neighbour that delivered it (not necessarily its author).
        from: PeerId,
    },
}

/// The output side of a driver: sim-netem endpoints, router tunnels, the mesh. A driver moves
/// frames from [`Gossip::poll_transmit`] (or [`Gossip::flush`]) to the peer and gives what
/// arrives to [`Gossip::handle`].
pub trait Transport {
    /// Send one frame to `to`. Delivery may fail silently; gossip repairs losses with IHAVE.
    fn send(&mut self, to: PeerId, bytes: Vec<u8>);
}
