//! Shared helpers of the node tests: a star network of `MeshEndpoint`s.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mesh::Hashname;
use mesh::link::Acceptor;
use mesh::node::sim::{MeshEndpoint, Nat, PORT, identity, node_ip};
use mesh::node::{Mesh, MeshConfig};
use sim_netem::{EndpointId, LinkConfig, Sim};

pub const SEED: u64 = 42;

pub struct Net {
    pub sim: Sim,
    pub eps: Vec<EndpointId>,
    pub hns: Vec<Hashname>,
    pub keys: Vec<[u8; 32]>,
}

pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(node_ip(i)), PORT)
}

/// `n` nodes on a star; `cfg(i)` gives node i's config; NATed nodes admit only `allow(i)`.
pub fn star(
    n: usize,
    cfg: impl Fn(usize) -> MeshConfig,
    nat: impl Fn(usize) -> Option<Vec<usize>>,
) -> Net {
    let mut sim = Sim::new(SEED);
    let core = sim.add_router("core");
    let ids: Vec<_> = (0..n).map(|i| identity(SEED, i)).collect();
    let mut eps = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let h = sim.add_host(node_ip(i));
        sim.add_duplex_droptail(
            h,
            core,
            LinkConfig::new(50_000_000, Duration::from_millis(5)),
        );
        let mesh = Mesh::new(
            sim.now(),
            mesh::link::Tai64N::default(),
            id.clone(),
            cfg(i),
            Acceptor::allow_all(),
        );
        let mut ep = MeshEndpoint::new(mesh);
        if let Some(allow) = nat(i) {
            ep.nat = Some(Nat {
                allow: allow.iter().map(|&j| IpAddr::V4(node_ip(j))).collect(),
                ..Nat::default()
            });
        }
        eps.push(sim.attach(h, PORT, Box::new(ep)));
    }
    sim.build_routes();
    Net {
        sim,
        eps,
        hns: ids.iter().map(|i| i.hashname()).collect(),
        keys: ids.iter().map(|i| i.public_key()).collect(),
    }
}

impl Net {
    pub fn ep(&self, i: usize) -> &MeshEndpoint {
        self.sim.endpoint::<MeshEndpoint>(self.eps[i]).unwrap()
    }

    pub fn with<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut MeshEndpoint, std::time::Instant) -> R,
    ) -> R {
        self.sim
            .with_endpoint::<MeshEndpoint, R>(self.eps[i], f)
            .unwrap()
    }

    /// Node `i` learns node `j` (key, and its address if `with_addr`).
    pub fn learn(&mut self, i: usize, j: usize, with_addr: bool) {
        let (hn, key) = (self.hns[j], self.keys[j]);
        let a = if with_addr { vec![addr(j)] } else { vec![] };
        self.with(i, |e, _| e.mesh.add_peer(hn, key, &a).unwrap());
    }

    pub fn connect(&mut self, i: usize, j: usize) {
        let hn = self.hns[j];
        self.with(i, |e, now| e.mesh.connect(now, hn).unwrap());
    }

    pub fn up(&self, i: usize, j: usize) -> bool {
        self.ep(i).saw_up(self.hns[j])
    }

    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> bool {
        let limit = self.sim.elapsed() + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.sim.elapsed() >= limit {
                return false;
            }
            self.sim.run_for(Duration::from_millis(50));
        }
    }

    pub fn received(&self, i: usize, from: usize) -> usize {
        self.ep(i).received.get(&self.hns[from]).map_or(0, Vec::len)
    }

    /// Opens a reliable channel i → j and writes `data` (must fit the send buffer).
    pub fn send(&mut self, i: usize, j: usize, data: &[u8]) {
        let hn = self.hns[j];
        self.with(i, |e, _| {
            let ch = e.mesh.open_channel(hn, "data", true).unwrap();
            e.mesh.send(hn, ch, data).unwrap();
        });
    }
}

pub fn pattern(len: usize, k: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u32::from(k)) as u8
                ^ (i >> 8) as u8
        })
        .collect()
}
