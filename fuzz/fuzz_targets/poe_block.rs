//! Arbitrary bytes decoded as a POE `Block` never panic; an accepted block re-encodes to the
//! same bytes (one encoding per value), its `block_id` ignores the clerk signature, seal and
//! commit, and its ids and signing bytes can be computed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poe::wire::{Block, BlockHeader, Decode, Encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(data) {
        assert_eq!(block.to_bytes(), data, "Block re-encodes differently");
        let id = block.header.block_id();
        let mut unsealed = block.header.clone();
        unsealed.seal = None;
        unsealed.commit = None;
        assert_eq!(unsealed.block_id(), id, "block_id depends on seal or commit");
        unsealed.clerk_sig = [!block.header.clerk_sig[0]; 64];
        assert_eq!(unsealed.block_id(), id, "block_id depends on clerk_sig");
        let signed = block.header.signing_bytes();
        assert!(signed.starts_with(b"POE1-block") && signed.ends_with(&id));
        assert_eq!(BlockHeader::decode(&block.header.to_bytes()).as_ref(), Ok(&block.header));
        if let Some(cert) = &block.header.commit {
            for vote in cert.iter_votes() {
                assert_eq!(vote.signing_bytes(), cert.signing_bytes());
            }
        }
        for tx in &block.txs {
            let _ = (tx.id(), tx.signing_bytes());
        }
    }
    // The header alone, from the same bytes.
    if let Ok(header) = BlockHeader::decode(data) {
        assert_eq!(header.to_bytes(), data, "BlockHeader re-encodes differently");
    }
});
