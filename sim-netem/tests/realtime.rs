//! Real-time emulator calibration and testbed tests (Linux, root; skipped with a reason
//! otherwise). Each test builds its own uniquely named namespaces and removes them.
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sim_netem::realtime::{EmulatorConfig, check_delay, check_loss, check_rate, search_sustained};
use sim_netem::testbed::{Node, Testbed, TestbedConfig, is_root};
use sim_netem::{LinkConfig, LossModel};

/// The root tests measure timing on a small machine: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn root_or_skip(test: &str) -> bool {
    if is_root() {
        true
    } else {
        println!("skipping {test}: needs root (network namespaces, packet sockets)");
        false
    }
}

fn tool_or_skip(test: &str, tool: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        println!("skipping {test}: `{tool}` is not installed");
    }
    ok
}

#[test]
fn delay_20ms_and_100ms_within_1ms() {
    if !root_or_skip("delay calibration") || !tool_or_skip("delay calibration", "ethtool") {
        return;
    }
    let _serial = serial();
    // A 2-core CI machine is noisy: a calibration run that a burst of unrelated load disturbed
    // is repeated, up to three runs per delay. A broken emulator (wrong delay, late release)
    // fails all three; only the accepted run's figures are what we claim.
    for ms in [20, 100] {
        let mut runs = Vec::new();
        let accepted = (0..3).find_map(|attempt| {
            let d = check_delay(
                Duration::from_millis(ms),
                100_000_000,
                Duration::from_secs(2),
            )
            .expect("delay probe");
            println!(
                "delay {ms} ms, run {attempt}: {} samples, mean error {:.1} us, p99 |error| {:.1} us, max {:.1} us",
                d.samples, d.mean_error_us, d.p99_abs_error_us, d.max_abs_error_us
            );
            let ok = d.samples > 1500 && d.mean_error_us.abs() < 1000.0 && d.p99_abs_error_us < 1000.0;
            runs.push(d.clone());
            ok.then_some(d)
        });
        assert!(
            accepted.is_some(),
            "delay {ms} ms outside ±1 ms in three runs: {runs:?}"
        );
    }
}

#[test]
fn rate_100mbit_within_2_percent() {
    if !root_or_skip("rate calibration") || !tool_or_skip("rate calibration", "ethtool") {
        return;
    }
    let _serial = serial();
    let (measured, err) = check_rate(100_000_000, Duration::from_secs(2)).expect("rate probe");
    println!(
        "rate 100 Mbit/s: measured {:.2} Mbit/s, error {:+.3} %",
        measured / 1e6,
        err * 100.0
    );
    assert!(err.abs() < 0.02, "measured {measured} bit/s");
}

#[test]
fn loss_1_percent_within_bounds() {
    if !root_or_skip("loss calibration") || !tool_or_skip("loss calibration", "ethtool") {
        return;
    }
    let _serial = serial();
    let (measured, sent, z) = check_loss(0.01, Duration::from_secs(2)).expect("loss probe");
    println!(
        "loss 1 %: measured {:.3} % of {sent} probes, z = {z:+.2}",
        measured * 100.0
    );
    assert!(sent > 15_000);
    assert!(
        z.abs() < 4.5,
        "measured loss {measured} from {sent} probes (z {z})"
    );
}

fn leftovers(prefix: &str) -> (String, String) {
    let ns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip");
    let ns: String = String::from_utf8_lossy(&ns.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .collect();
    let links: String = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter(|l| {
            l.contains("wan-a") || l.contains("wan-b") || l.contains("lan0") || l.contains("wan0")
        })
        .collect();
    (ns, links)
}

#[test]
fn testbed_teardown_leaves_nothing() {
    if !root_or_skip("testbed teardown") || !tool_or_skip("testbed teardown", "ethtool") {
        return;
    }
    let _serial = serial();
    let prefix = format!("mef{}-", std::process::id());
    let tb = Testbed::create(TestbedConfig::with_routers(EmulatorConfig::symmetric(
        LinkConfig::new(100_000_000, Duration::from_millis(1)),
    )))
    .expect("testbed");
    let names: Vec<String> = [
        Node::Client,
        Node::RouterA,
        Node::Emu,
        Node::RouterB,
        Node::Server,
    ]
    .iter()
    .map(|&n| tb.netns(n).expect("node").to_string())
    .collect();
    // A process in a router slot, killed at teardown.
    let mut sleep = std::process::Command::new("sleep");
    sleep.arg("600");
    let mut child = tb.spawn_in(Node::RouterA, sleep).expect("spawn");
    // Routed path client -> rtrA -> emu -> rtrB -> server works.
    let out = tb
        .exec(
            Node::Client,
            &["ping", "-c", "1", "-W", "2", &tb.server_addr().to_string()],
        )
        .expect("ping");
    if tool_or_skip("testbed ping", "ping") {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    tb.teardown();
    let listed = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip")
            .stdout,
    )
    .to_string();
    for n in &names {
        assert!(!listed.contains(n.as_str()), "{n} left behind");
    }
    let (_, links) = leftovers(&prefix);
    assert!(
        links.is_empty(),
        "devices left in the root namespace: {links}"
    );
    // The child was killed.
    let status = child.wait().expect("wait");
    assert!(!status.success());
}

#[test]
fn tcp_transfer_through_lossy_wan_is_intact() {
    if !root_or_skip("tcp transfer") || !tool_or_skip("tcp transfer", "ethtool") {
        return;
    }
    let _serial = serial();
    let link = LinkConfig::new(50_000_000, Duration::from_millis(10))
        .with_loss(LossModel::Bernoulli(0.01))
        .with_jitter(Duration::from_millis(1));
    let tb = Testbed::create(TestbedConfig::with_routers(
        EmulatorConfig::symmetric(link).with_seed(3),
    ))
    .expect("testbed");
    let data: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let listener = tb
        .run_in(Node::Server, || TcpListener::bind((tb.server_addr(), 5201)))
        .expect("ns")
        .expect("bind");
    let expect_len = data.len();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut got = Vec::with_capacity(expect_len);
        s.read_to_end(&mut got).expect("read");
        got
    });
    let addr = tb.server_addr();
    tb.run_in(Node::Client, || {
        let mut c = TcpStream::connect((addr, 5201)).expect("connect");
        c.write_all(&data).expect("write");
    })
    .expect("ns");
    let got = server.join().expect("server");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "content differs");
    let emu = tb.emulator().expect("emulator");
    let a2b = emu.stats(sim_netem::realtime::Direction::AtoB);
    println!("a->b: {a2b:?}");
    assert!(a2b.lost > 0, "1 % loss should have lost something");
    assert_eq!(a2b.oversize, 0, "offloads must be off");
}

#[test]
fn highest_sustained_rate() {
    if !root_or_skip("sustained-rate search") || !tool_or_skip("sustained-rate search", "ethtool") {
        return;
    }
    let _serial = serial();
    let best = search_sustained(3_200_000_000, Duration::from_secs(1)).expect("search");
    println!(
        "highest rate sustained with < 1 % loss (UDP, 1500-byte packets): {:.0} Mbit/s",
        best as f64 / 1e6
    );
    assert!(
        best >= 100_000_000,
        "the emulator must sustain 100 Mbit/s, got {best}"
    );
}

/// The RTT in ms of one `ping -c 1` from `node` to `dst`, from its `time=` field.
fn ping_rtt_ms(tb: &Testbed, node: Node, dst: &str) -> Option<f64> {
    let out = tb
        .exec(node, &["ping", "-c", "1", "-W", "3", dst])
        .expect("ping runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let t = text.split("time=").nth(1)?;
    t.split_whitespace().next()?.parse().ok()
}

#[test]
fn second_client_adds_its_access_delay_and_is_torn_down() {
    let test = "second client";
    if !root_or_skip(test) || !tool_or_skip(test, "ethtool") || !tool_or_skip(test, "ping") {
        return;
    }
    let _serial = serial();
    let wan = EmulatorConfig::symmetric(LinkConfig::new(100_000_000, Duration::from_millis(10)));
    let access =
        EmulatorConfig::symmetric(LinkConfig::new(10_000_000_000, Duration::from_millis(20)));
    for routed in [false, true] {
        let cfg = if routed {
            TestbedConfig::with_routers(wan.clone())
        } else {
            TestbedConfig::direct(wan.clone())
        };
        let tb = Testbed::create(cfg.with_second_client(access.clone())).expect("testbed");
        assert!(tb.has_second_client());
        let names: Vec<String> = [Node::Client2, Node::Emu2, Node::Client, Node::Server]
            .iter()
            .map(|&n| tb.netns(n).expect("node").to_string())
            .collect();
        let server = tb.server_addr().to_string();
        // The first ping may wait for ARP; take the second.
        let _ = ping_rtt_ms(&tb, Node::Client2, &server);
        let far = ping_rtt_ms(&tb, Node::Client2, &server).expect("client 2 reaches the server");
        let _ = ping_rtt_ms(&tb, Node::Client, &server);
        let near = ping_rtt_ms(&tb, Node::Client, &server).expect("client reaches the server");
        // WAN RTT 20 ms; the access link adds 40 ms.
        assert!(
            (19.0..30.0).contains(&near),
            "routed {routed}: client RTT {near} ms"
        );
        assert!(
            (59.0..70.0).contains(&far),
            "routed {routed}: client 2 RTT {far} ms"
        );
        tb.teardown();
        let listed = String::from_utf8_lossy(
            &std::process::Command::new("ip")
                .args(["netns", "list"])
                .output()
                .expect("ip")
                .stdout,
        )
        .to_string();
        for n in &names {
            assert!(!listed.contains(n.as_str()), "{n} left behind");
        }
    }
}
