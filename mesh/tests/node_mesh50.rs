//! The 50-node simulated mesh: 40 % of the nodes behind NATs, router hints as seeds; every
//! pair must connect (directly or through a router) and relayed pairs must go direct once the
//! harness opens their paths.
#![allow(clippy::unwrap_used)]

use mesh::node::sim::{MeshSimConfig, run_mesh_sim};

#[test]
fn fifty_node_mesh_connects_every_pair_and_upgrades() {
    let cfg = MeshSimConfig::default();
    let r = run_mesh_sim(&cfg);
    println!("{r:#?}");
    println!(
        "pairs_connected_fraction={:.3} direct_upgrade_fraction={:.3} relay_connect_median_s={:.3} relay_connect_max_s={:.3}",
        r.pairs_connected_fraction,
        r.direct_upgrade_fraction,
        r.relay_connect_median_s,
        r.relay_connect_max_s
    );
    assert_eq!(r.nodes, 50);
    assert_eq!(r.unreachable, 20);
    assert_eq!(r.pairs, 1225);
    assert!(
        r.pairs_relayed > 100,
        "NATed pairs must be relayed first: {r:?}"
    );
    assert!(r.relayed_at_open > 0, "{r:?}");
    assert_eq!(r.pairs_connected_fraction, 1.0, "{r:?}");
    assert!(r.direct_upgrade_fraction >= 0.99, "{r:?}");
    assert!(r.relayed_packets > 0 && r.nat_filtered > 0);
}
