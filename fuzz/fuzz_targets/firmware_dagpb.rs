//! Arbitrary bytes fed to the dag-pb and UnixFS `Data` decoders never panic; whatever decodes
//! re-encodes and decodes to the same value.
#![no_main]

use firmware::unixfs::dagpb::{PbNode, UnixFsData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(node) = PbNode::decode(data) {
        let again = PbNode::decode(&node.encode());
        assert_eq!(again.as_ref(), Ok(&node));
        if let Some(d) = &node.data {
            let _ = UnixFsData::decode(d);
        }
    }
    if let Ok(fs) = UnixFsData::decode(data) {
        let again = UnixFsData::decode(&fs.encode());
        assert_eq!(again.as_ref(), Ok(&fs));
    }
});
