//! `mesh::node::Control::parse` never panics and whatever it accepts re-emits to the same
//! bytes; the same bytes fed to a `Mesh` as a datagram never panic it either.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mesh::Identity;
use mesh::link::Acceptor;
use mesh::node::{Control, Mesh, MeshConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Control::parse(data) {
        let v = c.to_vec();
        assert_eq!(v, data);
        assert_eq!(Control::parse(&v), Ok(c));
    }
    let now = Instant::now();
    let mut m = Mesh::new(
        now,
        mesh::link::Tai64N::default(),
        Identity::from_bytes([7; 32]),
        MeshConfig::default(),
        Acceptor::allow_all(),
    );
    m.handle_datagram(now, "10.0.0.1:4500".parse().expect("addr"), data);
    while m.poll_transmit(now).is_some() {}
    m.handle_timeout(now);
});
