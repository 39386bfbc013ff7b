//! Re-proposal of a prepared block in a later round, and lock handling (docs/POE.md,
//! "Finality", "Locks and re-proposal").
//!
//! The rule (Tendermint's proof-of-lock re-proposal, with the lock as HotStuff's highest
//! prepare certificate):
//!
//! - a level-1 node's lock is the prepare certificate of the highest round it has seen at the
//!   height (a certificate of a higher round for any block replaces it: that is the unlock);
//! - on a spin, a locked node broadcasts its lock's sealed block and certificate, so the next
//!   clerks learn the highest prepare certificate;
//! - the clerk of round `r'` that is locked on a block `B` it holds (certificate of a round
//!   `< r'`) re-proposes `B` unchanged with a [`Reproposal`] carrying its ticket for `r'` and
//!   the certificate, instead of building a new block;
//! - a node accepts a re-proposal only with a valid prepare certificate for the block of a
//!   round in `[B's ticket round, r')`, adopts that certificate as its lock if it is higher
//!   than its own, and then votes PREPARE in `r'` for the best proposal of `r'` (new block or
//!   re-proposal) only if it is unlocked or locked on that very block;
//! - COMMIT votes and certificates are for `(h, r', B)`; a final header carries a commit
//!   certificate of a round at least its ticket's ([`verify::commit`]).

use std::time::Instant;

use super::state::{Candidate, Proposal};
use super::{Node, Output, Reject};
use crate::lottery::Rank;
use crate::verify::{self, VerifyError};
use crate::wire::{Block, Certificate, Hash, Level, Message, NodeId, Phase, Reproposal, Ticket};

impl Node {
    /// The lock as (round, block).
    pub(super) fn lock_key(&self) -> Option<(u32, Hash)> {
        self.h.lock.as_ref().map(|c| (c.round, c.block_id))
    }

    /// The clerk that proposed `id` in `round`: a re-proposer, the block's own clerk, or else
    /// the holder of the best ticket heard for the round.
    pub(super) fn clerk_for(&self, round: u32, id: &Hash) -> Option<NodeId> {
        if let Some(p) = self.h.reproposals.get(&round)
            && p.block_id == *id
        {
            return Some(p.clerk);
        }
        if let Some(c) = self.h.blocks.get(id)
            && c.block.header.ticket.round == round
        {
            return Some(c.block.header.ticket.node);
        }
        self.h.tickets.get(&round).map(|(_, t)| t.node)
    }

    /// The best proposal of `round` with a sealed block: (rank, block, clerk).
    pub(super) fn best_proposal(&self, round: u32) -> Option<(Rank, Hash, NodeId)> {
        let fresh = self
            .h
            .blocks
            .iter()
            .filter(|(_, c)| c.sealed && c.block.header.ticket.round == round)
            .map(|(id, c)| (c.rank, *id, c.block.header.ticket.node));
        let again = self
            .h
            .reproposals
            .get(&round)
            .filter(|p| self.h.blocks.get(&p.block_id).is_some_and(|c| c.sealed))
            .map(|p| (p.rank, p.block_id, p.clerk));
        fresh.chain(again).min_by_key(|(rank, _, _)| *rank)
    }

    /// On a spin: a locked level-1 node broadcasts its lock's sealed block (if it holds it)
    /// and prepare certificate, so that the clerks of the next rounds can re-propose it.
    pub(super) fn announce_lock(&mut self) {
        let Some(cert) = self.h.lock.clone() else {
            return;
        };
        if cert.round >= self.round {
            return;
        }
        if let Some(c) = self.h.blocks.get(&cert.block_id)
            && c.sealed
        {
            let block = c.block.clone();
            self.outputs
                .push_back(Output::Committee(Message::Block(block)));
        }
        self.outputs
            .push_back(Output::Committee(Message::Certificate(cert)));
    }

    /// The clerk holding `ticket`: if locked on a sealed block it holds from an earlier round,
    /// it re-proposes that block (returns `true`) instead of building a new one.
    pub(super) fn try_repropose(&mut self, ticket: &Ticket) -> bool {
        let Some(cert) = self.h.lock.clone() else {
            return false;
        };
        if cert.round >= ticket.round {
            return false;
        }
        let Some(c) = self.h.blocks.get(&cert.block_id) else {
            return false;
        };
        if !c.sealed || c.block.header.seal.is_none() {
            return false;
        }
        let mut block = c.block.clone();
        block.header.commit = None;
        self.h.built.insert(ticket.round, cert.block_id);
        self.committee(Message::Repropose(Reproposal {
            ticket: ticket.clone(),
            block,
            justify: cert,
        }));
        true
    }

    /// A prepare certificate for the current height, already checked for its phase and
    /// height: verifies it unless it is no higher than the lock, and adopts it as the lock.
    /// Returns whether the lock moved.
    pub(super) fn raise_lock(&mut self, c: &Certificate) -> Result<bool, Reject> {
        if self
            .lock_key()
            .is_some_and(|(r, id)| r > c.round || (r == c.round && id == c.block_id))
        {
            return Ok(false);
        }
        verify::certificate(
            c,
            Phase::Prepare,
            c.height,
            c.round,
            &c.block_id,
            &self.members,
        )?;
        self.h.lock = Some(c.clone());
        Ok(true)
    }

    /// A re-proposal: checked (height and parent, the clerk's ticket, the block's ticket, seal
    /// and body, the justifying certificate), recorded as a proposal of its round; the
    /// certificate may move the lock. Votes follow the usual rule.
    pub(super) fn on_reproposal(&mut self, now: Instant, p: Reproposal) -> Result<(), Reject> {
        if self.level != Some(Level::One) {
            return Err(Reject::Unexpected);
        }
        let Reproposal {
            ticket,
            block,
            justify,
        } = p;
        let hd = &block.header;
        let round = ticket.round;
        if ticket.height != self.next_height()
            || ticket.prev_hash != self.tip.block_id
            || hd.height != ticket.height
            || hd.prev_hash != ticket.prev_hash
            || round > self.round.saturating_add(super::MAX_ROUNDS_AHEAD)
        {
            return Err(Reject::Stale);
        }
        let id = hd.block_id();
        // Known, and its justification cannot move the lock: nothing new.
        if self
            .h
            .reproposals
            .get(&round)
            .is_some_and(|q| q.clerk == ticket.node && q.block_id == id)
            && self.lock_key().is_some_and(|(r, _)| r >= justify.round)
        {
            return Ok(());
        }
        if hd.commit.is_some()
            || justify.phase != Phase::Prepare
            || justify.height != hd.height
            || justify.block_id != id
            || justify.round < hd.ticket.round
            || justify.round >= round
        {
            return Err(Reject::Unjustified);
        }
        let rank = verify::ticket(&ticket, &self.members, &self.params)?;
        self.admit_prepared(&block, id)?;
        self.raise_lock(&justify)?;
        match self.h.reproposals.get(&round) {
            Some(q) if q.rank <= rank => {}
            None if self.h.reproposals.len() >= self.config.cache_limit => {
                self.cache_drops += 1;
            }
            _ => {
                self.h.reproposals.insert(
                    round,
                    Proposal {
                        rank,
                        block_id: id,
                        clerk: ticket.node,
                    },
                );
            }
        }
        self.note_ticket(rank, ticket);
        self.catch_up_round(now, round);
        self.try_vote_prepare();
        self.try_vote_commit();
        Ok(())
    }

    /// Makes the sealed block `b` (with `block_id` `id`) a known sealed candidate: its ticket,
    /// seal and body are verified unless it is known sealed already.
    fn admit_prepared(&mut self, b: &Block, id: Hash) -> Result<(), Reject> {
        if self.h.blocks.get(&id).is_some_and(|c| c.sealed) {
            return Ok(());
        }
        let hd = &b.header;
        if hd.ticket.height != hd.height || hd.ticket.prev_hash != hd.prev_hash {
            return Err(Reject::Verify(VerifyError::TicketMismatch));
        }
        let rank = verify::ticket(&hd.ticket, &self.members, &self.params)?;
        let seal = hd.seal.as_ref().ok_or(VerifyError::Unsealed)?;
        verify::seal(seal, &id, &self.members, &self.params)?;
        self.check_body(b)?;
        self.check_double_block(hd, &id);
        if let Some(c) = self.h.blocks.get_mut(&id) {
            c.sealed = true;
            c.block.header.seal = Some(seal.clone());
            return Ok(());
        }
        if self.h.blocks.len() >= self.config.cache_limit {
            self.cache_drops += 1;
            return Err(Reject::Unexpected);
        }
        self.h.blocks.insert(
            id,
            Candidate {
                block: b.clone(),
                rank,
                sealed: true,
            },
        );
        Ok(())
    }
}
