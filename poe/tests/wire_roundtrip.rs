//! Property tests of `poe::wire`: arbitrary values of every type round-trip through their
//! encoding; arbitrary or mutated bytes never panic a decoder, and whatever decodes re-encodes
//! to the same bytes (one encoding per value); every proper prefix of an encoding is
//! `Truncated` and one more byte is `TrailingBytes`.

use poe::wire::{
    Block, BlockHeader, Certificate, CertificateError, Decode, Encode, Evidence, Level, Member,
    Message, NodeId, Phase, Reading, Reproposal, Seal, Ticket, Transaction, TxBody, Vote,
    WireError,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

fn node() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::One), Just(Level::Two)]
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![Just(Phase::Prepare), Just(Phase::Commit)]
}

fn member() -> impl Strategy<Value = Member> {
    (level(), any::<[u8; 32]>(), bytes(300), bytes(40)).prop_map(
        |(level, ed25519, rsa_der, attestation)| Member {
            level,
            ed25519,
            rsa_der,
            attestation,
        },
    )
}

fn ticket() -> impl Strategy<Value = Ticket> {
    (
        node(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u32>(),
        bytes(300),
    )
        .prop_map(|(node, height, prev_hash, round, proof)| Ticket {
            node,
            height,
            prev_hash,
            round,
            proof,
        })
}

fn seal() -> impl Strategy<Value = Seal> {
    (node(), bytes(300)).prop_map(|(node, proof)| Seal { node, proof })
}

fn vote() -> impl Strategy<Value = Vote> {
    (
        node(),
        phase(),
        any::<u64>(),
        any::<u32>(),
        any::<[u8; 32]>(),
        any::<[u8; 64]>(),
    )
        .prop_map(|(voter, phase, height, round, block_id, signature)| Vote {
            voter,
            phase,
            height,
            round,
            block_id,
            signature,
        })
}

/// Votes keyed by voter: a `BTreeMap` gives strictly increasing voters, as decoding requires.
fn certificate() -> impl Strategy<Value = Certificate> {
    (
        phase(),
        any::<u64>(),
        any::<u32>(),
        any::<[u8; 32]>(),
        btree_map(node(), any::<[u8; 64]>(), 0..6),
    )
        .prop_map(|(phase, height, round, block_id, votes)| Certificate {
            phase,
            height,
            round,
            block_id,
            votes: votes.into_iter().collect(),
        })
}

fn header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<u32>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        ticket(),
        any::<[u8; 64]>(),
        proptest::option::of(seal()),
        proptest::option::of(certificate()),
    )
        .prop_map(
            |(
                height,
                prev_hash,
                tx_root,
                tx_count,
                members_root,
                time_ms,
                ticket,
                clerk_sig,
                seal,
                commit,
            )| {
                BlockHeader {
                    height,
                    prev_hash,
                    tx_root,
                    tx_count,
                    members_root,
                    time_ms,
                    ticket,
                    clerk_sig,
                    seal,
                    commit,
                }
            },
        )
}

fn reading() -> impl Strategy<Value = Reading> {
    (any::<[u8; 8]>(), any::<u64>(), any::<u16>(), any::<i64>()).prop_map(
        |(device, time_ms, kind, value)| Reading {
            device,
            time_ms,
            kind,
            value,
        },
    )
}

fn evidence() -> impl Strategy<Value = Evidence> {
    prop_oneof![
        (vote(), vote()).prop_map(|(a, b)| Evidence::DoubleVote(a, b)),
        (header(), header()).prop_map(|(a, b)| Evidence::DoubleBlock(a, b)),
    ]
}

fn tx_body() -> impl Strategy<Value = TxBody> {
    prop_oneof![
        vec(reading(), 0..8).prop_map(TxBody::SensorBatch),
        (bytes(64), any::<u32>())
            .prop_map(|(cid, version)| TxBody::FirmwareAnchor { cid, version }),
        (
            node(),
            proptest::option::of(member()),
            vec((node(), any::<[u8; 64]>()), 0..5)
        )
            .prop_map(|(node, member, approvals)| TxBody::Membership {
                node,
                member,
                approvals
            }),
        evidence().prop_map(TxBody::Evidence),
    ]
}

fn transaction() -> impl Strategy<Value = Transaction> {
    (node(), any::<u64>(), tx_body(), any::<[u8; 64]>()).prop_map(
        |(sender, nonce, body, signature)| Transaction {
            sender,
            nonce,
            body,
            signature,
        },
    )
}

fn block() -> impl Strategy<Value = Block> {
    (header(), vec(transaction(), 0..4)).prop_map(|(header, txs)| Block { header, txs })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ticket().prop_map(Message::Ticket),
        transaction().prop_map(Message::Tx),
        block().prop_map(Message::Block),
        (any::<[u8; 32]>(), seal()).prop_map(|(block_id, seal)| Message::Seal { block_id, seal }),
        vote().prop_map(Message::Vote),
        certificate().prop_map(Message::Certificate),
        evidence().prop_map(Message::Evidence),
        (any::<u64>(), 0u32..=poe::wire::codec::MAX_GET_BLOCKS)
            .prop_map(|(from, count)| Message::GetBlocks { from, count }),
        (ticket(), block(), certificate()).prop_map(|(ticket, block, justify)| {
            Message::Repropose(Reproposal {
                ticket,
                block,
                justify,
            })
        }),
    ]
}

/// Encode, decode, compare; then check every proper prefix and one extra byte.
fn round_trip<T: Encode + Decode + PartialEq + core::fmt::Debug>(
    value: &T,
) -> Result<(), TestCaseError> {
    let bytes = value.to_bytes();
    let decoded = T::decode(&bytes);
    prop_assert_eq!(decoded.as_ref(), Ok(value));
    for cut in 0..bytes.len() {
        let err = T::decode(&bytes[..cut]);
        prop_assert!(
            matches!(err, Err(WireError::Truncated { .. })),
            "prefix of {} of {} bytes: {:?}",
            cut,
            bytes.len(),
            err
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    prop_assert_eq!(
        T::decode(&longer),
        Err(WireError::TrailingBytes {
            message: T::NAME,
            count: 1
        })
    );
    Ok(())
}

/// Decoding never panics; what decodes re-encodes to exactly the input.
fn canonical<T: Encode + Decode>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(value) = T::decode(bytes) {
        prop_assert_eq!(value.to_bytes(), bytes);
    }
    Ok(())
}

/// `bytes` with byte `at` (modulo the length) replaced by `with`.
fn mutate(mut bytes: Vec<u8>, at: usize, with: u8) -> Vec<u8> {
    if !bytes.is_empty() {
        let i = at % bytes.len();
        bytes[i] = with;
    }
    bytes
}

proptest! {
    #[test]
    fn node_id_round_trips(v in node()) { round_trip(&v)?; }

    #[test]
    fn level_round_trips(v in level()) { round_trip(&v)?; }

    #[test]
    fn phase_round_trips(v in phase()) { round_trip(&v)?; }

    #[test]
    fn member_round_trips(v in member()) { round_trip(&v)?; }

    #[test]
    fn reading_round_trips(v in reading()) { round_trip(&v)?; }

    #[test]
    fn ticket_round_trips(v in ticket()) { round_trip(&v)?; }

    #[test]
    fn seal_round_trips(v in seal()) { round_trip(&v)?; }

    #[test]
    fn vote_round_trips(v in vote()) { round_trip(&v)?; }

    #[test]
    fn certificate_round_trips(v in certificate()) { round_trip(&v)?; }

    #[test]
    fn header_round_trips(v in header()) { round_trip(&v)?; }

    #[test]
    fn tx_body_round_trips(v in tx_body()) { round_trip(&v)?; }

    #[test]
    fn transaction_round_trips(v in transaction()) { round_trip(&v)?; }

    #[test]
    fn evidence_round_trips(v in evidence()) { round_trip(&v)?; }

    #[test]
    fn block_round_trips(v in block()) { round_trip(&v)?; }

    #[test]
    fn message_round_trips(v in message()) { round_trip(&v)?; }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in bytes(600)) {
        canonical::<NodeId>(&bytes)?;
        canonical::<Level>(&bytes)?;
        canonical::<Phase>(&bytes)?;
        canonical::<Member>(&bytes)?;
        canonical::<Reading>(&bytes)?;
        canonical::<Ticket>(&bytes)?;
        canonical::<Seal>(&bytes)?;
        canonical::<Vote>(&bytes)?;
        canonical::<Certificate>(&bytes)?;
        canonical::<BlockHeader>(&bytes)?;
        canonical::<TxBody>(&bytes)?;
        canonical::<Transaction>(&bytes)?;
        canonical::<Evidence>(&bytes)?;
        canonical::<Block>(&bytes)?;
        canonical::<Message>(&bytes)?;
    }

    /// Random bytes rarely get past the version byte; mutating one byte of a valid message
    /// reaches every field's checks.
    #[test]
    fn mutated_messages_never_panic(m in message(), at in any::<usize>(), with in any::<u8>()) {
        canonical::<Message>(&mutate(m.to_bytes(), at, with))?;
    }

    #[test]
    fn mutated_blocks_never_panic(b in block(), at in any::<usize>(), with in any::<u8>()) {
        canonical::<Block>(&mutate(b.to_bytes(), at, with))?;
    }

    #[test]
    fn block_id_ignores_clerk_sig_seal_and_commit(
        h in header(),
        clerk_sig in any::<[u8; 64]>(),
        seal in proptest::option::of(seal()),
        commit in proptest::option::of(certificate()),
    ) {
        let mut other = h.clone();
        other.clerk_sig = clerk_sig;
        other.seal = seal;
        other.commit = commit;
        prop_assert_eq!(h.block_id(), other.block_id());
        prop_assert_eq!(h.signing_bytes(), other.signing_bytes());
        // The clerk signs `"POE1-block" || block_id`; `block_id` hashes the encoding without
        // the signature's 64 bytes (they follow the ticket) and with both options absent.
        let mut expected = b"POE1-block".to_vec();
        expected.extend_from_slice(&h.block_id());
        prop_assert_eq!(h.signing_bytes(), expected);
        let mut unsigned = h.clone();
        unsigned.seal = None;
        unsigned.commit = None;
        let mut bytes = unsigned.to_bytes();
        let sig_at = bytes.len() - 2 - 64;
        prop_assert_eq!(&bytes[sig_at..sig_at + 64], &h.clerk_sig[..]);
        bytes.drain(sig_at..sig_at + 64);
        prop_assert_eq!(poe::hash::sha256(&bytes), h.block_id());
    }

    /// A header's encoding carries its signature: changing it changes the bytes, and the
    /// decoded header has the same signature.
    #[test]
    fn header_encoding_carries_clerk_sig(h in header(), i in 0usize..64) {
        let mut other = h.clone();
        other.clerk_sig[i] ^= 1;
        prop_assert_ne!(h.to_bytes(), other.to_bytes());
        let decoded = BlockHeader::decode(&other.to_bytes()).map(|d| d.clerk_sig);
        prop_assert_eq!(decoded, Ok(other.clerk_sig));
    }

    #[test]
    fn block_id_covers_the_other_fields(h in header(), field in 0usize..7) {
        let mut other = h.clone();
        match field {
            0 => other.height ^= 1,
            1 => other.prev_hash[0] ^= 1,
            2 => other.tx_root[31] ^= 1,
            3 => other.time_ms ^= 1,
            4 => other.tx_count ^= 1,
            5 => other.members_root[7] ^= 1,
            _ => other.ticket.round ^= 1,
        }
        prop_assert_ne!(h.block_id(), other.block_id());
    }

    /// The signature covers everything but itself: changing it changes the id, not the
    /// signing bytes; changing the nonce changes both.
    #[test]
    fn tx_signing_bytes_and_id(tx in transaction()) {
        let mut resigned = tx.clone();
        resigned.signature[0] ^= 1;
        prop_assert_eq!(tx.signing_bytes(), resigned.signing_bytes());
        prop_assert_ne!(tx.id(), resigned.id());
        let mut renonced = tx.clone();
        renonced.nonce ^= 1;
        prop_assert_ne!(tx.signing_bytes(), renonced.signing_bytes());
        prop_assert_ne!(tx.id(), renonced.id());
        let mut expected = b"POE1-tx".to_vec();
        expected.extend_from_slice(&tx.sender.0);
        expected.extend_from_slice(&tx.nonce.to_be_bytes());
        expected.extend_from_slice(&tx.body.to_bytes());
        prop_assert_eq!(tx.signing_bytes(), expected);
    }

    /// A certificate's votes are the votes that were aggregated, with the same signed bytes.
    #[test]
    fn certificate_votes_match_votes(c in certificate()) {
        let votes: Vec<Vote> = c.iter_votes().collect();
        prop_assert_eq!(votes.len(), c.votes.len());
        for (i, v) in votes.iter().enumerate() {
            let vote = c.vote(i);
            prop_assert_eq!(vote.as_ref(), Some(v));
            prop_assert_eq!((v.voter, v.signature), c.votes[i]);
            prop_assert_eq!(v.signing_bytes(), c.signing_bytes());
        }
        prop_assert_eq!(c.vote(c.votes.len()), None);
    }

    /// Votes in any order aggregate back into the certificate they came from.
    #[test]
    fn certificate_from_its_votes_in_any_order(c in certificate(), turn in any::<usize>()) {
        let mut votes: Vec<Vote> = c.iter_votes().collect();
        if votes.is_empty() {
            prop_assert_eq!(Certificate::from_votes(&votes), Err(CertificateError::Empty));
        } else {
            let k = turn % votes.len();
            votes.rotate_left(k);
            if turn & 1 == 1 {
                votes.reverse();
            }
            prop_assert_eq!(Certificate::from_votes(&votes), Ok(c));
        }
    }
}
