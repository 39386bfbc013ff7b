//! The registered members and how they change (seed 002 §2: registered identities are the
//! answer to Sybil attacks; docs/POE.md, "Membership"). A genesis file lists the first set
//! ([`crate::genesis`]); after it, a member joins or leaves only by a
//! [`TxBody::Membership`] transaction that more than 2/3 of the level-1 members approved. The
//! set after each block is committed to in its header ([`BlockHeader::members_root`]), so a
//! light client follows changes with the same code as the nodes (`no_std`).
//!
//! [`BlockHeader::members_root`]: crate::wire::BlockHeader::members_root

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::merkle;
use crate::sig;
use crate::verify::VerifyError;
use crate::vrf::VrfPublicKey;
use crate::wire::{Encode, Hash, Level, Member, NodeId, Transaction, TxBody};

/// Why a membership change is refused (in a mempool, a block, or by a light client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// A joining record's ed25519 key does not hash to the `node` it claims.
    #[error("joining record's key is not the key of {0:?}")]
    IdMismatch(NodeId),
    /// A join of a node that is already a member (it must leave first).
    #[error("{0:?} is already a member")]
    AlreadyMember(NodeId),
    /// A leave of a node that is not a member.
    #[error("{0:?} is not a member")]
    NotMember(NodeId),
    /// A joining record's RSA key does not parse.
    #[error("joining record of {0:?} has an unusable RSA key")]
    BadKey(NodeId),
    /// Approvers must be strictly increasing (no duplicates).
    #[error("approvers are not strictly increasing")]
    UnorderedApprovals,
    /// An approver is not a level-1 member.
    #[error("approver {0:?} is not a level-1 member")]
    NotApprover(NodeId),
    /// An approval signature does not verify (over another membership root, another change,
    /// or forged).
    #[error("approval of {0:?} does not verify")]
    BadApproval(NodeId),
    /// Fewer approvals than the level-1 quorum.
    #[error("{approvals} approvals, {quorum} needed")]
    NoQuorum {
        /// Valid approvals.
        approvals: usize,
        /// Needed ([`Membership::quorum`]).
        quorum: usize,
    },
    /// Two changes of one node in one block.
    #[error("two changes of {0:?} in one block")]
    Duplicate(NodeId),
    /// The changes would leave no member of a level (no clerks or no sealers: the chain would
    /// stop).
    #[error("the changes would leave no member of level {0:?}")]
    EmptyLevel(Level),
}

/// The bytes a level-1 member signs to approve a change: `"POE1-member" || root || node ||
/// member`, where `root` is the [`Membership::root`] the change is approved under, and
/// `member` is `0x00` for a leave or `0x01 || encoded Member` for a join. Naming the root makes
/// an approval good for one membership state only: it cannot be replayed after the set changed
/// (a leave approved once cannot remove a node that joined again later), and a change that
/// waited in a mempool while another one became final needs fresh approvals, as a
/// transaction needs a fresh nonce.
pub fn approval_bytes(root: &Hash, node: &NodeId, member: Option<&Member>) -> Vec<u8> {
    let mut out = Vec::with_capacity(11 + 32 + 32 + 1 + member.map_or(0, |m| m.rsa_der.len() + 50));
    out.extend_from_slice(b"POE1-member");
    out.extend_from_slice(root);
    out.extend_from_slice(&node.0);
    match member {
        None => out.push(0),
        Some(m) => {
            out.push(1);
            m.encode(&mut out);
        }
    }
    out
}

/// The registered members with their parsed keys, as of one block. Cloning is cheap (the set
/// is shared until one clone changes it), so every node of a simulation can hold its own.
#[derive(Debug, Clone)]
pub struct Membership {
    members: Arc<BTreeMap<NodeId, (Member, VrfPublicKey)>>,
    level1: usize,
    level2: usize,
    root: Hash,
}

impl Default for Membership {
    fn default() -> Self {
        Self {
            members: Arc::default(),
            level1: 0,
            level2: 0,
            root: merkle::root::<&[u8]>(&[]),
        }
    }
}

impl Membership {
    /// Builds the set, parsing every RSA key once. A member whose key does not parse is an
    /// error (genesis files and membership transactions are validated before use); a second
    /// record with the same ed25519 key replaces the first (a genesis file refuses that
    /// before it gets here).
    pub fn new(members: impl IntoIterator<Item = Member>) -> Result<Self, VerifyError> {
        let mut m = Self::default();
        for member in members {
            m.insert_raw(member)?;
        }
        m.refresh_root();
        Ok(m)
    }

    /// Adds or replaces a member (outside the chain's rules: genesis and tests; the chain
    /// changes the set with [`Membership::successor`]).
    pub fn insert(&mut self, member: Member) -> Result<(), VerifyError> {
        self.insert_raw(member)?;
        self.refresh_root();
        Ok(())
    }

    /// Removes a member (outside the chain's rules, as [`Membership::insert`]).
    pub fn remove(&mut self, id: &NodeId) {
        self.remove_raw(id);
        self.refresh_root();
    }

    fn insert_raw(&mut self, member: Member) -> Result<(), VerifyError> {
        let id = sig::node_id(&member.ed25519);
        let key =
            VrfPublicKey::from_pkcs1_der(&member.rsa_der).map_err(|_| VerifyError::BadKey(id))?;
        let level = member.level;
        if let Some((old, _)) = Arc::make_mut(&mut self.members).insert(id, (member, key)) {
            self.count(old.level, false);
        }
        self.count(level, true);
        Ok(())
    }

    fn remove_raw(&mut self, id: &NodeId) {
        if let Some((old, _)) = Arc::make_mut(&mut self.members).remove(id) {
            self.count(old.level, false);
        }
    }

    fn count(&mut self, level: Level, add: bool) {
        let c = match level {
            Level::One => &mut self.level1,
            Level::Two => &mut self.level2,
        };
        if add {
            *c += 1;
        } else {
            *c = c.saturating_sub(1);
        }
    }

    /// RFC 6962 Merkle tree hash over the members' encodings in `NodeId` order: a commitment
    /// to the whole set (keys and levels), computed once per change.
    fn refresh_root(&mut self) {
        let leaves: Vec<Vec<u8>> = self.members.values().map(|(m, _)| m.to_bytes()).collect();
        self.root = merkle::root(&leaves);
    }

    /// The commitment to this set that headers carry ([`crate::wire::BlockHeader::members_root`]):
    /// the RFC 6962 Merkle tree hash of the members' encodings in `NodeId` order.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// A member of `level`.
    pub fn get(&self, id: &NodeId, level: Level) -> Result<(&Member, &VrfPublicKey), VerifyError> {
        match self.members.get(id) {
            Some((m, k)) if m.level == level => Ok((m, k)),
            _ => Err(VerifyError::NotMember(*id)),
        }
    }

    /// The level of `id`, if it is a member.
    pub fn level_of(&self, id: &NodeId) -> Option<Level> {
        self.members.get(id).map(|(m, _)| m.level)
    }

    /// Number of level-1 members.
    pub fn level1_count(&self) -> usize {
        self.level1
    }

    /// Number of level-2 members.
    pub fn level2_count(&self) -> usize {
        self.level2
    }

    /// Votes (and approvals) needed: `floor(2·n1/3) + 1`.
    pub fn quorum(&self) -> usize {
        self.level1 * 2 / 3 + 1
    }

    /// Iterates over members.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Member)> {
        self.members.iter().map(|(id, (m, _))| (id, m))
    }

    /// Checks one change against this set (the parent block's): a join names the node its
    /// record's key hashes to, is not a member yet and has a usable RSA key; a leave names a
    /// member; the approvers are strictly increasing level-1 members, each signature verifies
    /// over [`approval_bytes`] with this set's root, and there are at least
    /// [`Membership::quorum`] of them.
    pub fn check_change(
        &self,
        node: &NodeId,
        member: Option<&Member>,
        approvals: &[(NodeId, [u8; 64])],
    ) -> Result<(), ChangeError> {
        match member {
            Some(m) => {
                if sig::node_id(&m.ed25519) != *node {
                    return Err(ChangeError::IdMismatch(*node));
                }
                if self.members.contains_key(node) {
                    return Err(ChangeError::AlreadyMember(*node));
                }
                VrfPublicKey::from_pkcs1_der(&m.rsa_der).map_err(|_| ChangeError::BadKey(*node))?;
            }
            None => {
                if !self.members.contains_key(node) {
                    return Err(ChangeError::NotMember(*node));
                }
            }
        }
        let quorum = self.quorum();
        if approvals.len() < quorum {
            return Err(ChangeError::NoQuorum {
                approvals: approvals.len(),
                quorum,
            });
        }
        let msg = approval_bytes(&self.root, node, member);
        let mut prev: Option<&NodeId> = None;
        for (approver, signature) in approvals {
            if prev.is_some_and(|p| p >= approver) {
                return Err(ChangeError::UnorderedApprovals);
            }
            prev = Some(approver);
            let (m, _) = self
                .get(approver, Level::One)
                .map_err(|_| ChangeError::NotApprover(*approver))?;
            sig::verify(&m.ed25519, &[], &[&msg], signature)
                .map_err(|_| ChangeError::BadApproval(*approver))?;
        }
        Ok(())
    }

    /// The set after a block whose transactions are `txs`, this set being its parent's: every
    /// [`TxBody::Membership`] among them is checked with [`Membership::check_change`] against
    /// this set (so every change of a block is approved under the same root and they commute),
    /// no node changes twice, and neither level is left empty. Other transactions are ignored,
    /// so a light client may pass just the membership transactions. Without changes the result
    /// shares this set's storage.
    pub fn successor<'a>(
        &self,
        txs: impl IntoIterator<Item = &'a Transaction>,
    ) -> Result<Membership, ChangeError> {
        let mut seen = BTreeSet::new();
        let mut next: Option<Membership> = None;
        for tx in txs {
            let TxBody::Membership {
                node,
                member,
                approvals,
            } = &tx.body
            else {
                continue;
            };
            if !seen.insert(*node) {
                return Err(ChangeError::Duplicate(*node));
            }
            self.check_change(node, member.as_ref(), approvals)?;
            let n = next.get_or_insert_with(|| self.clone());
            match member {
                // The key parsed in `check_change`.
                Some(m) => n
                    .insert_raw(m.clone())
                    .map_err(|_| ChangeError::BadKey(*node))?,
                None => n.remove_raw(node),
            }
        }
        let Some(mut n) = next else {
            return Ok(self.clone());
        };
        for level in [Level::One, Level::Two] {
            let count = match level {
                Level::One => n.level1,
                Level::Two => n.level2,
            };
            if count == 0 {
                return Err(ChangeError::EmptyLevel(level));
            }
        }
        n.refresh_root();
        Ok(n)
    }
}
