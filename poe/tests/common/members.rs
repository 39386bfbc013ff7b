//! The small RSA-2048 devnet and node set-up shared by the consensus-node simulations
//! (`node_sim`, `node_relock`, `node_restart`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use poe::devnet::{DevNode, Devnet};
use poe::node::{Node, NodeConfig};
use poe::verify::Params;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

/// Level-1 members of the devnet.
pub const N1: usize = 7;
/// Level-2 members of the devnet.
pub const N2: usize = 4;

/// The 7 + 4 devnet of `seed` (k = s = 2), built once per test binary into `cell`.
pub fn devnet(cell: &'static OnceLock<Devnet>, seed: u64) -> &'static Devnet {
    cell.get_or_init(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params = Params {
            expected_candidates: 2,
            expected_sealers: 2,
        };
        Devnet::new(&mut rng, N1, N2, params, 2048).expect("devnet")
    })
}

/// Member `i`: level-1 first, then level-2.
pub fn dev_node(d: &Devnet, i: usize) -> &DevNode {
    if i < N1 {
        &d.level1[i]
    } else {
        &d.level2[i - N1]
    }
}

/// A 100 ms candidacy window and a 1 s round timeout, defaults otherwise.
pub fn config() -> NodeConfig {
    NodeConfig {
        candidacy_window: Duration::from_millis(100),
        round_timeout: Duration::from_millis(1_000),
        ..NodeConfig::default()
    }
}

/// Member `i`'s node on the genesis of `d`.
pub fn make_node(d: &Devnet, i: usize, now: Instant, config: NodeConfig) -> Node {
    let dn = dev_node(d, i);
    Node::new(
        now,
        dn.sig.clone(),
        dn.vrf.clone(),
        d.members.clone(),
        d.params,
        d.genesis,
        config,
    )
    .expect("node")
}
