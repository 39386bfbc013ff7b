//! The mesh figures of `mef bench mesh` that need the mesh node (`mesh::node`): reliable
//! channel goodput through a relay over real loopback UDP sockets, and the 50-node simulated
//! mesh (`mesh::node::sim`).

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mesh::channel::{ChannelError, ChannelEvent};
use mesh::link::Acceptor;
use mesh::node::sim::{MeshSimConfig, MeshSimReport, run_mesh_sim};
use mesh::node::{Mesh, MeshConfig, MeshError, MeshEvent, Path, RelayLimits};
use mesh::{Hashname, Identity};
use serde::Serialize;

/// One transfer from A to B through the router R.
#[derive(Debug, Clone, Serialize)]
pub struct RelayedRun {
    /// Payload bytes delivered in order to B's application.
    pub bytes: u64,
    /// Wall-clock seconds from the first write to the last byte delivered.
    pub seconds: f64,
    /// Goodput, Mbit/s.
    pub mbps: f64,
    /// Packets R relayed.
    pub relayed_packets: u64,
    /// Datagrams between A and B that the simulated NAT dropped (their direct probes).
    pub nat_dropped: u64,
    /// Whether the A–B link stayed relayed to the end.
    pub stayed_relayed: bool,
}

struct Node {
    sock: UdpSocket,
    mesh: Mesh,
}

/// A, R and B on three loopback sockets driven by one thread. A and B each link with R; A
/// knows B only by key and router hint; datagrams between A's and B's sockets are dropped, as
/// by two NATs, so the A–B link is introduced and relayed by R (whose relay limits are lifted:
/// this measures the relay path, not its rate limit). Then `total` bytes go from A to B on a
/// reliable channel.
pub fn relayed(total: u64) -> anyhow::Result<RelayedRun> {
    let now = Instant::now();
    let ids: Vec<Identity> = (0..3u8)
        .map(|i| Identity::from_bytes([0x70 + i; 32]))
        .collect();
    let hns: Vec<Hashname> = ids.iter().map(Identity::hashname).collect();
    let keys: Vec<[u8; 32]> = ids.iter().map(Identity::public_key).collect();
    let mut nodes = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let sock = UdpSocket::bind("127.0.0.1:0").context("binding a loopback socket")?;
        sock.set_nonblocking(true)?;
        let mut cfg = MeshConfig::default();
        if i == 1 {
            cfg.relay = RelayLimits {
                packets_per_sec: 10_000_000,
                packet_burst: 1_000_000,
                bytes_per_sec: 10_000_000_000,
                byte_burst: 1 << 30,
                ..RelayLimits::default()
            };
        }
        nodes.push(Node {
            sock,
            mesh: Mesh::new(
                now,
                mesh::link::Tai64N::now(),
                id,
                cfg,
                Acceptor::allow_all(),
            ),
        });
    }
    let addrs: Vec<SocketAddr> = nodes
        .iter()
        .map(|n| n.sock.local_addr())
        .collect::<Result<_, _>>()?;
    let (a, r, b) = (0, 1, 2);
    for i in [a, b] {
        nodes[i].mesh.add_peer(hns[r], keys[r], &[addrs[r]])?;
        nodes[i].mesh.connect(now, hns[r])?;
    }
    nodes[a].mesh.add_peer(hns[b], keys[b], &[])?;
    nodes[a].mesh.add_router_hint(hns[b], hns[r])?;
    // The NATs: nothing passes between A's and B's sockets.
    let blocked: HashSet<(SocketAddr, SocketAddr)> =
        [(addrs[a], addrs[b]), (addrs[b], addrs[a])].into();
    let mut nat_dropped = 0u64;
    let mut buf = vec![0u8; 65_536];
    let mut delivered = 0u64;
    let mut written = 0u64;
    let mut channel = None;
    let mut asked_b = false;
    let mut start = None;
    let chunk = vec![0xa5u8; 16 * 1024];
    let deadline = now + Duration::from_secs(300);
    while delivered < total {
        let t = Instant::now();
        if t > deadline {
            bail!("relayed transfer incomplete after 300 s ({delivered} of {total} bytes)");
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.mesh.poll_timeout().is_some_and(|d| d <= t) {
                n.mesh.handle_timeout(t);
            }
            while let Some((to, bytes)) = n.mesh.poll_transmit(t) {
                if blocked.contains(&(addrs[i], to)) {
                    nat_dropped += 1;
                    continue;
                }
                // A full socket buffer loses the datagram, like a congested link.
                let _ = n.sock.send_to(&bytes, to);
            }
        }
        for n in nodes.iter_mut() {
            for _ in 0..256 {
                match n.sock.recv_from(&mut buf) {
                    Ok((len, from)) => n.mesh.handle_datagram(Instant::now(), from, &buf[..len]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let links_to_r = nodes[a]
            .mesh
            .peer_info(hns[r])
            .is_some_and(|p| p.path.is_some())
            && nodes[b]
                .mesh
                .peer_info(hns[r])
                .is_some_and(|p| p.path.is_some());
        if links_to_r && !asked_b {
            nodes[a].mesh.connect(Instant::now(), hns[b])?;
            asked_b = true;
        }
        while let Some(ev) = nodes[a].mesh.poll_event() {
            if let MeshEvent::LinkUp { peer, path } = ev
                && peer == hns[b]
            {
                if !matches!(path, Path::Relayed(_)) {
                    bail!("the A–B link came up on {path:?}, not through the relay");
                }
                channel = Some(nodes[a].mesh.open_channel(hns[b], "bulk", true)?);
                start = Some(Instant::now());
            }
        }
        while let Some(ev) = nodes[b].mesh.poll_event() {
            if let MeshEvent::Channel {
                event: ChannelEvent::Data { bytes, .. },
                ..
            } = ev
            {
                delivered += bytes.len() as u64;
            }
        }
        while nodes[r].mesh.poll_event().is_some() {}
        if let Some(ch) = channel {
            while written < total {
                let n = ((total - written) as usize).min(chunk.len());
                match nodes[a].mesh.send(hns[b], ch, &chunk[..n]) {
                    Ok(()) => written += n as u64,
                    Err(MeshError::Channel(ChannelError::WouldBlock)) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let stayed_relayed = matches!(
        nodes[a].mesh.peer_info(hns[b]).and_then(|p| p.path),
        Some(Path::Relayed(_))
    );
    Ok(RelayedRun {
        bytes: delivered,
        seconds,
        mbps: delivered as f64 * 8.0 / seconds.max(1e-9) / 1e6,
        relayed_packets: nodes[r].mesh.stats().relayed_packets,
        nat_dropped,
        stayed_relayed,
    })
}

/// The 50-node simulated mesh of issue 5: 40 % of the nodes behind NATs, two reachable seed
/// routers each; every pair connects, then the NATs open and relayed pairs should go direct.
pub fn mesh50(seed: u64) -> MeshSimReport {
    run_mesh_sim(&MeshSimConfig {
        seed,
        ..MeshSimConfig::default()
    })
}
