//! Root-only end to end: client — rtrA — emulated lossy 100 ms WAN — rtrB — server, built with
//! `sim_netem::testbed` (namespaces named `mef<pid>-<n>-<role>`, removed by its `Drop` even on
//! panic), two real `mef-router` daemons, a kernel TCP transfer whose content is verified; then
//! a wrong peer key (nothing passes), then a router restart (new flows work again), and finally
//! a check that no namespace is left behind. Skips with a reason when not root.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mef_router::tunnel::PrivateKey;
use sim_netem::testbed::{Node, Testbed, TestbedConfig, is_root};
use sim_netem::{LinkConfig, LossModel, realtime::EmulatorConfig};

const BIN: &str = env!("CARGO_BIN_EXE_mef-router");
const PORT: u16 = 5001;

/// A daemon process, stopped gracefully when dropped.
type Daemon = sim_netem::testbed::StopOnDrop;

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::too_many_arguments)]
fn write_config(
    dir: &Path,
    name: &str,
    key: &PrivateKey,
    peer_pub: &str,
    lan: &str,
    remote: &str,
    endpoint: SocketAddr,
    split: bool,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"listen = "0.0.0.0:51820"
private_key = "{}"
control = "127.0.0.1:9184"
[tun]
name = "mef0"
[lan]
prefixes = ["{lan}"]
[wan]
capacity = "50mbit"
[split]
enabled = {split}
[[peer]]
name = "{name}-peer"
public_key = "{peer_pub}"
endpoint = "{endpoint}"
prefixes = ["{remote}"]
"#,
        key.to_base64()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn start(tb: &Testbed, node: Node, config: &Path) -> Daemon {
    // Daemon logs go to a file beside the config (removed with the temporary directory).
    let log = std::fs::File::create(config.with_extension("log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(config)
        .env("MEF_ROUTER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    let child = tb.spawn_in(node, cmd).expect("spawn daemon");
    let d = sim_netem::testbed::StopOnDrop(child);
    // Ready when its control endpoint answers.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let out = tb.exec(node, &[BIN, "status"]).expect("status");
        if out.status.success() {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("daemon in {node:?} did not come up");
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 131) as u8) ^ seed).collect()
}

/// Starts a one-shot server in the server namespace that returns what it received; returns
/// a handle yielding the received bytes.
fn serve_once(tb: &Testbed) -> std::thread::JoinHandle<Result<Vec<u8>, String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = tb
        .thread_in(Node::Server, move || -> Result<Vec<u8>, String> {
            let l = TcpListener::bind(("0.0.0.0", PORT)).map_err(|e| e.to_string())?;
            let _ = tx.send(());
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            let t = Instant::now();
            let (mut s, _) = loop {
                match l.accept() {
                    Ok(c) => break c,
                    Err(_) if t.elapsed() < Duration::from_secs(8) => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(format!("accept: {e}")),
                }
            };
            s.set_nonblocking(false).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
            s.write_all(&(got.len() as u64).to_be_bytes())
                .map_err(|e| e.to_string())?;
            Ok(got)
        })
        .expect("server thread");
    let _ = rx.recv_timeout(Duration::from_secs(5));
    h
}

/// A TCP transfer client → server; returns the server's acknowledgement of the length.
fn transfer(tb: &Testbed, server: Ipv4Addr, data: Vec<u8>) -> Result<u64, String> {
    tb.run_in(Node::Client, move || -> Result<u64, String> {
        let addr = SocketAddr::V4(SocketAddrV4::new(server, PORT));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(4))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        s.write_all(&data).map_err(|e| format!("write: {e}"))?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack).map_err(|e| format!("read: {e}"))?;
        Ok(u64::from_be_bytes(ack))
    })
    .map_err(|e| e.to_string())?
}

fn metric(tb: &Testbed, node: Node, name: &str) -> f64 {
    let out = tb
        .exec(node, &[BIN, "status", "--metrics"])
        .expect("metrics");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn tcp_through_two_routers_wrong_key_and_restart() {
    if !is_root() {
        println!(
            "skipping tcp_through_two_routers_wrong_key_and_restart: needs root (namespaces, TUN)"
        );
        return;
    }
    let prefix = format!("mef{}-", std::process::id());
    {
        // 100 ms RTT (50 ms each way), 0.5 % loss, 100 Mbit/s.
        let link = LinkConfig::new(100_000_000, Duration::from_millis(50))
            .with_loss(LossModel::Bernoulli(0.005))
            .with_queue_bdp(1.0, Duration::from_millis(100));
        let mut ecfg = EmulatorConfig::symmetric(link);
        ecfg.rt_priority = None;
        let tb = match Testbed::create(TestbedConfig::with_routers(ecfg)) {
            Ok(tb) => tb,
            Err(e) => {
                println!("skipping: cannot build the namespace testbed: {e}");
                return;
            }
        };
        let dir = TempDir(std::env::temp_dir().join(format!("mef-e2e-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let a_wan = tb.router_wan_addr(Node::RouterA).expect("a wan");
        let b_wan = tb.router_wan_addr(Node::RouterB).expect("b wan");
        let ep = |ip| SocketAddr::V4(SocketAddrV4::new(ip, 51820));
        let cfg_a = write_config(
            &dir.0,
            "a",
            &ka,
            &kb.public_key().to_base64(),
            "10.77.1.0/24",
            "10.77.3.0/24",
            ep(b_wan),
            false,
        );
        let cfg_b = write_config(
            &dir.0,
            "b",
            &kb,
            &ka.public_key().to_base64(),
            "10.77.3.0/24",
            "10.77.1.0/24",
            ep(a_wan),
            false,
        );
        let wrong = PrivateKey::generate().public_key().to_base64();
        let cfg_a_wrong = write_config(
            &dir.0,
            "a-wrong",
            &ka,
            &wrong,
            "10.77.1.0/24",
            "10.77.3.0/24",
            ep(b_wan),
            false,
        );
        let server = tb.server_addr();

        // 1. Content passes through both routers.
        let da = start(&tb, Node::RouterA, &cfg_a);
        let db = start(&tb, Node::RouterB, &cfg_b);
        let data = payload(400_000, 7);
        let srv = serve_once(&tb);
        let ack = transfer(&tb, server, data.clone()).expect("transfer through routers");
        let got = srv.join().expect("server thread").expect("server");
        assert_eq!(ack, data.len() as u64);
        assert!(got == data, "content differs");
        std::thread::sleep(Duration::from_millis(1500)); // metrics refresh once a second
        let tx = metric(&tb, Node::RouterA, "mef_router_tunnel_tx_bytes_total");
        assert!(
            tx >= data.len() as f64,
            "traffic went through the tunnel: {tx}"
        );
        let st = tb.exec(Node::RouterA, &[BIN, "status"]).expect("status");
        let st = String::from_utf8_lossy(&st.stdout).to_string();
        assert!(st.contains("state established"), "{st}");

        // 2. Wrong peer key at router A: nothing passes.
        drop(da);
        let da = start(&tb, Node::RouterA, &cfg_a_wrong);
        let srv = serve_once(&tb);
        let r = transfer(&tb, server, payload(10_000, 9));
        assert!(r.is_err(), "no traffic may pass with a wrong key: {r:?}");
        let _ = srv.join();
        assert!(
            metric(
                &tb,
                Node::RouterB,
                "mef_router_drops_total{reason=\"bad_mac1\"}"
            ) > 0.0
        );
        drop(da);

        // 3. Correct keys again, and router B restarted: new flows work.
        let da = start(&tb, Node::RouterA, &cfg_a);
        drop(db);
        let db = start(&tb, Node::RouterB, &cfg_b);
        let data = payload(100_000, 3);
        let srv = serve_once(&tb);
        let ack = transfer(&tb, server, data.clone()).expect("transfer after restart");
        let got = srv.join().expect("server thread").expect("server");
        assert_eq!(ack, data.len() as u64);
        assert!(got == data);

        // 4. TCP splitting on both routers: the connection is terminated at router A, carried
        //    as a MEF transport stream (stamped by A's egress) and re-originated by router B.
        drop(da);
        drop(db);
        let kb_pub = kb.public_key().to_base64();
        let ka_pub = ka.public_key().to_base64();
        let (lan_a, lan_b) = ("10.77.1.0/24", "10.77.3.0/24");
        let cfg_a_split = write_config(
            &dir.0,
            "a-split",
            &ka,
            &kb_pub,
            lan_a,
            lan_b,
            ep(b_wan),
            true,
        );
        let cfg_b_split = write_config(
            &dir.0,
            "b-split",
            &kb,
            &ka_pub,
            lan_b,
            lan_a,
            ep(a_wan),
            true,
        );
        let _da = start(&tb, Node::RouterA, &cfg_a_split);
        let _db = start(&tb, Node::RouterB, &cfg_b_split);
        let data = payload(400_000, 5);
        let srv = serve_once(&tb);
        let ack = transfer(&tb, server, data.clone()).expect("transfer through split routers");
        let got = srv.join().expect("server thread").expect("server");
        assert_eq!(ack, data.len() as u64);
        assert!(got == data, "split content differs");
        std::thread::sleep(Duration::from_millis(1500));
        let split_in = metric(
            &tb,
            Node::RouterA,
            "mef_router_split_flows_total{side=\"ingress\"}",
        );
        let split_out = metric(
            &tb,
            Node::RouterB,
            "mef_router_split_flows_total{side=\"egress\"}",
        );
        assert!(
            split_in >= 1.0 && split_out >= 1.0,
            "split used: {split_in} {split_out}"
        );
        // The splitter's LAN-side losses are exported, and the one connection was accepted
        // normally: nothing refused for lack of room.
        let out = tb
            .exec(Node::RouterA, &[BIN, "status", "--metrics"])
            .expect("metrics");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines()
                .any(|l| l == "mef_router_split_lan_events_total{kind=\"rejected_full\"} 0"),
            "split LAN events exported, none refused:\n{text}"
        );
        let stamped = metric(
            &tb,
            Node::RouterA,
            "mef_router_mef_packets_total{kind=\"stamped\"}",
        );
        assert!(
            stamped > 0.0,
            "the MEF transport of the split flow was stamped"
        );
        // Daemons stop (Drop) before the testbed is torn down (Drop, in reverse order).
    }
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&prefix), "namespaces left behind:\n{list}");
}
