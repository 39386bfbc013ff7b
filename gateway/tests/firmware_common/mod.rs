//! Shared helpers of the firmware tests: image bytes, the real `mef-gateway` binary, child
//! processes that are killed even when a test fails.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;

use cid::Cid;
use gateway::firmware_cli;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mef-gateway");

// The firmware crate's test data generator, the same bytes in both crates' tests.
#[path = "../../../firmware/tests/common/mod.rs"]
mod firmware_tests;
pub use firmware_tests::pattern;

/// 127.0.0.1, any port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Writes the image to `dir/name` and adds it to the store `store` (pinned); returns its root.
pub fn add_image(dir: &Path, name: &str, data: &[u8], store: &Path) -> Cid {
    let file = dir.join(name);
    fs::write(&file, data).expect("write image");
    firmware_cli::add(&file, store, None).expect("add").root
}

/// `mef-gateway ARGS` in `dir` (the store's environment variable unset).
pub fn mef(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("MEF_GATEWAY_FIRMWARE_STORE")
        .env("MEF_GATEWAY_LOG", "warn")
        .output()
        .expect("run mef-gateway")
}

/// Runs a command that must succeed; returns its trimmed stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = mef(dir, args);
    assert!(
        out.status.success(),
        "mef-gateway {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 stdout")
        .trim()
        .to_owned()
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = mef(dir, args);
    assert!(
        !out.status.success(),
        "mef-gateway {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Kills the child process when dropped (also when the test fails).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `mef-gateway firmware serve ARGS` in `dir`; returns the child and its stdout lines
/// (read on a thread, sent as they come).
pub fn spawn_serve(dir: &Path, args: &[&str]) -> (KillOnDrop, Receiver<String>) {
    let child = Command::new(BIN)
        .args(["firmware", "serve"])
        .args(args)
        .current_dir(dir)
        .env_remove("MEF_GATEWAY_FIRMWARE_STORE")
        .env("MEF_GATEWAY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn serve");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("serve stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// `firmware publish --key KEY --model MODEL --version VERSION image.bin -o fw.manifest
/// --store STORE` in `dir` (the image must be at `dir/image.bin`); returns the root CID printed.
pub fn publish_image(dir: &Path, key: &str, model: &str, version: &str, store: &str) -> String {
    let summary = ok(
        dir,
        &[
            "firmware",
            "publish",
            "--key",
            key,
            "--model",
            model,
            "--version",
            version,
            "image.bin",
            "-o",
            "fw.manifest",
            "--store",
            store,
        ],
    );
    summary
        .lines()
        .find_map(|l| l.strip_prefix("root:"))
        .expect("a root line")
        .trim()
        .to_owned()
}

/// `firmware serve --store STORE --key KEY --listen 127.0.0.1:0 EXTRA…` in `dir`; returns the
/// child, its stdout lines after the first, and the first: the node's peer string.
pub fn serve_on_loopback(
    dir: &Path,
    store: &str,
    key: &str,
    extra: &[&str],
) -> (KillOnDrop, Receiver<String>, String) {
    let mut args = vec!["--store", store, "--key", key, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (child, lines) = spawn_serve(dir, &args);
    let peer = lines
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the node's peer string")
        .trim()
        .to_owned();
    (child, lines, peer)
}
