//! Gateways in the firmware swarm (seed 004: devices serve each other) over the real encrypted
//! mesh on loopback: [`FirmwareNode`]s that serve their store and, when a signed manifest
//! appears in their manifest directory, fetch the image as swarm members, verify and stage it;
//! and `mef-gateway firmware serve --manifests …` as a separate process.

mod firmware_common;

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use cid::Cid;
use ed25519_dalek::SigningKey;
use firmware::blockstore::Blockstore;
use firmware::exchange::{PeerKind, Progress, ServerConfig};
use firmware::manifest::{Manifest, Version};
use firmware::unixfs::MemoryBlocks;
use firmware::unixfs::importer::import;
use firmware::update::UpdatePolicy;
use firmware_common::{add_image, loopback, ok, pattern, publish_image, serve_on_loopback};
use gateway::firmware_cli;
use gateway::firmware_net::{FirmwareNode, NodeEvent, NodeReport, UpdateConfig};
use mesh::Identity;
use tokio::sync::watch;

const IMAGE_BYTES: usize = 3 << 20;
const MODEL: &str = "mef-gw";

/// Signs a manifest for `root` and writes it to `out`.
fn publish(key: &SigningKey, v: Version, root: Cid, size: usize, out: &Path) {
    let manifest = Manifest {
        model: MODEL.into(),
        version: v,
        root,
        size: size as u64,
        notes: String::new(),
        released_ms: 0,
    };
    firmware_cli::publish(manifest, key, out).expect("publish");
}

fn maker_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// The update side of a gateway running 1.0.0 and trusting the maker's key.
fn update_config(dir: &Path, name: &str) -> UpdateConfig {
    let policy = UpdatePolicy::new(
        MODEL,
        Version::new(1, 0, 0),
        vec![maker_key().verifying_key()],
    );
    let mut cfg = UpdateConfig::new(
        dir.join(format!("manifests-{name}")),
        policy,
        dir.join(format!("staging-{name}")),
    );
    cfg.poll = Duration::from_millis(300);
    cfg.fetch_timeout = Duration::from_secs(60);
    cfg.retry_after = Duration::from_secs(1);
    cfg
}

/// Events of a node, in order.
type Log = Rc<RefCell<Vec<NodeEvent>>>;

fn recorder(log: &Log) -> impl FnMut(&NodeEvent) + use<> {
    let log = log.clone();
    move |ev| log.borrow_mut().push(ev.clone())
}

fn staged(log: &Log) -> Vec<(PathBuf, Progress)> {
    log.borrow()
        .iter()
        .filter_map(|ev| match ev {
            NodeEvent::Staged { image, progress } => Some((image.path.clone(), *progress)),
            _ => None,
        })
        .collect()
}

/// Runs the maker and gateways `a` and `b` until both gateways staged (or 60 s), then stops
/// all three; each must stop cleanly and each gateway must have staged exactly once. Returns
/// the maker's report and, per gateway, its report and its staging.
async fn run_until_staged(
    maker: FirmwareNode,
    a: FirmwareNode,
    b: FirmwareNode,
) -> (NodeReport, [(NodeReport, Vec<(PathBuf, Progress)>); 2]) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (log_a, log_b): (Log, Log) = Default::default();
    let watching = {
        let logs = [log_a.clone(), log_b.clone()];
        async move {
            wait_staged(&logs, 1).await;
            let _ = stop_tx.send(true);
        }
    };
    let (served, ra, rb, ()) = tokio::join!(
        maker.run(stopper(&stop_rx), |_| {}),
        a.run(stopper(&stop_rx), recorder(&log_a)),
        b.run(stopper(&stop_rx), recorder(&log_b)),
        watching
    );
    let served = served.expect("maker stops cleanly");
    let mut out = Vec::new();
    for (name, report, log) in [("a", ra, log_a), ("b", rb, log_b)] {
        let report = report.unwrap_or_else(|e| panic!("{name} stops cleanly: {e}"));
        let staged = staged(&log);
        assert_eq!(staged.len(), 1, "{name} staged once: {:?}", log.borrow());
        out.push((report, staged));
    }
    let [a, b]: [_; 2] = out.try_into().expect("two gateways");
    (served, [a, b])
}

/// Waits until every log holds `n` stagings, or 60 s.
async fn wait_staged(logs: &[Log], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && logs.iter().any(|l| staged(l).len() < n) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The maker signs 1.1.0 of `root` into the manifest directory of each gateway in `names`.
fn release(dir: &Path, names: &[&str], root: Cid, size: usize) {
    for name in names {
        let m = dir.join(format!("manifests-{name}"));
        fs::create_dir_all(&m).expect("manifest dir");
        publish(
            &maker_key(),
            Version::new(1, 1, 0),
            root,
            size,
            &m.join("fw-1.1.0.manifest"),
        );
    }
}

/// A gateway running the update flow (`update_config(dir, name)`), serving with defaults.
async fn gateway(dir: &Path, name: &str, id: u8) -> FirmwareNode {
    node(
        dir,
        name,
        id,
        Some(update_config(dir, name)),
        ServerConfig::default(),
    )
    .await
}

/// A node on loopback, identity `[id; 32]`, over the store `dir/store-NAME`.
async fn node(
    dir: &Path,
    name: &str,
    id: u8,
    update: Option<UpdateConfig>,
    server: ServerConfig,
) -> FirmwareNode {
    FirmwareNode::start(
        Blockstore::open(dir.join(format!("store-{name}"))).expect("store"),
        Identity::from_bytes([id; 32]),
        loopback(),
        update,
        server,
    )
    .await
    .expect("start node")
}

fn stopper(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + use<> {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_gateway_without_a_provider_gets_the_whole_image_from_its_swarm_peer() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    let data = pattern(IMAGE_BYTES + 777, 21);
    let root = add_image(dir, "image.bin", &data, &dir.join("store-m"));
    let (_, blocks) = import(&data[..], MemoryBlocks::default()).expect("import");
    let total = blocks.blocks.len() as u64;
    release(dir, &["a", "b"], root, data.len());

    let maker = node(dir, "m", 1, None, ServerConfig::default()).await;
    let mut a = gateway(dir, "a", 2).await;
    let mut b = gateway(dir, "b", 3).await;
    // A: the manufacturer as provider, B as swarm peer. B: only A, as swarm peer.
    a.add_peer(maker.peer_addr(), PeerKind::Provider)
        .await
        .expect("a: provider");
    a.add_peer(b.peer_addr(), PeerKind::Swarm)
        .await
        .expect("a: swarm peer");
    b.add_peer(a.peer_addr(), PeerKind::Swarm)
        .await
        .expect("b: swarm peer");

    let (served, [(ra, sa), (rb, sb)]) = run_until_staged(maker, a, b).await;
    let expect_name = format!("{MODEL}-1.1.0.bin");
    for (path, _) in [&sa[0], &sb[0]] {
        assert!(path.ends_with(&expect_name), "{}", path.display());
        assert!(
            fs::read(path).expect("staged image") == data,
            "staged image differs"
        );
    }
    // B had no provider: every block came from A.
    let pb = sb[0].1;
    assert_eq!(pb.blocks_fetched, total);
    assert_eq!(pb.blocks_from_swarm, total, "{pb:?}");
    assert_eq!(pb.blocks_from_providers, 0, "{pb:?}");
    // A served B; the manufacturer served A (and nobody else).
    assert!(ra.stats.served.blocks >= total, "a served {:?}", ra.stats);
    assert_eq!(served.peers, 1, "only a connected to the manufacturer");
    let pa = sa[0].1;
    assert_eq!(pa.blocks_fetched, total);
    // Both run 1.1.0 now and keep the image pinned (to serve it on).
    for (r, store) in [(&ra, "store-a"), (&rb, "store-b")] {
        assert_eq!(r.current, Some(Version::new(1, 1, 0)));
        assert_eq!(r.staged.len(), 1);
        assert!(dir.join(format!("{store}/pins/{root}.pin")).exists());
    }

    // A restarts configured as running 1.0.0 with the 1.1.0 manifest still in its directory:
    // it finds 1.1.0 staged, runs it, and neither fetches nor stages it again.
    let a = gateway(dir, "a", 2).await;
    let log: Log = Log::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (again, ()) = tokio::join!(a.run(stopper(&stop_rx), recorder(&log)), async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = stop_tx.send(true);
    });
    let again = again.expect("a stops cleanly");
    assert_eq!(again.current, Some(Version::new(1, 1, 0)));
    assert!(again.staged.is_empty(), "{:?}", log.borrow());
    assert!(
        !log.borrow()
            .iter()
            .any(|e| matches!(e, NodeEvent::Fetching { .. })),
        "{:?}",
        log.borrow()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn untrusted_and_older_manifests_are_refused_once_and_nothing_is_fetched() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    let data = pattern(600_000, 22);
    let root = add_image(dir, "image.bin", &data, &dir.join("store-m"));
    let m = dir.join("manifests-g");
    fs::create_dir_all(&m).expect("manifest dir");
    // Newer, but signed by a key the gateway does not trust.
    publish(
        &SigningKey::from_bytes(&[8; 32]),
        Version::new(2, 0, 0),
        root,
        data.len(),
        &m.join("untrusted.manifest"),
    );
    // Trusted, but older than the running 1.0.0.
    publish(
        &maker_key(),
        Version::new(0, 9, 0),
        root,
        data.len(),
        &m.join("older.manifest"),
    );
    // Trusted, the running version: ignored without a word.
    publish(
        &maker_key(),
        Version::new(1, 0, 0),
        root,
        data.len(),
        &m.join("same.manifest"),
    );
    // Not a manifest at all: refused; a file with another extension: not read.
    fs::write(m.join("garbage.manifest"), b"not a manifest").expect("garbage");
    fs::write(m.join("notes.txt"), b"ignored").expect("notes");

    let maker = node(dir, "m", 4, None, ServerConfig::default()).await;
    let mut g = gateway(dir, "g", 5).await;
    g.add_peer(maker.peer_addr(), PeerKind::Provider)
        .await
        .expect("provider");
    let log: Log = Log::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (served, report, ()) = tokio::join!(
        maker.run(stopper(&stop_rx), |_| {}),
        g.run(stopper(&stop_rx), recorder(&log)),
        async move {
            // Several polls (every 300 ms).
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = stop_tx.send(true);
        }
    );
    let served = served.expect("maker stops");
    let report = report.expect("gateway stops");

    let events = log.borrow().clone();
    let mut refused: Vec<String> = events
        .iter()
        .filter_map(|ev| match ev {
            NodeEvent::Refused { path, reason } => Some(format!(
                "{}: {reason}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
            )),
            _ => None,
        })
        .collect();
    refused.sort();
    assert_eq!(refused.len(), 3, "each refused once: {events:?}");
    assert!(refused[0].starts_with("garbage.manifest: "), "{refused:?}");
    assert!(
        refused[1].starts_with("older.manifest: downgrade refused"),
        "{refused:?}"
    );
    assert!(
        refused[2].starts_with("untrusted.manifest: manifest signed by an untrusted key"),
        "{refused:?}"
    );
    assert_eq!(events.len(), 3, "no fetch started: {events:?}");
    assert!(report.staged.is_empty());
    assert_eq!(report.current, Some(Version::new(1, 0, 0)));
    assert_eq!(served.stats.served.blocks, 0, "nothing was fetched");
    let store = Blockstore::open(dir.join("store-g")).expect("store g");
    assert!(!store.has(&root).expect("has"), "root not fetched");
    let staging = dir.join("staging-g");
    let staged_files = fs::read_dir(&staging)
        .map(|d| d.count())
        .unwrap_or_default();
    assert_eq!(staged_files, 0, "nothing staged");
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetch_nobody_can_serve_times_out_and_is_retried_without_staging() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    let data = pattern(400_000, 24);
    // The image is imported into a store nobody serves; the manufacturer's node lacks it.
    let root = add_image(dir, "image.bin", &data, &dir.join("store-elsewhere"));
    let m = dir.join("manifests-g");
    fs::create_dir_all(&m).expect("manifest dir");
    publish(
        &maker_key(),
        Version::new(1, 1, 0),
        root,
        data.len(),
        &m.join("fw.manifest"),
    );
    let maker = node(dir, "m", 6, None, ServerConfig::default()).await;
    let mut cfg = update_config(dir, "g");
    cfg.fetch_timeout = Duration::from_millis(800);
    cfg.retry_after = Duration::from_millis(500);
    let mut g = node(dir, "g", 7, Some(cfg), ServerConfig::default()).await;
    g.add_peer(maker.peer_addr(), PeerKind::Provider)
        .await
        .expect("provider");
    let log: Log = Log::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (served, report, ()) = tokio::join!(
        maker.run(stopper(&stop_rx), |_| {}),
        g.run(stopper(&stop_rx), recorder(&log)),
        async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let _ = stop_tx.send(true);
        }
    );
    served.expect("maker stops");
    let report = report.expect("gateway stops");
    let events = log.borrow().clone();
    let fetching = events
        .iter()
        .filter(|ev| matches!(ev, NodeEvent::Fetching { root: r, .. } if *r == root))
        .count();
    let timed_out = events
        .iter()
        .filter(|ev| {
            matches!(ev, NodeEvent::Failed { root: r, reason } if *r == root
                && reason.starts_with("timed out"))
        })
        .count();
    assert!(fetching >= 2, "retried: {events:?}");
    assert!(timed_out >= 1, "timed out: {events:?}");
    assert!(report.staged.is_empty());
    assert_eq!(report.current, Some(Version::new(1, 0, 0)));
    let staged_files = fs::read_dir(dir.join("staging-g"))
        .map(|d| d.count())
        .unwrap_or_default();
    assert_eq!(staged_files, 0, "nothing staged");
}

#[test]
fn cli_serve_with_manifests_stages_an_image_served_by_another_node() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    let data = pattern(IMAGE_BYTES + 4_321, 23);
    fs::write(dir.join("image.bin"), &data).expect("write image");
    ok(dir, &["keygen", "--mesh", "--out", "maker-mesh.key"]);
    ok(dir, &["keygen", "--mesh", "--out", "gw-mesh.key"]);
    let maker = ok(dir, &["keygen", "--out", "maker.key"]).trim().to_owned();
    fs::create_dir_all(dir.join("manifests")).expect("manifest dir");
    // The manufacturer publishes into its own store.
    publish_image(dir, "maker.key", MODEL, "1.2.0", "store-m");
    let (_maker_node, _, maker_peer) = serve_on_loopback(dir, "store-m", "maker-mesh.key", &[]);
    let (_gateway, gw_out, _) = serve_on_loopback(
        dir,
        "store-g",
        "gw-mesh.key",
        &[
            "--manifests",
            "manifests",
            "--trust",
            &maker,
            "--model",
            MODEL,
            "--current",
            "1.0.0",
            "--staging",
            "staging",
            "--provider",
            &maker_peer,
        ],
    );
    // The manifest arrives while the gateway runs.
    fs::copy(dir.join("fw.manifest"), dir.join("manifests/fw.manifest")).expect("copy manifest");
    let deadline = Instant::now() + Duration::from_secs(60);
    let staged = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no `staged` line within 60 s");
        match gw_out.recv_timeout(left) {
            Ok(line) => {
                if let Some(path) = line.strip_prefix("staged ") {
                    break PathBuf::from(path);
                }
            }
            Err(e) => panic!("no `staged` line: {e}"),
        }
    };
    assert!(
        staged.ends_with(format!("{MODEL}-1.2.0.bin")),
        "{}",
        staged.display()
    );
    assert!(fs::read(dir.join(&staged)).expect("staged") == data);
    assert!(
        dir.join("staging")
            .join(format!("{MODEL}-1.2.0.manifest"))
            .exists()
    );
}

/// Two gateways, each with the manufacturer as provider and the other as swarm peer, fetch one
/// image; returns the manufacturer's report and both gateways' fetch progress.
async fn two_gateways_and_a_maker(
    dir: &Path,
    data: &[u8],
    maker_server: ServerConfig,
) -> (NodeReport, [Progress; 2]) {
    let root = add_image(dir, "image.bin", data, &dir.join("store-m"));
    release(dir, &["a", "b"], root, data.len());
    let maker = node(dir, "m", 1, None, maker_server).await;
    let mut gateways = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let id = 2 + i as u8;
        gateways.push(gateway(dir, name, id).await);
    }
    let (pa, pb) = (gateways[0].peer_addr(), gateways[1].peer_addr());
    for (g, other) in gateways.iter_mut().zip([pb, pa]) {
        g.add_peer(maker.peer_addr(), PeerKind::Provider)
            .await
            .expect("provider");
        g.add_peer(other, PeerKind::Swarm)
            .await
            .expect("swarm peer");
    }
    let [a, b]: [FirmwareNode; 2] = gateways.try_into().expect("two gateways");
    let (served, [(_, sa), (_, sb)]) = run_until_staged(maker, a, b).await;
    for (path, _) in [&sa[0], &sb[0]] {
        assert!(
            fs::read(path).expect("staged") == data,
            "staged image differs"
        );
    }
    (served, [sa[0].1, sb[0].1])
}

#[tokio::test(flavor = "current_thread")]
async fn a_super_seeding_maker_serves_each_leaf_once_and_the_swarm_the_rest() {
    let data = pattern((8 << 20) + 99, 31);
    let (_, blocks) = import(&data[..], MemoryBlocks::default()).expect("import");
    let total = blocks.blocks.len() as u64;
    let leaves = blocks
        .blocks
        .keys()
        .filter(|c| c.codec() == firmware::unixfs::RAW_CODEC)
        .count() as u64;
    let t = tempfile::tempdir().expect("tempdir");
    let (open, _) = two_gateways_and_a_maker(t.path(), &data, ServerConfig::default()).await;
    let t = tempfile::tempdir().expect("tempdir");
    let budget = firmware_cli::server_config(Some(1));
    let (seeding, progress) = two_gateways_and_a_maker(t.path(), &data, budget).await;
    eprintln!(
        "maker served {} blocks without a budget, {} with one copy per leaf ({total} blocks, \
         {leaves} leaves); gateways: {progress:?}",
        open.stats.served.blocks, seeding.stats.served.blocks
    );
    // Each leaf left the manufacturer once; the dag-pb nodes went to both gateways.
    assert_eq!(seeding.stats.served.blocks, leaves + 2 * (total - leaves));
    let from_swarm: u64 = progress.iter().map(|p| p.blocks_from_swarm).sum();
    assert_eq!(
        from_swarm, leaves,
        "the other copy of every leaf came from the swarm"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn staging_a_newer_image_collects_the_blocks_of_the_one_before() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    let v1 = pattern(IMAGE_BYTES, 51);
    let v2 = pattern(IMAGE_BYTES, 52);
    let r1 = add_image(dir, "v1.bin", &v1, &dir.join("store-m"));
    let r2 = add_image(dir, "v2.bin", &v2, &dir.join("store-m"));
    let (_, b2) = import(&v2[..], MemoryBlocks::default()).expect("import");
    let m = dir.join("manifests-g");
    fs::create_dir_all(&m).expect("manifest dir");
    publish(
        &maker_key(),
        Version::new(1, 1, 0),
        r1,
        v1.len(),
        &m.join("a.manifest"),
    );

    let maker = node(dir, "m", 1, None, ServerConfig::default()).await;
    let mut g = gateway(dir, "g", 2).await;
    g.add_peer(maker.peer_addr(), PeerKind::Provider)
        .await
        .expect("provider");
    let (stop_tx, stop_rx) = watch::channel(false);
    let log: Log = Log::default();
    let driving = {
        let log = log.clone();
        let m = m.clone();
        async move {
            wait_staged(std::slice::from_ref(&log), 1).await;
            // 1.1.0 is staged: 1.2.0 is released.
            publish(
                &maker_key(),
                Version::new(1, 2, 0),
                r2,
                v2.len(),
                &m.join("b.manifest"),
            );
            wait_staged(&[log], 2).await;
            let _ = stop_tx.send(true);
        }
    };
    let (_, rg, ()) = tokio::join!(
        maker.run(stopper(&stop_rx), |_| {}),
        g.run(stopper(&stop_rx), recorder(&log)),
        driving
    );
    let rg = rg.expect("gateway stops cleanly");
    assert_eq!(
        rg.current,
        Some(Version::new(1, 2, 0)),
        "{:?}",
        log.borrow()
    );
    assert_eq!(rg.staged.len(), 2);
    let store = Blockstore::open(dir.join("store-g")).expect("store g");
    assert_eq!(store.pinned_roots().expect("pins"), vec![r2]);
    let stats = store.stats().expect("stats");
    assert_eq!(
        stats.blocks,
        b2.blocks.len() as u64,
        "only 1.2.0's blocks are left"
    );
    assert!(!store.has(&r1).expect("has"), "1.1.0's root was collected");
}
