//! The `mef-gateway` daemon as a process (issue 6: "every reading is written to the durable
//! store before it is acknowledged anywhere").
//!
//! `sigkill_never_loses_an_acknowledged_push_data`: the test is a Semtech packet forwarder on
//! loopback. It sends PUSH_DATA datagrams (1–3 rxpk each, plaintext test devices carrying
//! Cayenne LPP temperature and barometer with values unique per reading) to the real daemon and
//! records which tokens got a PUSH_ACK. It SIGKILLs the daemon at seeded random moments
//! (`RUNS` times), restarting it each time, then lets it drain to the file uplink and checks:
//! every reading of every acknowledged PUSH_DATA is delivered exactly once (the file is first
//! de-duplicated by batch `first_seq`, the receiver's rule), unacknowledged ones at most once,
//! every batch verifies, and LoRa readings arrive in the order they were sent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use gateway::daemon::simulate::{lorawan_uplink, push_data, rxpk};
use gateway::lpp::{Encoder, dev_addr_id};
use gateway::uplink::FileUplink;
use gateway::{DeviceId, Source};

const BIN: &str = env!("CARGO_BIN_EXE_mef-gateway");
const SEED: u64 = 0x6777_6372_6173_6831;
const RUNS: usize = 6;
const DEVICES: [u32; 2] = [0x2601_1bda, 0x2601_1bdb];
const EUI: [u8; 8] = [0xB8, 0x27, 0xEB, 0xFF, 0xFE, 0x00, 0x00, 0x01];

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("gwd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    // A UDP and a TCP port that are both free right now.
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let port = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Writes a key and a config into `dir`; returns (config path, public key, LoRa address).
fn setup(dir: &Path, extra: &str) -> (PathBuf, VerifyingKey, SocketAddr) {
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(dir.join("gateway.key"))
        .output()
        .expect("keygen");
    assert!(out.status.success(), "keygen: {out:?}");
    let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(&public)
        .expect("base64 public key")
        .try_into()
        .expect("32 bytes");
    let key = VerifyingKey::from_bytes(&bytes).expect("public key");
    let lora = free_port();
    let metrics = free_port();
    let config = dir.join("gateway.toml");
    let text = format!(
        "[gateway]\nkey = \"gateway.key\"\n\n[store]\npath = \"queue.db\"\n\n\
         [lora]\nlisten = \"127.0.0.1:{lora}\"\nplaintext_devices = [\"26011bda\", \"26011bdb\"]\n\n\
         [uplink]\nkind = \"file\"\npath = \"uplink.jsonl\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n{extra}"
    );
    std::fs::write(&config, text).expect("config");
    (config, key, SocketAddr::from(([127, 0, 0, 1], lora)))
}

fn start(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log");
    Command::new(BIN)
        .args(["--log", "info,gateway=debug", "run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start mef-gateway")
}

/// Waits until the daemon answers a PULL_DATA with a PULL_ACK; PUSH_ACKs read meanwhile are
/// recorded in `acked`.
fn wait_ready(sock: &UdpSocket, daemon: SocketAddr, acked: &mut BTreeSet<u16>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 64];
    let mut token: u16 = 0xF000;
    while Instant::now() < deadline {
        token = token.wrapping_add(1);
        let [hi, lo] = token.to_be_bytes();
        let pull = [2, hi, lo, 0x02];
        let mut d = pull.to_vec();
        d.extend_from_slice(&EUI);
        let _ = sock.send_to(&d, daemon);
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && n >= 4
            {
                match buf[3] {
                    0x04 => return,
                    0x01 => {
                        acked.insert(u16::from_be_bytes([buf[1], buf[2]]));
                    }
                    _ => {}
                }
            }
        }
    }
    panic!("mef-gateway did not answer PULL_DATA within 30 s");
}

fn drain_acks(sock: &UdpSocket, acked: &mut BTreeSet<u16>, wait: Duration) {
    let mut buf = [0u8; 64];
    let until = Instant::now() + wait;
    while Instant::now() < until {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n >= 4 && buf[3] == 0x01 => {
                acked.insert(u16::from_be_bytes([buf[1], buf[2]]));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

fn run_cmd(args: &[&str], config: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run mef-gateway")
}

/// One sent uplink: its device, FCnt and send order.
#[derive(Debug, Clone, Copy)]
struct Sent {
    device: DeviceId,
    fcnt: u16,
    order: u64,
}

#[test]
fn sigkill_never_loses_an_acknowledged_push_data() {
    let dir = TempDir::new("crash");
    let (config, key, daemon) = setup(&dir.0, "");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("forwarder socket");
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    let mut rng = Rng(SEED);
    let mut acked: BTreeSet<u16> = BTreeSet::new();
    let mut datagrams: BTreeMap<u16, Vec<Sent>> = BTreeMap::new();
    let mut fcnt = [0u16; DEVICES.len()];
    let mut order = 0u64;
    let mut token: u16 = 0;
    let mut kills = 0;
    for run in 0..=RUNS {
        let mut child = start(&config, &dir.0.join(format!("run{run}.log")));
        wait_ready(&sock, daemon, &mut acked);
        let last = run == RUNS;
        let run_for = Duration::from_millis(if last { 800 } else { rng.range(60, 900) });
        let t0 = Instant::now();
        while t0.elapsed() < run_for {
            token += 1;
            let n = rng.range(1, 4) as usize;
            let mut pks = Vec::new();
            let mut sent = Vec::new();
            for _ in 0..n {
                let d = rng.range(0, DEVICES.len() as u64) as usize;
                fcnt[d] += 1;
                order += 1;
                // Unique values: the send order, in 0.1 steps.
                let mut e = Encoder::new();
                e.add_temperature(1, order as f64 / 10.0).expect("lpp");
                e.add_barometer(2, order as f64 / 10.0).expect("lpp");
                let phy = lorawan_uplink(DEVICES[d], fcnt[d], 1, &e.finish());
                pks.push(rxpk(&phy, order as u32));
                sent.push(Sent {
                    device: dev_addr_id(DEVICES[d]),
                    fcnt: fcnt[d],
                    order,
                });
            }
            let _ = sock.send_to(&push_data(token, EUI, pks), daemon);
            datagrams.insert(token, sent);
            drain_acks(&sock, &mut acked, Duration::from_millis(2));
        }
        if !last {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            kills += 1;
            // Acks sent before the kill may still sit in our socket buffer.
            drain_acks(&sock, &mut acked, Duration::from_millis(50));
            continue;
        }
        drain_acks(&sock, &mut acked, Duration::from_millis(300));
        // Drain: the queue empties into the file uplink.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = run_cmd(&["status"], &config);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(text.contains("queue depth:"), "status: {out:?}");
            if text.contains("queue depth: 0 readings") {
                break;
            }
            assert!(Instant::now() < deadline, "queue never drained: {text}");
            std::thread::sleep(Duration::from_millis(200));
        }
        // Graceful stop.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().expect("wait");
        assert!(status.success(), "daemon exit: {status:?}");
    }
    assert!(kills >= 5);

    // The receiver: de-duplicate batches by first_seq, then count readings.
    let lines = FileUplink::read(dir.0.join("uplink.jsonl")).expect("read uplink file");
    let mut batches = BTreeMap::new();
    for b in lines {
        b.verify(&key).expect("batch signature");
        if let Some(prev) = batches.get(&b.first_seq) {
            assert_eq!(
                prev, &b,
                "two different batches with first_seq {}",
                b.first_seq
            );
        } else {
            batches.insert(b.first_seq, b);
        }
    }
    let by_frame: BTreeMap<(DeviceId, u16), u64> = datagrams
        .values()
        .flatten()
        .map(|s| ((s.device, s.fcnt), s.order))
        .collect();
    let mut delivered: BTreeMap<(DeviceId, u16, String), u32> = BTreeMap::new();
    let mut last_order = 0u64;
    let mut last_seq = 0u64;
    for b in batches.values() {
        for (seq, r) in &b.readings {
            assert!(*seq > last_seq, "sequence numbers increase");
            last_seq = *seq;
            assert_eq!(r.source, Source::Lora);
            let fcnt = r.frame_id.expect("fcnt") as u16;
            let ord = by_frame[&(r.device, fcnt)];
            assert!(ord >= last_order, "LoRa readings out of order");
            last_order = ord;
            assert!((r.value - ord as f64 / 10.0).abs() < 1e-6, "value {r:?}");
            *delivered
                .entry((r.device, fcnt, r.quantity.clone()))
                .or_default() += 1;
        }
    }
    for (k, n) in &delivered {
        assert_eq!(*n, 1, "{k:?} delivered {n} times");
    }
    let mut acked_readings = 0;
    for t in &acked {
        let Some(sent) = datagrams.get(t) else {
            continue;
        };
        for s in sent {
            for q in ["temperature_1", "barometric_pressure_2"] {
                acked_readings += 1;
                assert!(
                    delivered.contains_key(&(s.device, s.fcnt, q.to_string())),
                    "acknowledged token {t}: {s:?} {q} missing"
                );
            }
        }
    }
    let total: usize = datagrams.values().map(|s| s.len() * 2).sum();
    eprintln!(
        "{kills} kills; {} datagrams sent, {} acknowledged; {total} readings sent, \
         {acked_readings} acknowledged, {} delivered",
        datagrams.len(),
        acked.len(),
        delivered.len()
    );
    assert!(
        acked.len() > datagrams.len() / 4,
        "too few acks: the daemon barely ran"
    );
}

#[test]
fn status_prints_the_queue_depth() {
    let dir = TempDir::new("status");
    let (config, _, daemon) = setup(&dir.0, "");
    // No daemon: the store is opened directly.
    {
        let key = gateway::daemon::key::read(&dir.0.join("gateway.key")).expect("key");
        let mut store = gateway::store::Store::open(
            dir.0.join("queue.db"),
            gateway::store::Limits::default(),
            key,
        )
        .expect("store");
        let readings: Vec<_> = (0..7u32)
            .map(|i| gateway::Reading {
                source: Source::Ble,
                device: DeviceId::from_mac([0xa4, 0xc1, 0x38, 0, 0, 1]),
                time_ms: 1_000 + u64::from(i),
                quantity: "temperature".into(),
                value: f64::from(i),
                unit: "°C".into(),
                frame_id: Some(i),
                radio: gateway::RadioMeta::default(),
            })
            .collect();
        store.append(&readings).expect("append");
    }
    let out = run_cmd(&["status"], &config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("queue depth: 7 readings"), "{text}");
    assert!(text.contains("not answering"), "{text}");
    assert!(text.contains("full: false"), "{text}");
    // A running daemon answers itself (live counters).
    let mut child = start(&config, &dir.0.join("run.log"));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    wait_ready(&sock, daemon, &mut BTreeSet::new());
    std::thread::sleep(Duration::from_millis(300));
    let out = run_cmd(&["status"], &config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("queue depth:"), "{text}");
    assert!(text.contains("lora: 1 forwarders"), "{text}");
    let out = run_cmd(&["status", "--metrics"], &config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mef_gateway_queue_readings"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn config_errors_name_the_field_and_fail() {
    let dir = TempDir::new("config");
    let (config, _, _) = setup(&dir.0, "bogus_section_field = 1\n");
    for cmd in [&["check-config"][..], &["run"][..]] {
        let out = run_cmd(cmd, &config);
        assert!(!out.status.success(), "{cmd:?} accepted a bad config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("bogus_section_field") && err.contains("gateway.toml:"),
            "{cmd:?}: {err}"
        );
    }
    // A missing key file is an error too, naming the file.
    let sub = dir.0.join("nokey");
    std::fs::create_dir_all(&sub).expect("dir");
    let (config, _, _) = setup(&sub, "");
    std::fs::remove_file(sub.join("gateway.key")).expect("rm key");
    let out = run_cmd(&["run"], &config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.key"), "{err}");
}
