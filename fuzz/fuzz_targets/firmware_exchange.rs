//! Arbitrary bytes fed to the exchange message decoder never panic; whatever decodes re-encodes
//! to the same bytes; a session and a server fed the bytes do not panic either; an engine fed
//! them as a raw stream (deframing) and as one framed message does not panic, and forgets a
//! peer it disconnects.
#![no_main]

use std::time::Instant;

use firmware::exchange::{
    Engine, EngineEvent, Message, PeerId, PeerKind, Server, ServerConfig, Session, SessionConfig,
};
use firmware::unixfs::{MemoryBlocks, RAW_CODEC, cid_v1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        assert_eq!(msg.encode().as_deref(), Ok(data));
    }
    let now = Instant::now();
    let root = cid_v1(RAW_CODEC, b"root");
    let mut session = Session::new(root, SessionConfig::default());
    session.add_peer(now, PeerId(1));
    session.handle_message(now, PeerId(1), data);
    while session.poll_event().is_some() {}
    while session.poll_transmit().is_some() {}
    let mut server = Server::new(MemoryBlocks::default(), ServerConfig::default());
    let _ = server.handle_message(PeerId(1), data);
    while server.poll_transmit().is_some() {}

    let mut framed = (data.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(data);
    for stream in [data, &framed[..]] {
        let mut engine = Engine::new(MemoryBlocks::default(), ServerConfig::default());
        engine.connect(now, PeerId(1), PeerKind::Swarm);
        engine.connect(now, PeerId(2), PeerKind::Provider);
        let _ = engine.fetch(now, root, SessionConfig::default(), None);
        engine.handle_bytes(now, PeerId(1), stream);
        let mut dropped = false;
        while let Some(e) = engine.poll_event() {
            if matches!(e, EngineEvent::Disconnect { peer: PeerId(1), .. }) {
                dropped = true;
            }
        }
        for p in [PeerId(1), PeerId(2)] {
            let n = engine.peek_transmit(p, 1 << 20).len();
            engine.advance_transmit(p, n);
        }
        if dropped {
            assert!(engine.traffic(PeerId(1)).is_none());
        }
    }
});
