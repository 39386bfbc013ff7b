//! Calibration of the real-time emulator in a testbed: delay error, rate error, loss rate and
//! the highest rate this machine sustains (Linux, root).
//!
//! Every measurement builds a fresh [`Testbed`] without routers, runs the emulator with one
//! configuration, and sends a UDP probe from a thread in the client namespace to a thread in
//! the server namespace. Both threads belong to this process, so they share one monotonic
//! clock and the **one-way** delay of every packet is measured exactly (no RTT halving).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::EmulatorConfig;
use crate::link::LinkConfig;
use crate::loss::LossModel;
use crate::testbed::{Node, Testbed, TestbedConfig, TestbedError};

const PROBE_PORT: u16 = 47_000;
const UDP_IP_HEADER: usize = 28;
/// `SCHED_FIFO` priority of the probe threads: below the emulator's, above everything else.
const PROBE_PRIORITY: u8 = 10;

/// Why a calibration could not run.
#[derive(Debug, Error)]
pub enum CalibrationError {
    /// The testbed could not be built (not root, missing tools, ...).
    #[error("testbed: {0}")]
    Testbed(#[from] TestbedError),
    /// A probe socket failed.
    #[error("probe socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The probe received nothing.
    #[error("the probe received no packets")]
    NothingReceived,
}

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationOptions {
    /// One-way delays to check (each a separate run at `rate_bps`, light load).
    pub delays: Vec<Duration>,
    /// The rate to check (a UDP flood at 1.1 × this rate through a link of this rate).
    pub rate_bps: u64,
    /// The Bernoulli loss rate to check.
    pub loss: f64,
    /// Length of each probe run.
    pub probe_time: Duration,
    /// Upper bound of the sustained-rate search; `None` skips the search.
    pub search_max_bps: Option<u64>,
}

impl Default for CalibrationOptions {
    /// 20 ms and 100 ms, 100 Mbit/s, 1 % loss, 2 s probes, search up to 10 Gbit/s.
    fn default() -> Self {
        Self {
            delays: vec![Duration::from_millis(20), Duration::from_millis(100)],
            rate_bps: 100_000_000,
            loss: 0.01,
            probe_time: Duration::from_secs(2),
            search_max_bps: Some(10_000_000_000),
        }
    }
}

/// Delay accuracy for one configured delay. Errors are measured one-way delay minus the
/// configured delay minus the packet's serialisation time at the configured rate.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayCheck {
    /// The configured one-way delay.
    pub configured: Duration,
    /// Probes received.
    pub samples: usize,
    /// Mean error in microseconds (positive: later than configured).
    pub mean_error_us: f64,
    /// 99th percentile of the absolute error in microseconds.
    pub p99_abs_error_us: f64,
    /// Largest absolute error in microseconds.
    pub max_abs_error_us: f64,
}

/// Result of a calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationReport {
    /// One entry per configured delay.
    pub delays: Vec<DelayCheck>,
    /// The configured rate (bits/s of IP bytes).
    pub rate_bps: u64,
    /// The rate measured at the receiver during a saturating flood.
    pub measured_rate_bps: f64,
    /// `measured / configured − 1`.
    pub rate_error: f64,
    /// The configured loss probability.
    pub loss_configured: f64,
    /// The measured loss rate.
    pub loss_measured: f64,
    /// Probes sent in the loss run.
    pub loss_samples: u64,
    /// `(measured − configured) / σ` of the binomial: within ±4 is statistically fine.
    pub loss_z: f64,
    /// Highest link rate at which a UDP flood at 95 % of it loses < 1 % (nothing configured to
    /// lose), found by doubling then bisection; `None` if not searched.
    pub highest_sustained_bps: Option<u64>,
}

/// What one probe run saw.
#[derive(Debug, Clone, Default)]
struct ProbeOutcome {
    sent: u64,
    received: u64,
    /// One-way delays in ns.
    delays_ns: Vec<u64>,
    /// Receive time (ns since epoch) and IP bytes of every packet.
    arrivals: Vec<(u64, usize)>,
}

/// Wall-clock time in ns since the Unix epoch: the clock of the kernel's receive timestamps.
fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Receives one datagram with the kernel's receive timestamp (`SO_TIMESTAMPNS`, taken when
/// the packet reached the server's socket layer, so the probe thread's wake-up latency is not
/// measured); falls back to the current wall time.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, u64)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let mut at = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                let ns = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
                at = u64::try_from(ns).ok();
            }
        }
    }
    Ok((msg.bytes, at.unwrap_or_else(wall_ns)))
}

fn elapsed_ns(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Sends `payload`-byte UDP datagrams at `rate_bps` (IP bytes) for `time` from the client to
/// the server of `tb`, and records arrivals.
fn probe(
    tb: &Testbed,
    rate_bps: u64,
    payload: usize,
    time: Duration,
) -> Result<ProbeOutcome, CalibrationError> {
    let payload = payload.max(16);
    let warmup = tb.emulator().map_or(Duration::ZERO, |e| {
        2 * (e.config().a_to_b.delay + e.config().a_to_b.jitter)
    }) + Duration::from_millis(50);
    let epoch = Instant::now();
    let server: SocketAddr = (tb.server_addr(), PROBE_PORT).into();
    let done = Arc::new(AtomicBool::new(false));
    let sock = tb.run_in(Node::Server, || UdpSocket::bind(server))??;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        .map_err(std::io::Error::from)?;
    // The probe must not be the bottleneck: a large buffer, and (below) real-time priority.
    if nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(16 << 20))
        .is_err()
    {
        let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(16 << 20));
    }
    let done_rx = done.clone();
    let receiver = std::thread::spawn(move || {
        super::make_realtime(Some(PROBE_PRIORITY));
        let mut out = ProbeOutcome::default();
        let mut buf = [0u8; 2048];
        let mut quiet_since: Option<Instant> = None;
        loop {
            match recv_stamped(&sock, &mut buf) {
                Ok((n, now)) if n >= 16 && buf[..8] != u64::MAX.to_le_bytes() => {
                    quiet_since = None;
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&buf[8..16]);
                    let sent_at = u64::from_le_bytes(ts);
                    out.received += 1;
                    out.delays_ns.push(now.saturating_sub(sent_at));
                    out.arrivals.push((now, n + UDP_IP_HEADER));
                }
                Ok(_) => {}
                Err(_) => {
                    if done_rx.load(Ordering::Relaxed) {
                        let q = *quiet_since.get_or_insert_with(Instant::now);
                        // Longer than any configured delay plus queueing.
                        if q.elapsed() > Duration::from_millis(600) {
                            return out;
                        }
                    }
                }
            }
        }
    });
    let sent = tb.run_in(Node::Client, || -> std::io::Result<u64> {
        let _ = nix::sys::prctl::set_timerslack(1);
        super::make_realtime(Some(PROBE_PRIORITY));
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        s.connect(server)?;
        // Warm-up: resolve ARP across the emulated link before measuring; the receiver
        // ignores these (sequence number u64::MAX).
        let mut warm = vec![0u8; 16];
        warm[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        for _ in 0..3 {
            s.send(&warm)?;
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(warmup);
        let interval_ns = ((payload + UDP_IP_HEADER) as f64 * 8e9 / rate_bps as f64) as u64;
        let start = elapsed_ns(epoch);
        let end = start + u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        let mut buf = vec![0u8; payload];
        let mut seq = 0u64;
        loop {
            let due = start + seq * interval_ns.max(1);
            if due >= end {
                break;
            }
            let now = elapsed_ns(epoch);
            if due > now {
                // Sleep only (1 ns timer slack): late sends are caught up in a burst, so the
                // mean rate is exact without burning a core the emulator needs.
                std::thread::sleep(Duration::from_nanos(due - now));
                continue;
            }
            buf[..8].copy_from_slice(&seq.to_le_bytes());
            buf[8..16].copy_from_slice(&wall_ns().to_le_bytes());
            // A full socket buffer is the sender's own limit, not the emulator's: retry.
            while let Err(e) = s.send(&buf) {
                if e.kind() != std::io::ErrorKind::WouldBlock && e.raw_os_error() != Some(105) {
                    return Err(e);
                }
                std::thread::yield_now();
            }
            seq += 1;
        }
        Ok(seq)
    });
    done.store(true, Ordering::Relaxed);
    let mut out = receiver
        .join()
        .map_err(|_| std::io::Error::other("probe receiver panicked"))?;
    out.sent = sent??;
    Ok(out)
}

fn testbed(link: LinkConfig) -> Result<Testbed, CalibrationError> {
    let cfg = TestbedConfig::direct(EmulatorConfig::symmetric(link));
    Ok(Testbed::create(cfg)?)
}

/// Measures the one-way delay error of an emulated link of `delay` and `rate_bps` with 1000
/// probes per second for `time`.
pub fn check_delay(
    delay: Duration,
    rate_bps: u64,
    time: Duration,
) -> Result<DelayCheck, CalibrationError> {
    let link = LinkConfig::new(rate_bps, delay);
    let payload = 200;
    let tx = link.tx_time(payload + UDP_IP_HEADER);
    let tb = testbed(link)?;
    // 1000 probes per second.
    let out = probe(
        &tb,
        ((payload + UDP_IP_HEADER) * 8 * 1000) as u64,
        payload,
        time,
    )?;
    drop(tb);
    if out.delays_ns.is_empty() {
        return Err(CalibrationError::NothingReceived);
    }
    let target = (delay + tx).as_nanos() as f64;
    let errs: Vec<f64> = out
        .delays_ns
        .iter()
        .map(|&d| (d as f64 - target) / 1000.0)
        .collect();
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    let mut abs: Vec<f64> = errs.iter().map(|e| e.abs()).collect();
    abs.sort_by(f64::total_cmp);
    let p99 = abs[((abs.len() - 1) as f64 * 0.99) as usize];
    Ok(DelayCheck {
        configured: delay,
        samples: errs.len(),
        mean_error_us: mean,
        p99_abs_error_us: p99,
        max_abs_error_us: abs.last().copied().unwrap_or(0.0),
    })
}

/// Floods a link of `rate_bps` at `offered` × its rate with 1472-byte datagrams and returns
/// `(received rate over the middle of the run, sent, received)`.
fn flood(rate_bps: u64, offered: f64, time: Duration) -> Result<(f64, u64, u64), CalibrationError> {
    let link = LinkConfig::new(rate_bps, Duration::from_millis(5));
    let tb = testbed(link)?;
    let out = probe(&tb, (rate_bps as f64 * offered) as u64, 1472, time)?;
    drop(tb);
    let n = out.arrivals.len();
    if n < 10 {
        return Err(CalibrationError::NothingReceived);
    }
    // Skip the first and last 10 % of arrivals (queue filling, draining).
    let (lo, hi) = (n / 10, n - n / 10);
    let (t0, _) = out.arrivals[lo];
    let (t1, _) = out.arrivals[hi - 1];
    let bytes: usize = out.arrivals[lo + 1..hi].iter().map(|a| a.1).sum();
    let rate = bytes as f64 * 8e9 / (t1.saturating_sub(t0).max(1)) as f64;
    Ok((rate, out.sent, out.received))
}

/// Measures the rate error at `rate_bps`: `(measured bits/s, relative error)`.
pub fn check_rate(rate_bps: u64, time: Duration) -> Result<(f64, f64), CalibrationError> {
    let (measured, _, _) = flood(rate_bps, 1.1, time)?;
    Ok((measured, measured / rate_bps as f64 - 1.0))
}

/// Measures Bernoulli loss `p`: `(measured rate, probes sent, z score)`.
pub fn check_loss(p: f64, time: Duration) -> Result<(f64, u64, f64), CalibrationError> {
    // A queue far larger than any burst of the probe: this run checks the loss model only.
    let link = LinkConfig::new(100_000_000, Duration::from_millis(2))
        .with_loss(LossModel::Bernoulli(p))
        .with_queue_limit(64 << 20);
    let tb = testbed(link)?;
    let payload = 100;
    // 10,000 probes per second.
    let out = probe(
        &tb,
        ((payload + UDP_IP_HEADER) * 8 * 10_000) as u64,
        payload,
        time,
    )?;
    if let Some(e) = tb.emulator() {
        eprintln!(
            "loss probe, emulator a->b: {:?}",
            e.stats(super::Direction::AtoB)
        );
    }
    drop(tb);
    let sent = out.sent.max(1);
    let measured = 1.0 - out.received as f64 / sent as f64;
    let sigma = (p * (1.0 - p) / sent as f64).sqrt().max(f64::MIN_POSITIVE);
    Ok((measured, out.sent, (measured - p) / sigma))
}

/// Whether a flood at 95 % of `rate_bps` loses < 1 % and the sender reached 90 % of it.
fn sustains(rate_bps: u64, time: Duration) -> Result<bool, CalibrationError> {
    let (measured, sent, received) = flood(rate_bps, 0.95, time)?;
    let loss = 1.0 - received as f64 / sent.max(1) as f64;
    tracing::info!(rate_bps, measured, loss, "sustained-rate probe");
    Ok(loss < 0.01 && measured >= 0.9 * 0.95 * rate_bps as f64)
}

/// Highest rate (doubling from 100 Mbit/s up to `max_bps`, then three bisection steps) that
/// sustains it (a UDP flood at 95 % of the rate loses < 1 % and reaches 90 % of it); 0 if not
/// even 100 Mbit/s.
pub fn search_sustained(max_bps: u64, time: Duration) -> Result<u64, CalibrationError> {
    let mut good = 0u64;
    let mut bad = None;
    let mut r = 100_000_000u64.min(max_bps);
    while r <= max_bps {
        if sustains(r, time)? {
            good = r;
            r = r.saturating_mul(2);
        } else {
            bad = Some(r);
            break;
        }
    }
    if let Some(mut hi) = bad {
        let mut lo = good;
        for _ in 0..3 {
            let mid = lo + (hi - lo) / 2;
            if mid <= lo {
                break;
            }
            if sustains(mid, time)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        good = lo;
    }
    Ok(good)
}

/// Runs the whole calibration (root only; each run builds and tears down its own testbed).
pub fn calibrate(opts: &CalibrationOptions) -> Result<CalibrationReport, CalibrationError> {
    let delays = opts
        .delays
        .iter()
        .map(|&d| check_delay(d, opts.rate_bps, opts.probe_time))
        .collect::<Result<Vec<_>, _>>()?;
    let (measured_rate_bps, rate_error) = check_rate(opts.rate_bps, opts.probe_time)?;
    let (loss_measured, loss_samples, loss_z) = check_loss(opts.loss, opts.probe_time)?;
    let highest_sustained_bps = match opts.search_max_bps {
        Some(max) => Some(search_sustained(max, opts.probe_time / 2)?),
        None => None,
    };
    Ok(CalibrationReport {
        delays,
        rate_bps: opts.rate_bps,
        measured_rate_bps,
        rate_error,
        loss_configured: opts.loss,
        loss_measured,
        loss_samples,
        loss_z,
        highest_sustained_bps,
    })
}
