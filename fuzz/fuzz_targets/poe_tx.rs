//! Arbitrary bytes decoded as a POE `Transaction` never panic; an accepted transaction
//! re-encodes to the same bytes, and its signing bytes are its domain, sender, nonce and body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poe::wire::{Decode, Encode, Transaction, TxBody};

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = Transaction::decode(data) {
        assert_eq!(tx.to_bytes(), data, "Transaction re-encodes differently");
        let signing = tx.signing_bytes();
        assert!(signing.starts_with(b"POE1-tx"));
        // Everything but the version byte and the signature is signed.
        assert_eq!(&signing[7..], &data[1..data.len() - 64]);
        let _ = tx.id();
        assert_eq!(TxBody::decode(&tx.body.to_bytes()).as_ref(), Ok(&tx.body));
    }
});
