//! The fuzz seeds under `fuzz/seeds/poe_*` are valid messages, so the fuzzers start from inputs
//! that reach deep into the decoders (and a format change that breaks them is noticed here).

use poe::wire::{Block, Decode, Encode, Evidence, Message, Transaction};

/// Decodes `bytes` as `T`, re-encodes, and checks that the bytes come back.
fn valid<T: Decode + Encode + core::fmt::Debug>(name: &str, bytes: &[u8]) {
    match T::decode(bytes) {
        Ok(value) => assert_eq!(value.to_bytes(), bytes, "{name} re-encodes differently"),
        Err(e) => panic!("seed {name} does not decode: {e}"),
    }
}

#[test]
fn tx_seeds_decode() {
    valid::<Transaction>("anchor", include_bytes!("../../fuzz/seeds/poe_tx/anchor"));
    valid::<Transaction>("batch", include_bytes!("../../fuzz/seeds/poe_tx/batch"));
    valid::<Transaction>(
        "membership",
        include_bytes!("../../fuzz/seeds/poe_tx/membership"),
    );
}

#[test]
fn block_seeds_decode() {
    valid::<Block>("built", include_bytes!("../../fuzz/seeds/poe_block/built"));
    valid::<Block>("final", include_bytes!("../../fuzz/seeds/poe_block/final"));
}

#[test]
fn message_seeds_decode() {
    valid::<Message>("tx", include_bytes!("../../fuzz/seeds/poe_message/tx"));
    valid::<Message>("vote", include_bytes!("../../fuzz/seeds/poe_message/vote"));
    valid::<Message>(
        "block",
        include_bytes!("../../fuzz/seeds/poe_message/block"),
    );
    valid::<Message>(
        "evidence",
        include_bytes!("../../fuzz/seeds/poe_message/evidence"),
    );
    valid::<Message>("seal", include_bytes!("../../fuzz/seeds/poe_message/seal"));
    valid::<Message>(
        "repropose",
        include_bytes!("../../fuzz/seeds/poe_message/repropose"),
    );
    let double_block = include_bytes!("../../fuzz/seeds/poe_message/double_block");
    valid::<Message>("double_block", double_block);
    assert!(matches!(
        Message::decode(double_block),
        Ok(Message::Evidence(Evidence::DoubleBlock(..)))
    ));
}

/// Block seeds carry a clerk signature (64 bytes after the ticket) that `block_id` ignores.
#[test]
fn block_seeds_carry_a_clerk_signature() {
    for bytes in [
        include_bytes!("../../fuzz/seeds/poe_block/built").as_slice(),
        include_bytes!("../../fuzz/seeds/poe_block/final").as_slice(),
    ] {
        let block = Block::decode(bytes).expect("seed decodes");
        assert_ne!(block.header.clerk_sig, [0; 64]);
        let mut other = block.header.clone();
        other.clerk_sig = [0; 64];
        assert_eq!(other.block_id(), block.header.block_id());
    }
}
