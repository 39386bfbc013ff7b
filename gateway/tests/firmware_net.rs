//! Firmware over the real encrypted mesh on loopback (issue 7): a served store and a fetching
//! store in one process (two mesh drivers), a resumed fetch, and `mef-gateway firmware serve` /
//! `get --peer` end to end as separate processes.

mod firmware_common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cid::Cid;
use firmware::blockstore::Blockstore;
use firmware::exchange::{Progress, ServerConfig};
use firmware::unixfs::importer::import;
use firmware::unixfs::{MemoryBlocks, RAW_CODEC};
use firmware_common::{add_image, loopback, ok, pattern, serve_on_loopback};
use gateway::firmware_cli;
use gateway::firmware_net::{
    FetchOptions, FetchReport, FirmwareNode, NetError, NodeReport, PeerAddr, fetch,
};
use mesh::Identity;
use tokio::sync::oneshot;

const IMAGE_BYTES: usize = 3 << 20;

fn fetch_options() -> FetchOptions {
    FetchOptions {
        bind: loopback(),
        timeout: Duration::from_secs(60),
        ..FetchOptions::default()
    }
}

/// Serves `served` and fetches `root` into `fetcher` at the same time, in this task; the
/// server stops once the fetch ended. Returns both results and the progress seen.
async fn serve_and_fetch(
    served: &Path,
    fetcher: &Path,
    root: Cid,
    upload_cap: Option<u64>,
) -> (Result<FetchReport, NetError>, NodeReport, Vec<Progress>) {
    let mut serving = FirmwareNode::start(
        Blockstore::open(served).expect("served store"),
        Identity::from_bytes([1; 32]),
        loopback(),
        None,
        ServerConfig::default(),
    )
    .await
    .expect("serve");
    serving.set_upload_cap(upload_cap);
    let peer = serving.peer_addr();
    assert_eq!(peer.addr, serving.local_addr(), "bound to 127.0.0.1");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = seen.clone();
    let fetching = async {
        let r = fetch(
            Blockstore::open(fetcher).expect("fetcher store"),
            Identity::from_bytes([2; 32]),
            vec![peer.record()],
            root,
            &fetch_options(),
            move |p| log.borrow_mut().push(*p),
        )
        .await;
        let _ = stop_tx.send(());
        r
    };
    let stop = async {
        let _ = stop_rx.await;
    };
    let (fetched, served) = tokio::join!(fetching, serving.run(stop, |_| {}));
    let progress = seen.borrow().clone();
    (fetched, served.expect("server stops cleanly"), progress)
}

#[tokio::test(flavor = "current_thread")]
async fn a_three_mebibyte_image_is_fetched_over_the_mesh_and_rebuilt_identical() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = pattern(IMAGE_BYTES, 3);
    let root = add_image(t.path(), "image.bin", &data, &t.path().join("a"));
    let (expect_root, blocks) = import(&data[..], MemoryBlocks::default()).expect("import");
    assert_eq!(root, expect_root);
    let total = blocks.blocks.len() as u64;

    let (fetched, served, progress) =
        serve_and_fetch(&t.path().join("a"), &t.path().join("b"), root, None).await;
    let report = fetched.expect("fetch completes");
    assert_eq!(report.root, root);
    assert_eq!(report.progress.blocks_fetched, total);
    assert_eq!(report.progress.blocks_held, 0);
    assert_eq!(report.peers, 1);
    assert!(report.progress.bytes_fetched >= IMAGE_BYTES as u64);
    assert_eq!(served.peers, 1);
    assert_eq!(served.stats.served.blocks, total, "each block sent once");
    // The progress callback was called for every block, counting up.
    assert_eq!(progress.len() as u64, total);
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].blocks_fetched <= w[1].blocks_fetched)
    );
    assert_eq!(progress.last().map(|p| p.blocks_fetched), Some(total));

    // Rebuilt from the fetcher's store alone, verified: byte-identical, same CID.
    let b = Blockstore::open(t.path().join("b")).expect("store b");
    let out = t.path().join("out.bin");
    assert_eq!(
        firmware_cli::get(&b, &root, &out).expect("rebuild"),
        IMAGE_BYTES as u64
    );
    let rebuilt = fs::read(&out).expect("read output");
    assert!(rebuilt == data, "rebuilt image differs");
    let (again, _) = import(&rebuilt[..], MemoryBlocks::default()).expect("re-import");
    assert_eq!(again, root);
}

#[tokio::test(flavor = "current_thread")]
async fn a_resumed_fetch_transfers_only_the_missing_blocks() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = pattern(IMAGE_BYTES, 4);
    let root = add_image(t.path(), "image.bin", &data, &t.path().join("a"));
    let (_, blocks) = import(&data[..], MemoryBlocks::default()).expect("import");
    let total = blocks.blocks.len() as u64;
    // An interrupted first fetch: half the leaves are already in the fetcher's store.
    let leaves: Vec<Cid> = blocks
        .order
        .iter()
        .copied()
        .filter(|c| c.codec() == RAW_CODEC)
        .collect();
    assert!(leaves.len() >= 12, "3 MiB is at least 12 chunks");
    let half = leaves.len() / 2;
    let b = Blockstore::open(t.path().join("b")).expect("store b");
    for cid in leaves.iter().step_by(2).take(half) {
        b.put(cid, &blocks.blocks[cid]).expect("pre-populate");
    }
    drop(b);

    let (fetched, served, _) =
        serve_and_fetch(&t.path().join("a"), &t.path().join("b"), root, None).await;
    let report = fetched.expect("fetch completes");
    assert_eq!(report.progress.blocks_held, half as u64);
    assert_eq!(report.progress.blocks_fetched, total - half as u64);
    assert_eq!(
        served.stats.served.blocks,
        total - half as u64,
        "only the missing blocks crossed the mesh"
    );
    let b = Blockstore::open(t.path().join("b")).expect("store b");
    let out = t.path().join("out.bin");
    firmware_cli::get(&b, &root, &out).expect("rebuild");
    assert!(fs::read(&out).expect("read output") == data);

    // A third fetch finds everything held and asks for nothing.
    let (fetched, served, _) =
        serve_and_fetch(&t.path().join("a"), &t.path().join("b"), root, None).await;
    let report = fetched.expect("fetch completes");
    assert_eq!(report.progress.blocks_fetched, 0);
    assert_eq!(report.progress.blocks_held, total);
    assert_eq!(served.stats.served.blocks, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_without_the_image_fails_the_fetch() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = pattern(300_000, 5);
    let root = add_image(t.path(), "image.bin", &data, &t.path().join("other"));
    // The served store exists but does not hold the image.
    Blockstore::open(t.path().join("a")).expect("store a");
    let (fetched, _, _) =
        serve_and_fetch(&t.path().join("a"), &t.path().join("b"), root, None).await;
    match fetched {
        Err(NetError::Fetch { root: r, .. }) => assert_eq!(r, root),
        other => panic!("expected a failed fetch, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_peer_times_the_fetch_out() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = add_image(t.path(), "image.bin", b"tiny", &t.path().join("other"));
    // A UDP socket that never answers: the handshake goes unanswered.
    let silent = std::net::UdpSocket::bind(loopback()).expect("bind");
    let peer = PeerAddr {
        key: Identity::from_bytes([3; 32]).public_key(),
        addr: silent.local_addr().expect("addr"),
    };
    let opts = FetchOptions {
        timeout: Duration::from_secs(2),
        ..fetch_options()
    };
    let r = fetch(
        Blockstore::open(t.path().join("b")).expect("store b"),
        Identity::from_bytes([4; 32]),
        vec![peer.record()],
        root,
        &opts,
        |_| {},
    )
    .await;
    match r {
        Err(NetError::Timeout {
            root: r,
            connected: 0,
            progress,
            ..
        }) => {
            assert_eq!(r, root);
            assert_eq!(progress.blocks_fetched, 0);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn cli_serve_and_get_from_a_peer_end_to_end() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    let data = pattern(IMAGE_BYTES + 12_345, 6);
    fs::write(dir.join("image.bin"), &data).expect("write image");
    let keygen = ok(dir, &["keygen", "--mesh", "--out", "mesh.key"]);
    let pubkey = keygen.lines().next().expect("public key line").to_owned();
    let root = ok(dir, &["firmware", "add", "image.bin", "--store", "store-a"])
        .trim()
        .to_owned();

    let (mut server, _, peer_string) = serve_on_loopback(dir, "store-a", "mesh.key", &[]);
    let peer: PeerAddr = peer_string.parse().expect("serve prints a peer string");
    assert_eq!(peer.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(peer.addr.port(), 0);
    assert!(peer_string.starts_with(&pubkey), "the key of keygen --mesh");

    // An empty store B (it does not even exist yet) fetches the image from the server.
    ok(
        dir,
        &[
            "firmware",
            "get",
            &root,
            "-o",
            "out.bin",
            "--store",
            "store-b",
            "--peer",
            &peer_string,
            "--timeout",
            "60",
        ],
    );
    assert!(fs::read(dir.join("out.bin")).expect("output") == data);
    assert!(dir.join(format!("store-b/pins/{root}.pin")).exists());

    // The update flow: a signed manifest checked, the image fetched from the peer into an
    // empty store C, rebuilt with every block verified, and staged.
    let maker = ok(dir, &["keygen", "--out", "maker.key"]).trim().to_owned();
    ok(
        dir,
        &[
            "firmware",
            "publish",
            "--key",
            "maker.key",
            "--model",
            "mef-gw",
            "--version",
            "1.1.0",
            "image.bin",
            "-o",
            "fw.manifest",
            "--store",
            "store-m",
        ],
    );
    let staged = ok(
        dir,
        &[
            "firmware",
            "stage",
            "fw.manifest",
            "--trust",
            &maker,
            "--model",
            "mef-gw",
            "--current",
            "1.0.0",
            "--store",
            "store-c",
            "--staging",
            "staging",
            "--peer",
            &peer_string,
            "--timeout",
            "60",
        ],
    );
    let staged = staged.trim();
    assert!(staged.ends_with("mef-gw-1.1.0.bin"), "{staged}");
    assert!(fs::read(dir.join(staged)).expect("staged") == data);

    // SIGTERM stops the server cleanly.
    let pid = server.0.id().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(term.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "serve exits 0 on SIGTERM: {status}");

    // B holds the whole image: `get` works without a peer, and with a peer that is gone
    // (no network needed).
    let get = |out: &str, peer: Option<&str>| {
        let mut args = vec!["firmware", "get", &root, "-o", out, "--store", "store-b"];
        if let Some(p) = peer {
            args.extend(["--peer", p, "--timeout", "1"]);
        }
        ok(dir, &args);
        assert!(fs::read(dir.join(out)).expect("output") == data);
    };
    get("again.bin", None);
    get("third.bin", Some(&peer_string));
    drop(server);
}

#[tokio::test(flavor = "current_thread")]
async fn an_upload_cap_holds_the_server_to_its_rate() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = pattern(IMAGE_BYTES, 8);
    let root = add_image(t.path(), "image.bin", &data, &t.path().join("a"));
    // 16 Mbit/s = 2,000,000 bytes/s, burst 200,000: 3 MiB cannot leave in under
    // (3,145,728 - 200,000) / 2,000,000 = 1.47 s, whatever the machine.
    let cap = 16_000_000;
    let (fetched, served, _) =
        serve_and_fetch(&t.path().join("a"), &t.path().join("b"), root, Some(cap)).await;
    let report = fetched.expect("fetch completes under the cap");
    let sent = served.stats.sent;
    assert!(sent >= IMAGE_BYTES as u64, "served {sent} bytes");
    let floor = (sent - 200_000) as f64 / (cap / 8) as f64;
    let took = report.elapsed.as_secs_f64();
    assert!(
        took >= floor * 0.98,
        "{sent} bytes in {took:.2} s: faster than the cap allows ({floor:.2} s)"
    );
    let b = Blockstore::open(t.path().join("b")).expect("store b");
    let out = t.path().join("out.bin");
    firmware_cli::get(&b, &root, &out).expect("rebuild");
    assert!(fs::read(&out).expect("read") == data);
}
