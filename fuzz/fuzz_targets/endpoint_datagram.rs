//! Arbitrary datagrams fed to endpoints never panic: to a fresh server, and to both ends of an
//! established connection, raw or behind a valid header addressed to the live connection (so the
//! bytes reach the anti-replay window and the AEAD).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mef_transport::wire::{Header, PacketType, HEADER_LEN};
use mef_transport::{Config, Endpoint, StaticKeypair};

fn pair(now: Instant) -> Option<(Endpoint, Endpoint, SocketAddr, SocketAddr)> {
    let ca: SocketAddr = "10.0.0.1:1".parse().ok()?;
    let sa: SocketAddr = "10.0.0.2:2".parse().ok()?;
    let mut client = Endpoint::new(Config::default(), StaticKeypair::from_secret([1; 32]), [3; 32]);
    let mut server = Endpoint::new(Config::default(), StaticKeypair::from_secret([2; 32]), [4; 32]);
    client.connect(now, sa, server.public_key()).ok()?;
    for _ in 0..4 {
        while let Some(t) = client.poll_transmit(now) {
            server.handle_datagram(now, ca, &t.payload);
        }
        while let Some(t) = server.poll_transmit(now) {
            client.handle_datagram(now, sa, &t.payload);
        }
    }
    Some((client, server, ca, sa))
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let Some((mut client, mut server, ca, sa)) = pair(now) else { return };
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut dgram = rest.to_vec();
    if mode & 1 == 1 && dgram.len() >= HEADER_LEN {
        // Give the bytes a valid header for the server's live connection.
        let cid = server.connections().next().and_then(|h| server.connection(h)).map(|c| c.local_cid());
        if let Ok(mut h) = Header::decode(&dgram).or_else(|_| {
            let mut b = [0u8; HEADER_LEN];
            Header {
                packet_type: PacketType::Data,
                flags: 0,
                hops: 0,
                conn_id: 0,
                packet_number: 0,
                demand_kbps: 0,
                current_rate_kbps: 0,
                stamp_kbps: 0,
                rtt_us: 0,
            }
            .emit(&mut b);
            Header::decode(&b)
        }) {
            h.conn_id = cid.unwrap_or(0);
            h.emit(&mut dgram);
        }
    }
    server.handle_datagram(now, ca, &dgram);
    client.handle_datagram(now, sa, &dgram);
    let mut fresh = Endpoint::new(Config::default(), StaticKeypair::from_secret([5; 32]), [6; 32]);
    fresh.handle_datagram(now, ca, &dgram);
    for ep in [&mut server, &mut client, &mut fresh] {
        while ep.poll_transmit(now).is_some() {}
        while ep.poll_event().is_some() {}
        let later = now + Duration::from_secs(60);
        ep.handle_timeout(later);
        while ep.poll_transmit(later).is_some() {}
    }
});
