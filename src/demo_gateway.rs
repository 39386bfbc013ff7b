//! The gateway part of `mef demo`: the real `mef-gateway` daemon code (issue 6) in this
//! process, on loopback, with its simulated sensors: BTHome adverts (half encrypted) through
//! the BLE ingest path and LoRa uplinks with Cayenne LPP sent as Semtech PUSH_DATA to its own
//! UDP listener; every reading is written to the SQLite queue before it is acknowledged, and
//! forwarded in signed batches to a file uplink.

use std::time::{Duration, Instant};

use anyhow::Context;
use gateway::daemon::config::Config;
use gateway::daemon::run::{RunOptions, Simulate, run as run_daemon};
use gateway::uplink::FileUplink;

const SENSORS: usize = 24;
const RATE: f64 = 2_000.0;
const SECONDS: u64 = 3;

/// Runs the gateway part and prints its summary.
pub fn run(_seed: u64) -> anyhow::Result<()> {
    println!(
        "\nGateway: the mef-gateway daemon with {SENSORS} simulated sensors (BTHome over BLE, \
         Cayenne LPP over LoRa through its Semtech UDP listener), {RATE} readings/s for {SECONDS} s"
    );
    let dir = std::env::temp_dir().join(format!("mef-demo-gateway-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = demo(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo(dir: &std::path::Path) -> anyhow::Result<()> {
    let key = gateway::daemon::key::generate()?;
    gateway::daemon::key::write(&dir.join("gateway.key"), &key)?;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let lora = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let text = format!(
        "[gateway]\nkey = \"gateway.key\"\n\n[store]\npath = \"queue.db\"\nmax_readings = 1000000\nmax_bytes = 268435456\n\n\
         [lora]\nenabled = true\nlisten = \"{lora}\"\n\n[ble]\nenabled = false\n\n\
         [uplink]\nkind = \"file\"\npath = \"uplink.jsonl\"\n\n[metrics]\nlisten = \"{metrics}\"\n"
    );
    let cfg = Config::parse(&text, "demo gateway.toml", dir).context("demo gateway config")?;
    let wall = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    let opts = RunOptions {
        simulate: Some(Simulate {
            sensors: SENSORS,
            rate: RATE,
        }),
    };
    rt.block_on(async {
        run_daemon(cfg, opts, tokio::time::sleep(Duration::from_secs(SECONDS))).await
    })
    .context("gateway daemon")?;
    let mut batches = FileUplink::read(dir.join("uplink.jsonl"))?;
    // A batch re-sent after a lost ack appears twice; receivers dedupe by its first sequence.
    batches.sort_by_key(|b| b.first_seq);
    batches.dedup_by_key(|b| b.first_seq);
    let public = key.verifying_key();
    let mut readings = 0usize;
    let mut ble = 0usize;
    for b in &batches {
        b.verify(&public).context("a forwarded batch's signature")?;
        readings += b.readings.len();
        ble += b
            .readings
            .iter()
            .filter(|(_, r)| r.source == gateway::Source::Ble)
            .count();
    }
    println!(
        "{readings} readings stored durably and forwarded in {} signed batches ({ble} from BTHome, {} from LoRa), every batch signature verified; {:.1} s wall",
        batches.len(),
        readings - ble,
        wall.elapsed().as_secs_f64()
    );
    for source in [gateway::Source::Ble, gateway::Source::Lora] {
        if let Some((seq, r)) = batches
            .iter()
            .flat_map(|b| &b.readings)
            .find(|(_, r)| r.source == source)
        {
            println!(
                "  e.g. reading {seq}: {:?} device {} {} = {} {}",
                r.source, r.device, r.quantity, r.value, r.unit
            );
        }
    }
    Ok(())
}
