//! The emulator's threads and sockets (Linux only). See the [module docs](super).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io;
use std::os::fd::IntoRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockProtocol, SockType, setsockopt, socket, sockopt,
};
use pnet::datalink::{self, Channel, DataLinkReceiver, DataLinkSender};
use thiserror::Error;

use super::{Direction, DirectionStats, EmulatorConfig, Shaper, Verdict};
use crate::link::ConfigError;

const ETH_HEADER: usize = 14;
const POLL_TIMEOUT: Duration = Duration::from_millis(50);
const SOCKET_BUFFER: usize = 8 << 20;

/// Why the emulator could not start.
#[derive(Debug, Error)]
pub enum EmulatorError {
    /// A direction's link configuration is invalid.
    #[error("invalid {dir:?} link configuration: {source}")]
    Config {
        /// The direction.
        dir: Direction,
        /// Why.
        source: ConfigError,
    },
    /// No interface of that name exists (in the emulator's network namespace).
    #[error("no interface named `{0}`")]
    NoInterface(String),
    /// Both sides name the same interface.
    #[error("interface A and B are both `{0}`")]
    SameInterface(String),
    /// The network namespace could not be opened or entered.
    #[error("cannot enter network namespace `{name}`: {source}")]
    Netns {
        /// The namespace name (under /run/netns).
        name: String,
        /// Why.
        source: io::Error,
    },
    /// The packet socket could not be opened (not root? no CAP_NET_RAW?).
    #[error("cannot open a packet socket on `{iface}`: {source}")]
    Socket {
        /// The interface.
        iface: String,
        /// Why.
        source: io::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn an emulator thread: {0}")]
    Thread(io::Error),
    /// `ethtool` failed or is not installed.
    #[error("ethtool -K {iface}: {reason}")]
    Ethtool {
        /// The interface.
        iface: String,
        /// Why.
        reason: String,
    },
}

/// Turns off segmentation, receive and checksum offloads on `iface` in the caller's network
/// namespace (or in `netns` if given) with `ethtool -K`, so that frames on the wire are at most
/// one MTU and carry complete checksums (see the [module docs](super#offloads)).
pub fn disable_offloads(netns: Option<&str>, iface: &str) -> Result<(), EmulatorError> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ethtool"]);
            c
        }
        None => Command::new("ethtool"),
    };
    cmd.args([
        "-K", iface, "rx", "off", "tx", "off", "tso", "off", "gso", "off", "gro", "off",
    ]);
    let out = cmd.output().map_err(|e| EmulatorError::Ethtool {
        iface: iface.to_string(),
        reason: format!("cannot run ethtool ({e}); install it (Debian package `ethtool`)"),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(EmulatorError::Ethtool {
            iface: iface.to_string(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    received_bytes: AtomicU64,
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    queue_drops: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    corrupted: AtomicU64,
    oversize: AtomicU64,
    send_errors: AtomicU64,
    max_late_ns: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DirectionStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirectionStats {
            received: r(&self.received),
            received_bytes: r(&self.received_bytes),
            forwarded: r(&self.forwarded),
            forwarded_bytes: r(&self.forwarded_bytes),
            queue_drops: r(&self.queue_drops),
            lost: r(&self.lost),
            duplicated: r(&self.duplicated),
            reordered: r(&self.reordered),
            corrupted: r(&self.corrupted),
            oversize: r(&self.oversize),
            send_errors: r(&self.send_errors),
            max_late_ns: r(&self.max_late_ns),
        }
    }
}

fn add(a: &AtomicU64, v: u64) {
    a.fetch_add(v, Ordering::Relaxed);
}

/// A running emulator: four threads forwarding between two interfaces. Dropping it stops it.
pub struct Emulator {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: [Arc<Counters>; 2],
    config: EmulatorConfig,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("config", &self.config)
            .field("a_to_b", &self.stats(Direction::AtoB))
            .field("b_to_a", &self.stats(Direction::BtoA))
            .finish()
    }
}

type Port = (Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>);

fn open_port(iface: &str, mtu: usize) -> Result<Port, EmulatorError> {
    let sock_err = |source: io::Error| EmulatorError::Socket {
        iface: iface.to_string(),
        source,
    };
    let nic = datalink::interfaces()
        .into_iter()
        .find(|n| n.name == iface)
        .ok_or_else(|| EmulatorError::NoInterface(iface.to_string()))?;
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .map_err(|e| sock_err(e.into()))?;
    // Large kernel buffers absorb bursts while a thread is descheduled (best effort: the
    // forcing variants need CAP_NET_ADMIN).
    if setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    let cfg = datalink::Config {
        // Room for a 64 KB GSO frame, so an oversize frame is seen whole and counted.
        read_buffer_size: 65_536 + ETH_HEADER.max(mtu),
        write_buffer_size: 65_536,
        read_timeout: Some(POLL_TIMEOUT),
        write_timeout: Some(POLL_TIMEOUT),
        promiscuous: true,
        socket_fd: Some(fd.into_raw_fd()),
        ..datalink::Config::default()
    };
    match datalink::channel(&nic, cfg).map_err(sock_err)? {
        Channel::Ethernet(tx, rx) => Ok((tx, rx)),
        _ => Err(sock_err(io::Error::other("not an Ethernet channel"))),
    }
}

fn open_ports(a: &str, b: &str, mtu: usize) -> Result<(Port, Port), EmulatorError> {
    if a == b {
        return Err(EmulatorError::SameInterface(a.to_string()));
    }
    Ok((open_port(a, mtu)?, open_port(b, mtu)?))
}

/// Enters the network namespace `/run/netns/<name>` on the calling thread only.
pub(crate) fn enter_netns(name: &str) -> Result<(), io::Error> {
    let f = File::open(format!("/run/netns/{name}"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

impl Emulator {
    /// Starts forwarding between interfaces `iface_a` and `iface_b` of the calling thread's
    /// network namespace. Needs `CAP_NET_RAW`.
    pub fn start(
        iface_a: &str,
        iface_b: &str,
        config: EmulatorConfig,
    ) -> Result<Self, EmulatorError> {
        Self::check(&config)?;
        let (pa, pb) = open_ports(iface_a, iface_b, config.mtu)?;
        Self::run(pa, pb, config)
    }

    /// Like [`Emulator::start`], for interfaces of the named network namespace
    /// (`/run/netns/<netns>`, as made by `ip netns add`). The sockets are opened by a helper
    /// thread that enters the namespace; the calling thread's namespace is not changed.
    pub fn start_in_netns(
        netns: &str,
        iface_a: &str,
        iface_b: &str,
        config: EmulatorConfig,
    ) -> Result<Self, EmulatorError> {
        Self::check(&config)?;
        let (ns, a, b, mtu) = (
            netns.to_string(),
            iface_a.to_string(),
            iface_b.to_string(),
            config.mtu,
        );
        let ports = std::thread::Builder::new()
            .name("netem-open".into())
            .spawn(move || {
                enter_netns(&ns).map_err(|source| EmulatorError::Netns { name: ns, source })?;
                open_ports(&a, &b, mtu)
            })
            .map_err(EmulatorError::Thread)?
            .join()
            .map_err(|_| EmulatorError::Thread(io::Error::other("socket thread panicked")))??;
        Self::run(ports.0, ports.1, config)
    }

    fn check(config: &EmulatorConfig) -> Result<(), EmulatorError> {
        for dir in [Direction::AtoB, Direction::BtoA] {
            config
                .link(dir)
                .validate()
                .map_err(|source| EmulatorError::Config { dir, source })?;
        }
        Ok(())
    }

    fn run(pa: Port, pb: Port, config: EmulatorConfig) -> Result<Self, EmulatorError> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = [Arc::new(Counters::default()), Arc::new(Counters::default())];
        let epoch = Instant::now();
        let (tx_a, rx_a) = pa;
        let (tx_b, rx_b) = pb;
        let mut emu = Self {
            stop: stop.clone(),
            threads: Vec::new(),
            counters: counters.clone(),
            config: config.clone(),
        };
        let plan = [
            (Direction::AtoB, rx_a, tx_b, &counters[0], 0x5eed_a2b0u64),
            (Direction::BtoA, rx_b, tx_a, &counters[1], 0x5eed_b2a0u64),
        ];
        for (dir, rx, tx, ctr, salt) in plan {
            let link = config.link(dir).clone();
            let shaper = Shaper::new(link, config.seed ^ salt)
                .map_err(|source| EmulatorError::Config { dir, source })?;
            let (chan_tx, chan_rx) = mpsc::channel();
            let name = match dir {
                Direction::AtoB => "a2b",
                Direction::BtoA => "b2a",
            };
            let rx_worker = RxWorker {
                rx,
                shaper,
                out: chan_tx,
                ctr: ctr.clone(),
                stop: stop.clone(),
                epoch,
                mtu: config.mtu,
                rt_priority: config.rt_priority,
            };
            let release = Release {
                tx,
                input: chan_rx,
                ctr: ctr.clone(),
                stop: stop.clone(),
                epoch,
                spin: config.spin,
                rt_priority: config.rt_priority,
            };
            // On error `emu` is dropped, which stops and joins the threads already started.
            emu.threads.push(
                std::thread::Builder::new()
                    .name(format!("netem-rx-{name}"))
                    .spawn(move || rx_worker.run())
                    .map_err(EmulatorError::Thread)?,
            );
            emu.threads.push(
                std::thread::Builder::new()
                    .name(format!("netem-tx-{name}"))
                    .spawn(move || release.run())
                    .map_err(EmulatorError::Thread)?,
            );
        }
        Ok(emu)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    /// A snapshot of one direction's counters.
    pub fn stats(&self, dir: Direction) -> DirectionStats {
        match dir {
            Direction::AtoB => self.counters[0].snapshot(),
            Direction::BtoA => self.counters[1].snapshot(),
        }
    }

    /// Stops and joins the threads; returns the final counters `[a_to_b, b_to_a]`.
    pub fn stop(mut self) -> [DirectionStats; 2] {
        self.shutdown();
        [self.stats(Direction::AtoB), self.stats(Direction::BtoA)]
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("an emulator thread panicked");
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn now_ns(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A frame on its way to the release thread.
struct Pending {
    at_ns: u64,
    seq: u64,
    frame: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ns, self.seq) == (other.at_ns, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ns, self.seq).cmp(&(other.at_ns, other.seq))
    }
}

struct RxWorker {
    rx: Box<dyn DataLinkReceiver>,
    shaper: Shaper,
    out: Sender<Pending>,
    ctr: Arc<Counters>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    mtu: usize,
    rt_priority: Option<u8>,
}

/// Best effort: moves the calling thread to `SCHED_FIFO` at `prio` with `chrt` (util-linux),
/// so packet timestamps and releases are not delayed by ordinary processes (compilers,
/// the applications under test) on a busy machine. Failures are logged, never fatal.
pub(crate) fn make_realtime(prio: Option<u8>) {
    let Some(prio) = prio else { return };
    let tid = nix::unistd::gettid().to_string();
    match Command::new("chrt")
        .args(["-f", "-p", &prio.to_string(), &tid])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => tracing::warn!(
            "emulator thread stays SCHED_OTHER: chrt: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => tracing::warn!("emulator thread stays SCHED_OTHER: cannot run chrt: {e}"),
    }
}

impl RxWorker {
    fn run(mut self) {
        make_realtime(self.rt_priority);
        let mut seq = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let frame = match self.rx.next() {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("emulator receive failed, stopping this direction: {e}");
                    return;
                }
            };
            let now = now_ns(self.epoch);
            let c = &self.ctr;
            add(&c.received, 1);
            if frame.len() <= ETH_HEADER || frame.len() > ETH_HEADER + self.mtu {
                add(&c.oversize, 1);
                continue;
            }
            let wire_len = frame.len() - ETH_HEADER;
            add(&c.received_bytes, wire_len as u64);
            let region = impairable_region(frame);
            let bits = region.as_ref().map_or(0, |r| (r.len() as u64) * 8);
            match self.shaper.offer(now, wire_len, bits) {
                Verdict::QueueDrop => add(&c.queue_drops, 1),
                Verdict::Lost => add(&c.lost, 1),
                Verdict::Deliver {
                    at_ns,
                    duplicate,
                    corrupt_bit,
                    reordered,
                } => {
                    let mut copy = frame.to_vec();
                    if let (Some(bit), Some(r)) = (corrupt_bit, region) {
                        let i = r.start + (bit / 8) as usize;
                        if let Some(b) = copy.get_mut(i) {
                            *b ^= 1 << (bit % 8);
                            add(&c.corrupted, 1);
                        }
                    }
                    if reordered {
                        add(&c.reordered, 1);
                    }
                    if duplicate {
                        add(&c.duplicated, 1);
                        seq += 1;
                        let dup = Pending {
                            at_ns,
                            seq,
                            frame: copy.clone(),
                        };
                        if self.out.send(dup).is_err() {
                            return;
                        }
                    }
                    seq += 1;
                    if self
                        .out
                        .send(Pending {
                            at_ns,
                            seq,
                            frame: copy,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// The byte range corruption may touch: an IPv4 packet's payload after its header (so the
/// damage is caught by the transport checksum, as on a real link). Non-IPv4 frames are never
/// corrupted.
fn impairable_region(frame: &[u8]) -> Option<std::ops::Range<usize>> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype != 0x0800 {
        return None;
    }
    let ihl = usize::from(frame.get(ETH_HEADER)? & 0x0f) * 4;
    let start = ETH_HEADER + ihl;
    (ihl >= 20 && start < frame.len()).then_some(start..frame.len())
}

struct Release {
    tx: Box<dyn DataLinkSender>,
    input: Receiver<Pending>,
    ctr: Arc<Counters>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    spin: Duration,
    rt_priority: Option<u8>,
}

impl Release {
    fn run(mut self) {
        let _ = nix::sys::prctl::set_timerslack(1);
        make_realtime(self.rt_priority);
        let spin_ns = u64::try_from(self.spin.as_nanos()).unwrap_or(u64::MAX);
        let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
        let push = |p: Pending, heap: &mut BinaryHeap<Reverse<Pending>>| heap.push(Reverse(p));
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            loop {
                match self.input.try_recv() {
                    Ok(p) => push(p, &mut heap),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        if heap.is_empty() {
                            return;
                        }
                        break;
                    }
                }
            }
            let Some(at) = heap.peek().map(|p| p.0.at_ns) else {
                match self.input.recv_timeout(POLL_TIMEOUT) {
                    Ok(p) => push(p, &mut heap),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                continue;
            };
            let now = now_ns(self.epoch);
            if at > now.saturating_add(spin_ns) {
                let wait = Duration::from_nanos(at - now - spin_ns).min(POLL_TIMEOUT);
                match self.input.recv_timeout(wait) {
                    Ok(p) => push(p, &mut heap),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {}
                }
                continue;
            }
            while now_ns(self.epoch) < at {
                std::hint::spin_loop();
            }
            let Some(Reverse(Pending { frame, .. })) = heap.pop() else {
                continue;
            };
            let late = now_ns(self.epoch).saturating_sub(at);
            self.ctr.max_late_ns.fetch_max(late, Ordering::Relaxed);
            match self.tx.send_to(&frame, None) {
                Some(Ok(())) => {
                    add(&self.ctr.forwarded, 1);
                    add(&self.ctr.forwarded_bytes, (frame.len() - ETH_HEADER) as u64);
                }
                _ => add(&self.ctr.send_errors, 1),
            }
        }
    }
}
