//! Protocol `mef-native`: an application that speaks MEF transport itself (the
//! [`mef_transport::tokio_io`] adapter over a UDP socket), from the client namespace to the
//! server namespace through the two `mef-router` daemons of a routed testbed.
//!
//! The routers see the MEF packets as plaintext UDP on their TUN devices, recognise them as
//! MEF-native (see `mef-router/src/daemon/egress.rs`), stamp their fair rate into the header and
//! carry them through the encrypted tunnel; the sender then paces at the echoed rate
//! (`RateMode::Explicit`) instead of its CUBIC fallback. Whether that happened is checked per
//! case from router A's `mef_router_mef_packets_total{kind="stamped"}` counter and the
//! connection's final rate mode, both recorded.
//!
//! The application protocol on each stream is the TCP generator's (see [`super::tcp`]): a
//! 16-byte header, the flow's payload pattern, FIN, and the server's 17-byte answer (content
//! check, byte count, first-byte-to-EOF time), so goodput is measured at the receiver and every
//! byte is checked the same way for both transports.
//!
//! - `bulk`: one connection, one stream, writing for the bulk duration.
//! - `short-flows`: the same Pareto/Poisson arrival trace as the TCP generator, carried the way a
//!   real MEF application (like an HTTP/3 client) would: **one connection** to the server,
//!   opened before the first arrival, and **one stream per flow**. A flow's completion time runs
//!   from opening its stream to the server's answer; unlike TCP it pays no handshake, which is
//!   the point of multiplexing. The connection is one flow to the routers, so its rate is the
//!   whole fair share.
//! - `iperf3` does not speak MEF: not applicable (reported as such, no figure).
//!
//! Packets are at most [`MAX_UDP_PAYLOAD`] bytes of UDP payload so that, with IPv4 and UDP
//! headers, they fit the routers' TUN MTU (1420) unfragmented.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mef_transport::tokio_io::{Connection, MefEndpoint};
use mef_transport::{Config, ConnectionStats, StaticKeypair};

use super::tcp::{self, Amount, FlowReport, IO_TIMEOUT, ShortResult};

/// UDP port of the MEF server.
pub const MEF_PORT: u16 = 5401;
/// Largest UDP payload: the routers' default TUN MTU (1420) minus IPv4 and UDP headers.
pub const MAX_UDP_PAYLOAD: usize = 1392;

/// The transport configuration of both ends: [`MAX_UDP_PAYLOAD`], and for the server a stream
/// limit high enough for every short flow of a run on one connection (the limit counts every
/// stream ever opened).
pub fn config(server: bool) -> Config {
    let mut c = Config {
        max_udp_payload: MAX_UDP_PAYLOAD,
        ..Config::default()
    };
    if server {
        c.max_concurrent_streams = 1 << 20;
    }
    c
}

/// A MEF server inside a namespace thread, answering generator-protocol streams on any
/// number of connections; stopped and joined on drop.
#[derive(Debug)]
pub struct NativeServer {
    /// Stops and joins the server thread when dropped.
    _thread: tcp::ServerThread,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its static public key (clients need it to connect).
    pub public_key: [u8; 32],
}

impl NativeServer {
    /// Starts a server bound to `addr` inside the network namespace at `ns` (the current one
    /// when `None`), with a fresh key. Returns once the socket is bound.
    pub fn start(ns: Option<PathBuf>, addr: SocketAddr) -> anyhow::Result<Self> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        type Ready = anyhow::Result<(SocketAddr, [u8; 32])>;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
        let body = move || -> anyhow::Result<()> {
            let rt = tcp::runtime()?;
            rt.block_on(async move {
                let key = StaticKeypair::generate(&mut rand::rng());
                let public = key.public();
                let ep = match MefEndpoint::bind(addr, key, config(true)) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("binding MEF {addr}: {e}")));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(
                    ep.local_addr()
                        .map(|a| (a, public))
                        .context("local address"),
                );
                serve(ep, stop_rx).await;
                Ok(())
            })
        };
        let thread = match ns {
            Some(p) => super::netns::spawn_in(p, "mef-server", body)?,
            None => std::thread::Builder::new()
                .name("mef-server".into())
                .spawn(body)
                .context("spawning the MEF server thread")?,
        };
        let (addr, public_key) = match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(r) => r?,
            Err(_) => {
                let r = thread.join();
                bail!("MEF server did not start: {r:?}");
            }
        };
        Ok(Self {
            _thread: tcp::ServerThread::new(stop_tx, thread),
            addr,
            public_key,
        })
    }
}

async fn serve(ep: MefEndpoint, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let pat = Arc::new(tcp::pattern());
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            c = ep.accept() => match c {
                Some(conn) => {
                    conns.spawn(serve_conn(conn, pat.clone()));
                }
                None => break,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn serve_conn(conn: Connection, pat: Arc<Vec<u8>>) {
    let mut streams = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            s = conn.accept_stream() => match s {
                Some(s) => {
                    let pat = pat.clone();
                    streams.spawn(async move { let _ = tcp::serve_one(s, &pat).await; });
                }
                None => break,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    streams.abort_all();
}

/// What the sending connection reports about itself at the end of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnFigures {
    /// Packets that carried retransmitted stream data.
    pub retransmits: u64,
    /// Packets declared lost.
    pub lost: u64,
    /// Smoothed RTT in ms.
    pub srtt_ms: f64,
    /// The rate controller in charge at the end (`explicit` when routers stamp the path,
    /// `fallback-cubic` without stamps).
    pub mode: String,
    /// The last rate the peer echoed from the routers' stamps, Mbit/s.
    pub echo_mbps: Option<f64>,
}

impl ConnFigures {
    /// The figures of `stats`.
    pub fn from_stats(stats: &ConnectionStats) -> Self {
        Self {
            retransmits: stats.packets_retransmitted,
            lost: stats.packets_lost,
            srtt_ms: stats.srtt.as_secs_f64() * 1000.0,
            mode: stats.mode.to_string(),
            echo_mbps: stats.last_echo_kbps.map(|k| f64::from(k) / 1000.0),
        }
    }
}

/// Result of a MEF bulk transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeBulk {
    /// The server's report.
    pub report: FlowReport,
    /// Goodput in Mbit/s (`bytes·8 / elapsed` at the server).
    pub goodput_mbps: f64,
    /// The connection's own figures.
    pub conn: ConnFigures,
}

/// Result of a MEF short-flow run.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeShort {
    /// Per-flow results (`retransmits` from the connection's statistics).
    pub result: ShortResult,
    /// The connection's own figures.
    pub conn: ConnFigures,
}

async fn connect(server: SocketAddr, server_pub: [u8; 32]) -> anyhow::Result<Connection> {
    let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
    let ep = MefEndpoint::bind(
        any,
        StaticKeypair::generate(&mut rand::rng()),
        config(false),
    )
    .context("binding the MEF client socket")?;
    tokio::time::timeout(IO_TIMEOUT, ep.connect(server, server_pub))
        .await
        .context("MEF handshake timed out")?
        .with_context(|| format!("connecting to MEF server {server}"))
}

/// Closes `conn` and gives the driver a moment to send the CLOSE frame.
async fn close(conn: &Connection) {
    conn.close(0, b"done");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn figures(conn: &Connection) -> anyhow::Result<ConnFigures> {
    conn.stats()
        .map(|s| ConnFigures::from_stats(&s))
        .context("the MEF connection disappeared before its statistics were read")
}

/// One MEF bulk flow of `dur` from the calling thread's namespace to `server`.
pub fn bulk(server: SocketAddr, server_pub: [u8; 32], dur: Duration) -> anyhow::Result<NativeBulk> {
    let pat = tcp::pattern();
    tcp::runtime()?.block_on(async {
        let conn = connect(server, server_pub).await?;
        let s = conn.open_stream().context("opening the bulk stream")?;
        let report = tcp::send_flow(s, 1, Amount::For(dur), &pat).await?;
        let figs = figures(&conn)?;
        close(&conn).await;
        let goodput_mbps = tcp::checked_goodput(&report, "MEF bulk flow")?;
        Ok(NativeBulk {
            report,
            goodput_mbps,
            conn: figs,
        })
    })
}

/// One MEF connection from the calling thread's namespace to `server`, then one stream per
/// `(arrival offset, bytes)` at its time; waits at most `drain` after the last arrival.
pub fn short_flows(
    server: SocketAddr,
    server_pub: [u8; 32],
    arrivals: &[(Duration, u64)],
    drain: Duration,
) -> anyhow::Result<NativeShort> {
    let pat = Arc::new(tcp::pattern());
    tcp::runtime()?.block_on(async {
        let conn = connect(server, server_pub).await?;
        let run = tcp::run_arrivals(arrivals, drain, |id, bytes| {
            let (conn, pat) = (conn.clone(), pat.clone());
            async move {
                let s = conn.open_stream().context("opening a stream")?;
                tcp::send_flow(s, id, Amount::Bytes(bytes), &pat).await
            }
        })
        .await;
        let figs = figures(&conn)?;
        close(&conn).await;
        let result = run.into_result(arrivals.len(), figs.retransmits)?;
        Ok(NativeShort { result, conn: figs })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn loopback_bulk_and_short_flows_over_mef_are_checked() {
        let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        let server = NativeServer::start(None, any).expect("server starts");
        let b = bulk(server.addr, server.public_key, Duration::from_millis(300)).expect("bulk");
        assert!(b.report.content_ok && b.report.bytes > 0, "{b:?}");
        assert!(b.goodput_mbps > 0.0);
        // No router on loopback: the fallback controller runs.
        assert_eq!(b.conn.mode, "fallback-cubic", "{b:?}");
        let arrivals: Vec<(Duration, u64)> = (0..20)
            .map(|i| (Duration::from_millis(5 * i), 1000 + 7919 * i))
            .collect();
        let s = short_flows(
            server.addr,
            server.public_key,
            &arrivals,
            Duration::from_secs(10),
        )
        .expect("short flows run");
        assert_eq!(s.result.completed.len(), 20, "{s:?}");
        assert_eq!(s.result.incomplete, 0);
        assert_eq!(s.result.bytes, arrivals.iter().map(|a| a.1).sum::<u64>());
    }

    #[test]
    fn packets_fit_the_router_tun_mtu() {
        assert_eq!(MAX_UDP_PAYLOAD + 28, 1420);
        assert_eq!(config(false).max_udp_payload, MAX_UDP_PAYLOAD);
        assert!(config(true).max_concurrent_streams > 100_000);
    }
}
