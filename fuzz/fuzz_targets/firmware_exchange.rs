//! Arbitrary bytes fed to the exchange message decoder never panic; whatever decodes re-encodes
//! to the same bytes; a session and a server fed the bytes do not panic either.
#![no_main]

use std::time::Instant;

use firmware::exchange::{Message, PeerId, Server, ServerConfig, Session, SessionConfig};
use firmware::unixfs::{MemoryBlocks, RAW_CODEC, cid_v1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        assert_eq!(msg.encode().as_deref(), Ok(data));
    }
    let now = Instant::now();
    let mut session = Session::new(cid_v1(RAW_CODEC, b"root"), SessionConfig::default());
    session.add_peer(now, PeerId(1));
    session.handle_message(now, PeerId(1), data);
    while session.poll_event().is_some() {}
    while session.poll_transmit().is_some() {}
    let mut server = Server::new(MemoryBlocks::default(), ServerConfig::default());
    let _ = server.handle_message(PeerId(1), data);
    while server.poll_transmit().is_some() {}
});
