//! `mef bench kernel` (root only): the Linux kernel's TCP Cubic and BBR against the same TCP
//! applications through a pair of MEF routers, over an emulated WAN in network namespaces.
//!
//! Every scenario cell (RTT × loss at 100 Mbit/s, buffer 1 BDP) builds its own testbed
//! (`sim_netem::testbed`: client ns — emulator ns — server ns, or client ns — router A —
//! emulator — router B — server ns), runs its cases one after the other, and tears the testbed
//! down before the next cell (also on error or panic; on Ctrl-C the testbed's handler kills
//! every process in its namespaces, deletes them and exits with status 130). Runs
//! are sequential: the machine has two cores and the emulator needs one.
//!
//! Protocols: `kernel-cubic` and `kernel-bbr` (direct, no routers), `mef-split` (the same TCP
//! applications through the routers) and `mef-native` (an application on MEF transport through
//! the routers, see [`native`]). Cases per protocol:
//! - `iperf3`: one TCP test (`-C cubic|bbr -O 2 -J`: the first 2 s, slow start at up to
//!   400 ms RTT, are run but not counted), see [`iperf`]; not applicable to `mef-native`
//!   (reported as such, never as a figure);
//! - `bulk`: the built-in generator's single content-checked flow, see [`tcp`] (MEF: one
//!   stream, same protocol and check);
//! - `short-flows`: Pareto flow sizes (mean 25 packets of 1400 bytes, shape 1.2) arriving as a
//!   Poisson process at load 0.9 (the arrival trace of `mef bench sim`'s `short-flows`), mean
//!   and p99 flow completion time (MEF: one stream per flow on one connection);
//! - `fairness`: two long flows with different RTTs (the cell's and twice it) sharing the
//!   bottleneck, each flow's goodput and Jain's index, see [`fairness`]. Cells with a selected
//!   fairness case build their testbed with a second client behind an access emulator.
//!
//! Routed records carry router A's counters over the case, among them the MEF packets its
//! egress stamped; for `mef-native` that number, with the sender's final rate mode, shows
//! whether the routers really set the rate (printed after the table).
//!
//! The generator runs in threads that `setns(2)` into the client and server namespaces (see
//! [`netns`]), not in helper processes: no second binary is needed and the test suite can run
//! it too. iperf3 runs as a process under `ip netns exec`.
//!
//! Through MEF routers (protocol `mef-split`) the TCP applications are unmodified and keep the
//! kernel's default congestion control, Cubic; the two `mef-router` daemons run in the router
//! namespaces (see [`routers`]), WAN capacity = the cell's 100 Mbit/s. The connection is split
//! at the routers when the daemon offers it (`path` = `split`), otherwise carried through the
//! encrypted tunnel end to end (`path` = `tunnel`); `MEF_BENCH_ROUTER_PATH=tunnel|split`
//! forces one. The recorded path is what router A's counters show for that case. A case that
//! cannot run is reported as skipped with its reason; no figure is ever invented.
//!
//! Quick mode (RTT 50 and 200 ms, loss 0 and 1 %: the cases) runs 10 s per case (iperf3 10 s after 2 omitted
//! seconds, bulk and fairness 10 s including slow start, 10 s of short-flow arrivals): the TCP
//! cases take about 4 to 5 minutes per RTT, the `mef-native` and fairness cases add about 2.5; the full
//! grid runs 20 s per case.

use std::io::IsTerminal;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::record::Record;

pub mod bed;
pub mod fairness;
pub mod iperf;
pub mod native;
pub mod netns;
pub mod report;
pub mod routers;
pub mod tcp;
pub mod tcpinfo;
pub mod tunnel;

use tcp::Cc;

/// Link capacity of every cell in Mbit/s.
pub const CAPACITY_MBPS: f64 = 100.0;
/// TCP port of the iperf3 server.
pub const IPERF_PORT: u16 = 5201;
/// TCP port of the generator server.
pub const GEN_PORT: u16 = 5301;

/// Options of `mef bench kernel`: the common bench options, read this way here —
/// `quick`: RTT 50 and 200 ms (the cases), 10 s runs, 10 s of short-flow arrivals; `seed`:
/// the short-flow
/// arrival trace; `only`: cases whose label `RTTms/LOSS% protocol/tool` (e.g.
/// `200ms/1% kernel-bbr/iperf3`) contains this text (e.g. `bbr`, `iperf3`, `mef` for both
/// `mef-split` and `mef-native`, `native`, `short`, `fair`, `200ms/`), several texts separated by commas selecting the cases matching any of them
/// (`200ms/0%,200ms/1%`) — plus the tunnel benchmark switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelOptions {
    /// Quick mode, JSON path, plot directory, seed and case filter.
    pub common: crate::BenchOptions,
    /// Run the tunnel throughput benchmark (single core, sans-IO) as well.
    pub tunnel: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        Self {
            common: crate::BenchOptions::default(),
            tunnel: true,
        }
    }
}

/// One measured case: a [`Record`] with the kernel suite's extra fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelRecord {
    /// The common fields (`scenario` is `long-flow` or `short-flows`; `protocol` is
    /// `kernel-cubic`, `kernel-bbr`, `mef-split` or `mef-native`).
    #[serde(flatten)]
    pub record: Record,
    /// `iperf3`, `bulk` or `short-flows`.
    pub tool: String,
    /// `direct` (no routers), `split` (TCP terminated at the routers) or `tunnel` (TCP carried
    /// end to end through the routers' encrypted tunnel).
    pub path: String,
    /// The data sender's congestion control (`cubic`/`bbr`; for `mef-split` that of the end
    /// hosts; `mef` for `mef-native`, whose rate mode is in `mef_rate_mode`).
    pub cc: String,
    /// 99th-percentile flow completion time in ms (short flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fct_p99_ms: Option<f64>,
    /// Short flows completed (content checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows_completed: Option<u64>,
    /// Smoothed RTT the sender measured, in ms: the kernel's `TCP_INFO` for TCP (iperf3 and the
    /// built-in generator; short flows: the mean over completed flows), the transport's own for
    /// `mef-native`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtt_ms: Option<f64>,
    /// Measurement length in seconds.
    pub seconds: f64,
    /// Routed cases: connections router A split during the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_split_flows: Option<u64>,
    /// Routed cases: split connections that ended with a reset during the case (router A).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_split_resets: Option<u64>,
    /// Routed cases: SYNs router A's splitter refused because it was full, during the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_split_rejected_full: Option<u64>,
    /// Routed cases: LAN handshakes with router A's splitter that failed, during the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_split_handshake_failed: Option<u64>,
    /// Routed cases: packets router A dropped during the case (`mef_router_drops_total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_drops: Option<u64>,
    /// Routed cases: router A's drops during the case by reason (only reasons with drops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_drop_reasons: Option<std::collections::BTreeMap<String, u64>>,
    /// Routed cases: MEF packets router A's egress stamped during the case
    /// (`mef_router_mef_packets_total{kind="stamped"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_mef_stamped: Option<u64>,
    /// `mef-native`: the sender's rate mode at the end (`explicit` = paced at the routers'
    /// stamped rate, `fallback-cubic` = no stamp seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mef_rate_mode: Option<String>,
    /// `mef-native`: the last stamped rate the receiver echoed to the sender, Mbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mef_echo_mbps: Option<f64>,
}

impl KernelRecord {
    /// A record of `tool` with the common fields `record` and every suite-specific optional
    /// field empty.
    pub fn new(record: Record, tool: Tool, path: &str, cc: &str, seconds: f64) -> Self {
        Self {
            record,
            tool: tool.name().to_string(),
            path: path.to_string(),
            cc: cc.to_string(),
            fct_p99_ms: None,
            flows_completed: None,
            srtt_ms: None,
            seconds,
            router_split_flows: None,
            router_split_resets: None,
            router_split_rejected_full: None,
            router_split_handshake_failed: None,
            router_drops: None,
            router_drop_reasons: None,
            router_mef_stamped: None,
            mef_rate_mode: None,
            mef_echo_mbps: None,
        }
    }
}

/// A case that did not produce a record, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSkip {
    /// `rtt/loss` of the cell.
    pub cell: String,
    /// `protocol/tool`.
    pub case: String,
    /// The error with its causes.
    pub reason: String,
}

/// One scenario cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellSpec {
    /// Round-trip propagation delay in ms.
    pub rtt_ms: u64,
    /// Random loss probability of the WAN, each direction (0.01 = 1 %).
    pub loss: f64,
}

impl CellSpec {
    /// Label like `200ms/1%`.
    pub fn label(&self) -> String {
        format!("{}ms/{}%", self.rtt_ms, self.loss * 100.0)
    }

    /// Bandwidth-delay product in bytes at [`CAPACITY_MBPS`].
    pub fn bdp_bytes(&self) -> u64 {
        (CAPACITY_MBPS * 1e6 / 8.0 * self.rtt_ms as f64 / 1000.0) as u64
    }
}

/// The grid: RTT {50, 200} ms × loss {0, 1} % (quick: just these; full adds 10, 100, 400 ms
/// and 0.1, 2 %).
pub fn grid(quick: bool) -> Vec<CellSpec> {
    let (rtts, losses): (&[u64], &[f64]) = if quick {
        (&[50, 200], &[0.0, 0.01])
    } else {
        (&[10, 50, 100, 200, 400], &[0.0, 0.001, 0.01, 0.02])
    };
    rtts.iter()
        .flat_map(|&rtt_ms| losses.iter().map(move |&loss| CellSpec { rtt_ms, loss }))
        .collect()
}

/// The applications (cases) of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// iperf3 TCP test.
    Iperf3,
    /// The generator's single bulk flow.
    Bulk,
    /// The generator's short flows.
    ShortFlows,
    /// Two bulk flows with different RTTs (see [`fairness`]).
    Fairness,
}

impl Tool {
    /// Every case, in run order.
    pub const ALL: [Tool; 4] = [Tool::Iperf3, Tool::Bulk, Tool::ShortFlows, Tool::Fairness];

    /// Name in records and tables.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Iperf3 => "iperf3",
            Tool::Bulk => "bulk",
            Tool::ShortFlows => "short-flows",
            Tool::Fairness => "fairness",
        }
    }
}

/// The protocols of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Kernel TCP Cubic, no routers.
    KernelCubic,
    /// Kernel TCP BBR, no routers.
    KernelBbr,
    /// Kernel TCP (Cubic, the end hosts' default) through the MEF routers, split there when
    /// the daemon offers it.
    MefSplit,
    /// An application on MEF transport through the MEF routers.
    MefNative,
}

impl Protocol {
    /// Every protocol, in run order.
    pub const ALL: [Protocol; 4] = [
        Protocol::KernelCubic,
        Protocol::KernelBbr,
        Protocol::MefSplit,
        Protocol::MefNative,
    ];

    /// Name in records and tables.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::KernelCubic => "kernel-cubic",
            Protocol::KernelBbr => "kernel-bbr",
            Protocol::MefSplit => "mef-split",
            Protocol::MefNative => "mef-native",
        }
    }

    /// Whether its testbed has the MEF routers.
    pub fn routed(self) -> bool {
        matches!(self, Protocol::MefSplit | Protocol::MefNative)
    }

    /// The kernel congestion control of the TCP senders (`None` for `mef-native`).
    pub fn cc(self) -> Option<Cc> {
        match self {
            Protocol::KernelCubic | Protocol::MefSplit => Some(Cc::Cubic),
            Protocol::KernelBbr => Some(Cc::Bbr),
            Protocol::MefNative => None,
        }
    }

    /// `None` when `tool` applies to this protocol, else why not.
    pub fn not_applicable(self, tool: Tool) -> Option<&'static str> {
        (self == Protocol::MefNative && tool == Tool::Iperf3)
            .then_some("iperf3 speaks TCP only; mef-native has no iperf3 figure")
    }
}

/// Timing of the runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Bulk and iperf3 test length (iperf3: measured seconds, after [`Timing::iperf_omit`]).
    pub bulk: Duration,
    /// Seconds iperf3 runs before measuring (`-O`), to leave slow start out.
    pub iperf_omit: u64,
    /// Window of short-flow arrivals.
    pub arrivals: Duration,
    /// How long to wait for unfinished short flows after the last arrival.
    pub drain: Duration,
}

impl Timing {
    /// 10 s runs in quick mode (50 RTTs at 200 ms), 20 s otherwise; iperf3 omits 2 s.
    pub fn new(quick: bool) -> Self {
        let s = if quick { 10 } else { 20 };
        Self {
            bulk: Duration::from_secs(s),
            iperf_omit: 2,
            arrivals: Duration::from_secs(s),
            drain: Duration::from_secs(20),
        }
    }
}

fn base(spec: &CellSpec, scenario: &str, protocol: &str, seed: u64) -> Record {
    let mut r = Record::new(scenario, protocol, seed, false);
    r.rtt_ms = spec.rtt_ms as f64;
    r.loss = spec.loss;
    r.capacity_mbps = CAPACITY_MBPS;
    r
}

fn goodput_record(
    spec: &CellSpec,
    protocol: &str,
    seed: u64,
    goodput_mbps: f64,
    retransmits: u64,
) -> Record {
    let mut r = base(spec, "long-flow", protocol, seed);
    r.goodput_mbps = goodput_mbps;
    r.utilization = goodput_mbps / (CAPACITY_MBPS * (1.0 - spec.loss));
    r.retransmits = retransmits;
    r
}

/// Runs one case (`protocol` with congestion control `cc`, application `tool`) on a built
/// testbed and returns its record.
pub fn run_case(
    bed: &bed::Bed,
    spec: &CellSpec,
    cc: Cc,
    protocol: &str,
    tool: Tool,
    t: &Timing,
    seed: u64,
) -> anyhow::Result<KernelRecord> {
    let server_ip = bed.server_ip();
    let path = bed.path_label();
    if protocol == Protocol::MefNative.name() {
        return native_case(bed, spec, tool, t, seed);
    }
    let mk =
        |record: Record, seconds: f64| KernelRecord::new(record, tool, path, cc.name(), seconds);
    match tool {
        Tool::Fairness => bail!("the fairness case yields several records: use run_fairness"),
        Tool::Iperf3 => {
            let _server = iperf::IperfServer::start(bed.server_ns(), IPERF_PORT)?;
            let r = iperf::run_client(
                bed.client_ns(),
                server_ip,
                IPERF_PORT,
                t.bulk.as_secs(),
                t.iperf_omit,
                cc,
            )?;
            if r.congestion.as_deref().is_some_and(|c| c != cc.name()) {
                bail!(
                    "iperf3 ran with {:?}, not {}",
                    r.congestion.as_deref().unwrap_or("?"),
                    cc.name()
                );
            }
            let mut k = mk(
                goodput_record(spec, protocol, seed, r.goodput_mbps, r.retransmits),
                r.seconds,
            );
            k.srtt_ms = r.mean_rtt_ms;
            Ok(k)
        }
        Tool::Bulk | Tool::ShortFlows => {
            let addr = SocketAddr::V4(SocketAddrV4::new(server_ip, GEN_PORT));
            let listen =
                SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, GEN_PORT));
            let _server = tcp::GenServer::start(Some(netns::ns_path(bed.server_ns())), listen)?;
            if tool == Tool::Bulk {
                let dur = t.bulk;
                let h = netns::spawn_in(netns::ns_path(bed.client_ns()), "gen-bulk", move || {
                    tcp::bulk(addr, cc, dur)
                })?;
                let b = netns::join(h)?;
                let mut k = mk(
                    goodput_record(spec, protocol, seed, b.goodput_mbps, b.retransmits),
                    b.report.elapsed.as_secs_f64(),
                );
                k.srtt_ms = b.srtt_ms;
                Ok(k)
            } else {
                let trace: Vec<(Duration, u64)> =
                    crate::scenarios::short_flows::trace(seed, t.arrivals)
                        .into_iter()
                        .map(|a| (a.at, a.bytes))
                        .collect();
                let drain = t.drain;
                let h = netns::spawn_in(netns::ns_path(bed.client_ns()), "gen-short", move || {
                    tcp::short_flows(addr, cc, &trace, drain)
                })?;
                let s = netns::join(h)?;
                Ok(short_record(spec, protocol, seed, &s, mk))
            }
        }
    }
}

/// The record of a short-flow run.
fn short_record(
    spec: &CellSpec,
    protocol: &str,
    seed: u64,
    s: &tcp::ShortResult,
    mk: impl FnOnce(Record, f64) -> KernelRecord,
) -> KernelRecord {
    let fcts: Vec<f64> = s
        .completed
        .iter()
        .map(|c| c.2.as_secs_f64() * 1000.0)
        .collect();
    let secs = s.span.as_secs_f64();
    let goodput = if secs > 0.0 {
        s.bytes as f64 * 8.0 / secs / 1e6
    } else {
        0.0
    };
    let mut r = base(spec, "short-flows", protocol, seed);
    r.goodput_mbps = goodput;
    r.utilization = goodput / (CAPACITY_MBPS * (1.0 - spec.loss));
    r.retransmits = s.retransmits;
    r.fct_mean_ms = crate::metrics::mean(&fcts);
    r.incomplete = Some(s.incomplete);
    r.flows = Some((s.completed.len() as u64) + s.incomplete);
    let mut k = mk(r, secs);
    k.fct_p99_ms = crate::metrics::quantile(&fcts, 0.99);
    k.flows_completed = Some(s.completed.len() as u64);
    if s.mean_srtt_ms.is_some() {
        k.srtt_ms = s.mean_srtt_ms;
    }
    k
}

/// Runs a `mef-native` case (`bulk` or `short-flows`) on a routed testbed: a MEF server in the
/// server namespace, the sender in the client namespace (see [`native`]).
pub fn native_case(
    bed: &bed::Bed,
    spec: &CellSpec,
    tool: Tool,
    t: &Timing,
    seed: u64,
) -> anyhow::Result<KernelRecord> {
    let protocol = Protocol::MefNative;
    if let Some(why) = protocol.not_applicable(tool) {
        bail!("not applicable: {why}");
    }
    if bed.split_configured().is_none() {
        bail!("mef-native runs through the MEF routers; this testbed has none");
    }
    let listen = SocketAddr::V4(SocketAddrV4::new(
        std::net::Ipv4Addr::UNSPECIFIED,
        native::MEF_PORT,
    ));
    let server = native::NativeServer::start(Some(netns::ns_path(bed.server_ns())), listen)?;
    let addr = SocketAddr::V4(SocketAddrV4::new(bed.server_ip(), native::MEF_PORT));
    let key = server.public_key;
    let client = netns::ns_path(bed.client_ns());
    let mk = |record: Record, seconds: f64| {
        KernelRecord::new(record, tool, bed.path_label(), "mef", seconds)
    };
    let with_conn = |mut k: KernelRecord, c: &native::ConnFigures| {
        k.srtt_ms = Some(c.srtt_ms);
        k.mef_rate_mode = Some(c.mode.clone());
        k.mef_echo_mbps = c.echo_mbps;
        k
    };
    match tool {
        Tool::Bulk => {
            let dur = t.bulk;
            let h = netns::spawn_in(client, "mef-bulk", move || native::bulk(addr, key, dur))?;
            let b = netns::join(h)?;
            let r = goodput_record(
                spec,
                protocol.name(),
                seed,
                b.goodput_mbps,
                b.conn.retransmits,
            );
            Ok(with_conn(mk(r, b.report.elapsed.as_secs_f64()), &b.conn))
        }
        Tool::ShortFlows => {
            let trace: Vec<(Duration, u64)> =
                crate::scenarios::short_flows::trace(seed, t.arrivals)
                    .into_iter()
                    .map(|a| (a.at, a.bytes))
                    .collect();
            let drain = t.drain;
            let h = netns::spawn_in(client, "mef-short", move || {
                native::short_flows(addr, key, &trace, drain)
            })?;
            let s = netns::join(h)?;
            let k = short_record(spec, protocol.name(), seed, &s.result, mk);
            Ok(with_conn(k, &s.conn))
        }
        Tool::Iperf3 | Tool::Fairness => {
            bail!("{} is not a single-record mef-native case", tool.name())
        }
    }
}

/// Runs the two-flow fairness case of `protocol` on a testbed built with a second client and
/// returns its records (aggregate first, then one per flow; see [`fairness`]).
pub fn run_fairness(
    bed: &bed::Bed,
    spec: &CellSpec,
    protocol: Protocol,
    t: &Timing,
    seed: u64,
) -> anyhow::Result<Vec<KernelRecord>> {
    let (res, cc) = match protocol.cc() {
        Some(cc) => (fairness::run_tcp(bed, spec, cc, t.bulk)?, cc.name()),
        None => (fairness::run_native(bed, spec, t.bulk)?, "mef"),
    };
    Ok(res.records(spec, protocol.name(), bed.path_label(), cc, seed))
}

/// Whether the case `protocol/tool` of cell `spec` is selected by `--only` (see
/// [`crate::BenchOptions::only`]).
pub fn case_selected(only: Option<&str>, spec: &CellSpec, proto: &str, tool: Tool) -> bool {
    let label = format!("{} {proto}/{}", spec.label(), tool.name());
    only.is_none_or(|o| {
        o.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .any(|t| label.contains(t))
    })
}

/// The path a routed case's traffic took, from router A's counters before and after it
/// (metrics refresh about once a second, so this waits 1.2 s), with the counters before and
/// after. Fails when a daemon died or the traffic did not visibly cross the routers.
fn routed_path(
    bed: &mut bed::Bed,
    before: anyhow::Result<Option<routers::PathCounters>>,
) -> anyhow::Result<(&'static str, routers::PathCounters, routers::PathCounters)> {
    if !bed.routers_alive() {
        bail!("a mef-router daemon exited during the case");
    }
    let before = before
        .context("reading router A's metrics before the case")?
        .context("no routers in a routed cell")?;
    std::thread::sleep(Duration::from_millis(1200));
    let after = bed
        .router_counters()
        .context("no routers in a routed cell")?
        .context("reading router A's metrics after the case")?;
    // At least 100 kB into the tunnel, or one split connection.
    let path = after.path_since(&before, 1e5).context(
        "router A neither split a connection nor sent 100 kB into the tunnel during the case",
    )?;
    Ok((path, before, after))
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelReport {
    /// Measured cases.
    pub records: Vec<KernelRecord>,
    /// Cases that could not run.
    pub skipped: Vec<KernelSkip>,
    /// Selected cases that do not apply (`mef-native/iperf3`), with why; no figure.
    pub not_applicable: Vec<KernelSkip>,
    /// Tunnel throughput results (if run).
    pub tunnel: Option<tunnel::TunnelReport>,
}

/// The effective user id of this process (from `/proc/self/status`, `Uid:` line, 2nd field).
pub fn effective_uid() -> anyhow::Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no effective uid in /proc/self/status")
}

/// Fails with a clear reason unless the suite can run here (root, `ip`, `iperf3`).
pub fn check_environment() -> anyhow::Result<()> {
    if effective_uid()? != 0 {
        bail!(
            "mef bench kernel must run as root: it creates network namespaces, veth pairs and \
             TUN devices and starts the emulator and routers inside them (try `sudo`)"
        );
    }
    for (prog, arg) in [("ip", "-V"), ("iperf3", "--version")] {
        let ok = std::process::Command::new(prog)
            .arg(arg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("`{prog}` is not installed or does not run; mef bench kernel needs it");
        }
    }
    Ok(())
}

/// The selected cases of one testbed of a cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellCases {
    /// The cases to run, in run order.
    pub run: Vec<(Protocol, Tool)>,
    /// Selected cases that do not apply: `protocol/tool` and why.
    pub not_applicable: Vec<(String, &'static str)>,
}

/// The cases of one testbed (`routed` or direct) in cell `spec` that `only` selects (see
/// [`case_selected`]).
pub fn cell_cases(only: Option<&str>, spec: &CellSpec, routed: bool) -> CellCases {
    let mut run = Vec::new();
    let mut not_applicable = Vec::new();
    for p in Protocol::ALL.into_iter().filter(|p| p.routed() == routed) {
        for tool in Tool::ALL {
            if !case_selected(only, spec, p.name(), tool) {
                continue;
            }
            match p.not_applicable(tool) {
                Some(why) => not_applicable.push((format!("{}/{}", p.name(), tool.name()), why)),
                None => run.push((p, tool)),
            }
        }
    }
    CellCases {
        run,
        not_applicable,
    }
}

/// Fills a routed case's records with router A's counter deltas and the path they show (the
/// counters go on the first, aggregate record only).
fn add_router_counters(
    records: &mut [KernelRecord],
    path: &str,
    before: &routers::PathCounters,
    after: &routers::PathCounters,
) {
    for r in records.iter_mut() {
        r.path = path.to_string();
    }
    let Some(r) = records.first_mut() else {
        return;
    };
    let delta = |f: fn(&routers::PathCounters) -> f64| Some((f(after) - f(before)).max(0.0) as u64);
    r.router_split_flows = delta(|c| c.split_ingress);
    r.router_split_resets = delta(|c| c.split_resets);
    r.router_split_rejected_full = delta(|c| c.split_rejected_full);
    r.router_split_handshake_failed = delta(|c| c.split_handshake_failed);
    r.router_drops = delta(|c| c.drops);
    r.router_mef_stamped = delta(|c| c.mef_stamped);
    r.router_drop_reasons = Some(
        after
            .drops_by_reason
            .iter()
            .filter_map(|(k, v)| {
                let d = v - before.drops_by_reason.get(k).unwrap_or(&0.0);
                (d > 0.0).then(|| (k.clone(), d as u64))
            })
            .collect(),
    );
}

/// Runs the selected cells and cases (no printing besides the progress bar, no files).
pub fn run_cells(opts: &KernelOptions) -> anyhow::Result<KernelReport> {
    let t = Timing::new(opts.common.quick);
    let cells = grid(opts.common.quick);
    let only = opts.common.only.as_deref();
    let n_cases: usize = cells
        .iter()
        .flat_map(|spec| [false, true].map(|routed| cell_cases(only, spec, routed).run.len()))
        .sum();
    let mut report = KernelReport::default();
    for spec in &cells {
        for routed in [false, true] {
            for (case, why) in cell_cases(only, spec, routed).not_applicable {
                report.not_applicable.push(KernelSkip {
                    cell: spec.label(),
                    case,
                    reason: why.to_string(),
                });
            }
        }
    }
    if n_cases == 0 {
        if !report.not_applicable.is_empty() {
            return Ok(report);
        }
        bail!("no case matches {:?}", only.unwrap_or(""));
    }
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(n_cases as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} cases {elapsed} {msg}") {
        bar.set_style(style);
    }
    for spec in &cells {
        for (routed, fair) in [(false, false), (false, true), (true, false), (true, true)] {
            // The fairness case runs in a testbed of its own: its second client and the
            // routers' larger split window (see `bed::Bed::build`) must not change the others.
            let cases: Vec<_> = cell_cases(only, spec, routed)
                .run
                .into_iter()
                .filter(|&(_, tl)| (tl == Tool::Fairness) == fair)
                .collect();
            if cases.is_empty() {
                continue;
            }
            let skip_all = |report: &mut KernelReport, reason: String| {
                for &(p, tl) in &cases {
                    report.skipped.push(KernelSkip {
                        cell: spec.label(),
                        case: format!("{}/{}", p.name(), tl.name()),
                        reason: reason.clone(),
                    });
                }
            };
            bar.set_message(format!("{} building testbed", spec.label()));
            let mut bed = match bed::Bed::build(spec, routed, opts.common.seed, fair) {
                Ok(b) => b,
                Err(e) => {
                    skip_all(&mut report, format!("{e:#}"));
                    bar.inc(cases.len() as u64);
                    continue;
                }
            };
            for &(p, tl) in &cases {
                bar.set_message(format!("{} {}/{}", spec.label(), p.name(), tl.name()));
                let before = bed.wan_drops();
                let counters_before = bed.router_counters().transpose();
                let seed = opts.common.seed;
                let run = if tl == Tool::Fairness {
                    run_fairness(&bed, spec, p, &t, seed)
                } else {
                    let cc = p.cc().unwrap_or(Cc::Cubic);
                    run_case(&bed, spec, cc, p.name(), tl, &t, seed).map(|r| vec![r])
                };
                let result = run.and_then(|mut rs| {
                    if let (Some((q0, _)), Some((q1, _)), Some(r)) =
                        (before, bed.wan_drops(), rs.first_mut())
                    {
                        r.record.drops = q1.saturating_sub(q0);
                    }
                    if routed {
                        let (path, before, after) = routed_path(&mut bed, counters_before)?;
                        add_router_counters(&mut rs, path, &before, &after);
                    }
                    Ok(rs)
                });
                match result {
                    Ok(rs) => report.records.extend(rs),
                    Err(e) => report.skipped.push(KernelSkip {
                        cell: spec.label(),
                        case: format!("{}/{}", p.name(), tl.name()),
                        reason: format!("{e:#}"),
                    }),
                }
                bar.inc(1);
            }
            bar.set_message(format!("{} tearing down", spec.label()));
            drop(bed);
        }
    }
    bar.finish_and_clear();
    Ok(report)
}

/// `mef bench kernel`: checks the environment (root, iperf3), runs the grid, prints the table,
/// the ratio lines ([`report::ratios`]), the stamping lines ([`report::stamping`]), the cases
/// that do not apply and the skipped ones, writes JSON and an SVG plot (named after the JSON
/// file), and returns the records. Fails when not
/// root or when no case produced a record.
pub fn run_kernel(opts: KernelOptions) -> anyhow::Result<Vec<KernelRecord>> {
    check_environment()?;
    let mut report = run_cells(&opts)?;
    if opts.tunnel {
        match tunnel::run(opts.common.quick) {
            Ok(t) => report.tunnel = Some(t),
            Err(e) => report.skipped.push(KernelSkip {
                cell: "-".into(),
                case: "tunnel".into(),
                reason: format!("{e:#}"),
            }),
        }
    }
    print!("{}", report::table(&report.records));
    let ratios = report::ratios(&report.records);
    if !ratios.is_empty() {
        print!("\n{ratios}");
    }
    if let Some(t) = &report.tunnel {
        print!("\n{}", t.table());
    }
    let stamping = report::stamping(&report.records);
    if !stamping.is_empty() {
        print!("\n{stamping}");
    }
    if !report.not_applicable.is_empty() {
        println!("\nnot applicable (no figure):");
        for s in &report.not_applicable {
            println!("  {} {}: {}", s.cell, s.case, s.reason);
        }
    }
    if !report.skipped.is_empty() {
        println!("\nskipped {} case(s):", report.skipped.len());
        for s in &report.skipped {
            println!("  {} {}: {}", s.cell, s.case, s.reason);
        }
    }
    let dir = match &opts.common.json {
        Some(path) => {
            report::write_json(path, &report)?;
            println!("\nwrote {}", path.display());
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
        }
        None => opts.common.out_dir.clone(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The plot is named after the JSON file (`kernel-quick.json` → `kernel-quick.svg`).
    let svg = opts
        .common
        .json
        .as_deref()
        .and_then(|p| p.file_stem())
        .map_or_else(
            || "kernel.svg".to_string(),
            |s| format!("{}.svg", s.to_string_lossy()),
        );
    for p in report::plots(&dir, &svg, &report.records)? {
        println!("wrote {}", p.display());
    }
    if report.records.is_empty() {
        bail!(
            "no case produced a record ({} skipped)",
            report.skipped.len()
        );
    }
    Ok(report.records)
}
