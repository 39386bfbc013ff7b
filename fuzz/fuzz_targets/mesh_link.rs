//! Arbitrary packets never panic a mesh `Acceptor` or an established `Link` (fed raw, or behind
//! a valid transport header addressed to the live session so the bytes reach the replay window
//! and the AEAD), and never yield plaintext.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mesh::link::{Accepted, Acceptor, AcceptorConfig, Link, LinkConfig};
use mesh::packet::{Packet, Transport};
use mesh::Identity;

fn pair(now: Instant) -> Option<(Link, Link, Acceptor)> {
    let (ida, idb) = (Identity::from_bytes([1; 32]), Identity::from_bytes([2; 32]));
    let (mut a, init) = Link::connect(now,mesh::link::Tai64N::default(), &ida, idb.public_key(), LinkConfig::default()).ok()?;
    let mut acc = Acceptor::new(now,mesh::link::Tai64N::default(), &idb, AcceptorConfig::default(), Acceptor::allow_all());
    let Ok(Accepted::Link { link, reply: Some(resp) }) = acc.handle(now, &init, 0) else {
        return None;
    };
    let mut b = *link;
    a.handle(now, &resp).ok()?;
    let confirm = a.poll_transmit()?;
    b.handle(now, &confirm).ok()?;
    Some((a, b, acc))
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let Some((mut a, mut b, mut acc)) = pair(now) else { return };
    let Some((&mode, rest)) = data.split_first() else { return };
    for (i, chunk) in rest.split(|&x| x == 0xff).enumerate() {
        let t = now + Duration::from_millis(i as u64 * u64::from(mode));
        let _ = acc.handle(t, chunk, u64::from(mode));
        let _ = a.handle(t, chunk);
        if mode & 1 == 1 {
            let idx = b.local_indices().first().copied().unwrap_or(0);
            let counter = u64::from(mode);
            if let Ok(p) = (Packet::Transport(Transport { receiver: idx, counter, ciphertext: chunk })).to_vec() {
                assert!(b.handle(t, &p).is_err(), "forged transport packet authenticated");
            }
        } else {
            assert!(!matches!(b.handle(t, chunk), Ok(Some(_))), "junk decrypted to data");
        }
        a.handle_timeout(t);
        b.handle_timeout(t);
        acc.handle_timeout(t);
        while a.poll_transmit().is_some() {}
        while b.poll_transmit().is_some() {}
    }
});
