//! Goodput of one split TCP connection through two `SplitBridge`s over a lossy long-haul WAN:
//! 200 ms RTT, 1 % random loss each way, 100 Mbit/s with a `MefQdisc` at the WAN egress that
//! stamps the fair rate into every MEF header (RFC 3135 split connection: the WAN segment runs
//! MEF transport, the LAN segments run smoltcp TCP). Virtual time, deterministic.
//!
//! `cargo run --release -p mef-router --example bridge_throughput [MEGABYTES]`

#[path = "../tests/bridge_world.rs"]
mod world;

use std::net::SocketAddrV4;
use std::time::Duration;

use world::{App, SERVER_IP, World, payload, sha};

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(150);
    let len = mb * 1_000_000;
    const RATE: u64 = 100_000_000;
    const LOSS_PPM: u32 = 10_000;
    let keys = World::real_keys();
    let mut w = World::new(
        Duration::from_millis(200),
        LOSS_PPM,
        Some(RATE),
        keys.b,
        keys.a,
        |cfg| {
            // Bigger LAN-side buffers so the LAN hop never limits a 100 Mbit/s flow.
            cfg.split.rx_buffer = 1 << 20;
            cfg.split.tx_buffer = 1 << 20;
        },
    );
    let data = payload(7, len);
    let srv = w.b.host.listen(5201);
    let cli = w.a.host.add_socket();
    w.a.host
        .connect(cli, SocketAddrV4::new(SERVER_IP, 5201), 40000);
    let mut client = App::new(cli, data.clone());
    let mut server = App::new(srv, Vec::new());
    let done = w.run_until(Duration::from_secs(120), |w| {
        client.run(&mut w.a.host, w.t);
        server.run(&mut w.b.host, w.t);
        server.received == len
    });
    let (Some(first), Some(last)) = (server.first_byte, server.last_byte) else {
        eprintln!("no data arrived: A {:?}", w.a.bridge.stats());
        std::process::exit(1);
    };
    let secs = (last - first).as_secs_f64().max(1e-3);
    let goodput = server.received as f64 * 8.0 / secs;
    let target = 0.9 * RATE as f64 * (1.0 - f64::from(LOSS_PPM) / 1e6);
    println!(
        "split TCP over MEF, 200 ms RTT, 1 % loss, 100 Mbit/s MefQdisc: {} of {} bytes in {:.2} s \
         (first byte at {:.2} s) -> goodput {:.1} Mbit/s = {:.2} x C(1-p) (target 0.90); \
         content {}; WAN lost {} of {} A->B datagrams",
        server.received,
        len,
        secs,
        first.as_secs_f64(),
        goodput / 1e6,
        goodput / (RATE as f64 * (1.0 - f64::from(LOSS_PPM) / 1e6)),
        if done && server.digest() == sha(&data) {
            "verified (SHA-256)"
        } else {
            "INCOMPLETE"
        },
        w.ab.lost,
        w.ab.sent,
    );
    let _ = target;
    if let Some(c) = w.a.bridge.endpoint().connections().next()
        && let Some(conn) = w.a.bridge.endpoint().connection(c)
    {
        let s = conn.stats();
        println!(
            "MEF connection A->B: mode {:?}, rate {:.1} Mbit/s, srtt {:?}, lost packets {}, sent {}",
            s.mode,
            s.rate_bps as f64 / 1e6,
            s.srtt,
            s.packets_lost,
            s.packets_sent
        );
    }
}
