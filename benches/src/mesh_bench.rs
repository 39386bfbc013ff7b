//! `mef bench mesh` (issue 5): the encrypted peer mesh's cost on this machine.
//!
//! - **Handshakes per second** (`handshakes_per_s`): full Noise IK handshakes on one core, in
//!   memory — `Link::connect`, `Acceptor::handle` (message 1 → responder link + message 2),
//!   the initiator handling message 2, and the responder handling the key-confirming keepalive.
//! - **Direct channel throughput** (`channel_mbps_direct`): one reliable channel
//!   ([`mesh::channel::Channels`]) over an encrypted [`Link`] pair over two real UDP sockets on
//!   127.0.0.1, both ends driven by one loop on one thread (so the figure is what *one core*
//!   does for sender and receiver together: app writes, segmentation, sealing, `sendto`,
//!   `recvfrom`, opening, reassembly, ACKs both ways). The handshake happens in memory first.
//!   Bulk transfer per channel MTU (1,200 bytes, and larger MTUs the link allows), with the
//!   time per stage measured around each call, so the report says where the time goes.
//! - **Memory per idle link** (`idle_link_bytes`): live heap bytes of 1,000 established link
//!   pairs, each side a [`Link`] plus an empty [`Channels`] mux, divided by the 2,000 link
//!   ends; measured with the counting global allocator [`CountingAlloc`] that the `mef`
//!   binary installs (no figure when it is not installed).
//! - **Through the mesh node** ([`crate::mesh_relay`]): `channel_mbps_relayed` (A to B through
//!   a router R over loopback UDP, A and B unable to reach each other), and the 50-node
//!   simulated mesh with 40 % of nodes behind NATs: `pairs_connected_fraction`,
//!   `direct_upgrade_fraction`, `relay_reach_ms`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use mesh::Identity;
use mesh::channel::{ChannelEvent, Channels, Config, Side};
use mesh::link::{Accepted, Acceptor, AcceptorConfig, Link, LinkConfig, Tai64N};
use serde::Serialize;

/// Live heap bytes (allocated minus freed) through [`CountingAlloc`].
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Set by the first allocation through [`CountingAlloc`]: it is the global allocator.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator plus a count of live heap bytes (two relaxed atomic operations per
/// allocation). The `mef` binary installs it as its global allocator so that
/// `mef bench mesh` can measure memory per idle link.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counters do not touch the memory.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            INSTALLED.store(true, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            INSTALLED.store(true, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (forwarded above).
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; `ptr`/`layout` come from this allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// Live heap bytes, if [`CountingAlloc`] is the global allocator.
pub fn live_heap_bytes() -> Option<usize> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| LIVE_BYTES.load(Ordering::Relaxed))
}

/// Where the loop's time went in a direct transfer (seconds over the whole run).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stages {
    /// Application writes into the sender's channel (segmentation, copies).
    pub app_write_s: f64,
    /// `Channels::poll_transmit` on both sides (framing data and ACKs).
    pub mux_transmit_s: f64,
    /// `Link::send` on both sides (ChaCha20-Poly1305 sealing).
    pub seal_s: f64,
    /// `sendto` system calls.
    pub sendto_s: f64,
    /// `recvfrom` system calls (including the empty ones that end a drain).
    pub recvfrom_s: f64,
    /// `Link::handle` on both sides (parsing, replay window, opening).
    pub open_s: f64,
    /// `Channels::handle_datagram` and event polling on both sides (ACK processing,
    /// reassembly, delivery).
    pub mux_receive_s: f64,
    /// Timers and everything else in the loop.
    pub other_s: f64,
}

/// One bulk transfer over the loopback sockets.
#[derive(Debug, Clone, Serialize)]
pub struct DirectRun {
    /// Channel MTU: the largest plaintext datagram the mux produces.
    pub mtu: usize,
    /// Payload bytes delivered in order to the receiving application.
    pub bytes: u64,
    /// Wall-clock seconds from the first write to the last byte delivered.
    pub seconds: f64,
    /// Goodput in Mbit/s (payload bits per second).
    pub mbps: f64,
    /// UDP datagrams sent by the data sender.
    pub datagrams_sent: u64,
    /// Datagrams (ACKs) sent back by the receiver.
    pub acks_sent: u64,
    /// Payload bytes retransmitted by the sender.
    pub retransmitted_bytes: u64,
    /// Retransmission timer expiries.
    pub rto_expiries: u64,
    /// Fast-recovery episodes.
    pub fast_recoveries: u64,
    /// Growth of the system-wide UDP `RcvbufErrors` counter during the run (datagrams the
    /// kernel dropped for a full socket buffer; other processes' drops included), if readable.
    pub udp_rcvbuf_errors: Option<u64>,
    /// Time per stage.
    pub stages: Stages,
    /// Nanoseconds of loop time per data datagram.
    pub ns_per_datagram: f64,
}

/// Everything `mef bench mesh` measured.
#[derive(Debug, Clone, Serialize)]
pub struct MeshReport {
    /// Quick mode.
    pub quick: bool,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started.
    pub load_before: Option<[f64; 3]>,
    /// CPUs available to this process.
    pub cpus: usize,
    /// Full IK handshakes per second on one core.
    pub handshakes_per_s: f64,
    /// Handshakes timed.
    pub handshakes: u64,
    /// Reliable-channel goodput over an encrypted link on loopback UDP at MTU 1,200, Mbit/s,
    /// sender and receiver on one core.
    pub channel_mbps_direct: f64,
    /// Every direct transfer (one per MTU).
    pub direct: Vec<DirectRun>,
    /// Heap bytes per idle link end (established [`Link`] + empty [`Channels`]).
    pub idle_link_bytes: Option<f64>,
    /// Of which the [`Link`] alone.
    pub idle_link_only_bytes: Option<f64>,
    /// Of which the empty [`Channels`] alone.
    pub idle_channels_bytes: Option<f64>,
    /// Extra heap bytes of one open, idle reliable channel (per end).
    pub idle_channel_bytes: Option<f64>,
    /// Reliable-channel goodput from A to B through the router R over loopback UDP (MTU
    /// 1,200, all three nodes on one thread), Mbit/s.
    pub channel_mbps_relayed: Option<f64>,
    /// The relayed transfer.
    pub relayed: Option<crate::mesh_relay::RelayedRun>,
    /// Fraction of node pairs of the 50-node simulated mesh that connected.
    pub pairs_connected_fraction: Option<f64>,
    /// Fraction of the pairs relayed when the NATs opened that went direct.
    pub direct_upgrade_fraction: Option<f64>,
    /// Median time to reach a peer through a relay in the 50-node mesh, ms (virtual time,
    /// from `connect`).
    pub relay_reach_ms: Option<f64>,
    /// The 50-node simulated mesh.
    pub mesh50: Option<Mesh50>,
}

/// The 50-node simulated mesh (`mesh::node::sim`), as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Mesh50 {
    /// Nodes.
    pub nodes: usize,
    /// Nodes behind a NAT.
    pub unreachable: usize,
    /// Node pairs.
    pub pairs: usize,
    /// Pairs connected.
    pub pairs_connected: usize,
    /// Pairs whose link first came up relayed.
    pub pairs_relayed: usize,
    /// Pairs relayed when the NATs opened.
    pub relayed_at_open: usize,
    /// Of those, direct at both ends at the end.
    pub upgraded_after_open: usize,
    /// Relayed pairs that went direct before the NATs opened (hole punching towards public
    /// nodes).
    pub upgraded_before_open: usize,
    /// Relay reach time: median, mean and maximum, seconds.
    pub relay_reach_s: [f64; 3],
    /// Packets relayed, relay refusals, probes sent and datagrams the NATs dropped.
    pub relayed_packets: u64,
    /// Relay refusals.
    pub relay_refused: u64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Datagrams the NATs dropped.
    pub nat_filtered: u64,
    /// Wall-clock seconds the simulation took.
    pub wall_s: f64,
}

/// The system-wide UDP `RcvbufErrors` counter from `/proc/net/snmp`.
fn udp_rcvbuf_errors() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

fn identity(n: u8) -> Identity {
    Identity::from_bytes([n; 32])
}

fn acceptor(now: Instant, local: &Identity) -> Acceptor {
    let cfg = AcceptorConfig {
        per_source_rate: u32::MAX / 4,
        per_source_burst: u32::MAX / 4,
        global_rate: u32::MAX / 4,
        global_burst: u32::MAX / 4,
        // One initiator in a tight loop is not an attack: never demand cookies.
        cookie_threshold: u32::MAX,
        ..AcceptorConfig::default()
    };
    Acceptor::new(now, Tai64N::default(), local, cfg, Acceptor::allow_all())
}

/// A strictly increasing wall-clock value per call: every IK initiation of the benchmark comes
/// from the same identity to the same acceptor, which rejects a timestamp that is not newer
/// (WireGuard paper §5.1), and the system clock may repeat or step back.
fn next_wall() -> Tai64N {
    thread_local!(static N: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    let n = N.with(|c| {
        let n = c.get() + 1;
        c.set(n);
        n
    });
    Tai64N {
        secs: 1_700_000_000 + n,
        nanos: 0,
    }
}

/// One full IK handshake; returns both ends, Up.
fn ik_pair(
    now: Instant,
    ida: &Identity,
    idb: &Identity,
    acc: &mut Acceptor,
) -> anyhow::Result<(Link, Link)> {
    let (mut a, init) = Link::connect(
        now,
        next_wall(),
        ida,
        idb.public_key(),
        LinkConfig::default(),
    )?;
    let Accepted::Link {
        link: b,
        reply: Some(reply),
    } = acc.handle(now, &init, 1)?
    else {
        bail!("IK initiation produced no link");
    };
    let mut b = *b;
    a.handle(now, &reply)?;
    let confirm = a
        .poll_transmit()
        .ok_or_else(|| anyhow!("no key-confirmation keepalive"))?;
    b.handle(now, &confirm)?;
    while a.poll_event().is_some() {}
    while b.poll_event().is_some() {}
    Ok((a, b))
}

fn handshakes(n: u64) -> anyhow::Result<f64> {
    let (ida, idb) = (identity(1), identity(2));
    let now = Instant::now();
    let mut acc = acceptor(now, &idb);
    // Warm-up.
    for _ in 0..n / 10 + 1 {
        ik_pair(now, &ida, &idb, &mut acc)?;
    }
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(ik_pair(now, &ida, &idb, &mut acc)?);
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Heap bytes per link end for `n` idle pairs: (link + mux, link only, mux only, one open
/// idle reliable channel).
fn idle_memory(n: usize) -> anyhow::Result<Option<[f64; 4]>> {
    if live_heap_bytes().is_none() {
        return Ok(None);
    }
    let (ida, idb) = (identity(3), identity(4));
    let now = Instant::now();
    let mut acc = acceptor(now, &idb);
    let ends = (2 * n) as f64;
    let measure = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let before = live_heap_bytes().unwrap_or(0);
        f()?;
        let after = live_heap_bytes().unwrap_or(0);
        Ok(after.saturating_sub(before) as f64 / ends)
    };
    // The vectors are allocated inside the measurement so that the structs' own (inline)
    // sizes are counted, not only what they point to.
    let mut links: Vec<(Link, Link)> = Vec::new();
    let mut muxes: Vec<(Channels, Channels)> = Vec::new();
    let link_only = measure(&mut || {
        links.reserve_exact(n);
        for _ in 0..n {
            links.push(ik_pair(now, &ida, &idb, &mut acc)?);
        }
        Ok(())
    })?;
    let mux_only = measure(&mut || {
        muxes.reserve_exact(n);
        for _ in 0..n {
            muxes.push((
                Channels::new(Side::Initiator, Config::default())?,
                Channels::new(Side::Responder, Config::default())?,
            ));
        }
        Ok(())
    })?;
    // One idle reliable channel per pair, opened and accepted (OPEN delivered, ACK back).
    let channel = measure(&mut || {
        for (a, b) in muxes.iter_mut() {
            a.open("idle", true)?;
            while let Some(d) = a.poll_transmit(now) {
                b.handle_datagram(now, &d)?;
            }
            while b.poll_event().is_some() {}
            while let Some(d) = b.poll_transmit(now) {
                a.handle_datagram(now, &d)?;
            }
            while a.poll_event().is_some() {}
        }
        Ok(())
    })?;
    std::hint::black_box((&links, &muxes));
    Ok(Some([link_only + mux_only, link_only, mux_only, channel]))
}

/// One end of the loopback transfer.
struct End {
    sock: UdpSocket,
    link: Link,
    mux: Channels,
}

/// Bulk transfer of `total` bytes A → B over loopback UDP with channel MTU `mtu`.
fn direct(mtu: usize, total: u64) -> anyhow::Result<DirectRun> {
    let (ida, idb) = (identity(5), identity(6));
    let now = Instant::now();
    let mut acc = acceptor(now, &idb);
    let (la, lb) = ik_pair(now, &ida, &idb, &mut acc)?;
    let cfg = Config {
        mtu,
        ..Config::default()
    };
    let sa = UdpSocket::bind("127.0.0.1:0").context("binding a loopback socket")?;
    let sb = UdpSocket::bind("127.0.0.1:0").context("binding a loopback socket")?;
    sa.connect(sb.local_addr()?)?;
    sb.connect(sa.local_addr()?)?;
    sa.set_nonblocking(true)?;
    sb.set_nonblocking(true)?;
    let mut a = End {
        sock: sa,
        link: la,
        mux: Channels::new(Side::Initiator, cfg.clone())?,
    };
    let mut b = End {
        sock: sb,
        link: lb,
        mux: Channels::new(Side::Responder, cfg)?,
    };
    let id = a.mux.open("bulk", true)?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    let mut received = 0u64;
    let mut st = Stages::default();
    let mut datagrams = 0u64;
    let mut acks = 0u64;
    let mut rbuf = vec![0u8; 65_536];
    let drops_before = udp_rcvbuf_errors();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(600);
    // Datagrams sent per turn before the receiver drains its socket: keeps the socket buffer
    // (default size) from overflowing in this single-threaded loop.
    let batch = (96 * 1024 / mtu).clamp(4, 64);
    while received < total {
        let t0 = Instant::now();
        if t0 > deadline {
            bail!("transfer at MTU {mtu} incomplete after 600 s ({received} of {total} bytes)");
        }
        // Timers.
        for e in [&mut a, &mut b] {
            if e.mux.poll_timeout().is_some_and(|t| t <= t0) {
                e.mux.handle_timeout(t0);
            }
            if e.link.poll_timeout().is_some_and(|t| t <= t0) {
                e.link.handle_timeout(t0);
            }
            while let Some(p) = e.link.poll_transmit() {
                e.sock.send(&p)?;
            }
        }
        // The application writes.
        while written < total {
            let n = ((total - written) as usize).min(chunk.len());
            let room = a.mux.send_capacity(id).unwrap_or(0);
            if room < n.min(16 * 1024) {
                break;
            }
            let n = n.min(room);
            if a.mux.send(id, &chunk[..n]).is_err() {
                break;
            }
            written += n as u64;
        }
        let t1 = Instant::now();
        st.app_write_s += (t1 - t0).as_secs_f64();
        // A sends a batch.
        for _ in 0..batch {
            let t = Instant::now();
            let Some(d) = a.mux.poll_transmit(t) else {
                st.mux_transmit_s += t.elapsed().as_secs_f64();
                break;
            };
            let t2 = Instant::now();
            let p = a.link.send(t2, &d)?;
            let t3 = Instant::now();
            a.sock.send(&p)?;
            let t4 = Instant::now();
            st.mux_transmit_s += (t2 - t).as_secs_f64();
            st.seal_s += (t3 - t2).as_secs_f64();
            st.sendto_s += (t4 - t3).as_secs_f64();
            datagrams += 1;
        }
        // B drains, delivers and answers; then A takes the ACKs.
        for (rx, tx, is_b) in [(&mut b, None::<()>, true), (&mut a, None, false)] {
            let _ = tx;
            loop {
                let t = Instant::now();
                let n = match rx.sock.recv(&mut rbuf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        st.recvfrom_s += t.elapsed().as_secs_f64();
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                let t2 = Instant::now();
                let pt = rx.link.handle(t2, &rbuf[..n]);
                let t3 = Instant::now();
                st.recvfrom_s += (t2 - t).as_secs_f64();
                st.open_s += (t3 - t2).as_secs_f64();
                if let Ok(Some(pt)) = pt {
                    let _ = rx.mux.handle_datagram(t3, &pt);
                    while let Some(ev) = rx.mux.poll_event() {
                        if let ChannelEvent::Data { bytes, .. } = ev {
                            received += bytes.len() as u64;
                        }
                    }
                    st.mux_receive_s += t3.elapsed().as_secs_f64();
                }
            }
            if is_b {
                // ACKs back to A.
                loop {
                    let t = Instant::now();
                    let Some(d) = rx.mux.poll_transmit(t) else {
                        st.mux_transmit_s += t.elapsed().as_secs_f64();
                        break;
                    };
                    let t2 = Instant::now();
                    let p = rx.link.send(t2, &d)?;
                    let t3 = Instant::now();
                    rx.sock.send(&p)?;
                    st.mux_transmit_s += (t2 - t).as_secs_f64();
                    st.seal_s += (t3 - t2).as_secs_f64();
                    st.sendto_s += t3.elapsed().as_secs_f64();
                    acks += 1;
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let accounted = st.app_write_s
        + st.mux_transmit_s
        + st.seal_s
        + st.sendto_s
        + st.recvfrom_s
        + st.open_s
        + st.mux_receive_s;
    st.other_s = (seconds - accounted).max(0.0);
    let stats = a
        .mux
        .channel_stats(id)
        .ok_or_else(|| anyhow!("channel vanished"))?;
    Ok(DirectRun {
        mtu,
        bytes: received,
        seconds,
        mbps: received as f64 * 8.0 / seconds / 1e6,
        datagrams_sent: datagrams,
        acks_sent: acks,
        retransmitted_bytes: stats.send.bytes_retransmitted,
        rto_expiries: stats.send.rto_expiries,
        fast_recoveries: stats.send.fast_recoveries,
        udp_rcvbuf_errors: match (drops_before, udp_rcvbuf_errors()) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x)),
            _ => None,
        },
        stages: st,
        ns_per_datagram: seconds * 1e9 / datagrams.max(1) as f64,
    })
}

/// Runs every measurement.
pub fn run(quick: bool) -> anyhow::Result<MeshReport> {
    let load_before = crate::metrics::load_avg();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n_hs: u64 = if quick { 300 } else { 2000 };
    eprintln!("mesh: {n_hs} IK handshakes…");
    let handshakes_per_s = handshakes(n_hs)?;
    eprintln!("mesh: memory of 1000 idle link pairs…");
    let mem = idle_memory(1000)?;
    let total: u64 = if quick { 32 << 20 } else { 256 << 20 };
    let mut direct_runs = Vec::new();
    for mtu in [1200usize, 8192, 60_000] {
        eprintln!("mesh: {} MiB over loopback UDP at MTU {mtu}…", total >> 20);
        direct_runs.push(direct(mtu, total)?);
    }
    let channel_mbps_direct = direct_runs
        .iter()
        .find(|r| r.mtu == 1200)
        .map_or(0.0, |r| r.mbps);
    let relayed_total: u64 = if quick { 16 << 20 } else { 64 << 20 };
    eprintln!(
        "mesh: {} MiB through a relay over loopback UDP…",
        relayed_total >> 20
    );
    let relayed = crate::mesh_relay::relayed(relayed_total)?;
    eprintln!("mesh: 50-node simulated mesh, 40 % behind NATs…");
    let wall = Instant::now();
    let m = crate::mesh_relay::mesh50(1);
    let mesh50 = Mesh50 {
        nodes: m.nodes,
        unreachable: m.unreachable,
        pairs: m.pairs,
        pairs_connected: m.pairs_connected,
        pairs_relayed: m.pairs_relayed,
        relayed_at_open: m.relayed_at_open,
        upgraded_after_open: m.upgraded_after_open,
        upgraded_before_open: m.upgraded_before_open,
        relay_reach_s: [
            m.relay_connect_median_s,
            m.relay_connect_mean_s,
            m.relay_connect_max_s,
        ],
        relayed_packets: m.relayed_packets,
        relay_refused: m.relay_refused,
        probes_sent: m.probes_sent,
        nat_filtered: m.nat_filtered,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    Ok(MeshReport {
        quick,
        load_before,
        cpus,
        handshakes_per_s,
        handshakes: n_hs,
        channel_mbps_direct,
        direct: direct_runs,
        idle_link_bytes: mem.map(|m| m[0]),
        idle_link_only_bytes: mem.map(|m| m[1]),
        idle_channels_bytes: mem.map(|m| m[2]),
        idle_channel_bytes: mem.map(|m| m[3]),
        channel_mbps_relayed: Some(relayed.mbps),
        relayed: Some(relayed),
        pairs_connected_fraction: Some(m.pairs_connected_fraction),
        direct_upgrade_fraction: Some(m.direct_upgrade_fraction),
        relay_reach_ms: Some(m.relay_connect_median_s * 1e3),
        mesh50: Some(mesh50),
    })
}

/// Prints the table and writes JSON and an SVG plot (`bench-out/mesh.json` by default).
pub fn report(r: &MeshReport, json: Option<&Path>) -> anyhow::Result<()> {
    let target = |ok: bool| if ok { "met" } else { "NOT met" };
    let load = r.load_before.map_or("unknown".to_owned(), |l| {
        format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
    });
    println!(
        "mesh bench{}: {} CPUs, load average before the run {load}",
        if r.quick { " (quick)" } else { "" },
        r.cpus
    );
    println!("{:<44} {:>14}  target", "measure", "value");
    println!(
        "{:<44} {:>14.0}  (none)",
        "handshakes_per_s (IK, one core)", r.handshakes_per_s
    );
    println!(
        "{:<44} {:>14.1}  >= 500: {}",
        "channel_mbps_direct (MTU 1200, Mbit/s)",
        r.channel_mbps_direct,
        target(r.channel_mbps_direct >= 500.0)
    );
    match r.idle_link_bytes {
        Some(b) => println!(
            "{:<44} {:>14.0}  <= 16384: {}",
            "idle_link_bytes (Link + Channels, per end)",
            b,
            target(b <= 16_384.0)
        ),
        None => println!(
            "{:<44} {:>14}",
            "idle_link_bytes", "not measured (counting allocator not installed)"
        ),
    }
    if let (Some(l), Some(c), Some(ch)) = (
        r.idle_link_only_bytes,
        r.idle_channels_bytes,
        r.idle_channel_bytes,
    ) {
        println!(
            "{:<44} {:>14}",
            "  of which Link / Channels",
            format!("{l:.0} / {c:.0}")
        );
        println!("{:<44} {:>14.0}", "  + one open idle reliable channel", ch);
    }
    let opt = |v: Option<f64>, digits: usize| {
        v.map_or("not measured".to_owned(), |x| format!("{x:.digits$}"))
    };
    println!(
        "{:<44} {:>14}  (none)",
        "channel_mbps_relayed (MTU 1200, Mbit/s)",
        opt(r.channel_mbps_relayed, 1)
    );
    if let Some(x) = &r.relayed {
        println!(
            "{:<44} {:>14}",
            "  relayed packets / NAT drops / still relayed",
            format!(
                "{} / {} / {}",
                x.relayed_packets, x.nat_dropped, x.stayed_relayed
            )
        );
    }
    println!(
        "{:<44} {:>14}  every pair: {}",
        "pairs_connected_fraction (50 nodes, 40 % NAT)",
        opt(r.pairs_connected_fraction, 3),
        target(r.pairs_connected_fraction == Some(1.0))
    );
    println!(
        "{:<44} {:>14}  switch when open: {}",
        "direct_upgrade_fraction",
        opt(r.direct_upgrade_fraction, 3),
        target(r.direct_upgrade_fraction == Some(1.0))
    );
    println!(
        "{:<44} {:>14}  (none)",
        "relay_reach_ms (median, virtual time)",
        opt(r.relay_reach_ms, 0)
    );
    if let Some(m) = &r.mesh50 {
        println!(
            "{:<44} {:>14}",
            "  pairs connected / relayed first / at open",
            format!(
                "{}/{} / {} / {}",
                m.pairs_connected, m.pairs, m.pairs_relayed, m.relayed_at_open
            )
        );
        println!(
            "{:<44} {:>14}",
            "  reach via relay mean / max (s)",
            format!("{:.3} / {:.3}", m.relay_reach_s[1], m.relay_reach_s[2])
        );
    }
    println!();
    println!(
        "direct transfers: one reliable channel, encrypted link, two UDP sockets on 127.0.0.1, sender and receiver in one thread"
    );
    println!(
        "{:>6} {:>8} {:>8} {:>9} {:>9} {:>8} {:>6} {:>7} {:>8}  time per stage (% of loop)",
        "mtu", "MiB", "s", "Mbit/s", "ns/dgram", "rexmit", "RTOs", "fastrec", "rcvbuf"
    );
    for d in &r.direct {
        let s = &d.stages;
        let pct = |x: f64| 100.0 * x / d.seconds;
        println!(
            "{:>6} {:>8.0} {:>8.2} {:>9.1} {:>9.0} {:>8} {:>6} {:>7} {:>8}  write {:.0}, mux tx {:.0}, seal {:.0}, sendto {:.0}, recvfrom {:.0}, open {:.0}, mux rx {:.0}, other {:.0}",
            d.mtu,
            d.bytes as f64 / (1 << 20) as f64,
            d.seconds,
            d.mbps,
            d.ns_per_datagram,
            d.retransmitted_bytes,
            d.rto_expiries,
            d.fast_recoveries,
            d.udp_rcvbuf_errors
                .map_or("?".to_owned(), |x| x.to_string()),
            pct(s.app_write_s),
            pct(s.mux_transmit_s),
            pct(s.seal_s),
            pct(s.sendto_s),
            pct(s.recvfrom_s),
            pct(s.open_s),
            pct(s.mux_receive_s),
            pct(s.other_s),
        );
    }
    crate::record::write_report(&crate::record::report_path(json, "mesh"), r, |svg| {
        plot(r, svg)
    })
}

/// Bars of goodput per MTU, split into the time share of each stage.
fn plot(r: &MeshReport, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| anyhow!("{e}");
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let n = r.direct.len();
    let max = r.direct.iter().map(|d| d.mbps).fold(500.0f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "mesh: reliable channel over an encrypted link, loopback UDP, one core (Mbit/s; bar split by time per stage)",
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..max, 0..n)
        .map_err(|x| e(&x))?;
    let labels: Vec<String> = r.direct.iter().map(|d| format!("MTU {}", d.mtu)).collect();
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
        .x_desc("Mbit/s")
        .draw()
        .map_err(|x| e(&x))?;
    let colors = [
        RGBColor(120, 120, 120),
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
        RGBColor(200, 200, 200),
    ];
    let names = [
        "write", "mux tx", "seal", "sendto", "recvfrom", "open", "mux rx", "other",
    ];
    for (k, name) in names.iter().enumerate() {
        let color = colors[k];
        chart
            .draw_series(r.direct.iter().enumerate().map(|(i, d)| {
                let s = &d.stages;
                let parts = [
                    s.app_write_s,
                    s.mux_transmit_s,
                    s.seal_s,
                    s.sendto_s,
                    s.recvfrom_s,
                    s.open_s,
                    s.mux_receive_s,
                    s.other_s,
                ];
                let sum: f64 = parts.iter().sum::<f64>().max(1e-12);
                let lo: f64 = parts[..k].iter().sum::<f64>() / sum * d.mbps;
                let hi = lo + parts[k] / sum * d.mbps;
                Rectangle::new([(lo, i), (hi, i + 1)], color.mix(0.8).filled())
            }))
            .map_err(|x| e(&x))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(500.0, 0), (500.0, n)],
            BLACK.stroke_width(1),
        )))
        .map_err(|x| e(&x))?
        .label("target 500 Mbit/s (MTU 1200)");
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
