//! The genesis of a chain (issue 4: "a genesis file lists level-1 and level-2 public keys";
//! seed 002 §2: registered identities are the answer to Sybil attacks; docs/POE.md, "Genesis
//! file"): the chain's name, its start time, the lottery [`Params`] and the first
//! [`Membership`]. Its canonical encoding is hashed into the genesis `block_id`
//! ([`Genesis::block_id`]), so every header of the chain commits to the whole genesis through
//! `prev_hash`.
//!
//! This module is `no_std` + `alloc` (a light client starts from a [`Genesis`] too); the TOML
//! file format (`genesis.toml`) is in [`mod@file`], behind the `std` feature.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::hash::sha256_parts;
use crate::members::Membership;
use crate::merkle;
use crate::sig;
use crate::verify::{Params, Verified, VerifyError};
use crate::wire::codec::{MAX_BYTES, VERSION};
use crate::wire::{Decode, Encode, Hash, Level, Member, NodeId, Reader, WireError};

#[cfg(feature = "std")]
pub mod file;
#[cfg(feature = "std")]
pub use file::GenesisFileError;

/// Longest chain name, in bytes (docs/POE.md, "Genesis file").
pub const MAX_CHAIN_LEN: usize = 64;
/// Most members a genesis may list (the decoder's bound; [`Genesis::validate`] checks it too,
/// so every valid genesis decodes).
pub const MAX_MEMBERS: u32 = 100_000;
/// Longest attestation of a genesis member (reserved for a hardware attestation; empty for now).
pub const MAX_ATTESTATION: usize = 4096;
/// Domain of the genesis `block_id`: SHA-256 of `"POE1-genesis" || encoding`.
pub const GENESIS_DOMAIN: &[u8] = b"POE1-genesis";

/// Shortest encoded [`Member`]: level, ed25519 key, two empty byte strings.
const MIN_MEMBER_LEN: usize = 1 + 32 + 4 + 4;

/// The genesis of a chain: what every member and light client must agree on before block 1
/// (docs/POE.md, "Genesis file").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// The chain's name: 1 to [`MAX_CHAIN_LEN`] bytes of `[a-z0-9-]`.
    pub chain: String,
    /// The genesis time (ms since the Unix epoch), the `time_ms` of block 0.
    pub time_ms: u64,
    /// The lottery parameters (both nonzero).
    pub params: Params,
    /// The first members, in the order the file lists them (the order is part of the
    /// encoding, hence of the `block_id`; the membership root is order-independent).
    pub members: Vec<Member>,
}

/// Why a genesis is not valid ([`Genesis::validate`]). Member indices count from 0 in the
/// order of [`Genesis::members`] (the file's `[[member]]` tables).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// The chain name is empty.
    #[error("the chain name is empty")]
    EmptyChain,
    /// The chain name is longer than [`MAX_CHAIN_LEN`] bytes.
    #[error("the chain name has {0} bytes, above the limit of {MAX_CHAIN_LEN}")]
    ChainTooLong(usize),
    /// The chain name has a character other than `[a-z0-9-]`.
    #[error("the chain name has {ch:?} at byte {at}; only a-z, 0-9 and '-' are allowed")]
    ChainChar {
        /// Byte offset of the character.
        at: usize,
        /// The character.
        ch: char,
    },
    /// A lottery parameter is zero.
    #[error("parameter {0} is zero")]
    ZeroParam(&'static str),
    /// More members than [`MAX_MEMBERS`].
    #[error("{0} members, above the limit of {MAX_MEMBERS}")]
    TooManyMembers(usize),
    /// No member of a level: without level-1 members nobody builds blocks, without level-2
    /// members nobody seals them.
    #[error("no member of level {}", .0.to_byte())]
    NoMemberOfLevel(Level),
    /// Two members with the same ed25519 key (hence the same `NodeId`).
    #[error("member {index} has the ed25519 key of member {first}")]
    DuplicateKey {
        /// The later member.
        index: usize,
        /// The earlier member with the same key.
        first: usize,
    },
    /// A member's RSA key does not parse as a usable PKCS#1 `RSAPublicKey` (or is longer than
    /// a wire byte string).
    #[error("member {index} has an unusable RSA key")]
    BadKey {
        /// The member.
        index: usize,
    },
    /// The time or a parameter is above `i64::MAX`, the largest TOML integer (so the genesis
    /// would not round-trip through its file).
    #[error("{0} is above {max}", max = i64::MAX)]
    OutOfRange(&'static str),
    /// A member's attestation is longer than [`MAX_ATTESTATION`].
    #[error("member {index} has a {len}-byte attestation, above the limit of {MAX_ATTESTATION}")]
    AttestationTooLong {
        /// The member.
        index: usize,
        /// Its length.
        len: usize,
    },
}

impl Genesis {
    /// Checks the rules of docs/POE.md "Genesis file" and builds the first membership: the
    /// chain name is 1 to 64 bytes of `[a-z0-9-]`, both parameters are nonzero, the time and
    /// parameters are at most `i64::MAX` (TOML integers), there are at
    /// most [`MAX_MEMBERS`] members with at least one of each level, no two share an ed25519
    /// key, every RSA key parses and every attestation is at most [`MAX_ATTESTATION`] bytes.
    pub fn validate(&self) -> Result<Membership, GenesisError> {
        check_chain(&self.chain)?;
        if self.params.expected_candidates == 0 {
            return Err(GenesisError::ZeroParam("expected_candidates"));
        }
        if self.params.expected_sealers == 0 {
            return Err(GenesisError::ZeroParam("expected_sealers"));
        }
        for (name, v) in [
            ("time_ms", self.time_ms),
            (
                "expected_candidates",
                self.params.expected_candidates as u64,
            ),
            ("expected_sealers", self.params.expected_sealers as u64),
        ] {
            if v > i64::MAX as u64 {
                return Err(GenesisError::OutOfRange(name));
            }
        }
        if self.members.len() > MAX_MEMBERS as usize {
            return Err(GenesisError::TooManyMembers(self.members.len()));
        }
        for level in [Level::One, Level::Two] {
            if !self.members.iter().any(|m| m.level == level) {
                return Err(GenesisError::NoMemberOfLevel(level));
            }
        }
        let mut seen: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (index, m) in self.members.iter().enumerate() {
            if let Some(&first) = seen.get(&sig::node_id(&m.ed25519)) {
                return Err(GenesisError::DuplicateKey { index, first });
            }
            seen.insert(sig::node_id(&m.ed25519), index);
            if m.attestation.len() > MAX_ATTESTATION {
                return Err(GenesisError::AttestationTooLong {
                    index,
                    len: m.attestation.len(),
                });
            }
            if m.rsa_der.len() > MAX_BYTES as usize {
                return Err(GenesisError::BadKey { index });
            }
        }
        // Keys are unique, so the `NodeId` of a bad key names exactly one member.
        Membership::new(self.members.iter().cloned()).map_err(|e| match e {
            VerifyError::BadKey(id) => GenesisError::BadKey {
                index: seen.get(&id).copied().unwrap_or(0),
            },
            _ => GenesisError::BadKey { index: 0 },
        })
    }

    /// The genesis `block_id`: SHA-256 of `"POE1-genesis" ||` the canonical encoding
    /// ([`Encode`]). It changes with any byte of the genesis (name, time, parameters, any
    /// member, the members' order), so a chain's id is its genesis.
    pub fn block_id(&self) -> Hash {
        sha256_parts(&[GENESIS_DOMAIN, &self.to_bytes()])
    }

    /// Block 0 as the verifier sees it: height 0, [`Genesis::block_id`], no transactions (the
    /// empty RFC 6962 root), `members_root` of `members` (the membership built from this
    /// genesis by [`Genesis::validate`]) and the genesis time.
    pub fn verified(&self, members: &Membership) -> Verified {
        Verified {
            height: 0,
            block_id: self.block_id(),
            tx_root: merkle::root::<&[u8]>(&[]),
            tx_count: 0,
            members_root: members.root(),
            time_ms: self.time_ms,
        }
    }

    /// Everything a node or light client starts from: [`Genesis::validate`], then
    /// [`Genesis::verified`], and the parameters.
    pub fn start(&self) -> Result<(Membership, Verified, Params), GenesisError> {
        let members = self.validate()?;
        let genesis = self.verified(&members);
        Ok((members, genesis, self.params))
    }
}

/// The chain name rule: 1 to [`MAX_CHAIN_LEN`] bytes of `[a-z0-9-]`.
fn check_chain(chain: &str) -> Result<(), GenesisError> {
    if chain.is_empty() {
        return Err(GenesisError::EmptyChain);
    }
    if let Some((at, ch)) = chain.char_indices().find(|(_, c)| !chain_char(*c)) {
        return Err(GenesisError::ChainChar { at, ch });
    }
    if chain.len() > MAX_CHAIN_LEN {
        return Err(GenesisError::ChainTooLong(chain.len()));
    }
    Ok(())
}

fn chain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// `version (1) || chain (u32 length, bytes) || time_ms (u64) || expected_candidates (u64) ||
/// expected_sealers (u64) || members (u32 count, then each [`Member`] encoding)`, all
/// big-endian, members in the order given (docs/POE.md, "Genesis file").
impl Encode for Genesis {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        // Lengths beyond u32 never decode; saturating keeps `encode` total.
        let chain_len = u32::try_from(self.chain.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&chain_len.to_be_bytes());
        out.extend_from_slice(self.chain.as_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&(self.params.expected_candidates as u64).to_be_bytes());
        out.extend_from_slice(&(self.params.expected_sealers as u64).to_be_bytes());
        let count = u32::try_from(self.members.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for m in &self.members {
            m.encode(out);
        }
    }
}

/// Strict: the version is [`VERSION`], the chain name is at most [`MAX_CHAIN_LEN`] bytes of
/// `[a-z0-9-]` (another byte is [`WireError::BadTag`] of `"Genesis.chain"`: it has no meaning
/// in a name), both parameters fit a `usize`, and there are at most [`MAX_MEMBERS`] members.
/// The other rules of [`Genesis::validate`] (nonempty name and levels, nonzero parameters,
/// unique and usable keys) are not the decoder's.
impl Decode for Genesis {
    const NAME: &'static str = "Genesis";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.version(Self::NAME)?;
        let len = r.u32("Genesis.chain")?;
        if len as usize > MAX_CHAIN_LEN {
            return Err(WireError::TooLong {
                field: "Genesis.chain",
                len,
                max: MAX_CHAIN_LEN as u32,
            });
        }
        let bytes = r.take(len as usize, "Genesis.chain")?;
        if let Some(&tag) = bytes.iter().find(|b| !chain_char(char::from(**b))) {
            return Err(WireError::BadTag {
                field: "Genesis.chain",
                tag,
            });
        }
        // Every byte is ASCII, so each is one char.
        let chain: String = bytes.iter().map(|&b| char::from(b)).collect();
        let time_ms = r.u64("Genesis.time_ms")?;
        let expected_candidates = usize_of(
            r.u64("Genesis.expected_candidates")?,
            "Genesis.expected_candidates",
        )?;
        let expected_sealers = usize_of(
            r.u64("Genesis.expected_sealers")?,
            "Genesis.expected_sealers",
        )?;
        let count = r.count("Genesis.members", MAX_MEMBERS, MIN_MEMBER_LEN)?;
        let mut members = r.list::<Member>(count);
        for _ in 0..count {
            members.push(Member::decode_from(r)?);
        }
        Ok(Genesis {
            chain,
            time_ms,
            params: Params {
                expected_candidates,
                expected_sealers,
            },
            members,
        })
    }
}

/// A `u64` parameter as a `usize`; on a 32-bit target a larger value is
/// [`WireError::TooLong`] with the limit `u32::MAX`.
fn usize_of(v: u64, field: &'static str) -> Result<usize, WireError> {
    usize::try_from(v).map_err(|_| WireError::TooLong {
        field,
        len: u32::MAX,
        max: u32::MAX,
    })
}
