//! Answering [`Message::GetBlocks`]: from the final blocks held in memory, or, below them,
//! through [`NodeEvent::BlocksWanted`] from the driver's store; bounded per peer.

use std::time::Instant;
use std::vec::Vec;

use super::{Node, NodeEvent};
use crate::wire::codec::MAX_GET_BLOCKS;
use crate::wire::{Block, Message, NodeId};

impl Node {
    /// Answers a [`Message::GetBlocks`] of `peer`: heights held in memory are sent at once
    /// (at most [`MAX_GET_BLOCKS`] in all); heights below them (and above genesis) are handed
    /// to the driver as one [`NodeEvent::BlocksWanted`]. Requests beyond
    /// [`super::NodeConfig::get_blocks_per_peer`] per round timeout are dropped and counted.
    pub(super) fn on_get_blocks(&mut self, now: Instant, peer: NodeId, start: u64, count: u32) {
        if peer == self.id {
            return;
        }
        if !self.admit_get_blocks(now, peer) {
            self.rejects.rate_limited += 1;
            return;
        }
        let count = u64::from(count.min(MAX_GET_BLOCKS));
        // Heights `start..end` that exist here: above genesis, at most the tip.
        let end = start
            .saturating_add(count)
            .min(self.tip.height.saturating_add(1));
        let start = start.max(self.base.saturating_add(1));
        if start >= end {
            return;
        }
        // The lowest height held in memory (the tip's successor when nothing is held).
        let first = self
            .finalized
            .front()
            .map_or(self.tip.height.saturating_add(1), |b| b.header.height);
        if start < first {
            let below = end.min(first) - start;
            self.events.push_back(NodeEvent::BlocksWanted {
                peer,
                from: start,
                // `below <= count <= MAX_GET_BLOCKS`.
                count: u32::try_from(below).unwrap_or(MAX_GET_BLOCKS),
            });
        }
        let from = start.max(first);
        let Ok(skip) = usize::try_from(from - first) else {
            return;
        };
        let blocks: Vec<Block> = self
            .finalized
            .iter()
            .skip(skip)
            .take_while(|b| b.header.height < end)
            .map(|b| Block::clone(b))
            .collect();
        for b in blocks {
            self.send(peer, Message::Block(b));
        }
    }

    /// Whether `peer` may have one more `GetBlocks` answered in its current window (one
    /// [`super::NodeConfig::round_timeout`] from its first request); counts it if so. The table
    /// holds at most [`super::NodeConfig::cache_limit`] peers: when it is full, expired
    /// windows are dropped, and a new peer is refused if none expired.
    fn admit_get_blocks(&mut self, now: Instant, peer: NodeId) -> bool {
        let window = self.config.round_timeout;
        let limit = self.config.get_blocks_per_peer;
        if let Some((started, n)) = self.answers.get_mut(&peer) {
            if now.saturating_duration_since(*started) >= window {
                *started = now;
                *n = 0;
            }
            if *n >= limit {
                return false;
            }
            *n += 1;
            return true;
        }
        if limit == 0 {
            return false;
        }
        if self.answers.len() >= self.config.cache_limit.max(1) {
            self.answers
                .retain(|_, (started, _)| now.saturating_duration_since(*started) < window);
            if self.answers.len() >= self.config.cache_limit.max(1) {
                return false;
            }
        }
        self.answers.insert(peer, (now, 1));
        true
    }
}
