//! `mef bench gateway` (issue 6): the real `mef-gateway` daemon, driven from outside as its
//! radios would drive it.
//!
//! - **LoRa, end to end** (`readings_per_s`): this process acts as a Semtech packet forwarder
//!   (`gateway::lora::semtech`, protocol version 2) on loopback and sends PUSH_DATA datagrams,
//!   each with 8 `rxpk` of a plaintext test device carrying 3 Cayenne LPP readings, keeping up
//!   to [`WINDOW`] datagrams unacknowledged. The daemon sends PUSH_ACK only once a datagram's
//!   readings are committed to its store (WAL, fsynced), so acknowledged readings per second
//!   is the durable rate, and send→PUSH_ACK time is the packet-to-durable latency.
//! - **Simulated mix** (`mix_readings_per_s`): the daemon's own `--simulate` sensors (BTHome
//!   adverts, half of them encrypted, through the BLE ingest path, and LoRa uplinks over UDP
//!   to its listener) at an unreachable rate; the rate is the growth of its
//!   `mef_gateway_readings_appended_total` counters.
//! - **The ingest pipeline alone** (`pipeline_readings_per_s`): the daemon's own
//!   `gateway::daemon::ingest::Ingest` in this process, fed inputs generated beforehand — half
//!   the readings from BTHome adverts (half of those AES-CCM encrypted), half from Semtech
//!   PUSH_DATA datagrams of LPP frames — with the daemon's batching, each flush one durable
//!   commit: what the pipeline costs without the load generator or sockets.
//! - **Steady state at 1,000 readings/s** (`rss_mib_at_1000_per_s`,
//!   `durable_latency_p99_ms`): the forwarder paced at 1,000 readings/s; the daemon's resident
//!   set (`VmRSS` of its `/proc/<pid>/status`) sampled every 250 ms, and the latency of every
//!   datagram.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gateway::daemon::simulate::{lorawan_uplink, push_data, rxpk};
use gateway::lpp::Encoder;
use serde::Serialize;

/// Datagrams the forwarder keeps unacknowledged in the throughput run.
pub const WINDOW: usize = 64;
/// `rxpk` per PUSH_DATA.
const RXPK_PER_DATAGRAM: usize = 8;
/// Readings per `rxpk` (temperature, humidity, barometer).
const READINGS_PER_RXPK: usize = 3;
/// Simulated LoRa devices (DevAddrs configured as plaintext test devices).
const DEVICES: u32 = 100;
/// First DevAddr.
const DEV_ADDR0: u32 = 0x2601_0000;

/// Latency percentiles, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Samples.
    pub samples: usize,
}

impl Latency {
    fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Latency {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: v[v.len() - 1],
            samples: v.len(),
        }
    }
}

/// Everything `mef bench gateway` measured.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayReport {
    /// Quick mode.
    pub quick: bool,
    /// `/proc/loadavg` when the run started.
    pub load_before: Option<[f64; 3]>,
    /// Durable readings per second over LoRa/UDP with [`WINDOW`] datagrams in flight.
    pub readings_per_s: f64,
    /// Send→PUSH_ACK latency in that saturated run.
    pub saturated_latency: Latency,
    /// Readings per second stored from the daemon's own simulated sensors (BTHome + LoRa).
    pub mix_readings_per_s: f64,
    /// Of which BLE (BTHome) and LoRa.
    pub mix_by_source: HashMap<String, f64>,
    /// Readings per second through the ingest pipeline in-process (BTHome + LoRa, inputs
    /// generated beforehand), durable.
    pub pipeline_readings_per_s: f64,
    /// Readings decoded from BTHome and from LoRa, and duplicates the store dropped.
    pub pipeline_stored: [u64; 3],
    /// 99th percentile of send→PUSH_ACK at 1,000 readings/s, ms.
    pub durable_latency_p99_ms: f64,
    /// Latency at 1,000 readings/s.
    pub steady_latency: Latency,
    /// Largest resident set of the daemon at 1,000 readings/s, MiB.
    pub rss_mib_at_1000_per_s: f64,
    /// Its resident set when the steady run ended, MiB.
    pub rss_mib_end: f64,
    /// Readings acknowledged in the steady run, and its length in seconds.
    pub steady_readings: u64,
    /// Seconds of the steady run.
    pub steady_seconds: f64,
}

/// The `mef-gateway` binary next to this one, built first if missing.
fn daemon_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let bin = exe.with_file_name("mef-gateway");
    if !bin.exists() {
        let release = exe
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "gateway", "--bin", "mef-gateway"]);
        if release {
            cmd.arg("--release");
        }
        eprintln!("gateway: building mef-gateway …");
        let st = cmd
            .status()
            .context("running cargo build for mef-gateway")?;
        if !st.success() || !bin.exists() {
            bail!("could not build mef-gateway ({st})");
        }
    }
    Ok(bin)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running daemon in its own directory; killed and removed on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
    lora: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemon {
    fn start(bin: &Path, tag: &str, simulate: Option<(usize, f64)>) -> anyhow::Result<Daemon> {
        let dir =
            std::env::temp_dir().join(format!("mef-bench-gateway-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let st = Command::new(bin)
            .args(["keygen", "--out"])
            .arg(dir.join("gateway.key"))
            .stdout(Stdio::null())
            .status()
            .context("mef-gateway keygen")?;
        if !st.success() {
            bail!("mef-gateway keygen failed ({st})");
        }
        let lora = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let metrics = SocketAddr::from(([127, 0, 0, 1], {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        }));
        let devices: Vec<String> = (0..DEVICES)
            .map(|i| format!("\"{:08x}\"", DEV_ADDR0 + i))
            .collect();
        let config = format!(
            "[gateway]\nkey = \"gateway.key\"\n\n[store]\npath = \"queue.db\"\nmax_readings = 50000000\nmax_bytes = 8589934592\n\n\
             [lora]\nenabled = true\nlisten = \"{lora}\"\nplaintext_devices = [{}]\n\n[ble]\nenabled = false\n\n\
             [uplink]\nkind = \"file\"\npath = \"uplink.jsonl\"\n\n[metrics]\nlisten = \"{metrics}\"\n",
            devices.join(", ")
        );
        let cfg = dir.join("gateway.toml");
        std::fs::write(&cfg, config)?;
        let mut cmd = Command::new(bin);
        cmd.arg("run").arg("--config").arg(&cfg);
        if let Some((n, rate)) = simulate {
            cmd.args(["--simulate", &n.to_string(), "--rate", &rate.to_string()]);
        }
        cmd.env("MEF_GATEWAY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().context("starting mef-gateway run")?;
        let d = Daemon {
            child,
            dir,
            lora,
            metrics,
        };
        // Ready when the metrics endpoint answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        while gateway::daemon::run::fetch(d.metrics, "/metrics").is_err() {
            if Instant::now() > deadline {
                bail!("mef-gateway did not come up within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    fn rss_mib(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// `mef_gateway_readings_appended_total` per source.
    fn appended(&self) -> anyhow::Result<HashMap<String, f64>> {
        let text = gateway::daemon::run::fetch(self.metrics, "/metrics")
            .map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
        let mut out = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("mef_gateway_readings_appended_total{source=\"")
                && let Some((source, value)) = rest.split_once("\"} ")
                && let Ok(v) = value.trim().parse::<f64>()
            {
                out.insert(source.to_owned(), v);
            }
        }
        Ok(out)
    }
}

/// The forwarder's side: PUSH_DATA datagrams with fresh FCnts and values.
struct Forwarder {
    sock: UdpSocket,
    eui: [u8; 8],
    token: u16,
    fcnt: u16,
    sent: HashMap<u16, Instant>,
    latencies: Vec<f64>,
    acked_readings: u64,
}

impl Forwarder {
    fn new(daemon: SocketAddr) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.connect(daemon)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Forwarder {
            sock,
            eui: [0xb8, 0x27, 0xeb, 0xff, 0xfe, 0x00, 0x00, 0x01],
            token: 0,
            fcnt: 0,
            sent: HashMap::new(),
            latencies: Vec::new(),
            acked_readings: 0,
        })
    }

    fn send_one(&mut self) -> anyhow::Result<()> {
        let bytes = self.build()?;
        self.sock.send(&bytes)?;
        self.sent.insert(self.token, Instant::now());
        Ok(())
    }

    /// The next PUSH_DATA datagram (fresh token, FCnts and values).
    fn build(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut pks = Vec::with_capacity(RXPK_PER_DATAGRAM);
        for k in 0..RXPK_PER_DATAGRAM {
            self.fcnt = self.fcnt.wrapping_add(1);
            let dev = DEV_ADDR0 + (u32::from(self.fcnt) + k as u32) % DEVICES;
            let v = f64::from(self.fcnt % 200);
            let mut lpp = Encoder::new();
            lpp.add_temperature(1, -10.0 + v * 0.1)?;
            lpp.add_humidity(2, 20.0 + (v % 120.0) * 0.5)?;
            lpp.add_barometer(3, 950.0 + v * 0.5)?;
            let phy = lorawan_uplink(dev, self.fcnt, 1, lpp.as_bytes());
            pks.push(rxpk(&phy, u32::from(self.fcnt)));
        }
        self.token = self.token.wrapping_add(1);
        Ok(push_data(self.token, self.eui, pks))
    }

    /// Takes one PUSH_ACK (or times out).
    fn receive(&mut self) -> anyhow::Result<bool> {
        let mut buf = [0u8; 64];
        match self.sock.recv(&mut buf) {
            // PUSH_ACK: version 2, token (2 bytes, big-endian), identifier 0x01.
            Ok(4) if buf[0] == 2 && buf[3] == 1 => {
                let token = u16::from_be_bytes([buf[1], buf[2]]);
                if let Some(t) = self.sent.remove(&token) {
                    self.latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    self.acked_readings += (RXPK_PER_DATAGRAM * READINGS_PER_RXPK) as u64;
                }
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Saturated LoRa run: readings/s acknowledged (durable) and latency.
fn lora_saturated(bin: &Path, seconds: f64) -> anyhow::Result<(f64, Latency)> {
    let d = Daemon::start(bin, "sat", None)?;
    let mut f = Forwarder::new(d.lora)?;
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + Duration::from_secs_f64(seconds);
    let mut counted_from = None;
    while Instant::now() < end {
        while f.sent.len() < WINDOW {
            f.send_one()?;
        }
        if !f.receive()? {
            // A lost datagram (none expected on loopback): forget the oldest so the window
            // keeps moving.
            if let Some((&k, _)) = f.sent.iter().min_by_key(|(_, t)| **t) {
                f.sent.remove(&k);
            }
        }
        if counted_from.is_none() && Instant::now() >= warm {
            f.latencies.clear();
            counted_from = Some((Instant::now(), f.acked_readings));
        }
    }
    let (t0, r0) = counted_from.unwrap_or((warm, 0));
    let rate = (f.acked_readings - r0) as f64 / t0.elapsed().as_secs_f64();
    Ok((rate, Latency::of(std::mem::take(&mut f.latencies))))
}

/// The daemon's own simulated sensors, as fast as it goes.
fn simulated_mix(bin: &Path, seconds: f64) -> anyhow::Result<(f64, HashMap<String, f64>)> {
    let d = Daemon::start(bin, "mix", Some((200, 1e7)))?;
    std::thread::sleep(Duration::from_secs(1));
    let a = d.appended()?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let b = d.appended()?;
    let dt = t.elapsed().as_secs_f64();
    let by: HashMap<String, f64> = b
        .iter()
        .map(|(k, v)| (k.clone(), (v - a.get(k).copied().unwrap_or(0.0)) / dt))
        .collect();
    Ok((by.values().sum(), by))
}

/// Paced at 1,000 readings/s: RSS and latency.
fn steady(bin: &Path, seconds: f64) -> anyhow::Result<(Latency, f64, f64, u64, f64)> {
    let d = Daemon::start(bin, "steady", None)?;
    let mut f = Forwarder::new(d.lora)?;
    f.sock.set_read_timeout(Some(Duration::from_millis(5)))?;
    let per_datagram = (RXPK_PER_DATAGRAM * READINGS_PER_RXPK) as f64;
    let interval = Duration::from_secs_f64(per_datagram / 1000.0);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut next = start;
    let mut next_sample = start;
    let mut rss_max: f64 = 0.0;
    let mut rss_end = 0.0;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next {
            f.send_one()?;
            next += interval;
        }
        if now >= next_sample {
            if let Some(r) = d.rss_mib() {
                rss_max = rss_max.max(r);
                rss_end = r;
            }
            next_sample += Duration::from_millis(250);
        }
        f.receive()?;
    }
    // The last acks.
    let drain = Instant::now() + Duration::from_secs(2);
    while !f.sent.is_empty() && Instant::now() < drain {
        f.receive()?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        Latency::of(std::mem::take(&mut f.latencies)),
        rss_max,
        rss_end,
        f.acked_readings,
        secs,
    ))
}

/// `total` readings (half BTHome, half LoRa) through [`gateway::daemon::ingest::Ingest`] with a
/// fresh store: inputs built first, then timed from the first push to the last commit.
fn pipeline(total: u64) -> anyhow::Result<(f64, [u64; 3])> {
    use gateway::bthome;
    use gateway::daemon::ingest::{Ingest, IngestConfig};
    use gateway::lora::server::ServerConfig;
    use gateway::lpp::LoraDevices;
    use gateway::store::{Limits, Store};
    use std::sync::{Arc, Mutex};

    const BLE_DEVICES: usize = 200;
    let dir = std::env::temp_dir().join(format!("mef-bench-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let key = gateway::daemon::key::generate()?;
    let store = Store::open(
        dir.join("queue.db"),
        Limits {
            max_readings: 50_000_000,
            max_bytes: 8 << 30,
            ..Limits::default()
        },
        key,
    )?;
    let macs: Vec<[u8; 6]> = (0..BLE_DEVICES)
        .map(|i| [0xa4, 0xc1, 0x38, 0, (i >> 8) as u8, i as u8])
        .collect();
    let keys: Vec<([u8; 6], [u8; 16])> = macs
        .iter()
        .step_by(2)
        .map(|m| (*m, [m[5] ^ 0x5a; 16]))
        .collect();
    let mut lora = LoraDevices::new();
    for i in 0..DEVICES {
        lora = lora.with_plaintext(DEV_ADDR0 + i);
    }
    let mut ingest = Ingest::new(
        Arc::new(Mutex::new(store)),
        IngestConfig {
            batch_readings: 500,
            batch_interval_ms: 20,
            ble_keys: keys.clone(),
            lora,
            server: ServerConfig::default(),
        },
    );
    // Inputs: BTHome adverts of 4 readings (battery, temperature, humidity, pressure) and
    // PUSH_DATA datagrams of 8 × 3 LPP readings, interleaved so the readings split evenly.
    enum Input {
        Ble([u8; 6], Vec<u8>),
        Lora(Vec<u8>),
    }
    let mut inputs = Vec::new();
    let mut f = Forwarder::new(SocketAddr::from(([127, 0, 0, 1], 9)))?;
    let mut counters = vec![0u32; BLE_DEVICES];
    let (mut ble, mut lo) = (0u64, 0u64);
    let mut n = 0u64;
    while ble + lo < total {
        if ble <= lo {
            let d = (n as usize) % BLE_DEVICES;
            let mac = macs[d];
            counters[d] += 1;
            let v = f64::from(counters[d] % 1000);
            let mut objects = Vec::new();
            for (id, value) in [
                (0x01, 90.0),
                (0x02, -5.0 + v * 0.01),
                (0x03, 40.0 + v * 0.01),
                (0x04, 990.0 + v * 0.01),
            ] {
                objects.extend(bthome::encode_value(id, value).context("BTHome object")?);
            }
            let data = match keys.iter().find(|(m, _)| *m == mac) {
                Some((_, k)) => bthome::encrypt(k, mac, false, counters[d], &objects)?,
                None => {
                    let mut data = vec![bthome::device_info_byte(false, false)];
                    data.extend(objects);
                    data
                }
            };
            inputs.push(Input::Ble(mac, data));
            ble += 4;
        } else {
            inputs.push(Input::Lora(f.build()?));
            lo += (RXPK_PER_DATAGRAM * READINGS_PER_RXPK) as u64;
        }
        n += 1;
    }
    let from = SocketAddr::from(([127, 0, 0, 1], 1700));
    let now_ms = gateway::reading::now_ms;
    let (mut stored, mut dups) = (0u64, 0u64);
    let t = Instant::now();
    for input in &inputs {
        let now = now_ms();
        match input {
            Input::Ble(mac, data) => {
                ingest.push_ble(*mac, Some(-60), data, now);
            }
            Input::Lora(d) => {
                ingest.push_semtech(from, d, now);
            }
        }
        if ingest.should_flush(now) {
            let out = ingest.flush(now);
            if let Some(e) = out.error {
                bail!("ingest flush: {e}");
            }
            stored += out.appended as u64;
            dups += out.duplicates as u64;
        }
    }
    let out = ingest.flush(now_ms());
    stored += out.appended as u64;
    dups += out.duplicates as u64;
    let secs = t.elapsed().as_secs_f64();
    let c = ingest.counters();
    let per_source = [c.ble.readings, c.lora.readings];
    let errors = c.ble.parse_errors + c.lora.parse_errors + c.ble.rejected + c.lora.rejected;
    if errors > 0 {
        bail!("the pipeline refused {errors} of the generated inputs");
    }
    let _ = std::fs::remove_dir_all(&dir);
    if stored + dups < total {
        bail!("the pipeline stored {stored} and dropped {dups} as duplicates of {total} readings");
    }
    Ok((stored as f64 / secs, [per_source[0], per_source[1], dups]))
}

/// Runs the three measurements.
pub fn run(quick: bool) -> anyhow::Result<GatewayReport> {
    let load_before = crate::metrics::load_avg();
    let bin = daemon_binary()?;
    let secs = if quick { 3.0 } else { 10.0 };
    eprintln!("gateway: LoRa over UDP, {WINDOW} datagrams in flight, {secs} s …");
    let (readings_per_s, saturated_latency) = lora_saturated(&bin, secs)?;
    eprintln!("gateway: simulated BTHome + LoRa sensors, {secs} s …");
    let (mix_readings_per_s, mix_by_source) = simulated_mix(&bin, secs)?;
    let total = if quick { 100_000 } else { 400_000 };
    eprintln!("gateway: {total} readings through the ingest pipeline in-process …");
    let (pipeline_readings_per_s, pipeline_stored) = pipeline(total)?;
    let steady_secs = if quick { 5.0 } else { 20.0 };
    eprintln!("gateway: 1,000 readings/s for {steady_secs} s …");
    let (steady_latency, rss_max, rss_end, steady_readings, steady_seconds) =
        steady(&bin, steady_secs)?;
    Ok(GatewayReport {
        quick,
        load_before,
        readings_per_s,
        saturated_latency,
        mix_readings_per_s,
        mix_by_source,
        pipeline_readings_per_s,
        pipeline_stored,
        durable_latency_p99_ms: steady_latency.p99_ms,
        steady_latency,
        rss_mib_at_1000_per_s: rss_max,
        rss_mib_end: rss_end,
        steady_readings,
        steady_seconds,
    })
}

/// Prints the table and writes the JSON and a plot.
pub fn report(r: &GatewayReport, json: Option<&Path>) -> anyhow::Result<()> {
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let load = r.load_before.map_or("unknown".into(), |l| {
        format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
    });
    println!(
        "gateway bench{}: the real mef-gateway process; load average before the run {load}",
        if r.quick { " (quick)" } else { "" }
    );
    println!("{:<52} {:>12}  target", "measure", "value");
    println!(
        "{:<52} {:>12.0}  >= 20000: {}",
        "readings_per_s (LoRa/UDP, PUSH_ACK after durable)",
        r.readings_per_s,
        met(r.readings_per_s >= 20_000.0)
    );
    println!(
        "{:<52} {:>12}",
        "  send->ack p50 / p99 ms (64 datagrams in flight)",
        format!(
            "{:.1} / {:.1}",
            r.saturated_latency.p50_ms, r.saturated_latency.p99_ms
        )
    );
    println!(
        "{:<52} {:>12.0}  >= 20000: {}",
        "mix_readings_per_s (simulated BTHome + LoRa)",
        r.mix_readings_per_s,
        met(r.mix_readings_per_s >= 20_000.0)
    );
    let mut by: Vec<_> = r.mix_by_source.iter().collect();
    by.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in by {
        println!("{:<52} {:>12.0}", format!("  of which {k}"), v);
    }
    println!(
        "{:<52} {:>12.0}  >= 20000: {}",
        "pipeline_readings_per_s (in-process, BTHome + LoRa)",
        r.pipeline_readings_per_s,
        met(r.pipeline_readings_per_s >= 20_000.0)
    );
    println!(
        "{:<52} {:>12}",
        "  decoded BTHome / LoRa, duplicates",
        format!(
            "{} / {} / {}",
            r.pipeline_stored[0], r.pipeline_stored[1], r.pipeline_stored[2]
        )
    );
    println!(
        "{:<52} {:>12.1}  (none)",
        "durable_latency_p99_ms (at 1,000 readings/s)", r.durable_latency_p99_ms
    );
    println!(
        "{:<52} {:>12.1}  <= 32: {}",
        "rss_mib_at_1000_per_s (max VmRSS)",
        r.rss_mib_at_1000_per_s,
        met(r.rss_mib_at_1000_per_s <= 32.0)
    );
    println!(
        "{:<52} {:>12}",
        "  readings acknowledged / seconds",
        format!("{} / {:.1}", r.steady_readings, r.steady_seconds)
    );
    crate::record::write_report(&crate::record::report_path(json, "gateway"), r, |svg| {
        plot(r, svg)
    })
}

/// Bars: the durable rates against the 20,000/s target.
fn plot(r: &GatewayReport, path: &Path) -> anyhow::Result<()> {
    crate::plot::bar_chart(
        path,
        "",
        &[crate::plot::BarPanel {
            title: "mef-gateway: durable readings/s".into(),
            y_desc: "readings/s".into(),
            bars: vec![
                ("LoRa/UDP".into(), r.readings_per_s),
                ("simulated mix".into(), r.mix_readings_per_s),
                ("pipeline in-process".into(), r.pipeline_readings_per_s),
            ],
            target: Some(("target >= 20000".into(), 20_000.0)),
        }],
    )
}
