//! A development network without a network: a set of level-1 and level-2 members with real
//! keys, and a dealer that builds *valid* final blocks the way the protocol would (best
//! qualifying ticket after spinning, the header signed by the ticket's holder, a passing
//! level-2 seal, a commit certificate of a quorum of level-1 votes). Tests of the verifier and
//! the light client, and `mef bench poe`'s micro-benchmarks, use it to get chains whose every
//! element is genuine, so that forging one element is the only thing a rejection test changes.

use alloc::vec::Vec;

use crate::genesis::Genesis;
use crate::lottery::{self, Rank};
use crate::members::{ChangeError, approval_bytes};
use crate::merkle;
use crate::sig::SigningKey;
use crate::verify::{Membership, Params, Verified, VerifyError};
use crate::vrf::{VrfError, VrfSecretKey};
use crate::wire::{
    Block, BlockHeader, Certificate, CertificateError, Encode, Level, Member, NodeId, Phase, Seal,
    Ticket, Transaction, TxBody, Vote,
};

/// Why the dealer could not build something.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// Key generation or proving failed.
    #[error("VRF: {0}")]
    Vrf(#[from] VrfError),
    /// The members do not form a valid set.
    #[error("membership: {0}")]
    Members(#[from] VerifyError),
    /// No level-1 member qualified within the spin limit.
    #[error("no level-1 ticket qualified in {0} rounds")]
    NoCandidate(u32),
    /// No level-2 member's seal passed the threshold.
    #[error("no level-2 seal passed the threshold")]
    NoSealer,
    /// The votes did not form a certificate (e.g. no level-1 members).
    #[error("certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// More transactions than a header can count.
    #[error("{0} transactions do not fit in a block")]
    TooManyTransactions(usize),
    /// A member was given in the list of the other level.
    #[error("member {0} is in the wrong level's list")]
    WrongLevel(usize),
    /// No member to send the chain's transactions.
    #[error("the devnet has no members")]
    NoMembers,
    /// A membership change in the block's transactions is invalid.
    #[error("membership change: {0}")]
    Change(#[from] ChangeError),
    /// A joining member's keys were not handed to [`Devnet::apply`].
    #[error("the keys of joining member {0:?} are missing")]
    MissingKeys(NodeId),
}

/// One member with its secret keys.
#[derive(Clone)]
pub struct DevNode {
    /// ed25519 key (transactions, votes).
    pub sig: SigningKey,
    /// RSA VRF key (tickets, seals).
    pub vrf: VrfSecretKey,
    /// Its public record.
    pub member: Member,
}

impl core::fmt::Debug for DevNode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DevNode")
            .field("id", &self.id())
            .field("level", &self.member.level)
            .finish_non_exhaustive()
    }
}

impl DevNode {
    /// A member of `level` with fresh keys of `rsa_bits`.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(
        rng: &mut R,
        level: Level,
        rsa_bits: usize,
    ) -> Result<Self, DevnetError> {
        let sig = SigningKey::generate(rng);
        let vrf = VrfSecretKey::generate(rng, rsa_bits)?;
        let member = Member {
            level,
            ed25519: sig.public(),
            rsa_der: vrf.public().to_pkcs1_der(),
            attestation: Vec::new(),
        };
        Ok(Self { sig, vrf, member })
    }

    /// Its `NodeId`.
    pub fn id(&self) -> NodeId {
        self.sig.node_id()
    }

    /// A signed transaction from this node.
    pub fn transaction(&self, nonce: u64, body: TxBody) -> Transaction {
        let mut tx = Transaction {
            sender: self.id(),
            nonce,
            body,
            signature: [0; 64],
        };
        tx.signature = self.sig.sign(&[], &[&tx.signing_bytes()]);
        tx
    }

    /// Signs `header` as its clerk: sets `clerk_sig` to this node's signature over
    /// `"POE1-block" || block_id` ([`BlockHeader::signing_bytes`]). Only valid if this node
    /// holds the header's ticket.
    pub fn sign_header(&self, header: &mut BlockHeader) {
        header.clerk_sig = self.sig.sign(&[], &[&header.signing_bytes()]);
    }

    /// This node's signed vote.
    pub fn vote(&self, phase: Phase, height: u64, round: u32, block_id: &[u8; 32]) -> Vote {
        let mut v = Vote {
            voter: self.id(),
            phase,
            height,
            round,
            block_id: *block_id,
            signature: [0; 64],
        };
        v.signature = self.sig.sign(&[], &[&v.signing_bytes()]);
        v
    }
}

/// Members, parameters and a genesis to build on.
#[derive(Debug, Clone)]
pub struct Devnet {
    /// Level-1 members (routers).
    pub level1: Vec<DevNode>,
    /// Level-2 members (gateways).
    pub level2: Vec<DevNode>,
    /// Lottery parameters.
    pub params: Params,
    /// The membership with parsed keys.
    pub members: Membership,
    /// The genesis block's compact header ([`Genesis::verified`] of the genesis file).
    pub genesis: Verified,
    /// The genesis the devnet started from (its members as built, before any change
    /// [`Devnet::apply`] made).
    genesis_file: Genesis,
}

/// The chain name of every devnet's genesis.
pub const DEVNET_CHAIN: &str = "poe-devnet";

/// Which qualifying ticket or seal the dealer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// The best, as the protocol ranks them.
    Best,
    /// The first in member order: still valid, and far fewer RSA private-key operations.
    First,
}

/// Most spin rounds the dealer tries before giving up.
pub const MAX_SPIN: u32 = 64;

impl Devnet {
    /// `n1` level-1 and `n2` level-2 members with `rsa_bits` RSA keys.
    pub fn new<R: rand_core::CryptoRng + ?Sized>(
        rng: &mut R,
        n1: usize,
        n2: usize,
        params: Params,
        rsa_bits: usize,
    ) -> Result<Self, DevnetError> {
        let level1 = (0..n1)
            .map(|_| DevNode::generate(rng, Level::One, rsa_bits))
            .collect::<Result<Vec<_>, _>>()?;
        let level2 = (0..n2)
            .map(|_| DevNode::generate(rng, Level::Two, rsa_bits))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_nodes(level1, level2, params)
    }

    /// A devnet of members generated elsewhere (for example on several threads); their
    /// `member.level` must match the list they are in.
    pub fn from_nodes(
        level1: Vec<DevNode>,
        level2: Vec<DevNode>,
        params: Params,
    ) -> Result<Self, DevnetError> {
        let n1 = level1.len();
        let wrong = level1
            .iter()
            .position(|n| n.member.level != Level::One)
            .or_else(|| {
                level2
                    .iter()
                    .position(|n| n.member.level != Level::Two)
                    .map(|i| n1 + i)
            });
        if let Some(i) = wrong {
            return Err(DevnetError::WrongLevel(i));
        }
        let members =
            Membership::new(level1.iter().chain(level2.iter()).map(|n| n.member.clone()))?;
        // The chain id is the genesis hash (docs/POE.md, "Genesis file"). A devnet may have
        // an empty level or zero parameters (tests of those cases), so the genesis is not
        // validated here; `Genesis::from_toml` of `genesis_file().to_toml()` validates it.
        let genesis_file = Genesis {
            chain: DEVNET_CHAIN.into(),
            time_ms: 0,
            params,
            members: level1
                .iter()
                .chain(level2.iter())
                .map(|n| n.member.clone())
                .collect(),
        };
        let genesis = genesis_file.verified(&members);
        Ok(Self {
            level1,
            level2,
            params,
            members,
            genesis,
            genesis_file,
        })
    }

    /// The genesis of this devnet: chain [`DEVNET_CHAIN`], time 0, its parameters, its level-1
    /// then level-2 members as first built. [`Devnet::genesis`] is its
    /// [`Genesis::verified`], so `genesis_file().block_id()` is the chain id; write it with
    /// [`Genesis::to_toml`] to start nodes from a file.
    pub fn genesis_file(&self) -> &Genesis {
        &self.genesis_file
    }

    /// The best qualifying ticket for the block after `parent`: the lowest round in which some
    /// level-1 member qualifies, then the best rank in it (seed 002 §2, "spin").
    pub fn best_ticket(&self, parent: &Verified) -> Result<Ticket, DevnetError> {
        self.best_ticket_from(parent, 0)
    }

    /// [`best_ticket`](Self::best_ticket), spinning from round `first`.
    pub fn best_ticket_from(&self, parent: &Verified, first: u32) -> Result<Ticket, DevnetError> {
        self.ticket(parent, first, Pick::Best).map(|(t, _)| t)
    }

    /// The level-1 member with this `NodeId` (the holder of a ticket, to sign as clerk).
    pub fn level1_node(&self, id: &NodeId) -> Option<&DevNode> {
        self.level1.iter().find(|n| n.id() == *id)
    }

    /// A qualifying ticket and the member holding it.
    fn ticket(
        &self,
        parent: &Verified,
        first: u32,
        pick: Pick,
    ) -> Result<(Ticket, &DevNode), DevnetError> {
        let height = parent.height + 1;
        let needed =
            lottery::threshold(self.members.level1_count(), self.params.expected_candidates);
        for round in first..MAX_SPIN {
            let alpha = lottery::ticket_alpha(height, &parent.block_id, round);
            let mut best: Option<(Rank, Ticket, &DevNode)> = None;
            for n in &self.level1 {
                let proof = n.vrf.prove(&alpha)?;
                let beta = crate::vrf::proof_to_hash(&proof);
                if !lottery::qualifies(&beta, needed) {
                    continue;
                }
                let rank = Rank::new(round, beta);
                if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
                    let t = Ticket {
                        node: n.id(),
                        height,
                        prev_hash: parent.block_id,
                        round,
                        proof,
                    };
                    best = Some((rank, t, n));
                    if pick == Pick::First {
                        break;
                    }
                }
            }
            if let Some((_, t, n)) = best {
                return Ok((t, n));
            }
        }
        Err(DevnetError::NoCandidate(MAX_SPIN))
    }

    /// A level-2 seal over `block_id` that passes the seal threshold (the best one).
    pub fn seal(&self, block_id: &[u8; 32]) -> Result<Seal, DevnetError> {
        self.pick_seal(block_id, Pick::Best)
    }

    fn pick_seal(&self, block_id: &[u8; 32], pick: Pick) -> Result<Seal, DevnetError> {
        let needed = lottery::threshold(self.members.level2_count(), self.params.expected_sealers);
        let alpha = lottery::seal_alpha(block_id);
        let mut best: Option<(u32, Seal)> = None;
        for n in &self.level2 {
            let proof = n.vrf.prove(&alpha)?;
            let zeros = lottery::leading_zeros(&crate::vrf::proof_to_hash(&proof));
            if zeros >= needed && best.as_ref().is_none_or(|(z, _)| zeros > *z) {
                best = Some((
                    zeros,
                    Seal {
                        node: n.id(),
                        proof,
                    },
                ));
                if pick == Pick::First {
                    break;
                }
            }
        }
        best.map(|(_, s)| s).ok_or(DevnetError::NoSealer)
    }

    /// A certificate of `phase` from the first quorum of level-1 members.
    pub fn certificate(
        &self,
        phase: Phase,
        height: u64,
        round: u32,
        block_id: &[u8; 32],
    ) -> Result<Certificate, DevnetError> {
        let votes: Vec<Vote> = self
            .level1
            .iter()
            .take(self.members.quorum())
            .map(|n| n.vote(phase, height, round, block_id))
            .collect();
        Ok(Certificate::from_votes(&votes)?)
    }

    /// The final block after `parent` with `txs`: the best ticket, signed by its holder, the
    /// best seal, and a commit certificate.
    pub fn next_block(
        &self,
        parent: &Verified,
        txs: Vec<Transaction>,
        time_ms: u64,
    ) -> Result<Block, DevnetError> {
        self.block(parent, txs, time_ms, Pick::Best)
    }

    fn block(
        &self,
        parent: &Verified,
        txs: Vec<Transaction>,
        time_ms: u64,
        pick: Pick,
    ) -> Result<Block, DevnetError> {
        let leaves: Vec<Vec<u8>> = txs.iter().map(|t| t.to_bytes()).collect();
        let tx_count =
            u32::try_from(txs.len()).map_err(|_| DevnetError::TooManyTransactions(txs.len()))?;
        let members_root = self.members.successor(&txs)?.root();
        // A block no level-2 node seals never reaches state 2: the round fails and the lottery
        // spins to the next round (a new clerk, a new block, new seal chances).
        let mut first = 0;
        let header = loop {
            let (ticket, clerk) = self.ticket(parent, first, pick)?;
            let round = ticket.round;
            let mut header = BlockHeader {
                height: parent.height + 1,
                prev_hash: parent.block_id,
                tx_root: merkle::root(&leaves),
                tx_count,
                members_root,
                time_ms,
                ticket,
                clerk_sig: [0; 64],
                seal: None,
                commit: None,
            };
            clerk.sign_header(&mut header);
            let id = header.block_id();
            match self.pick_seal(&id, pick) {
                Ok(seal) => {
                    header.seal = Some(seal);
                    header.commit =
                        Some(self.certificate(Phase::Commit, header.height, round, &id)?);
                    break header;
                }
                Err(DevnetError::NoSealer) if round + 1 < MAX_SPIN => first = round + 1,
                Err(e) => return Err(e),
            }
        };
        Ok(Block { header, txs })
    }

    /// Approvals of the change (`node` joins as `member`, or leaves with `None`) by the first
    /// quorum of level-1 members in `NodeId` order, under the current membership root.
    pub fn approvals(&self, node: &NodeId, member: Option<&Member>) -> Vec<(NodeId, [u8; 64])> {
        let msg = approval_bytes(&self.members.root(), node, member);
        let mut signers: Vec<&DevNode> = self.level1.iter().collect();
        signers.sort_by_key(|n| n.id());
        signers
            .into_iter()
            .take(self.members.quorum())
            .map(|n| (n.id(), n.sig.sign(&[], &[&msg])))
            .collect()
    }

    /// Moves the devnet past final block `b`: its membership changes are applied to
    /// [`Devnet::members`], leaving members are dropped from the level lists and joining ones
    /// (whose secret keys are in `joining`) added to them.
    pub fn apply(&mut self, b: &Block, joining: &[DevNode]) -> Result<(), DevnetError> {
        let next = self.members.successor(&b.txs)?;
        for tx in &b.txs {
            let TxBody::Membership { node, member, .. } = &tx.body else {
                continue;
            };
            self.level1.retain(|n| n.id() != *node);
            self.level2.retain(|n| n.id() != *node);
            if let Some(m) = member {
                let keys = joining
                    .iter()
                    .find(|n| n.id() == *node)
                    .ok_or(DevnetError::MissingKeys(*node))?;
                match m.level {
                    Level::One => self.level1.push(keys.clone()),
                    Level::Two => self.level2.push(keys.clone()),
                }
            }
        }
        self.members = next;
        Ok(())
    }

    /// `n` consecutive final blocks after `parent`, each with `txs_per_block` sensor batches.
    /// Each takes the first qualifying ticket and seal in member order rather than the best:
    /// just as valid, and long chains cost far fewer RSA private-key operations.
    pub fn chain(
        &self,
        parent: &Verified,
        n: usize,
        txs_per_block: usize,
    ) -> Result<Vec<Block>, DevnetError> {
        let senders = if self.level2.is_empty() {
            &self.level1
        } else {
            &self.level2
        };
        if senders.is_empty() && txs_per_block > 0 {
            return Err(DevnetError::NoMembers);
        }
        let mut out = Vec::with_capacity(n);
        let mut p = *parent;
        for i in 0..n {
            let txs = (0..txs_per_block)
                .map(|j| {
                    let sender = &senders[j % senders.len()];
                    sender.transaction(
                        (i * txs_per_block + j) as u64,
                        TxBody::SensorBatch(Vec::new()),
                    )
                })
                .collect();
            let b = self.block(&p, txs, 1_700_000_000_000 + i as u64 * 1000, Pick::First)?;
            p = Verified::of(&b.header, b.header.block_id());
            out.push(b);
        }
        Ok(out)
    }
}
