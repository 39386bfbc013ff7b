//! Arbitrary bytes decoded as a POE `Genesis` (its canonical binary encoding), and parsed as a
//! `genesis.toml` when they are UTF-8, never panic; an accepted encoding re-encodes to the same
//! bytes, and an accepted file is valid and reads back from its own `to_toml`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poe::genesis::Genesis;
use poe::wire::{Decode, Encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(genesis) = Genesis::decode(data) {
        assert_eq!(genesis.to_bytes(), data, "Genesis re-encodes differently");
        let _ = genesis.block_id();
        if let Ok(members) = genesis.validate() {
            assert_eq!(genesis.verified(&members).members_root, members.root());
        }
    }
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(genesis) = Genesis::from_toml(text) {
            assert!(genesis.validate().is_ok(), "a loaded genesis is valid");
            let again = Genesis::from_toml(&genesis.to_toml()).expect("to_toml reads back");
            assert_eq!(again, genesis, "Genesis changes through to_toml");
            assert_eq!(Genesis::decode(&genesis.to_bytes()).as_ref(), Ok(&genesis));
        }
    }
});
