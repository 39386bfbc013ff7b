//! The fuzz seeds under `fuzz/seeds/poe_*` are valid messages, so the fuzzers start from inputs
//! that reach deep into the decoders (and a format change that breaks them is noticed here).

use poe::wire::{Block, Decode, Encode, Message, Transaction};

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
}
