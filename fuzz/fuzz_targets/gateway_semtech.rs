//! `gateway::lora::semtech::Packet::parse` never panics; an accepted packet re-emits to bytes
//! that parse again to a packet of the same type and token (not byte-identical: JSON spacing and
//! field order are free); the bytes as a datagram never panic the sans-IO `SemtechServer`, whose
//! only replies are 4-byte ACKs echoing the token.
#![no_main]

use gateway::lora::semtech::Packet;
use gateway::lora::server::{SemtechServer, ServerConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        let bytes = p.emit().expect("accepted packet re-emits");
        let q = Packet::parse(&bytes).expect("re-emitted packet parses");
        assert_eq!((q.identifier(), q.token()), (p.identifier(), p.token()));
    }
    let mut server = SemtechServer::new(ServerConfig { max_forwarders: 2, max_malformed_sources: 2, ..ServerConfig::default() });
    let from = std::net::SocketAddr::from(([127, 0, 0, 1], 1700));
    for now in 0..2 {
        let handled = server.handle_datagram(now, from, data);
        if let Some(reply) = handled.reply {
            assert_eq!(reply.len(), 4);
            assert_eq!(&reply[..3], &data[..3]);
        }
    }
});
