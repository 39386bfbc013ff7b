//! Golden encodings (so the format cannot drift silently) and specific rejections of
//! `poe::wire`: truncation at each field, trailing bytes, length prefixes beyond the limits or
//! the input, unknown tags and versions, unordered certificate voters.

use poe::wire::{
    Block, BlockHeader, Certificate, CertificateError, Decode, Encode, Evidence, Level, Member,
    Message, NodeId, Phase, Seal, Ticket, Transaction, TxBody, Vote, WireError,
    block_signing_bytes, membership_signing_bytes,
};

/// Bytes from hex, ignoring spaces; `n*XX` repeats byte `XX` n times.
fn hex(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        let (times, digits) = match word.split_once('*') {
            Some((n, d)) => (n.parse::<usize>().expect("repeat count"), d),
            None => (1, word),
        };
        let mut once = Vec::new();
        for pair in digits.as_bytes().chunks(2) {
            let pair = core::str::from_utf8(pair).expect("ascii");
            once.push(u8::from_str_radix(pair, 16).expect("hex digit"));
        }
        for _ in 0..times {
            out.extend_from_slice(&once);
        }
    }
    out
}

fn small_header() -> BlockHeader {
    BlockHeader {
        height: 1,
        prev_hash: [0x11; 32],
        tx_root: [0x22; 32],
        tx_count: 3,
        members_root: [0x44; 32],
        time_ms: 1_700_000_000_000,
        ticket: Ticket {
            node: NodeId([0x33; 32]),
            height: 1,
            prev_hash: [0x11; 32],
            round: 2,
            proof: vec![0xaa, 0xbb],
        },
        clerk_sig: [0x5a; 64],
        seal: None,
        commit: None,
    }
}

const SMALL_HEADER: &str = "01 0000000000000001 32*11 32*22 00000003 32*44 0000018bcfe56800 \
     01 32*33 0000000000000001 32*11 00000002 00000002 aabb \
     64*5a \
     00 00";

/// [`SMALL_HEADER`] without `clerk_sig`: the bytes `block_id` hashes.
const SMALL_HEADER_UNSIGNED: &str = "01 0000000000000001 32*11 32*22 00000003 32*44 0000018bcfe56800 \
     01 32*33 0000000000000001 32*11 00000002 00000002 aabb \
     00 00";

fn small_tx() -> Transaction {
    Transaction {
        sender: NodeId([0x44; 32]),
        nonce: 7,
        body: TxBody::FirmwareAnchor {
            cid: vec![1, 2, 3],
            version: 9,
        },
        signature: [0x55; 64],
    }
}

const SMALL_TX: &str = "01 32*44 0000000000000007 01 00000003 010203 00000009 64*55";

fn certificate(voters: &[u8]) -> Certificate {
    Certificate {
        phase: Phase::Commit,
        height: 1,
        round: 0,
        block_id: [0x66; 32],
        votes: voters.iter().map(|&v| (NodeId([v; 32]), [v; 64])).collect(),
    }
}

#[test]
fn golden_header() {
    let h = small_header();
    assert_eq!(h.to_bytes(), hex(SMALL_HEADER));
    assert_eq!(BlockHeader::decode(&hex(SMALL_HEADER)), Ok(h.clone()));
    // `sha256sum` of the bytes above without the signature (`block_id` does not cover
    // `clerk_sig`).
    let id = hex("444b8ba8cb0cd70e0640708d547c4761afafc22ee8b1af4967643608e0af1e81");
    assert_eq!(h.block_id().to_vec(), id);
    assert_eq!(poe::hash::sha256(&hex(SMALL_HEADER_UNSIGNED)).to_vec(), id);
    // The clerk signs `"POE1-block" || block_id`.
    let signed = [b"POE1-block".as_slice(), &id].concat();
    assert_eq!(h.signing_bytes(), signed);
    assert_eq!(block_signing_bytes(&h.block_id()), signed);
    let mut resigned = h.clone();
    resigned.clerk_sig = [0x5b; 64];
    assert_eq!(resigned.block_id(), h.block_id());
    assert_eq!(resigned.signing_bytes(), signed);
    assert_ne!(resigned.to_bytes(), h.to_bytes());
}

#[test]
fn header_clerk_sig_is_exactly_64_bytes() {
    // The signature has no length prefix: 63 bytes then the options are read as a shorter
    // signature followed by a truncated header; one byte too many is an unknown seal tag.
    let bytes = hex(SMALL_HEADER);
    let sig_at = 200;
    assert_eq!(&bytes[sig_at..sig_at + 64], &[0x5a; 64]);
    let mut short = bytes.clone();
    short.remove(sig_at);
    assert_eq!(
        BlockHeader::decode(&short),
        Err(WireError::Truncated {
            field: "BlockHeader.commit",
            needed: 1,
            remaining: 0
        })
    );
    let mut long = bytes.clone();
    long.insert(sig_at, 0x5a);
    assert_eq!(
        BlockHeader::decode(&long),
        Err(WireError::BadTag {
            field: "BlockHeader.seal",
            tag: 0x5a
        })
    );
    assert_eq!(
        BlockHeader::decode(&bytes[..sig_at + 10]),
        Err(WireError::Truncated {
            field: "BlockHeader.clerk_sig",
            needed: 64,
            remaining: 10
        })
    );
}

#[test]
fn golden_tx() {
    let tx = small_tx();
    assert_eq!(tx.to_bytes(), hex(SMALL_TX));
    assert_eq!(Transaction::decode(&hex(SMALL_TX)), Ok(tx.clone()));
    assert_eq!(
        tx.signing_bytes(),
        [
            b"POE1-tx".as_slice(),
            &hex("32*44 0000000000000007 01 00000003 010203 00000009")
        ]
        .concat()
    );
    // `sha256sum` of the bytes above.
    assert_eq!(
        tx.id().to_vec(),
        hex("9214112e478b7bec5ec76652f2f9102dd5455c51b145fd8aebb37399c21d28e5")
    );
}

#[test]
fn golden_vote_signing_bytes() {
    let vote = Vote {
        voter: NodeId([0x77; 32]),
        phase: Phase::Prepare,
        height: 5,
        round: 3,
        block_id: [0x66; 32],
        signature: [0x88; 64],
    };
    assert_eq!(
        vote.signing_bytes(),
        [
            b"POE1-vote".as_slice(),
            &hex("01 0000000000000005 00000003 32*66")
        ]
        .concat()
    );
    assert_eq!(
        vote.to_bytes(),
        hex("01 32*77 01 0000000000000005 00000003 32*66 64*88")
    );
    let commit = Vote {
        phase: Phase::Commit,
        ..vote
    };
    assert_eq!(commit.signing_bytes()[9], 2);
}

#[test]
fn membership_signing_bytes_distinguish_join_and_leave() {
    let node = NodeId([0x99; 32]);
    let member = Member {
        level: Level::Two,
        ed25519: [0x12; 32],
        rsa_der: vec![0x30],
        attestation: Vec::new(),
    };
    assert_eq!(
        membership_signing_bytes(&node, None),
        [b"POE1-member".as_slice(), &hex("32*99 00")].concat()
    );
    assert_eq!(
        membership_signing_bytes(&node, Some(&member)),
        [
            b"POE1-member".as_slice(),
            &hex("32*99 01 02 32*12 00000001 30 00000000")
        ]
        .concat()
    );
}

/// (first offset, field) of each field of the golden transaction: a cut at any offset in
/// `[start, next start)` is `Truncated` at that field.
#[test]
fn tx_truncated_at_each_field() {
    let fields: &[(usize, &str)] = &[
        (0, "Transaction"),
        (1, "Transaction.sender"),
        (33, "Transaction.nonce"),
        (41, "TxBody"),
        (42, "TxBody::FirmwareAnchor.cid"),
        (49, "TxBody::FirmwareAnchor.version"),
        (53, "Transaction.signature"),
    ];
    let bytes = hex(SMALL_TX);
    assert_eq!(bytes.len(), 117);
    for cut in 0..bytes.len() {
        let expected = fields
            .iter()
            .rev()
            .find(|(start, _)| *start <= cut)
            .map(|(_, f)| *f);
        match Transaction::decode(&bytes[..cut]) {
            Err(WireError::Truncated { field, .. }) => {
                assert_eq!(Some(field), expected, "cut at {cut}")
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn header_truncated_at_each_field() {
    let fields: &[(usize, &str)] = &[
        (0, "BlockHeader"),
        (1, "BlockHeader.height"),
        (9, "BlockHeader.prev_hash"),
        (41, "BlockHeader.tx_root"),
        (73, "BlockHeader.tx_count"),
        (77, "BlockHeader.members_root"),
        (109, "BlockHeader.time_ms"),
        (117, "Ticket"),
        (118, "Ticket.node"),
        (150, "Ticket.height"),
        (158, "Ticket.prev_hash"),
        (190, "Ticket.round"),
        (194, "Ticket.proof"),
        (200, "BlockHeader.clerk_sig"),
        (264, "BlockHeader.seal"),
        (265, "BlockHeader.commit"),
    ];
    let bytes = hex(SMALL_HEADER);
    assert_eq!(bytes.len(), 266);
    for cut in 0..bytes.len() {
        let expected = fields
            .iter()
            .rev()
            .find(|(start, _)| *start <= cut)
            .map(|(_, f)| *f);
        match BlockHeader::decode(&bytes[..cut]) {
            Err(WireError::Truncated { field, .. }) => {
                assert_eq!(Some(field), expected, "cut at {cut}")
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn trailing_byte_rejected() {
    let mut bytes = hex(SMALL_TX);
    bytes.push(0);
    assert_eq!(
        Transaction::decode(&bytes),
        Err(WireError::TrailingBytes {
            message: "Transaction",
            count: 1
        })
    );
    let mut bytes = Message::Tx(small_tx()).to_bytes();
    bytes.extend_from_slice(&[1, 2]);
    assert_eq!(
        Message::decode(&bytes),
        Err(WireError::TrailingBytes {
            message: "Message",
            count: 2
        })
    );
}

#[test]
fn byte_string_over_limit_rejected() {
    // Ticket with a proof length of 16 KiB + 1 and of u32::MAX, and nothing after it.
    let prefix = hex("01 32*33 0000000000000001 32*11 00000002");
    for len in [16 * 1024 + 1, u32::MAX] {
        let bytes = [prefix.as_slice(), &len.to_be_bytes()].concat();
        assert_eq!(
            Ticket::decode(&bytes),
            Err(WireError::TooLong {
                field: "Ticket.proof",
                len,
                max: 16 * 1024
            })
        );
    }
}

#[test]
fn byte_string_longer_than_input_rejected() {
    // A proof of 16 KiB (the limit) claimed, two bytes present.
    let bytes = hex("01 32*33 0000000000000001 32*11 00000002 00004000 aabb");
    assert_eq!(
        Ticket::decode(&bytes),
        Err(WireError::Truncated {
            field: "Ticket.proof",
            needed: 16 * 1024,
            remaining: 2
        })
    );
    let seal = hex("01 32*33 00000100 aabbcc");
    assert_eq!(
        Seal::decode(&seal),
        Err(WireError::Truncated {
            field: "Seal.proof",
            needed: 256,
            remaining: 3
        })
    );
}

#[test]
fn item_counts_over_limit_or_input_rejected() {
    let header = hex(SMALL_HEADER);
    // Block: 65,536 transactions claimed (the limit), none present; then 65,537.
    let block = [hex("01").as_slice(), &header, &hex("00010000")].concat();
    assert_eq!(
        Block::decode(&block),
        Err(WireError::Truncated {
            field: "Block.txs",
            needed: 65_536 * 110,
            remaining: 0
        })
    );
    let block = [hex("01").as_slice(), &header, &hex("00010001")].concat();
    assert_eq!(
        Block::decode(&block),
        Err(WireError::TooLong {
            field: "Block.txs",
            len: 65_537,
            max: 65_536
        })
    );
    // Certificate: 2 votes claimed, one present; 4,097 votes claimed.
    let cert = hex("01 02 0000000000000001 00000000 32*66 00000002 32*01 64*01");
    assert_eq!(
        Certificate::decode(&cert),
        Err(WireError::Truncated {
            field: "Certificate.votes",
            needed: 192,
            remaining: 96
        })
    );
    let cert = hex("01 02 0000000000000001 00000000 32*66 00001001");
    assert_eq!(
        Certificate::decode(&cert),
        Err(WireError::TooLong {
            field: "Certificate.votes",
            len: 4097,
            max: 4096
        })
    );
    // Sensor batch: 4,097 readings; 3 readings claimed with 26 bytes present.
    let tx = hex("01 32*44 0000000000000007 00 00001001");
    assert_eq!(
        Transaction::decode(&tx),
        Err(WireError::TooLong {
            field: "TxBody::SensorBatch.readings",
            len: 4097,
            max: 4096
        })
    );
    let tx = hex("01 32*44 0000000000000007 00 00000003 26*00");
    assert_eq!(
        Transaction::decode(&tx),
        Err(WireError::Truncated {
            field: "TxBody::SensorBatch.readings",
            needed: 78,
            remaining: 26
        })
    );
}

#[test]
fn unknown_versions_rejected() {
    for version in [0u8, 2, 0xff] {
        let mut tx = hex(SMALL_TX);
        tx[0] = version;
        assert_eq!(
            Transaction::decode(&tx),
            Err(WireError::BadVersion {
                message: "Transaction",
                version
            })
        );
    }
    // A nested message's version is checked too: the header's ticket.
    let mut header = hex(SMALL_HEADER);
    header[117] = 2;
    assert_eq!(
        BlockHeader::decode(&header),
        Err(WireError::BadVersion {
            message: "Ticket",
            version: 2
        })
    );
    let mut msg = Message::Tx(small_tx()).to_bytes();
    msg[0] = 9;
    assert_eq!(
        Message::decode(&msg),
        Err(WireError::BadVersion {
            message: "Message",
            version: 9
        })
    );
}

#[test]
fn unknown_tags_rejected() {
    let bad = |field, tag| Some(WireError::BadTag { field, tag });
    let mut tx = hex(SMALL_TX);
    tx[41] = 4;
    assert_eq!(Transaction::decode(&tx).err(), bad("TxBody", 4));
    let mut msg = Message::Tx(small_tx()).to_bytes();
    msg[1] = 9;
    assert_eq!(Message::decode(&msg).err(), bad("Message", 9));
    let ev = Evidence::DoubleVote(
        Vote::decode(&hex("01 32*77 01 0000000000000005 00000003 32*66 64*88")).expect("vote"),
        Vote::decode(&hex("01 32*77 01 0000000000000005 00000003 32*67 64*88")).expect("vote"),
    );
    let mut ev = ev.to_bytes();
    ev[1] = 2;
    assert_eq!(Evidence::decode(&ev).err(), bad("Evidence", 2));
    let mut header = hex(SMALL_HEADER);
    header[264] = 2;
    assert_eq!(
        BlockHeader::decode(&header).err(),
        bad("BlockHeader.seal", 2)
    );
    let mut header = hex(SMALL_HEADER);
    header[265] = 0xff;
    assert_eq!(
        BlockHeader::decode(&header).err(),
        bad("BlockHeader.commit", 0xff)
    );
    for tag in [0u8, 3] {
        assert_eq!(Level::decode(&[tag]).err(), bad("Level", tag));
        assert_eq!(Phase::decode(&[tag]).err(), bad("Phase", tag));
    }
}

#[test]
fn certificate_voters_must_increase() {
    let ok = certificate(&[1, 2, 3]);
    assert_eq!(Certificate::decode(&ok.to_bytes()), Ok(ok));
    assert_eq!(
        Certificate::decode(&certificate(&[1, 3, 2]).to_bytes()),
        Err(WireError::Unordered {
            field: "Certificate.votes",
            index: 2
        })
    );
    assert_eq!(
        Certificate::decode(&certificate(&[4, 4]).to_bytes()),
        Err(WireError::Unordered {
            field: "Certificate.votes",
            index: 1
        })
    );
}

#[test]
fn certificate_votes_sign_what_a_vote_signs() {
    let cert = certificate(&[1, 2]);
    let vote = cert.vote(1).expect("second vote");
    assert_eq!(vote.voter, NodeId([2; 32]));
    assert_eq!(vote.signature, [2; 64]);
    assert_eq!(
        cert.signing_bytes(),
        [
            b"POE1-vote".as_slice(),
            &hex("02 0000000000000001 00000000 32*66")
        ]
        .concat()
    );
    assert_eq!(vote.signing_bytes(), cert.signing_bytes());
    assert_eq!(cert.iter_votes().count(), 2);
    assert_eq!(cert.vote(2), None);
}

#[test]
fn sealed_and_final_header_keeps_block_id() {
    let built = small_header();
    let mut final_ = built.clone();
    final_.seal = Some(Seal {
        node: NodeId([0x12; 32]),
        proof: vec![7; 256],
    });
    final_.commit = Some(certificate(&[1, 2, 3]));
    assert_ne!(built.to_bytes(), final_.to_bytes());
    assert_eq!(built.block_id(), final_.block_id());
    // Re-signing (a clerk's second signature, or garbage) does not change the id either.
    final_.clerk_sig = [0x01; 64];
    assert_eq!(built.block_id(), final_.block_id());
    let block = Block {
        header: final_.clone(),
        txs: vec![small_tx()],
    };
    // A block's transactions are their own encodings (the Merkle leaves).
    let bytes = block.to_bytes();
    assert!(bytes.ends_with(&hex(SMALL_TX)));
    assert_eq!(Block::decode(&bytes), Ok(block));
}

#[test]
fn from_votes_rejects_what_is_not_one_certificate() {
    let vote = |voter: u8, block: u8| Vote {
        voter: NodeId([voter; 32]),
        phase: Phase::Commit,
        height: 1,
        round: 0,
        block_id: [block; 32],
        signature: [voter; 64],
    };
    assert_eq!(Certificate::from_votes(&[]), Err(CertificateError::Empty));
    assert_eq!(
        Certificate::from_votes(&[vote(3, 0x66), vote(1, 0x66), vote(2, 0x66)]),
        Ok(certificate(&[1, 2, 3]))
    );
    assert_eq!(
        Certificate::from_votes(&[vote(1, 0x66), vote(2, 0x67)]),
        Err(CertificateError::Mismatch { index: 1 })
    );
    let prepare = Vote {
        phase: Phase::Prepare,
        ..vote(2, 0x66)
    };
    assert_eq!(
        Certificate::from_votes(&[vote(1, 0x66), prepare]),
        Err(CertificateError::Mismatch { index: 1 })
    );
    assert_eq!(
        Certificate::from_votes(&[vote(2, 0x66), vote(1, 0x66), vote(2, 0x66)]),
        Err(CertificateError::DuplicateVoter { index: 2 })
    );
    let many: Vec<Vote> = (0..4097u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            Vote {
                voter: NodeId(id),
                ..vote(0, 0x66)
            }
        })
        .collect();
    assert_eq!(
        Certificate::from_votes(&many),
        Err(CertificateError::TooMany {
            count: 4097,
            max: 4096
        })
    );
    let cert = Certificate::from_votes(&many[..4096]).expect("4,096 votes fit");
    assert_eq!(Certificate::decode(&cert.to_bytes()), Ok(cert));
}

#[test]
fn get_blocks_golden_and_bounded() {
    let max = poe::wire::codec::MAX_GET_BLOCKS;
    let m = Message::GetBlocks {
        from: 5,
        count: max,
    };
    let golden = hex("01 07 0000000000000005 00000040");
    assert_eq!(m.to_bytes(), golden);
    assert_eq!(Message::decode(&golden), Ok(m));
    // One more than the limit, and the largest count.
    for count in [max + 1, u32::MAX] {
        let mut bytes = hex("01 07 0000000000000005");
        bytes.extend_from_slice(&count.to_be_bytes());
        assert_eq!(
            Message::decode(&bytes),
            Err(WireError::TooLong {
                field: "Message::GetBlocks.count",
                len: count,
                max
            })
        );
    }
    // Truncated in each field, and a trailing byte.
    assert!(matches!(
        Message::decode(&golden[..6]),
        Err(WireError::Truncated {
            field: "Message::GetBlocks.from",
            ..
        })
    ));
    assert!(matches!(
        Message::decode(&golden[..12]),
        Err(WireError::Truncated {
            field: "Message::GetBlocks.count",
            ..
        })
    ));
    let mut long = golden.clone();
    long.push(0);
    assert_eq!(
        Message::decode(&long),
        Err(WireError::TrailingBytes {
            message: "Message",
            count: 1
        })
    );
}
