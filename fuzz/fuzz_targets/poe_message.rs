//! Arbitrary bytes decoded as a gossiped POE `Message`, or as a stored `VoteRecord` (read back
//! from a node's store after a crash), never panic; an accepted one re-encodes to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poe::wire::{Decode, Encode, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = poe::node::VoteRecord::decode(data) {
        assert_eq!(record.to_bytes(), data, "VoteRecord re-encodes differently");
    }
    if let Ok(message) = Message::decode(data) {
        assert_eq!(message.to_bytes(), data, "Message re-encodes differently");
        match &message {
            Message::Vote(vote) => {
                let _ = vote.signing_bytes();
            }
            Message::Certificate(cert) => {
                assert_eq!(cert.iter_votes().count(), cert.votes.len());
            }
            Message::Block(block) => {
                let _ = (block.header.block_id(), block.header.signing_bytes());
            }
            Message::Evidence(poe::wire::Evidence::DoubleBlock(a, b)) => {
                let _ = (a.signing_bytes(), b.signing_bytes());
            }
            _ => {}
        }
    }
});
