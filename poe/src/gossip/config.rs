//! Gossip parameters, named after the gossipsub v1.1 spec ("Parameters").

use std::time::Duration;

use super::frame::{MAX_DATA_LEN, MAX_IDS, MAX_TOPIC_LEN, MAX_TOPICS};

/// How a node relays messages of at least [`GossipConfig::large_message_threshold`] bytes that
/// it received (smaller ones are always pushed to the mesh, gossipsub's eager push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LargeMessageMode {
    /// gossipsub v1.1: push the full message to every mesh peer but the sender.
    Push,
    /// gossipsub v1.2 ("IDONTWANT Message", "Basic scenario"): on the first copy, send
    /// IDONTWANT(id) to every mesh peer at once, then push the message to the mesh peers that
    /// have not sent IDONTWANT for it.
    IDontWant,
    /// Announce first (this module's extension, IHAVE-first for large messages): send IHAVE(id)
    /// to the mesh peers instead of the message; a peer pulls it with IWANT from the first
    /// announcer and, after [`GossipConfig::iwant_timeout`] without an answer, from the next
    /// one. The publisher itself still pushes its message to its mesh (nobody else has it).
    AnnounceFirst,
}

/// Parameters of a [`super::Gossip`] node. Defaults follow gossipsub v1.1 (D = 6, D_lo = 5,
/// D_hi = 12, D_lazy = 6, 1 s heartbeat, 5 cache windows of which 3 are gossiped, 60 s fanout
/// TTL and prune backoff, 2 min seen TTL) with bounds sized for POE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// `D`: the mesh degree a heartbeat restores.
    pub mesh_n: usize,
    /// `D_lo`: a heartbeat grafts when a mesh has fewer peers.
    pub mesh_n_low: usize,
    /// `D_hi`: a heartbeat prunes when a mesh has more peers.
    pub mesh_n_high: usize,
    /// `D_lazy`: topic peers outside the mesh that get IHAVE at each heartbeat (0 turns lazy
    /// gossip off; there is no `gossip_factor`: the count is fixed).
    pub gossip_lazy: usize,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// `mcache_len`: heartbeats a message stays in the message cache (answers IWANT).
    pub history_length: usize,
    /// `mcache_gossip`: newest heartbeats whose messages IHAVE advertises.
    pub history_gossip: usize,
    /// Most messages in the message cache, whatever the windows hold.
    pub mcache_capacity: usize,
    /// Most bytes of message data in the message cache (at least `max_message_size`).
    pub mcache_max_bytes: usize,
    /// How long a message id stays in the seen cache.
    pub seen_ttl: Duration,
    /// Most ids in the seen cache (the oldest is forgotten first).
    pub seen_capacity: usize,
    /// How long a fanout set is kept after the last publish to its topic.
    pub fanout_ttl: Duration,
    /// How long a pruned peer may not be grafted again (sent in PRUNE; whole seconds).
    pub prune_backoff: Duration,
    /// Largest message data accepted or published, in bytes (at most 1 MiB).
    pub max_message_size: usize,
    /// Most frames waiting for one peer; further frames to it are dropped and counted.
    pub max_queue_frames: usize,
    /// Most bytes waiting for one peer (at least one largest frame); further frames to it are
    /// dropped and counted.
    pub max_queue_bytes: usize,
    /// Most events waiting for the application; further messages are dropped and counted.
    pub max_events: usize,
    /// Most bytes of message data in the waiting events (at least `max_message_size`).
    pub max_event_bytes: usize,
    /// Most topics one peer may announce; further announcements are ignored and counted.
    pub max_peer_topics: usize,
    /// Most ids in one IHAVE or IWANT (at most 1024, the codec limit).
    pub max_ihave_length: usize,
    /// Most IHAVE frames taken from one peer per heartbeat (gossipsub v1.1 `max_ihave_messages`).
    pub max_ihave_messages: usize,
    /// Most messages sent to one peer per heartbeat in answer to IWANT.
    pub max_iwant_replies: usize,
    /// Most requested-but-not-received ids remembered (they are not requested again while
    /// remembered, for three heartbeats).
    pub max_pending_iwant: usize,
    /// How received messages of at least `large_message_threshold` bytes are relayed.
    pub large_message_mode: LargeMessageMode,
    /// Size in bytes from which a message's data counts as large (gossipsub v1.2 leaves the
    /// IDONTWANT threshold to implementations; rust-libp2p uses 1 KiB).
    pub large_message_threshold: usize,
    /// gossipsub v1.2 `max_idontwant_messages`: most IDONTWANT frames taken from one peer per
    /// heartbeat; further ones are ignored and counted.
    pub max_idontwant_messages: usize,
    /// Most ids remembered per peer from its IDONTWANT frames (the oldest is forgotten first);
    /// each is forgotten anyway `history_length` heartbeats after it arrived.
    pub max_idontwant_ids: usize,
    /// How long a pull (IWANT after IHAVE) waits for the message before asking the next peer
    /// that announced it.
    pub iwant_timeout: Duration,
    /// Most peers remembered per pulled message as fallbacks, besides the one asked.
    pub max_announcers: usize,
    /// Seed of the peer-selection random stream (mixed with the node's own id).
    pub seed: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            mesh_n: 6,
            mesh_n_low: 5,
            mesh_n_high: 12,
            gossip_lazy: 6,
            heartbeat_interval: Duration::from_secs(1),
            history_length: 5,
            history_gossip: 3,
            mcache_capacity: 4096,
            mcache_max_bytes: 64 << 20,
            seen_ttl: Duration::from_secs(120),
            seen_capacity: 65_536,
            fanout_ttl: Duration::from_secs(60),
            prune_backoff: Duration::from_secs(60),
            max_message_size: 256 * 1024,
            max_queue_frames: 1024,
            max_queue_bytes: 8 << 20,
            max_events: 4096,
            max_event_bytes: 16 << 20,
            max_peer_topics: 64,
            max_ihave_length: 1024,
            max_ihave_messages: 10,
            max_iwant_replies: 1024,
            max_pending_iwant: 4096,
            large_message_mode: LargeMessageMode::AnnounceFirst,
            large_message_threshold: 1024,
            max_idontwant_messages: 1024,
            max_idontwant_ids: 4096,
            iwant_timeout: Duration::from_millis(500),
            max_announcers: 8,
            seed: 0,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `D_lo ≤ D ≤ D_hi` and `D ≥ 1` do not hold.
    #[error("mesh degrees must satisfy 1 <= D_lo <= D <= D_hi (got {low}, {n}, {high})")]
    MeshDegrees {
        /// `D_lo`.
        low: usize,
        /// `D`.
        n: usize,
        /// `D_hi`.
        high: usize,
    },
    /// `history_gossip` is zero or larger than `history_length`.
    #[error("history_gossip ({gossip}) must be in 1..=history_length ({length})")]
    History {
        /// `history_gossip`.
        gossip: usize,
        /// `history_length`.
        length: usize,
    },
    /// A duration that must be positive is zero.
    #[error("{0} must be positive")]
    ZeroDuration(&'static str),
    /// A bound that must be positive is zero.
    #[error("{0} must be positive")]
    ZeroBound(&'static str),
    /// A byte bound smaller than the largest frame, so that frame could never pass it.
    #[error("{what} = {value} is below the largest frame ({min} bytes)")]
    BelowLargestFrame {
        /// The parameter.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The largest frame.
        min: usize,
    },
    /// A limit above what the codec can carry.
    #[error("{what} = {value} exceeds the codec limit {max}")]
    AboveCodecLimit {
        /// The parameter.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The codec's limit.
        max: usize,
    },
}

impl GossipConfig {
    /// Check the parameters are consistent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1 <= self.mesh_n_low
            && self.mesh_n_low <= self.mesh_n
            && self.mesh_n <= self.mesh_n_high)
        {
            return Err(ConfigError::MeshDegrees {
                low: self.mesh_n_low,
                n: self.mesh_n,
                high: self.mesh_n_high,
            });
        }
        if self.history_gossip == 0 || self.history_gossip > self.history_length {
            return Err(ConfigError::History {
                gossip: self.history_gossip,
                length: self.history_length,
            });
        }
        for (what, d) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("seen_ttl", self.seen_ttl),
            ("fanout_ttl", self.fanout_ttl),
            ("iwant_timeout", self.iwant_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(what));
            }
        }
        for (what, n) in [
            ("mcache_capacity", self.mcache_capacity),
            ("seen_capacity", self.seen_capacity),
            ("max_message_size", self.max_message_size),
            ("max_queue_frames", self.max_queue_frames),
            ("max_events", self.max_events),
            ("max_peer_topics", self.max_peer_topics),
            ("max_ihave_length", self.max_ihave_length),
            ("max_ihave_messages", self.max_ihave_messages),
            ("max_iwant_replies", self.max_iwant_replies),
            ("max_pending_iwant", self.max_pending_iwant),
            ("max_idontwant_messages", self.max_idontwant_messages),
            ("max_idontwant_ids", self.max_idontwant_ids),
            ("max_announcers", self.max_announcers),
        ] {
            if n == 0 {
                return Err(ConfigError::ZeroBound(what));
            }
        }
        for (what, value, max) in [
            ("max_message_size", self.max_message_size, MAX_DATA_LEN),
            ("max_ihave_length", self.max_ihave_length, MAX_IDS),
        ] {
            if value > max {
                return Err(ConfigError::AboveCodecLimit { what, value, max });
            }
        }
        for (what, value) in [
            ("mcache_max_bytes", self.mcache_max_bytes),
            ("max_event_bytes", self.max_event_bytes),
            ("max_queue_bytes", self.max_queue_bytes),
        ] {
            if value < self.max_frame_len() {
                return Err(ConfigError::BelowLargestFrame {
                    what,
                    value,
                    min: self.max_frame_len(),
                });
            }
        }
        Ok(())
    }

    /// The largest frame this configuration can produce or accept: a PUBLISH of
    /// `max_message_size` bytes on a 255-byte topic, or a SUBSCRIPTIONS of 256 such topics.
    pub fn max_frame_len(&self) -> usize {
        // version, kind, topic (1 + 255), data length (4), data.
        let publish = 2 + 1 + MAX_TOPIC_LEN + 4 + self.max_message_size;
        // version, kind, count, MAX_TOPICS × (action, length, topic).
        let control = 2 + 2 + MAX_TOPICS * (2 + MAX_TOPIC_LEN);
        publish.max(control)
    }

    /// The prune backoff in whole seconds, as carried by PRUNE (at most `u16::MAX`).
    pub(crate) fn prune_backoff_secs(&self) -> u16 {
        u16::try_from(self.prune_backoff.as_secs()).unwrap_or(u16::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_configs_say_why() {
        assert_eq!(GossipConfig::default().validate(), Ok(()));
        let c = GossipConfig {
            mesh_n_low: 7,
            ..GossipConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::MeshDegrees { .. })));
        let c = GossipConfig {
            history_gossip: 6,
            ..GossipConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::History { .. })));
        let c = GossipConfig {
            iwant_timeout: Duration::ZERO,
            ..GossipConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration("iwant_timeout"))
        );
        let c = GossipConfig {
            max_idontwant_ids: 0,
            ..GossipConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroBound("max_idontwant_ids"))
        );
        let c = GossipConfig {
            max_queue_frames: 0,
            ..GossipConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroBound("max_queue_frames"))
        );
        let c = GossipConfig {
            max_message_size: 2 << 20,
            ..GossipConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::AboveCodecLimit { .. })
        ));
        let c = GossipConfig {
            max_queue_bytes: 1000,
            ..GossipConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::BelowLargestFrame {
                what: "max_queue_bytes",
                ..
            })
        ));
    }
}
