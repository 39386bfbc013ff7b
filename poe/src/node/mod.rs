//! The consensus state machine of one member (docs/POE.md, "Finality"), sans-IO: the driver
//! feeds decoded messages ([`Node::handle_message`]), timer expiries ([`Node::handle_timeout`])
//! and local transactions ([`Node::submit_tx`]), always with the current `Instant`, and drains
//! [`Node::poll_output`] (what to transmit), [`Node::poll_event`] (finality, evidence, spins)
//! and [`Node::poll_timeout`] (when to call back). No sockets, threads or clocks: the same
//! inputs give the same outputs.
//!
//! Per height `h` and spin round `r`:
//!
//! 1. a level-1 node whose ticket for `(h, prev, r)` qualifies broadcasts it;
//! 2. after [`NodeConfig::candidacy_window`] the holder of the best ticket heard (the clerk)
//!    builds a block from its mempool, signs its header and broadcasts it (state 1);
//! 3. level-2 nodes that validate it and whose seal passes `z2` send a [`Message::Seal`] to the
//!    clerk, which broadcasts the first sealed block (state 2);
//! 4. level-1 nodes send a PREPARE vote to the clerk for the best sealed proposal of
//!    `(h, r)` (a new block or a re-proposal) unless locked on another block; with a quorum
//!    the clerk broadcasts the prepare certificate; nodes lock on it and send COMMIT votes;
//!    with a quorum the clerk broadcasts the final block (state 3), which every node verifies
//!    with [`verify::header`] (`Depth::Full`), appends and reports;
//! 5. if nothing is final within [`NodeConfig::round_timeout`] every level-1 node moves to
//!    round `r + 1` (spin).
//!
//! Locks and re-proposal (docs/POE.md, "Finality"; logic in `relock.rs`): a node's lock is
//! the prepare certificate of the highest round it saw at the height, and it votes PREPARE
//! only for its locked block; a valid prepare certificate of a higher round, for any block,
//! moves the lock. On a spin a locked node broadcasts its locked block and certificate; the
//! clerk of a later round that is locked on a block it holds re-proposes it unchanged with a
//! [`Message::Repropose`] carrying the certificate, and the round's votes and certificates
//! are for that block, so a block prepared in a round that did not finish is finalized in a
//! later one (its commit certificate's round is then above its ticket's, which
//! [`verify::header`] accepts).
//!
//! Catch-up: a final block above `tip + 1` whose commit certificate verifies (or a verified
//! certificate of a later height) shows that this node missed final blocks. It keeps such a
//! block (at most [`MAX_GET_BLOCKS`] ahead), asks the sender for the missing heights with
//! [`Message::GetBlocks`] (at most [`MAX_GET_BLOCKS`] per request, one request outstanding,
//! retried after [`NodeConfig::round_timeout`]) and appends the answers in height order, each
//! verified with [`verify::header`] (`Depth::Full`) against the tip. A node answers a
//! `GetBlocks` from the finalized blocks it holds ([`NodeConfig::keep_blocks`]); heights below
//! them (above genesis) are handed to the driver as [`NodeEvent::BlocksWanted`], to be answered
//! from its store. Each peer has at most [`NodeConfig::get_blocks_per_peer`] requests answered
//! per [`NodeConfig::round_timeout`]; more are dropped and counted in
//! [`Rejects::rate_limited`] (the table of peers is bounded by [`NodeConfig::cache_limit`]).
//!
//! Persistence (module `persist`): the node never touches a file. [`NodeEvent::Finalized`]
//! carries the final block, which the driver writes with [`crate::store::Store::append_final`];
//! after a crash it reads the chain back with [`crate::store::Store::final_blocks`] and
//! restarts with [`Node::resume`], which verifies the stored chain (see its docs for the depth)
//! and refuses a damaged or forged one with a [`ResumeError`]. A driver loop:
//!
//! ```text
//! on NodeEvent::Finalized { block, .. }       => store.append_final(&block)?
//! on NodeEvent::BlocksWanted { peer, from, count } =>
//!     for b in store.final_blocks(from, count)? { send(peer, Message::Block(b)) }
//! on restart => Node::resume(now, .., store.final_blocks(genesis.height + 1, tip)?)
//! ```
//!
//! Time: the node has no wall clock; a clerk stamps its header with the milliseconds since the
//! node was created (the `now` given to [`Node::new`]), at least the parent's time + 1.
//!
//! Clerk signatures: a header carries its clerk's ed25519 signature over `"POE1-block" ||
//! block_id` (`clerk_sig`), checked with [`verify::clerk_signature`] before a block is
//! considered (and by [`verify::header`] for final blocks). The ticket alone is a VRF proof
//! anyone who heard it can copy; without the signature a block built under a copied ticket is
//! rejected and counted.
//!
//! Equivocation: two valid votes by one voter for one `(phase, height, round)` with different
//! blocks, or two blocks with different `block_id`s for one `(height, round)` both signed by
//! the same clerk (the holder of their tickets), give a [`NodeEvent::Evidence`] and a
//! [`Message::Evidence`] broadcast. Received [`Evidence::DoubleBlock`] is accepted only if
//! both clerk signatures verify under that clerk's key: it cannot be forged from the ticket,
//! and an honest clerk, which signs one block per `(height, round)`, cannot be framed.

mod catchup;
mod persist;
mod relock;
mod state;
mod types;

pub use persist::{PersistError, ResumeError, VoteRecord};
pub use types::{
    Fanout, NodeConfig, NodeError, NodeEvent, NodeStats, Output, Reject, Rejects, TxReject,
};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use std::vec::Vec;

use crate::lottery::{self, Rank};
use crate::merkle;
use crate::sig::{self, SigningKey};
use crate::verify::{self, Depth, Membership, Params, Verified, VerifyError};
use crate::vrf::{self, VrfSecretKey};
use crate::wire::codec::MAX_GET_BLOCKS;
use crate::wire::{
    Block, BlockHeader, Certificate, Encode, Evidence, Hash, Level, Message, NodeId, Phase, Seal,
    Ticket, Transaction, TxBody, Vote, block_signing_bytes,
};

use state::{Candidate, HeightState, Mempool};

/// Most rounds ahead of the current one for which tickets and blocks are kept.
const MAX_ROUNDS_AHEAD: u32 = 64;

/// A catch-up in progress: the highest height known to be final and the last request.
#[derive(Debug, Clone, Copy)]
struct Sync {
    /// Highest height to fetch.
    target: u64,
    /// Who showed it (asked next).
    peer: NodeId,
    /// Last height of the outstanding request (0: none).
    asked: u64,
    /// When it was sent.
    at: Option<Instant>,
}

/// One member's consensus state machine.
pub struct Node {
    key: SigningKey,
    vrf: VrfSecretKey,
    id: NodeId,
    /// `None`: not (or no longer) a member; follows the chain without taking part.
    level: Option<Level>,
    members: Membership,
    params: Params,
    config: NodeConfig,
    epoch: Instant,
    tip: Verified,
    /// Height of the genesis block the chain starts from (never served).
    base: u64,
    finalized: VecDeque<Arc<Block>>,
    /// [`Message::GetBlocks`] answered per peer: (window start, requests in the window).
    answers: BTreeMap<NodeId, (Instant, u32)>,
    /// Final blocks above the next height whose commit certificate verified, by height.
    pending: BTreeMap<u64, Block>,
    sync: Option<Sync>,
    mempool: Mempool,
    /// Next admissible nonce per sender (committed nonces are below it).
    nonce_floor: BTreeMap<NodeId, u64>,
    h: HeightState,
    round: u32,
    candidacy_at: Option<Instant>,
    round_deadline: Option<Instant>,
    evidence_seen: BTreeSet<Hash>,
    outputs: VecDeque<Output>,
    events: VecDeque<NodeEvent>,
    loopback: VecDeque<Message>,
    rejects: Rejects,
    cache_drops: u64,
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("level", &self.level)
            .field("height", &self.tip.height)
            .field("round", &self.round)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with its keys, the membership and parameters, starting on the final block
    /// `genesis` at `now`. Level-1 nodes start round 0 of the next height at once.
    pub fn new(
        now: Instant,
        key: SigningKey,
        vrf: VrfSecretKey,
        members: Membership,
        params: Params,
        genesis: Verified,
        config: NodeConfig,
    ) -> Result<Self, NodeError> {
        let mut node = Self::init(now, key, vrf, members, params, genesis, config)?;
        node.enter_round(now, 0)?;
        node.drain(now);
        Ok(node)
    }

    /// The state of [`Node::new`] before it enters round 0.
    fn init(
        now: Instant,
        key: SigningKey,
        vrf: VrfSecretKey,
        members: Membership,
        params: Params,
        genesis: Verified,
        config: NodeConfig,
    ) -> Result<Self, NodeError> {
        let id = key.node_id();
        let level = members.level_of(&id);
        Ok(Self {
            key,
            vrf,
            id,
            level,
            members,
            params,
            config,
            epoch: now,
            tip: genesis,
            base: genesis.height,
            finalized: VecDeque::new(),
            answers: BTreeMap::new(),
            pending: BTreeMap::new(),
            sync: None,
            mempool: Mempool::default(),
            nonce_floor: BTreeMap::new(),
            h: HeightState::default(),
            round: 0,
            candidacy_at: None,
            round_deadline: None,
            evidence_seen: BTreeSet::new(),
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            loopback: VecDeque::new(),
            rejects: Rejects::default(),
            cache_drops: 0,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's level; `None` while it is not a member (it follows and verifies the chain
    /// until a membership transaction adding it is final).
    pub fn level(&self) -> Option<Level> {
        self.level
    }

    /// The membership after the final tip (what the next block is verified against).
    pub fn members(&self) -> &Membership {
        &self.members
    }

    /// The final tip.
    pub fn tip(&self) -> &Verified {
        &self.tip
    }

    /// The current spin round at the next height.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// The finalized blocks held in memory, oldest first (at most
    /// [`NodeConfig::keep_blocks`]).
    pub fn finalized(&self) -> impl Iterator<Item = &Block> {
        self.finalized.iter().map(|b| &**b)
    }

    /// The finalized block at `height`, if it is held in memory.
    pub fn final_block(&self, height: u64) -> Option<&Block> {
        let first = self.finalized.front()?.header.height;
        let i = usize::try_from(height.checked_sub(first)?).ok()?;
        self.finalized.get(i).map(|b| &**b)
    }

    /// Sizes of bounded structures and rejection counters.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            height: self.tip.height,
            round: self.round,
            mempool_txs: self.mempool.len(),
            mempool_bytes: self.mempool.bytes(),
            mempool_evicted: self.mempool.evicted(),
            tickets: self.h.tickets.len(),
            blocks: self.h.blocks.len(),
            votes: self.h.votes.len(),
            evidence_seen: self.evidence_seen.len(),
            finalized_blocks: self.finalized.len(),
            get_blocks_peers: self.answers.len(),
            rejects: self.rejects,
            cache_drops: self.cache_drops,
        }
    }

    /// The next thing to transmit.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sync = self
            .sync
            .and_then(|s| s.at)
            .map(|t| t + self.config.round_timeout);
        [self.candidacy_at, self.round_deadline, sync]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether this node is fetching final blocks it missed.
    pub fn is_catching_up(&self) -> bool {
        self.sync.is_some()
    }

    /// A local transaction: admitted to the mempool and broadcast.
    pub fn submit_tx(&mut self, now: Instant, tx: Transaction) -> Result<(), NodeError> {
        self.admit_tx(&tx)?;
        self.outputs.push_back(Output::Broadcast(Message::Tx(tx)));
        self.drain(now);
        Ok(())
    }

    /// Timers: the end of the candidacy window (the clerk builds) and of the round (spin).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.candidacy_at.is_some_and(|t| t <= now) {
            self.candidacy_at = None;
            self.build_if_clerk(now);
        }
        if self.round_deadline.is_some_and(|t| t <= now) {
            let next = self.round.saturating_add(1);
            // A key that cannot prove cannot be a candidate; it still votes.
            let _ = self.enter_round(now, next);
        }
        self.request_blocks(now);
        self.drain(now);
    }

    /// A decoded message from a peer (`from` is the transmitting member, informational: every
    /// message is checked on its own signatures and proofs; catch-up requests go to it and
    /// [`Message::GetBlocks`] is answered to it).
    pub fn handle_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        self.dispatch(now, from, msg);
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        while let Some(m) = self.loopback.pop_front() {
            self.dispatch(now, self.id, m);
        }
    }

    fn dispatch(&mut self, now: Instant, from: NodeId, msg: Message) {
        let result = match msg {
            Message::Ticket(t) => self.on_ticket(t).map_err(|e| (e, Kind::Ticket)),
            Message::Tx(tx) => self.admit_tx(&tx).map_err(|e| (Reject::Tx(e), Kind::Tx)),
            Message::Block(b) => self.on_block(now, from, b).map_err(|e| (e, Kind::Block)),
            Message::Seal { block_id, seal } => self
                .on_seal(now, block_id, seal)
                .map_err(|e| (e, Kind::Seal)),
            Message::Vote(v) => self.on_vote(v).map_err(|e| (e, Kind::Vote)),
            Message::Certificate(c) => self
                .on_certificate(now, from, c)
                .map_err(|e| (e, Kind::Certificate)),
            Message::Evidence(e) => self.on_evidence(e).map_err(|e| (e, Kind::Evidence)),
            Message::GetBlocks { from: start, count } => {
                self.on_get_blocks(now, from, start, count);
                Ok(())
            }
            Message::Repropose(p) => self.on_reproposal(now, p).map_err(|e| (e, Kind::Block)),
        };
        if let Err((e, kind)) = result {
            self.count_reject(&e, kind);
        }
    }

    fn count_reject(&mut self, e: &Reject, kind: Kind) {
        let r = &mut self.rejects;
        let c = match (e, kind) {
            (Reject::Stale | Reject::Unexpected, _) => &mut r.stale,
            (_, Kind::Ticket) => &mut r.ticket,
            (_, Kind::Tx) => &mut r.tx,
            (_, Kind::Block) => &mut r.block,
            (_, Kind::Seal) => &mut r.seal,
            (_, Kind::Vote) => &mut r.vote,
            (_, Kind::Certificate) => &mut r.certificate,
            (_, Kind::Evidence) => &mut r.evidence,
        };
        *c += 1;
    }

    fn broadcast(&mut self, msg: Message) {
        self.outputs.push_back(Output::Broadcast(msg.clone()));
        self.loopback.push_back(msg);
    }

    /// Like [`Self::broadcast`], to the level-1 members only ([`Output::Committee`]).
    fn committee(&mut self, msg: Message) {
        self.outputs.push_back(Output::Committee(msg.clone()));
        self.loopback.push_back(msg);
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        if to == self.id {
            self.loopback.push_back(msg);
        } else {
            self.outputs.push_back(Output::Send(to, msg));
        }
    }

    fn next_height(&self) -> u64 {
        self.tip.height + 1
    }

    // ---- rounds ----------------------------------------------------------------------------

    fn enter_round(&mut self, now: Instant, round: u32) -> Result<(), NodeError> {
        let spin = round != self.round;
        if round != self.round || self.round_deadline.is_none() {
            if round != self.round {
                self.events.push_back(NodeEvent::Spin {
                    height: self.next_height(),
                    round,
                });
            }
            self.round = round;
        }
        if self.level != Some(Level::One) {
            return Ok(());
        }
        self.candidacy_at = Some(now + self.config.candidacy_window);
        self.round_deadline = Some(now + self.config.round_timeout);
        let height = self.next_height();
        let alpha = lottery::ticket_alpha(height, &self.tip.block_id, round);
        let proof = self.vrf.prove(&alpha).map_err(|_| NodeError::Vrf)?;
        let beta = vrf::proof_to_hash(&proof);
        let needed =
            lottery::threshold(self.members.level1_count(), self.params.expected_candidates);
        if lottery::qualifies(&beta, needed) {
            let t = Ticket {
                node: self.id,
                height,
                prev_hash: self.tip.block_id,
                round,
                proof,
            };
            self.committee(Message::Ticket(t));
        }
        if spin {
            self.announce_lock();
        }
        // Blocks and certificates of this round that arrived early.
        self.try_vote_prepare();
        self.try_vote_commit();
        Ok(())
    }

    /// Jumps to a later round proven by a sealed block or a prepare certificate.
    fn catch_up_round(&mut self, now: Instant, round: u32) {
        if round > self.round {
            // A VRF failure only stops this node from being a candidate.
            let _ = self.enter_round(now, round);
        }
    }

    fn build_if_clerk(&mut self, now: Instant) {
        let round = self.round;
        let Some((_, best)) = self.h.tickets.get(&round) else {
            return;
        };
        if best.node != self.id || self.h.built.contains_key(&round) {
            return;
        }
        let ticket = best.clone();
        if self.try_repropose(&ticket) {
            return;
        }
        let mut txs = self.mempool.select(self.config.max_block_txs);
        let members_root = match self.members.successor(&txs) {
            Ok(next) => next.root(),
            // Admission checked every change against this set and `select` takes one per
            // node; if the set still refuses them (a leave that would empty a level), the
            // block goes without them.
            Err(_) => {
                txs.retain(|t| !matches!(t.body, TxBody::Membership { .. }));
                self.members.root()
            }
        };
        let leaves: Vec<Vec<u8>> = txs.iter().map(|t| t.to_bytes()).collect();
        let Ok(tx_count) = u32::try_from(txs.len()) else {
            return;
        };
        let elapsed = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let mut header = BlockHeader {
            height: self.next_height(),
            prev_hash: self.tip.block_id,
            tx_root: merkle::root(&leaves),
            tx_count,
            members_root,
            time_ms: self.tip.time_ms.saturating_add(1).max(elapsed),
            ticket,
            clerk_sig: [0; 64],
            seal: None,
            commit: None,
        };
        let id = header.block_id();
        header.clerk_sig = self.key.sign(&[], &[&block_signing_bytes(&id)]);
        self.h.built.insert(round, id);
        self.broadcast(Message::Block(Block { header, txs }));
    }

    // ---- tickets ---------------------------------------------------------------------------

    fn on_ticket(&mut self, t: Ticket) -> Result<(), Reject> {
        if self.level != Some(Level::One) {
            return Err(Reject::Unexpected);
        }
        if t.height != self.next_height()
            || t.prev_hash != self.tip.block_id
            || t.round > self.round.saturating_add(MAX_ROUNDS_AHEAD)
        {
            return Err(Reject::Stale);
        }
        if self.h.tickets.get(&t.round).is_some_and(|(_, b)| *b == t) {
            return Ok(());
        }
        let rank = verify::ticket(&t, &self.members, &self.params)?;
        self.note_ticket(rank, t);
        Ok(())
    }

    fn note_ticket(&mut self, rank: Rank, t: Ticket) {
        match self.h.tickets.get(&t.round) {
            Some((r, _)) if *r <= rank => {}
            Some(_) => {
                self.h.tickets.insert(t.round, (rank, t));
            }
            None if self.h.tickets.len() >= self.config.cache_limit => self.cache_drops += 1,
            None => {
                self.h.tickets.insert(t.round, (rank, t));
            }
        }
    }

    // ---- transactions ----------------------------------------------------------------------

    fn check_tx(&self, tx: &Transaction) -> Result<usize, TxReject> {
        let (member, _) = self
            .members
            .get(&tx.sender, Level::One)
            .or_else(|_| self.members.get(&tx.sender, Level::Two))
            .map_err(|_| TxReject::NotMember)?;
        let len = tx.to_bytes().len();
        if len > self.config.max_tx_bytes {
            return Err(TxReject::TooLarge);
        }
        if tx.nonce < self.nonce_floor.get(&tx.sender).copied().unwrap_or(0) {
            return Err(TxReject::OldNonce);
        }
        sig::verify(&member.ed25519, &[], &[&tx.signing_bytes()], &tx.signature)
            .map_err(|_| TxReject::BadSignature)?;
        Ok(len)
    }

    fn admit_tx(&mut self, tx: &Transaction) -> Result<(), TxReject> {
        if self.mempool.contains(tx) {
            return Err(TxReject::Duplicate);
        }
        if self.mempool.has_nonce(&tx.sender, tx.nonce) {
            return Err(TxReject::OldNonce);
        }
        let len = self.check_tx(tx)?;
        if let TxBody::Membership {
            node,
            member,
            approvals,
        } = &tx.body
        {
            self.members
                .check_change(node, member.as_ref(), approvals)
                .map_err(TxReject::Membership)?;
        }
        self.mempool.insert(
            tx.clone(),
            len,
            self.config.mempool_max_txs,
            self.config.mempool_max_bytes,
        );
        Ok(())
    }

    /// Checks a block's size and Merkle root against its header.
    fn check_root(&self, b: &Block) -> Result<(), Reject> {
        if b.txs.len() > self.config.max_block_txs
            || u32::try_from(b.txs.len()).ok() != Some(b.header.tx_count)
        {
            return Err(Reject::BadBody);
        }
        let leaves: Vec<Vec<u8>> = b.txs.iter().map(|t| t.to_bytes()).collect();
        if merkle::root(&leaves) != b.header.tx_root {
            return Err(Reject::BadBody);
        }
        Ok(())
    }

    /// Checks a block's body against its header and every transaction against the chain;
    /// returns the membership after the block (its membership changes applied, checked
    /// against the header's `members_root`).
    fn check_body(&self, b: &Block) -> Result<Membership, Reject> {
        self.check_root(b)?;
        let mut last: BTreeMap<NodeId, u64> = BTreeMap::new();
        for tx in &b.txs {
            self.check_tx(tx)?;
            if last.get(&tx.sender).is_some_and(|n| *n >= tx.nonce) {
                return Err(Reject::Tx(TxReject::OldNonce));
            }
            last.insert(tx.sender, tx.nonce);
        }
        self.successor(b)
    }

    /// The membership after block `b` (this node's set being its parent's), checked against
    /// the header's `members_root`.
    fn successor(&self, b: &Block) -> Result<Membership, Reject> {
        let next = self
            .members
            .successor(&b.txs)
            .map_err(|e| Reject::Tx(TxReject::Membership(e)))?;
        if next.root() != b.header.members_root {
            return Err(Reject::MembersRoot);
        }
        Ok(next)
    }

    /// Takes the membership after a final block at `height`: the level of this node may
    /// change, pending membership transactions (approved under the old root) are dropped,
    /// and the change is reported (unless `quiet`: a resumed chain).
    fn change_members(&mut self, height: u64, next: Membership, quiet: bool) {
        if next.root() == self.members.root() {
            return;
        }
        if quiet {
            self.members = next;
            self.level = self.members.level_of(&self.id);
            return;
        }
        let joined: Vec<NodeId> = next
            .iter()
            .filter(|(id, _)| self.members.level_of(id).is_none())
            .map(|(id, _)| *id)
            .collect();
        let left: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, _)| next.level_of(id).is_none())
            .map(|(id, _)| *id)
            .collect();
        self.members = next;
        self.level = self.members.level_of(&self.id);
        self.mempool.drop_membership();
        self.events.push_back(NodeEvent::MembersChanged {
            height,
            joined,
            left,
        });
    }

    // ---- blocks ----------------------------------------------------------------------------

    fn on_block(&mut self, now: Instant, from: NodeId, b: Block) -> Result<(), Reject> {
        let hd = &b.header;
        if hd.height > self.next_height() && hd.commit.is_some() {
            return self.on_future_final(now, from, b);
        }
        if hd.height != self.next_height() || hd.prev_hash != self.tip.block_id {
            return Err(Reject::Stale);
        }
        if hd.commit.is_some() {
            self.on_final(now, b)?;
            self.apply_pending(now);
            self.request_blocks(now);
            return Ok(());
        }
        if hd.ticket.round > self.round.saturating_add(MAX_ROUNDS_AHEAD) {
            return Err(Reject::Stale);
        }
        let id = hd.block_id();
        let known = self.h.blocks.get(&id).map(|c| c.sealed);
        let sealed = hd.seal.is_some();
        match known {
            Some(true) => return Ok(()),
            Some(false) if !sealed => return Ok(()),
            Some(false) => {}
            None => {
                if hd.ticket.height != hd.height || hd.ticket.prev_hash != hd.prev_hash {
                    return Err(Reject::Verify(VerifyError::TicketMismatch));
                }
                let rank = verify::ticket(&hd.ticket, &self.members, &self.params)?;
                // A copied ticket is not enough: the ticket's holder must have signed the
                // header (and a double block is then evidence signed twice by the clerk).
                verify::clerk_signature(hd, &id, &self.members)?;
                self.check_body(&b)?;
                self.check_double_block(hd, &id);
                if self.level == Some(Level::One) {
                    self.note_ticket(rank, hd.ticket.clone());
                }
                if self.h.blocks.len() >= self.config.cache_limit {
                    self.cache_drops += 1;
                    return Ok(());
                }
                self.h.blocks.insert(
                    id,
                    Candidate {
                        block: b.clone(),
                        rank,
                        sealed: false,
                    },
                );
            }
        }
        if let Some(s) = &b.header.seal {
            verify::seal(s, &id, &self.members, &self.params)?;
            if let Some(c) = self.h.blocks.get_mut(&id) {
                c.sealed = true;
                c.block.header.seal = Some(s.clone());
            }
            if self.level == Some(Level::One) {
                self.catch_up_round(now, b.header.ticket.round);
                self.try_vote_prepare();
                self.try_vote_commit();
            }
        } else if self.level == Some(Level::Two) {
            self.try_seal(&id, b.header.ticket.node);
        }
        Ok(())
    }

    fn check_double_block(&mut self, hd: &BlockHeader, id: &Hash) {
        let key = (hd.ticket.round, hd.ticket.node);
        match self.h.clerk_blocks.get(&key) {
            Some(other) if other.block_id() != *id => {
                let mut a = other.clone();
                let mut b = hd.clone();
                a.seal = None;
                a.commit = None;
                b.seal = None;
                b.commit = None;
                self.raise_evidence(Evidence::DoubleBlock(a, b));
            }
            Some(_) => {}
            None if self.h.clerk_blocks.len() >= self.config.cache_limit => self.cache_drops += 1,
            None => {
                self.h.clerk_blocks.insert(key, hd.clone());
            }
        }
    }

    fn try_seal(&mut self, id: &Hash, clerk: NodeId) {
        if !self.h.sealed_by_me.insert(*id) {
            return;
        }
        let Ok(proof) = self.vrf.prove(&lottery::seal_alpha(id)) else {
            return;
        };
        let zeros = lottery::leading_zeros(&vrf::proof_to_hash(&proof));
        let needed = lottery::threshold(self.members.level2_count(), self.params.expected_sealers);
        if zeros >= needed {
            let msg = Message::Seal {
                block_id: *id,
                seal: Seal {
                    node: self.id,
                    proof,
                },
            };
            match self.config.fanout {
                Fanout::Clerk => self.send(clerk, msg),
                Fanout::AllLevel1 => {
                    for to in self.level1_ids() {
                        self.send(to, msg.clone());
                    }
                }
            }
        }
    }

    /// Every level-1 member but this node.
    fn level1_ids(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(id, m)| m.level == Level::One && **id != self.id)
            .map(|(id, _)| *id)
            .collect()
    }

    fn on_seal(&mut self, now: Instant, block_id: Hash, seal: Seal) -> Result<(), Reject> {
        if !self.h.built.values().any(|id| *id == block_id) {
            return self.on_seal_of_another(now, block_id, seal);
        }
        let Some(c) = self.h.blocks.get(&block_id) else {
            return Err(Reject::Unexpected);
        };
        if c.sealed || self.h.seal_sent.contains(&block_id) {
            return Ok(());
        }
        verify::seal(&seal, &block_id, &self.members, &self.params)?;
        let mut block = c.block.clone();
        block.header.seal = Some(seal);
        self.h.seal_sent.insert(block_id);
        self.committee(Message::Block(block));
        Ok(())
    }

    /// [`Fanout::AllLevel1`]: a seal for a candidate this level-1 node holds (not its own)
    /// makes the candidate sealed here, without waiting for its clerk's sealed broadcast.
    fn on_seal_of_another(
        &mut self,
        now: Instant,
        block_id: Hash,
        seal: Seal,
    ) -> Result<(), Reject> {
        if self.config.fanout != Fanout::AllLevel1 || self.level != Some(Level::One) {
            return Err(Reject::Unexpected);
        }
        let Some(c) = self.h.blocks.get(&block_id) else {
            // Before the block itself: its clerk's sealed broadcast will bring both.
            return Err(Reject::Stale);
        };
        if c.sealed {
            return Ok(());
        }
        verify::seal(&seal, &block_id, &self.members, &self.params)?;
        let round = c.block.header.ticket.round;
        if let Some(c) = self.h.blocks.get_mut(&block_id) {
            c.sealed = true;
            c.block.header.seal = Some(seal);
        }
        self.catch_up_round(now, round);
        self.try_vote_prepare();
        self.try_vote_commit();
        Ok(())
    }

    fn on_final(&mut self, now: Instant, b: Block) -> Result<(), Reject> {
        let v = verify::header(
            &b.header,
            &self.tip,
            &self.members,
            &self.params,
            Depth::Full,
        )?;
        let next = self.check_body(&b)?;
        let round = b
            .header
            .commit
            .as_ref()
            .map_or(b.header.ticket.round, |c| c.round);
        for tx in &b.txs {
            let floor = self.nonce_floor.entry(tx.sender).or_insert(0);
            *floor = (*floor).max(tx.nonce.saturating_add(1));
        }
        self.mempool.remove_committed(&b.txs, &self.nonce_floor);
        self.tip = v;
        let block = Arc::new(b);
        self.keep_final(Arc::clone(&block));
        self.events.push_back(NodeEvent::Finalized {
            height: v.height,
            block_id: v.block_id,
            round,
            block,
        });
        self.change_members(v.height, next, false);
        self.h = HeightState::default();
        self.round = 0;
        self.candidacy_at = None;
        self.round_deadline = None;
        // A VRF failure only stops this node from being a candidate.
        let _ = self.enter_round(now, 0);
        Ok(())
    }

    /// Appends a final block to the in-memory window, dropping the oldest beyond
    /// [`NodeConfig::keep_blocks`].
    fn keep_final(&mut self, b: Arc<Block>) {
        self.finalized.push_back(b);
        while self.finalized.len() > self.config.keep_blocks.max(1) {
            self.finalized.pop_front();
        }
    }

    // ---- catch-up --------------------------------------------------------------------------

    /// A final block above the next height: if its commit certificate verifies, keep it (when
    /// near enough) and fetch the heights before it.
    fn on_future_final(&mut self, now: Instant, from: NodeId, b: Block) -> Result<(), Reject> {
        let hd = &b.header;
        let height = hd.height;
        let window = self.next_height().saturating_add(u64::from(MAX_GET_BLOCKS));
        let kept = self
            .pending
            .get(&height)
            .is_some_and(|p| p.header.block_id() == hd.block_id());
        if !kept {
            let Some(c) = &hd.commit else {
                return Err(Reject::Stale);
            };
            let id = hd.block_id();
            // One signature before the quorum's: a block with a replaced clerk signature is
            // not kept (its certificate would verify, as it does not cover the signature).
            verify::clerk_signature(hd, &id, &self.members)?;
            verify::commit(c, hd, &id, &self.members)?;
            if height < window && !self.pending.contains_key(&height) {
                // Kept blocks are bounded in number and, by this check, in size.
                self.check_root(&b)?;
                self.pending.insert(height, b);
            }
        }
        let target = if self.pending.contains_key(&height) {
            height - 1
        } else {
            height
        };
        self.want_blocks(now, from, target);
        Ok(())
    }

    /// Heights up to `target` are final somewhere; `peer` showed it.
    fn want_blocks(&mut self, now: Instant, peer: NodeId, target: u64) {
        if peer == self.id || target < self.next_height() {
            return;
        }
        match &mut self.sync {
            Some(s) => {
                s.peer = peer;
                s.target = s.target.max(target);
            }
            None => {
                self.sync = Some(Sync {
                    target,
                    peer,
                    asked: 0,
                    at: None,
                })
            }
        }
        self.request_blocks(now);
    }

    /// Sends the next [`Message::GetBlocks`] unless one is outstanding and not timed out.
    fn request_blocks(&mut self, now: Instant) {
        let next = self.next_height();
        let Some(mut s) = self.sync else {
            return;
        };
        if s.target < next {
            self.sync = None;
            return;
        }
        let waiting = s.at.is_some_and(|t| now < t + self.config.round_timeout);
        if next <= s.asked && waiting {
            return;
        }
        let count = (s.target - next + 1).min(u64::from(MAX_GET_BLOCKS));
        s.asked = next + count - 1;
        s.at = Some(now);
        self.sync = Some(s);
        self.send(
            s.peer,
            Message::GetBlocks {
                from: next,
                // At most MAX_GET_BLOCKS, so it fits.
                count: u32::try_from(count).unwrap_or(MAX_GET_BLOCKS),
            },
        );
    }

    /// Appends kept final blocks that now follow the tip.
    fn apply_pending(&mut self, now: Instant) {
        while let Some(b) = self.pending.remove(&self.next_height()) {
            if let Err(e) = self.on_final(now, b) {
                self.count_reject(&e, Kind::Block);
                break;
            }
        }
        let next = self.next_height();
        self.pending.retain(|h, _| *h >= next);
    }

    // ---- votes -----------------------------------------------------------------------------

    fn vote(&mut self, phase: Phase, round: u32, block_id: Hash, clerk: NodeId) {
        if !self.h.voted.insert((phase, round)) {
            return;
        }
        let mut v = Vote {
            voter: self.id,
            phase,
            height: self.next_height(),
            round,
            block_id,
            signature: [0; 64],
        };
        v.signature = self.key.sign(&[], &[&v.signing_bytes()]);
        match self.config.fanout {
            Fanout::Clerk => self.send(clerk, Message::Vote(v)),
            Fanout::AllLevel1 => {
                for to in self.level1_ids() {
                    self.send(to, Message::Vote(v.clone()));
                }
                self.loopback.push_back(Message::Vote(v));
            }
        }
    }

    /// PREPARE for the best sealed proposal of the current round (a new block or a justified
    /// re-proposal), unless a better ticket is known whose proposal has not arrived, or this
    /// node is locked on another block.
    fn try_vote_prepare(&mut self) {
        if self.level != Some(Level::One) || self.h.voted.contains(&(Phase::Prepare, self.round)) {
            return;
        }
        let round = self.round;
        let Some((rank, id, clerk)) = self.best_proposal(round) else {
            return;
        };
        if self.h.tickets.get(&round).is_some_and(|(r, _)| *r < rank) {
            return;
        }
        if self.lock_key().is_some_and(|(_, locked)| locked != id) {
            return;
        }
        self.vote(Phase::Prepare, round, id, clerk);
    }

    /// COMMIT for the block of the highest prepare certificate, if it is of the current round.
    fn try_vote_commit(&mut self) {
        if self.level != Some(Level::One) {
            return;
        }
        let Some((round, id)) = self.lock_key() else {
            return;
        };
        if round != self.round || !self.h.blocks.contains_key(&id) {
            return;
        }
        let Some(clerk) = self.clerk_for(round, &id) else {
            return;
        };
        self.vote(Phase::Commit, round, id, clerk);
    }

    fn on_vote(&mut self, v: Vote) -> Result<(), Reject> {
        if v.height != self.next_height() {
            return Err(Reject::Stale);
        }
        let (member, _) = self
            .members
            .get(&v.voter, Level::One)
            .map_err(|_| Reject::BadVote)?;
        sig::verify(&member.ed25519, &[], &[&v.signing_bytes()], &v.signature)
            .map_err(|_| Reject::BadVote)?;
        let key = (v.phase, v.round, v.voter);
        match self.h.votes.get(&key) {
            Some(old) if old.block_id != v.block_id => {
                let e = Evidence::DoubleVote(old.clone(), v);
                self.raise_evidence(e);
                return Ok(());
            }
            Some(_) => return Ok(()),
            None if self.h.votes.len() >= self.config.cache_limit => {
                self.cache_drops += 1;
                return Ok(());
            }
            None => {
                self.h.votes.insert(key, v.clone());
            }
        }
        let mine = self.h.built.get(&v.round) == Some(&v.block_id);
        if !mine && (self.config.fanout == Fanout::Clerk || self.level != Some(Level::One)) {
            return Err(Reject::Unexpected);
        }
        self.aggregate(v.phase, v.round, v.block_id);
        Ok(())
    }

    /// A quorum of votes for a block gives a certificate (at its clerk; with
    /// [`Fanout::AllLevel1`] at every level-1 member).
    fn aggregate(&mut self, phase: Phase, round: u32, block_id: Hash) {
        if self.h.cert_sent.contains(&(phase, round)) {
            return;
        }
        let votes: Vec<Vote> = self
            .h
            .votes
            .range((phase, round, NodeId([0; 32]))..=(phase, round, NodeId([0xff; 32])))
            .filter(|(_, v)| v.block_id == block_id)
            .map(|(_, v)| v.clone())
            .collect();
        if votes.len() < self.members.quorum() {
            return;
        }
        let Ok(cert) = Certificate::from_votes(&votes) else {
            return;
        };
        self.h.cert_sent.insert((phase, round));
        // The clerk broadcasts what it forms; with `Fanout::AllLevel1` every other level-1
        // member forms the same certificate from the votes it received and uses it itself.
        let mine = self.h.built.get(&round) == Some(&block_id);
        let msg = match phase {
            Phase::Prepare => Message::Certificate(cert),
            Phase::Commit => {
                let Some(c) = self.h.blocks.get(&block_id) else {
                    return;
                };
                let mut block = c.block.clone();
                block.header.commit = Some(cert);
                Message::Block(block)
            }
        };
        match (mine, phase) {
            (true, Phase::Prepare) => self.committee(msg),
            (true, Phase::Commit) => self.broadcast(msg),
            (false, _) => self.loopback.push_back(msg),
        }
    }

    fn on_certificate(&mut self, now: Instant, from: NodeId, c: Certificate) -> Result<(), Reject> {
        if self.level != Some(Level::One) {
            return Err(Reject::Unexpected);
        }
        if c.height > self.next_height() {
            // A certificate of a later height: the blocks below it are final somewhere.
            verify::certificate(&c, c.phase, c.height, c.round, &c.block_id, &self.members)?;
            self.want_blocks(now, from, c.height - 1);
            return Ok(());
        }
        if c.height != self.next_height() || c.phase != Phase::Prepare {
            return Err(Reject::Stale);
        }
        if !self.raise_lock(&c)? {
            return Ok(());
        }
        self.catch_up_round(now, c.round);
        self.try_vote_prepare();
        self.try_vote_commit();
        Ok(())
    }

    // ---- evidence --------------------------------------------------------------------------

    fn raise_evidence(&mut self, e: Evidence) {
        let fp = crate::hash::sha256(&e.to_bytes());
        if self.evidence_seen.contains(&fp) {
            return;
        }
        if self.evidence_seen.len() >= self.config.cache_limit {
            self.cache_drops += 1;
        } else {
            self.evidence_seen.insert(fp);
        }
        self.events.push_back(NodeEvent::Evidence(e.clone()));
        self.outputs
            .push_back(Output::Broadcast(Message::Evidence(e)));
    }

    fn on_evidence(&mut self, e: Evidence) -> Result<(), Reject> {
        let fp = crate::hash::sha256(&e.to_bytes());
        if self.evidence_seen.contains(&fp) {
            return Ok(());
        }
        match &e {
            Evidence::DoubleVote(a, b) => {
                if a.voter != b.voter
                    || (a.phase, a.height, a.round) != (b.phase, b.height, b.round)
                    || a.block_id == b.block_id
                {
                    return Err(Reject::BadEvidence);
                }
                let (member, _) = self
                    .members
                    .get(&a.voter, Level::One)
                    .map_err(|_| Reject::BadEvidence)?;
                for v in [a, b] {
                    sig::verify(&member.ed25519, &[], &[&v.signing_bytes()], &v.signature)
                        .map_err(|_| Reject::BadEvidence)?;
                }
            }
            Evidence::DoubleBlock(a, b) => {
                // One clerk, one (height, round), two different blocks, both signed by the
                // clerk. The tickets' VRF proofs are not needed: an honest clerk signs one
                // block per (height, round) whatever its ticket, so the two signatures are
                // the proof.
                if a.ticket.node != b.ticket.node
                    || a.height != b.height
                    || a.ticket.round != b.ticket.round
                {
                    return Err(Reject::BadEvidence);
                }
                let (id_a, id_b) = (a.block_id(), b.block_id());
                if id_a == id_b {
                    return Err(Reject::BadEvidence);
                }
                for (h, id) in [(a, &id_a), (b, &id_b)] {
                    verify::clerk_signature(h, id, &self.members)
                        .map_err(|_| Reject::BadEvidence)?;
                }
            }
        }
        if self.evidence_seen.len() >= self.config.cache_limit {
            self.cache_drops += 1;
        } else {
            self.evidence_seen.insert(fp);
        }
        self.events.push_back(NodeEvent::Evidence(e));
        Ok(())
    }
}

/// Which counter a rejection goes to.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Ticket,
    Tx,
    Block,
    Seal,
    Vote,
    Certificate,
    Evidence,
}
