//! Arbitrary bytes fed to the CARv1 reader never panic, and every block it yields hashes to its CID.
#![no_main]

use firmware::car::CarReader;
use firmware::unixfs::verify_block;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = CarReader::new(data) else {
        return;
    };
    for item in reader {
        match item {
            Ok((cid, block)) => assert!(verify_block(&cid, &block).is_ok()),
            Err(_) => break,
        }
    }
});
