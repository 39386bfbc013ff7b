//! The tokio driver on real UDP sockets on loopback: two nodes connect by hashname (one
//! configured as the other's seed) and move 1 MiB over a reliable encrypted channel both ways;
//! two nodes find each other by mDNS on `lo` and open a channel with no configuration at all.

use std::net::SocketAddr;
use std::time::Duration;

use mesh::channel::{ChannelEvent, ChannelId};
use mesh::discovery::{InterfaceSelection, MdnsConfig, PeerRecord};
use mesh::driver::{self, DriverConfig, DriverEvent, MeshHandle};
use mesh::link::Acceptor;
use mesh::node::MeshEvent;
use mesh::{Hashname, Identity};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const TIMEOUT: Duration = Duration::from_secs(30);

fn identity(seed: u64) -> Identity {
    Identity::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

fn loopback_config() -> DriverConfig {
    DriverConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        mdns: None,
        ..DriverConfig::default()
    }
}

/// Waits for the first event `f` maps to `Some`, failing after [`TIMEOUT`].
async fn wait<T>(h: &mut MeshHandle, mut f: impl FnMut(DriverEvent) -> Option<T>) -> T {
    let fut = async {
        loop {
            let ev = h.next_event().await.expect("driver running");
            if let Some(t) = f(ev) {
                return t;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .expect("event within the timeout")
}

/// Receives exactly `len` bytes on `(peer, ch)`, pulling after each `Readable`.
async fn receive(h: &mut MeshHandle, peer: Hashname, ch: ChannelId, len: usize) -> Vec<u8> {
    let mut got = h.recv(peer, ch, len).await.expect("recv");
    while got.len() < len {
        wait(h, |ev| match ev {
            DriverEvent::Mesh(MeshEvent::Channel {
                event: ChannelEvent::Readable { id },
                ..
            }) if id == ch => Some(()),
            _ => None,
        })
        .await;
        let more = h.recv(peer, ch, len - got.len()).await.expect("recv");
        got.extend_from_slice(&more);
    }
    got
}

/// Sends all of `data`, waiting for `Writable` whenever the send buffer is full.
async fn send_all(h: &mut MeshHandle, peer: Hashname, ch: ChannelId, data: &[u8]) {
    for chunk in data.chunks(16 * 1024) {
        loop {
            match h.send(peer, ch, chunk).await {
                Ok(()) => break,
                Err(driver::DriverError::Mesh(mesh::node::MeshError::Channel(
                    mesh::channel::ChannelError::WouldBlock,
                ))) => {
                    wait(h, |ev| match ev {
                        DriverEvent::Mesh(MeshEvent::Channel {
                            event: ChannelEvent::Writable { id },
                            ..
                        }) if id == ch => Some(()),
                        _ => None,
                    })
                    .await;
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn two_nodes_by_seed_exchange_a_mebibyte_each_way() {
    let a_id = identity(1);
    let b_id = identity(2);
    let b_key = b_id.public_key();
    let mut b = driver::start(b_id, loopback_config(), Acceptor::allow_all())
        .await
        .expect("start B");
    let seed = PeerRecord {
        hashname: b.hashname(),
        static_key: b_key,
        addrs: vec![b.local_addr()],
    };
    let mut a = driver::start(
        a_id,
        DriverConfig {
            seeds: vec![seed],
            ..loopback_config()
        },
        Acceptor::allow_all(),
    )
    .await
    .expect("start A");
    let (ha, hb) = (a.hashname(), b.hashname());

    // A connected to its seed by itself; both see the link up on a direct path.
    wait(&mut a, |ev| match ev {
        DriverEvent::Mesh(MeshEvent::LinkUp { peer, .. }) if peer == hb => Some(()),
        _ => None,
    })
    .await;
    wait(&mut b, |ev| match ev {
        DriverEvent::Mesh(MeshEvent::LinkUp { peer, .. }) if peer == ha => Some(()),
        _ => None,
    })
    .await;

    let ch = a.open_channel(hb, "readings", true).await.expect("open");
    let data = pattern(1 << 20, 7);
    // The sender and the receiver run together: the receive window (256 KiB) is smaller than
    // what is sent, so the sender waits for the receiver to take bytes.
    let received = async {
        let (opened, kind) = wait(&mut b, |ev| match ev {
            DriverEvent::Mesh(MeshEvent::Channel {
                peer,
                event: ChannelEvent::Opened { id, kind, reliable },
            }) if peer == ha && reliable => Some((id, kind)),
            _ => None,
        })
        .await;
        assert_eq!(kind, "readings");
        assert_eq!(opened, ch);
        receive(&mut b, ha, ch, data.len()).await
    };
    let ((), got) = tokio::join!(send_all(&mut a, hb, ch, &data), received);
    assert!(got == data, "B received A's mebibyte intact and in order");

    // And back on the same channel.
    let reply = pattern(1 << 20, 99);
    let ((), got) = tokio::join!(
        send_all(&mut b, ha, ch, &reply),
        receive(&mut a, hb, ch, reply.len())
    );
    assert!(got == reply, "A received B's mebibyte intact and in order");

    let stats = a.stats().await.expect("stats");
    assert_eq!(stats.links_up, 1);
    assert_eq!(stats.links_relayed, 0);
    a.shutdown().await.expect("A stops cleanly");
    b.shutdown().await.expect("B stops cleanly");
}

#[tokio::test(flavor = "current_thread")]
async fn two_nodes_discover_each_other_by_mdns_and_open_a_channel() {
    // A private mDNS port on `lo` (multicast stays on the loopback interface), so the test
    // neither disturbs nor is disturbed by a real mDNS responder.
    let mdns = MdnsConfig {
        interfaces: InterfaceSelection::Named(vec!["lo".into()]),
        mdns_port: 30_000 + (std::process::id() % 20_000) as u16,
        ..MdnsConfig::default()
    };
    let cfg = || DriverConfig {
        mdns: Some(mdns.clone()),
        ..loopback_config()
    };
    let mut a = driver::start(identity(11), cfg(), Acceptor::allow_all())
        .await
        .expect("start A");
    let mut b = driver::start(identity(12), cfg(), Acceptor::allow_all())
        .await
        .expect("start B");
    let (ha, hb) = (a.hashname(), b.hashname());

    // A discovers B, and a link comes up (A connects to what it discovers, and so does B:
    // whichever is first, the other's initiation meets an existing link), in either order.
    let (mut found, mut up) = (None, false);
    wait(&mut a, |ev| {
        match ev {
            DriverEvent::Discovered(r) if r.hashname == hb => found = Some(r),
            DriverEvent::Mesh(MeshEvent::LinkUp { peer, .. }) if peer == hb => up = true,
            _ => {}
        }
        (found.is_some() && up).then_some(())
    })
    .await;
    let rec = found.expect("found");
    assert!(rec.addrs.iter().any(|x| x.port() == b.local_addr().port()));
    let ch = a.open_channel(hb, "chain", true).await.expect("open");
    let msg = b"a block header for the gateway's light client".to_vec();
    a.send(hb, ch, &msg).await.expect("send");
    let id = wait(&mut b, |ev| match ev {
        DriverEvent::Mesh(MeshEvent::Channel {
            peer,
            event: ChannelEvent::Opened { id, kind, .. },
        }) if peer == ha && kind == "chain" => Some(id),
        _ => None,
    })
    .await;
    assert_eq!(receive(&mut b, ha, id, msg.len()).await, msg);
    a.shutdown().await.expect("A stops");
    b.shutdown().await.expect("B stops");
}

#[test]
fn a_config_file_gives_the_driver_settings() {
    let b = identity(21);
    let text = format!(
        "[mesh]\nlisten = \"127.0.0.1:4999\"\nmdns = false\n\n[[mesh.seed]]\nhashname = \"{}\"\nkey = \"{}\"\naddrs = [\"127.0.0.1:5000\"]\n",
        b.hashname(),
        mesh::discovery::record::encode_key(&b.public_key())
    );
    let file = mesh::discovery::MeshFileConfig::from_toml(&text).expect("config");
    let cfg = DriverConfig::from_file(&file);
    assert_eq!(cfg.bind, SocketAddr::from(([127, 0, 0, 1], 4999)));
    assert!(cfg.mdns.is_none());
    assert_eq!(cfg.seeds.len(), 1);
    assert_eq!(cfg.seeds[0].hashname, b.hashname());
    assert_eq!(cfg.seeds[0].static_key, b.public_key());
}
