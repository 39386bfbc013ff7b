//! Arbitrary bytes fed to `TunnelSet::decapsulate` and `Tunnel::decapsulate` never panic and
//! never deliver a packet to the TUN device (nothing authenticates without the keys).
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mef_router::tunnel::{
    PrivateKey, Tai64N, TunnResult, Tunnel, TunnelConfig, TunnelSet, TunnelSetConfig,
};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let ours = PrivateKey::from_bytes([1; 32]);
    let theirs = PrivateKey::from_bytes([2; 32]);
    let mut set = TunnelSet::new(ours.clone(), TunnelSetConfig::default());
    let _ = set.add_peer(theirs.public_key(), TunnelConfig::default(), now, Tai64N::now());
    let mut out = vec![0u8; 4096];
    let src = "192.0.2.1:51820".parse().expect("literal address");
    let (_, r) = set.decapsulate(now, src, data, &mut out);
    assert!(!matches!(r, TunnResult::WriteToTunnel(_)));
    let mut t = Tunnel::new(ours, theirs.public_key(), TunnelConfig::default(), now, Tai64N::now());
    assert!(!matches!(t.decapsulate(now, data, &mut out), TunnResult::WriteToTunnel(_)));
});
