//! The built-in TCP traffic generator: kernel TCP with the congestion control chosen per socket
//! (`TCP_CONGESTION`), every byte content-checked by the receiver.
//!
//! Protocol (client → server, the client is the data sender, like iperf3): the client opens a
//! connection, sends a 16-byte header (`b"MEFK"`, a u32 reserved, a u64 flow id, big endian)
//! followed by the payload, and half-closes. The payload byte at offset `o` of flow `id` is
//! `(o + id) mod 251`, so shifted, lost or duplicated bytes show. At EOF the server answers 17
//! bytes: `1` (content correct) or `0`, the payload bytes it received (u64) and the nanoseconds
//! from the first payload byte to EOF (u64). The server sets no congestion control: it only
//! acknowledges.
//!
//! A bulk flow sends for a fixed time; its goodput is the server's byte count over the server's
//! first-byte-to-EOF time. A short flow sends its size; its flow completion time runs from the
//! client's `connect()` to the server's answer (handshake + data + half a round trip back).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::socket::{getsockopt, setsockopt, sockopt::TcpCongestion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

/// A kernel TCP congestion control module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cc {
    /// `cubic` (RFC 9438), the Linux default.
    Cubic,
    /// `bbr` (BBRv1 in mainline Linux).
    Bbr,
    /// `reno` (NewReno).
    Reno,
}

impl Cc {
    /// The module name the kernel and iperf3's `-C` use.
    pub fn name(self) -> &'static str {
        match self {
            Cc::Cubic => "cubic",
            Cc::Bbr => "bbr",
            Cc::Reno => "reno",
        }
    }
}

/// Why `TCP_CONGESTION` could not be set.
#[derive(Debug, thiserror::Error)]
pub enum CcError {
    /// The kernel refused: `EPERM` when the module is not in
    /// `net.ipv4.tcp_allowed_congestion_control` and the caller lacks `CAP_NET_ADMIN`,
    /// `ENOENT` when the module is not available.
    #[error("setsockopt(TCP_CONGESTION, {name}): {errno}")]
    Set {
        /// The requested module.
        name: &'static str,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
    /// Reading the option back failed.
    #[error("getsockopt(TCP_CONGESTION): {0}")]
    Get(nix::errno::Errno),
    /// The kernel accepted the option but reports another module.
    #[error("asked for {want}, the socket uses {got}")]
    Mismatch {
        /// The requested module.
        want: &'static str,
        /// What the socket reports.
        got: String,
    },
}

/// Sets the socket's congestion control and reads it back to check that it took.
pub fn set_congestion(sock: &impl AsFd, cc: Cc) -> Result<(), CcError> {
    let name = cc.name();
    setsockopt(sock, TcpCongestion, &std::ffi::OsString::from(name))
        .map_err(|errno| CcError::Set { name, errno })?;
    let got = congestion(sock)?;
    if got != name {
        return Err(CcError::Mismatch { want: name, got });
    }
    Ok(())
}

/// The socket's congestion control module.
pub fn congestion(sock: &impl AsFd) -> Result<String, CcError> {
    let v = getsockopt(sock, TcpCongestion).map_err(CcError::Get)?;
    // The kernel returns a NUL-padded fixed-size name.
    Ok(v.to_string_lossy().trim_end_matches('\0').to_string())
}

const MAGIC: &[u8; 4] = b"MEFK";
const PERIOD: usize = 251;
const CHUNK: usize = 64 * 1024;
/// How long connect, a write or the final answer may stall before the flow counts as failed.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A buffer of the payload pattern, long enough to slice `CHUNK` bytes at any phase.
pub(crate) fn pattern() -> Vec<u8> {
    (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

/// The `len` payload bytes of flow `id` starting at offset `off`, as a slice of `pat`.
fn expected(pat: &[u8], id: u64, off: u64, len: usize) -> &[u8] {
    let phase = ((off + id) % PERIOD as u64) as usize;
    &pat[phase..phase + len.min(CHUNK)]
}

/// What the server reports for one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowReport {
    /// Every payload byte matched the pattern.
    pub content_ok: bool,
    /// Payload bytes received.
    pub bytes: u64,
    /// Time from the first payload byte to EOF at the server.
    pub elapsed: Duration,
    /// The sender socket's `TCP_INFO` after the transfer (`None` for MEF streams, or when the
    /// kernel refused it).
    pub tcp: Option<super::tcpinfo::TcpStats>,
}

/// A generator server inside a namespace thread; stopped and joined on drop.
#[derive(Debug)]
pub struct GenServer {
    /// Stops and joins the server thread when dropped.
    _thread: ServerThread,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl GenServer {
    /// Starts a server listening on `addr` inside the network namespace at `ns` (the current
    /// namespace when `None`). Returns once the socket listens.
    pub fn start(ns: Option<std::path::PathBuf>, addr: SocketAddr) -> anyhow::Result<Self> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<SocketAddr>>();
        let body = move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the server runtime")?;
            rt.block_on(async move {
                let listener = match TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("binding {addr}: {e}")));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(listener.local_addr().context("local address"));
                serve(listener, stop_rx).await;
                Ok(())
            })
        };
        let thread = match ns {
            Some(p) => super::netns::spawn_in(p, "gen-server", body)?,
            None => std::thread::Builder::new()
                .name("gen-server".into())
                .spawn(body)
                .context("spawning the server thread")?,
        };
        let addr = match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(r) => r?,
            Err(_) => {
                let r = thread.join();
                bail!("generator server did not start: {r:?}");
            }
        };
        Ok(Self {
            _thread: ServerThread::new(stop_tx, thread),
            addr,
        })
    }
}

/// A server's thread and its stop signal: dropping it signals the stop and joins the thread
/// (shared by the TCP generator's and the MEF-native server).
#[derive(Debug)]
pub struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl ServerThread {
    /// Wraps a running server thread and the sender that stops it.
    pub fn new(
        stop: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<anyhow::Result<()>>,
    ) -> Self {
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: TcpListener, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let pat = Arc::new(pattern());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            acc = listener.accept() => {
                if let Ok((s, _)) = acc {
                    let pat = pat.clone();
                    tasks.spawn(async move { let _ = serve_one(s, &pat).await; });
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.abort_all();
}

/// Serves one flow of the generator protocol on `s` (a TCP connection or a MEF stream): reads
/// the header and the payload to EOF, checks it, answers and closes its side.
pub(crate) async fn serve_one<S>(mut s: S, pat: &[u8]) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = [0u8; 16];
    s.read_exact(&mut head).await?;
    if &head[..4] != MAGIC {
        return Ok(());
    }
    let mut id_bytes = [0u8; 8];
    id_bytes.copy_from_slice(&head[8..16]);
    let id = u64::from_be_bytes(id_bytes);
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    let mut ok = true;
    let mut first: Option<Instant> = None;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        if ok && buf[..n] != *expected(pat, id, off, n) {
            ok = false;
        }
        off += n as u64;
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    let mut ans = [0u8; 17];
    ans[0] = u8::from(ok);
    ans[1..9].copy_from_slice(&off.to_be_bytes());
    ans[9..17].copy_from_slice(&(elapsed.as_nanos() as u64).to_be_bytes());
    s.write_all(&ans).await?;
    s.shutdown().await
}

/// What one client flow amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Amount {
    /// Exactly this many payload bytes.
    Bytes(u64),
    /// As much as the sender can write for this long.
    For(Duration),
}

async fn client_flow(
    server: SocketAddr,
    cc: Cc,
    id: u64,
    amount: Amount,
    pat: &[u8],
) -> anyhow::Result<FlowReport> {
    let sock = TcpSocket::new_v4().context("socket")?;
    set_congestion(&sock, cc)?;
    let mut s = tokio::time::timeout(IO_TIMEOUT, sock.connect(server))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connecting to {server}"))?;
    let mut report = send_flow(&mut s, id, amount, pat).await?;
    // Read after the server's answer: every payload segment has been acknowledged by then.
    report.tcp = super::tcpinfo::tcp_info(&s)
        .map_err(|e| tracing::debug!("TCP_INFO: {e}"))
        .ok();
    Ok(report)
}

/// The client side of one flow of the generator protocol on `s` (a TCP connection or a MEF
/// stream): header, payload, half-close, then the server's answer.
pub(crate) async fn send_flow<S>(
    mut s: S,
    id: u64,
    amount: Amount,
    pat: &[u8],
) -> anyhow::Result<FlowReport>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = [0u8; 16];
    head[..4].copy_from_slice(MAGIC);
    head[8..].copy_from_slice(&id.to_be_bytes());
    s.write_all(&head).await.context("writing the header")?;
    let start = Instant::now();
    let mut off = 0u64;
    loop {
        let n = match amount {
            Amount::Bytes(total) => (total - off).min(CHUNK as u64) as usize,
            Amount::For(d) if start.elapsed() < d => CHUNK,
            Amount::For(_) => 0,
        };
        if n == 0 {
            break;
        }
        tokio::time::timeout(IO_TIMEOUT, s.write_all(expected(pat, id, off, n)))
            .await
            .context("write stalled")?
            .context("writing payload")?;
        off += n as u64;
    }
    tokio::time::timeout(IO_TIMEOUT, s.shutdown())
        .await
        .context("half-close stalled")?
        .context("half-closing")?;
    let mut ans = [0u8; 17];
    tokio::time::timeout(IO_TIMEOUT, s.read_exact(&mut ans))
        .await
        .context("no answer from the server")?
        .context("reading the answer")?;
    let mut b = [0u8; 8];
    b.copy_from_slice(&ans[1..9]);
    let bytes = u64::from_be_bytes(b);
    b.copy_from_slice(&ans[9..17]);
    let nanos = u64::from_be_bytes(b);
    Ok(FlowReport {
        content_ok: ans[0] == 1 && bytes == off,
        bytes,
        elapsed: Duration::from_nanos(nanos),
        tcp: None,
    })
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client runtime")
}

/// Result of a bulk transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkResult {
    /// The server's report.
    pub report: FlowReport,
    /// Goodput in Mbit/s (`bytes·8 / elapsed` at the server).
    pub goodput_mbps: f64,
    /// Segments the sender retransmitted: its `TCP_INFO` `tcpi_total_retrans`, or the client
    /// namespace's `RetransSegs` delta when `TCP_INFO` was not available.
    pub retransmits: u64,
    /// The sender's smoothed RTT at the end (`TCP_INFO` `tcpi_rtt`), milliseconds.
    pub srtt_ms: Option<f64>,
}

/// A bulk flow's goodput in Mbit/s, once the server confirmed the content (an error names
/// `what` otherwise).
pub fn checked_goodput(report: &FlowReport, what: &str) -> anyhow::Result<f64> {
    if !report.content_ok {
        bail!(
            "{what}: content mismatch at the server ({} bytes)",
            report.bytes
        );
    }
    let secs = report.elapsed.as_secs_f64();
    Ok(if secs > 0.0 {
        report.bytes as f64 * 8.0 / secs / 1e6
    } else {
        0.0
    })
}

/// One bulk flow of `secs` from the calling thread's namespace to `server` with `cc`.
pub fn bulk(server: SocketAddr, cc: Cc, dur: Duration) -> anyhow::Result<BulkResult> {
    let before = super::netns::retrans_segs()?;
    let pat = pattern();
    let report = runtime()?.block_on(client_flow(server, cc, 1, Amount::For(dur), &pat))?;
    let ns_retransmits = super::netns::retrans_segs()?.saturating_sub(before);
    let goodput_mbps = checked_goodput(&report, "bulk flow")?;
    Ok(BulkResult {
        retransmits: report.tcp.map_or(ns_retransmits, |t| t.total_retrans),
        srtt_ms: report.tcp.map(|t| t.srtt_ms()),
        report,
        goodput_mbps,
    })
}

/// Results of a short-flow run.
#[derive(Debug, Clone, PartialEq)]
pub struct ShortResult {
    /// `(size in bytes, arrival offset, flow completion time)` of every completed flow.
    pub completed: Vec<(u64, Duration, Duration)>,
    /// Flows that failed or were still running at the drain deadline.
    pub incomplete: u64,
    /// Flows whose content check failed (counted in `incomplete` too).
    pub corrupted: u64,
    /// Payload bytes delivered over the whole run.
    pub bytes: u64,
    /// Wall time from the first arrival to the last completion.
    pub span: Duration,
    /// TCP segments retransmitted in the client's namespace during the run.
    pub retransmits: u64,
    /// Mean of the completed flows' final smoothed RTT from their sender sockets' `TCP_INFO`
    /// (`None` when no flow had one, as for MEF streams), milliseconds.
    pub mean_srtt_ms: Option<f64>,
}

/// Opens one flow per `(arrival offset, bytes)` at its time, from the calling thread's
/// namespace to `server` with `cc`; waits at most `drain` after the last arrival.
pub fn short_flows(
    server: SocketAddr,
    cc: Cc,
    arrivals: &[(Duration, u64)],
    drain: Duration,
) -> anyhow::Result<ShortResult> {
    let before = super::netns::retrans_segs()?;
    let pat = Arc::new(pattern());
    let run = runtime()?.block_on(run_arrivals(arrivals, drain, |id, bytes| {
        let pat = pat.clone();
        async move { client_flow(server, cc, id, Amount::Bytes(bytes), &pat).await }
    }));
    let retransmits = super::netns::retrans_segs()?.saturating_sub(before);
    run.into_result(arrivals.len(), retransmits)
}

/// One ended flow: size, arrival offset, and (report, flow completion time) or why it failed.
type Done = (u64, Duration, anyhow::Result<(FlowReport, Duration)>);

/// What [`run_arrivals`] observed: every flow that ended, with its size, arrival offset and
/// (report, flow completion time) or error; flows still running at the deadline; the time from
/// the first arrival to the last completion.
#[derive(Debug)]
pub(crate) struct ArrivalRun {
    done: Vec<Done>,
    unfinished: u64,
    span: Duration,
}

/// Starts `flow(id, bytes)` as a task at each arrival offset (ids are the trace indices), times
/// each from its start to its end, and waits at most `drain` after the last arrival. Must run
/// inside a tokio runtime.
pub(crate) async fn run_arrivals<F, Fut>(
    arrivals: &[(Duration, u64)],
    drain: Duration,
    flow: F,
) -> ArrivalRun
where
    F: Fn(u64, u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<FlowReport>> + Send + 'static,
{
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut done: Vec<Done> = Vec::with_capacity(arrivals.len());
    let mut last_done = t0;
    let reap = |r: Result<Done, tokio::task::JoinError>, done: &mut Vec<Done>| {
        if let Ok(d) = r {
            done.push(d);
        }
    };
    for (id, &(at, bytes)) in arrivals.iter().enumerate() {
        tokio::time::sleep_until((t0 + at).into()).await;
        let fut = flow(id as u64, bytes);
        set.spawn(async move {
            let start = Instant::now();
            let r = fut.await;
            (bytes, at, r.map(|rep| (rep, start.elapsed())))
        });
        // Reap finished flows as we go so the set does not grow without bound.
        while let Some(r) = set.try_join_next() {
            last_done = Instant::now();
            reap(r, &mut done);
        }
    }
    let deadline = tokio::time::Instant::now() + drain;
    while !set.is_empty() {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(r)) => {
                last_done = Instant::now();
                reap(r, &mut done);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let unfinished = set.len() as u64;
    set.abort_all();
    ArrivalRun {
        done,
        unfinished,
        span: last_done.saturating_duration_since(t0),
    }
}

impl ArrivalRun {
    /// The summary of a run of `n_arrivals` flows with `retransmits` measured around it; an
    /// error when any flow arrived with wrong content.
    pub(crate) fn into_result(
        self,
        n_arrivals: usize,
        retransmits: u64,
    ) -> anyhow::Result<ShortResult> {
        let mut res = ShortResult {
            completed: Vec::with_capacity(self.done.len()),
            incomplete: self.unfinished
                + (n_arrivals as u64).saturating_sub(self.done.len() as u64 + self.unfinished),
            corrupted: 0,
            bytes: 0,
            span: self.span,
            retransmits,
            mean_srtt_ms: None,
        };
        let (mut rtt_sum, mut rtt_n) = (0.0, 0u32);
        for (size, at, r) in self.done {
            match r {
                Ok((rep, fct)) if rep.content_ok => {
                    if let Some(t) = rep.tcp {
                        rtt_sum += t.srtt_ms();
                        rtt_n += 1;
                    }
                    res.bytes += rep.bytes;
                    res.completed.push((size, at, fct));
                }
                Ok((rep, _)) => {
                    res.bytes += rep.bytes;
                    res.corrupted += 1;
                    res.incomplete += 1;
                }
                Err(e) => {
                    tracing::debug!("short flow failed: {e:#}");
                    res.incomplete += 1;
                }
            }
        }
        if res.corrupted > 0 {
            bail!("{} short flow(s) arrived with wrong content", res.corrupted);
        }
        if rtt_n > 0 {
            res.mean_srtt_ms = Some(rtt_sum / f64::from(rtt_n));
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn pattern_slices_match_offsets() {
        let pat = pattern();
        let whole: Vec<u8> = (0..1000u64).map(|o| ((o + 7) % 251) as u8).collect();
        assert_eq!(expected(&pat, 7, 0, 1000), &whole[..]);
        assert_eq!(expected(&pat, 7, 300, 500), &whole[300..800]);
    }

    #[test]
    fn loopback_bulk_and_short_flows_are_checked() {
        let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        let server = GenServer::start(None, any).expect("server starts");
        // Reno is allowed to unprivileged users on every kernel; bulk must report its bytes.
        let b = bulk(server.addr, Cc::Reno, Duration::from_millis(300)).expect("bulk runs");
        assert!(b.report.content_ok && b.report.bytes > 0, "{b:?}");
        assert!(b.goodput_mbps > 0.0);
        let arrivals: Vec<(Duration, u64)> = (0..20)
            .map(|i| (Duration::from_millis(5 * i), 1000 + 7919 * i))
            .collect();
        let s = short_flows(server.addr, Cc::Reno, &arrivals, Duration::from_secs(10))
            .expect("short flows run");
        assert_eq!(s.completed.len(), 20, "{s:?}");
        assert_eq!(s.incomplete, 0);
        assert_eq!(s.bytes, arrivals.iter().map(|a| a.1).sum::<u64>());
    }

    #[test]
    fn congestion_control_per_socket_on_loopback() {
        for cc in [Cc::Cubic, Cc::Bbr] {
            let sock = TcpSocket::new_v4().expect("socket");
            match set_congestion(&sock, cc) {
                Ok(()) => assert_eq!(congestion(&sock).expect("readable"), cc.name()),
                Err(CcError::Set { errno, .. })
                    if matches!(errno, nix::errno::Errno::EPERM | nix::errno::Errno::ENOENT) =>
                {
                    eprintln!(
                        "skipping {}: the kernel refused TCP_CONGESTION ({errno}); not in \
                         net.ipv4.tcp_allowed_congestion_control for this user or not built",
                        cc.name()
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
