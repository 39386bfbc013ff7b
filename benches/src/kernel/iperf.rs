//! iperf3 (3.12, Debian): running it inside the testbed's namespaces and parsing its `-J`
//! report.
//!
//! The server runs as `ip netns exec <server-ns> iperf3 -s -1` (one test, then it exits); the
//! client as `ip netns exec <client-ns> iperf3 -c ADDR -t SECS -O OMIT -C cubic|bbr -J`
//! (`-O`: the first OMIT seconds, slow start, are sent but left out of the report). The client
//! sends (iperf3's default direction), so `-C` selects the congestion control of the data
//! sender. Goodput is the receiver's figure (`end.sum_received`), retransmits the sender's
//! (`end.sum_sent.retransmits`, from the kernel's `TCP_INFO`), RTT from the sender stream's
//! `TCP_INFO` samples (`mean_rtt`, `min_rtt`, in µs).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::tcp::Cc;

/// Why an iperf3 report could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IperfError {
    /// The output is not the JSON iperf3 writes with `-J`.
    #[error("iperf3 output is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// iperf3 reported an error of its own (`"error"` key), e.g. connection refused.
    #[error("iperf3 reported: {0}")]
    Reported(String),
    /// A figure the benchmark needs is absent from the report.
    #[error("iperf3 report has no {0}")]
    Missing(&'static str),
    /// Starting or waiting for the process failed.
    #[error("running iperf3: {0}")]
    Io(#[from] std::io::Error),
    /// The client did not finish within its deadline and was killed.
    #[error("iperf3 client did not finish within {0:?}")]
    Timeout(Duration),
}

/// The figures of one iperf3 TCP test.
#[derive(Debug, Clone, PartialEq)]
pub struct IperfResult {
    /// Receiver-side goodput in Mbit/s (`end.sum_received.bits_per_second`).
    pub goodput_mbps: f64,
    /// Sender-side rate in Mbit/s (`end.sum_sent.bits_per_second`).
    pub sent_mbps: f64,
    /// Bytes the receiver got.
    pub bytes_received: u64,
    /// Length of the receiver's measurement in seconds.
    pub seconds: f64,
    /// Segments the sender retransmitted (kernel `TCP_INFO`).
    pub retransmits: u64,
    /// The sender's congestion control as iperf3 saw it (`end.sender_tcp_congestion`).
    pub congestion: Option<String>,
    /// Mean smoothed RTT of the sender's streams in ms (`TCP_INFO`), if reported.
    pub mean_rtt_ms: Option<f64>,
    /// Smallest RTT sample of the sender's streams in ms, if reported.
    pub min_rtt_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    end: Option<RawEnd>,
}

#[derive(Debug, Deserialize)]
struct RawEnd {
    #[serde(default)]
    streams: Vec<RawStream>,
    #[serde(default)]
    sum_sent: Option<RawSum>,
    #[serde(default)]
    sum_received: Option<RawSum>,
    #[serde(default)]
    sender_tcp_congestion: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawSum {
    seconds: f64,
    bytes: u64,
    bits_per_second: f64,
    #[serde(default)]
    retransmits: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RawStream {
    #[serde(default)]
    sender: Option<RawStreamSender>,
}

#[derive(Debug, Deserialize)]
struct RawStreamSender {
    #[serde(default)]
    mean_rtt: Option<f64>,
    #[serde(default)]
    min_rtt: Option<f64>,
}

/// Parses the report iperf3 prints with `-J` (client side, TCP).
pub fn parse(json: &str) -> Result<IperfResult, IperfError> {
    let raw: Raw = serde_json::from_str(json)?;
    if let Some(e) = raw.error {
        return Err(IperfError::Reported(e));
    }
    let end = raw.end.ok_or(IperfError::Missing("`end` section"))?;
    let rx = end
        .sum_received
        .ok_or(IperfError::Missing("`end.sum_received`"))?;
    let tx = end.sum_sent.ok_or(IperfError::Missing("`end.sum_sent`"))?;
    let senders: Vec<&RawStreamSender> = end
        .streams
        .iter()
        .filter_map(|s| s.sender.as_ref())
        .collect();
    let us_to_ms = |v: Vec<f64>| -> Option<f64> {
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64 / 1000.0)
    };
    let mean_rtt_ms = us_to_ms(senders.iter().filter_map(|s| s.mean_rtt).collect());
    let min_rtt_ms = senders
        .iter()
        .filter_map(|s| s.min_rtt)
        .reduce(f64::min)
        .map(|us| us / 1000.0);
    Ok(IperfResult {
        goodput_mbps: rx.bits_per_second / 1e6,
        sent_mbps: tx.bits_per_second / 1e6,
        bytes_received: rx.bytes,
        seconds: rx.seconds,
        retransmits: tx
            .retransmits
            .ok_or(IperfError::Missing("`end.sum_sent.retransmits`"))?,
        congestion: end.sender_tcp_congestion,
        mean_rtt_ms,
        min_rtt_ms,
    })
}

/// An iperf3 server process; killed and reaped on drop.
#[derive(Debug)]
pub struct IperfServer {
    child: Child,
}

impl IperfServer {
    /// Starts `iperf3 -s -1 -p PORT` inside network namespace `ns` (one test, then it exits).
    pub fn start(ns: &str, port: u16) -> Result<Self, IperfError> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-s", "-1", "-p"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self { child })
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one iperf3 client test from namespace `ns` to `server:port` for `secs` measured seconds
/// after `omit` omitted ones (`-O`), with congestion control `cc`, retrying for up to 3 s while
/// the server is not listening yet.
pub fn run_client(
    ns: &str,
    server: Ipv4Addr,
    port: u16,
    secs: u64,
    omit: u64,
    cc: Cc,
) -> Result<IperfResult, IperfError> {
    let started = Instant::now();
    loop {
        let out = run_client_once(ns, server, port, secs, omit, cc)?;
        match parse(&out) {
            Err(IperfError::Reported(e))
                if e.contains("refused") && started.elapsed() < Duration::from_secs(3) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

fn run_client_once(
    ns: &str,
    server: Ipv4Addr,
    port: u16,
    secs: u64,
    omit: u64,
    cc: Cc,
) -> Result<String, IperfError> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "iperf3", "-J", "-c"])
        .arg(server.to_string())
        .arg("-p")
        .arg(port.to_string())
        .arg("-t")
        .arg(secs.to_string())
        .arg("-O")
        .arg(omit.to_string())
        .arg("-C")
        .arg(cc.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // Read stdout on a thread so a full pipe never blocks the child, and enforce a deadline.
    let mut stdout = child
        .stdout
        .take()
        .ok_or(IperfError::Missing("stdout pipe"))?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let limit = Duration::from_secs(secs + omit + 30);
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(IperfError::Timeout(limit));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader
        .join()
        .map_err(|_| IperfError::Missing("output (reader thread panicked)"))?
        .map_err(IperfError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_report_is_an_error() {
        let j = r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect"}"#;
        assert!(matches!(parse(j), Err(IperfError::Reported(e)) if e.contains("connect")));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(parse("not json"), Err(IperfError::Json(_))));
        assert!(matches!(parse("{}"), Err(IperfError::Missing(_))));
        assert!(matches!(
            parse(r#"{"end":{"sum_sent":{"seconds":1,"bytes":1,"bits_per_second":8}}}"#),
            Err(IperfError::Missing(_))
        ));
    }
}
