//! `mef-gateway run` with a `[firmware]` section: the daemon that ingests sensor readings is
//! also a member of the firmware swarm (seed 004). A manufacturer's node (`firmware serve`, a
//! separate process) holds a signed image; a manifest dropped into the daemon's manifest
//! directory is fetched over the encrypted mesh, verified, staged, reported on `/metrics` and
//! `/status`, and then served by the daemon to a third node (`firmware get --peer`).

mod firmware_common;

use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firmware_common::{BIN, KillOnDrop, ok, pattern, publish_image, serve_on_loopback};
use gateway::daemon::run::fetch;

const MODEL: &str = "mef-gw";

/// A port free for both UDP and TCP right now.
fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let port = u.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `mef-gateway run --config gateway.toml` in `dir`, its log in `dir/run.log`.
fn start_daemon(dir: &Path) -> KillOnDrop {
    let log = fs::File::create(dir.join("run.log")).expect("log");
    KillOnDrop(
        Command::new(BIN)
            .args(["--log", "info", "run", "--config", "gateway.toml"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mef-gateway run"),
    )
}

/// Polls `GET path` until `pred` holds for the body; panics with the last body and the log.
fn wait_for(dir: &Path, metrics: SocketAddr, path: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(body) = fetch(metrics, path) {
            if pred(&body) {
                return body;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    panic!("GET {path}: condition not met within 60 s\n{last}\n--- daemon log ---\n{log}");
}

/// Waits up to 20 s for the daemon to exit; panics with `why` if it does not.
fn wait_exit(daemon: &mut KillOnDrop, why: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = daemon.0.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "{why}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of an unlabelled metric.
fn metric(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn the_daemon_stages_a_manifested_image_and_then_serves_it() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    let data = pattern((2 << 20) + 777, 41);
    fs::write(dir.join("image.bin"), &data).expect("image");
    ok(dir, &["keygen", "--out", "gateway.key"]);
    let maker = ok(dir, &["keygen", "--out", "maker.key"]);
    ok(dir, &["keygen", "--mesh", "--out", "maker-mesh.key"]);
    let gw_mesh = ok(dir, &["keygen", "--mesh", "--out", "gw-mesh.key"]);
    let gw_key = gw_mesh.lines().next().expect("mesh public key").trim();
    let root = publish_image(dir, "maker.key", MODEL, "1.2.0", "store-m");
    let (_maker_node, _, maker_peer) = serve_on_loopback(dir, "store-m", "maker-mesh.key", &[]);

    let (metrics, mesh) = (free_port(), free_port());
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics));
    let config = format!(
        "[gateway]\nkey = \"gateway.key\"\n[store]\npath = \"queue.db\"\n\
         [lora]\nenabled = false\n[uplink]\nkind = \"file\"\npath = \"uplink.jsonl\"\n\
         [metrics]\nlisten = \"{metrics}\"\n\
         [firmware]\nstore = \"store-g\"\nkey = \"gw-mesh.key\"\nlisten = \"127.0.0.1:{mesh}\"\n\
         providers = [\"{maker_peer}\"]\nmanifests = \"manifests\"\nstaging = \"staging\"\n\
         model = \"{MODEL}\"\ncurrent = \"1.0.0\"\ntrust = [\"{maker}\"]\npoll_ms = 200\n"
    );
    fs::write(dir.join("gateway.toml"), config).expect("config");
    fs::create_dir_all(dir.join("manifests")).expect("manifest dir");
    let mut daemon = start_daemon(dir);

    // Running, nothing staged yet: the configured version is reported.
    let body = wait_for(dir, metrics, "/metrics", |b| {
        b.contains("mef_gateway_firmware_version_info{version=\"1.0.0\"} 1")
    });
    assert_eq!(metric(&body, "mef_gateway_firmware_staged_total"), Some(0));

    // The manifest arrives: fetched from the manufacturer, verified, staged.
    fs::copy(dir.join("fw.manifest"), dir.join("manifests/fw.manifest")).expect("manifest");
    let body = wait_for(dir, metrics, "/metrics", |b| {
        metric(b, "mef_gateway_firmware_staged_total") == Some(1)
    });
    assert!(
        body.contains("mef_gateway_firmware_version_info{version=\"1.2.0\"} 1"),
        "{body}"
    );
    assert_eq!(
        metric(&body, "mef_gateway_firmware_refused_manifests_total"),
        Some(0)
    );
    let staged: Vec<_> = fs::read_dir(dir.join("staging"))
        .expect("staging dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| fs::read(p).is_ok_and(|b| b == data))
        .collect();
    assert_eq!(staged.len(), 1, "exactly one staged copy of the image");
    let status = fetch(metrics, "/status").expect("status");
    assert!(
        status.contains("firmware: running 1.2.0, 1 staged"),
        "{status}"
    );

    // A third node fetches the image from the daemon alone.
    let peer = format!("{gw_key}@127.0.0.1:{mesh}");
    ok(
        dir,
        &[
            "firmware", "get", &root, "-o", "copy.bin", "--store", "store-x", "--peer", &peer,
        ],
    );
    assert_eq!(fs::read(dir.join("copy.bin")).expect("copy"), data);
    let body = wait_for(dir, metrics, "/metrics", |b| {
        metric(b, "mef_gateway_firmware_served_blocks_total").is_some_and(|n| n > 0)
    });
    let served = metric(&body, "mef_gateway_firmware_served_bytes_total").expect("served bytes");
    assert!(served >= data.len() as u64, "served {served} bytes");

    // SIGTERM: the daemon (firmware thread included) stops cleanly.
    let pid = daemon.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -TERM");
    let status = wait_exit(&mut daemon, "no exit within 20 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    let log = fs::read_to_string(dir.join("run.log")).expect("log");
    assert!(log.contains("firmware node stopped"), "{log}");
}

#[test]
fn a_bad_firmware_key_stops_the_start_and_names_it() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    ok(dir, &["keygen", "--out", "gateway.key"]);
    fs::write(dir.join("mesh.key"), "not a key\n").expect("bad key");
    let metrics = free_port();
    let config = format!(
        "[gateway]\nkey = \"gateway.key\"\n[store]\npath = \"queue.db\"\n\
         [lora]\nenabled = false\n[uplink]\nkind = \"file\"\npath = \"uplink.jsonl\"\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
         [firmware]\nstore = \"fw\"\nkey = \"mesh.key\"\nlisten = \"127.0.0.1:0\"\n"
    );
    fs::write(dir.join("gateway.toml"), config).expect("config");
    let mut daemon = start_daemon(dir);
    let status = wait_exit(&mut daemon, "the daemon kept running");
    assert!(!status.success());
    let log = fs::read_to_string(dir.join("run.log")).expect("log");
    assert!(log.contains("firmware mesh key"), "{log}");
}
