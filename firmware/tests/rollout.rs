//! The firmware roll-out over the encrypted mesh over `sim-netem` (feature `sim`): every
//! gateway checks the signed manifest, fetches the image with the real exchange engine over
//! real Noise links and reliable channels, packet by packet, and rebuilds and checks (or
//! stages) the whole image.

use std::time::Duration;

use firmware::sim::{RolloutConfig, RolloutReport, run_rollout};

/// 12 gateways, a 4 MiB image (16 leaves), the manufacturer's uplink at 20 Mbit/s.
fn small(swarm_peers: usize) -> RolloutConfig {
    RolloutConfig {
        image_bytes: 4 << 20,
        gateways: 12,
        swarm_peers,
        manufacturer_up_bps: 20_000_000,
        manufacturer_down_bps: 20_000_000,
        gateway_up_bps: 10_000_000,
        gateway_down_bps: 50_000_000,
        access_delay: Duration::from_millis(5),
        deadline: Duration::from_secs(300),
        ..RolloutConfig::default()
    }
}

fn all_done(r: &RolloutReport, gateways: usize) {
    assert_eq!(r.completed, gateways, "{r:#?}");
    assert_eq!(r.images_verified, gateways, "{r:#?}");
    assert_eq!(r.failed, 0, "{r:#?}");
}

#[test]
fn swarm_rollout_beats_manufacturer_only() {
    let p2p = run_rollout(&small(4));
    let base = run_rollout(&small(0));
    all_done(&p2p, 12);
    all_done(&base, 12);
    let image = p2p.image_bytes as f64;
    // The baseline: the manufacturer sends every gateway the whole image.
    assert!(base.manufacturer_block_bytes as f64 >= 12.0 * image);
    assert_eq!(base.peer_block_bytes, 0);
    // Peer to peer: the manufacturer's budget is 2 copies of each leaf (+ the small root per
    // gateway, + at most a few urgent re-sends); gateways serve the rest.
    assert!(
        (p2p.manufacturer_block_bytes as f64) < 2.5 * image,
        "manufacturer served {} for a {} image",
        p2p.manufacturer_block_bytes,
        p2p.image_bytes
    );
    assert!(p2p.peer_block_bytes as f64 >= 9.0 * image, "{p2p:#?}");
    assert!(p2p.blocks_from_peers > p2p.blocks_from_manufacturer);
    assert!(
        p2p.time_s < 0.6 * base.time_s,
        "p2p {} s, baseline {} s",
        p2p.time_s,
        base.time_s
    );
    // Every packet crossed the simulated uplinks: the manufacturer's wire bytes cover its
    // block bytes plus headers and encryption.
    assert!(p2p.manufacturer_wire_bytes > p2p.manufacturer_block_bytes);
}

#[test]
fn rollout_is_deterministic() {
    let a = run_rollout(&small(4));
    let b = run_rollout(&small(4));
    assert_eq!(a.time_s, b.time_s);
    assert_eq!(a.manufacturer_wire_bytes, b.manufacturer_wire_bytes);
    assert_eq!(a.peer_wire_bytes, b.peer_wire_bytes);
    assert_eq!(a.blocks_from_peers, b.blocks_from_peers);
}

#[test]
fn lying_gateways_are_disconnected_and_everyone_gets_the_right_image() {
    let cfg = RolloutConfig {
        liars: 2,
        ..small(4)
    };
    let r = run_rollout(&cfg);
    // Every gateway, the liars included (they fetch honestly), rebuilt the exact image.
    all_done(&r, 12);
    assert!(r.disconnects > 0, "{r:#?}");
}

#[test]
fn rollout_stages_every_image_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = RolloutConfig {
        gateways: 6,
        image_bytes: 1 << 20,
        stage_dir: Some(dir.path().to_path_buf()),
        ..small(3)
    };
    let r = run_rollout(&cfg);
    all_done(&r, 6);
    for i in 1..=6 {
        let gw = dir.path().join(format!("gw-{i}"));
        let names: Vec<String> = std::fs::read_dir(&gw)
            .expect("staging dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.ends_with("1.1.0.bin")), "{names:?}");
        assert!(
            names.iter().any(|n| n.ends_with("1.1.0.manifest")),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.starts_with(".tmp")), "{names:?}");
        let bin = names.iter().find(|n| n.ends_with(".bin")).expect("bin");
        let len = std::fs::metadata(gw.join(bin)).expect("meta").len();
        assert_eq!(len, 1 << 20);
    }
}

#[test]
fn a_budget_of_one_copy_with_a_liar_holding_some_still_completes() {
    // The manufacturer serves each leaf once; one of the gateways that gets a leaf first is a
    // liar whose copies are refused, so some leaves exist nowhere honest: the urgent re-ask
    // must get them from the manufacturer again rather than stall.
    let cfg = RolloutConfig {
        liars: 3,
        manufacturer_copies: Some(1),
        ..small(3)
    };
    let r = run_rollout(&cfg);
    all_done(&r, 12);
}
