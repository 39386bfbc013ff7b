//! Channels over a simulated link (`sim-netem`): two endpoints, each owning a
//! `mesh::channel::Channels` mux, exchange plaintext datagrams (no encryption here) under loss,
//! reordering and duplication. Checks exactly-once in-order delivery, SACK-limited
//! retransmission, parallel channels both ways, close codes, flow control and bounds.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mesh::channel::{
    ChannelError, ChannelEvent, ChannelId, Channels, CloseError, Config, Side, codes,
};
use sim_netem::{Datagram, Endpoint, EndpointId, LinkConfig, LinkId, LossModel, Sim};

const PORT: u16 = 5000;

/// Byte `i` of the test stream with seed `k` (pseudo-random so misordering shows).
fn pattern(k: u64, i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761)
        .wrapping_add(k.wrapping_mul(0x9e37_79b9))
        >> 13) as u8
}

/// A stream this node writes: channel, seed, total length, bytes written so far.
struct Outgoing {
    id: ChannelId,
    seed: u64,
    total: u64,
    written: u64,
    close_code: Option<u32>,
}

/// What a node saw arrive on one channel.
#[derive(Default, Debug)]
struct Incoming {
    seed: u64,
    received: u64,
    corrupt: bool,
    closed: Option<CloseError>,
}

struct Node {
    mux: Channels,
    peer: SocketAddr,
    out: Vec<Outgoing>,
    inc: BTreeMap<ChannelId, Incoming>,
    /// Slow reader: read `read_chunk` bytes every `read_every` (data_events off).
    read_every: Option<Duration>,
    read_chunk: usize,
    next_read: Option<Instant>,
    would_block: u64,
    max_buffered: usize,
}

impl Node {
    fn new(side: Side, cfg: Config, peer: SocketAddr) -> Self {
        Self {
            mux: Channels::new(side, cfg).unwrap(),
            peer,
            out: Vec::new(),
            inc: BTreeMap::new(),
            read_every: None,
            read_chunk: 0,
            next_read: None,
            would_block: 0,
            max_buffered: 0,
        }
    }

    /// Opens a reliable channel named after its stream seed and queues `total` bytes on it.
    fn stream(&mut self, seed: u64, total: u64, close_code: Option<u32>) -> ChannelId {
        let id = self.mux.open(&format!("bulk-{seed}"), true).unwrap();
        self.out.push(Outgoing {
            id,
            seed,
            total,
            written: 0,
            close_code,
        });
        id
    }

    fn accept(&mut self, id: ChannelId, bytes: &[u8]) {
        let inc = self.inc.entry(id).or_default();
        for (j, b) in bytes.iter().enumerate() {
            if *b != pattern(inc.seed, inc.received + j as u64) {
                inc.corrupt = true;
            }
        }
        inc.received += bytes.len() as u64;
    }

    fn pump(&mut self, now: Instant) {
        while let Some(e) = self.mux.poll_event() {
            match e {
                ChannelEvent::Opened { id, kind, .. } => {
                    let seed = kind.trim_start_matches("bulk-").parse().unwrap_or(u64::MAX);
                    self.inc.insert(
                        id,
                        Incoming {
                            seed,
                            ..Default::default()
                        },
                    );
                }
                ChannelEvent::Data { id, bytes } => self.accept(id, &bytes),
                ChannelEvent::Closed { id, error } => {
                    self.inc.entry(id).or_default().closed = Some(error);
                }
                ChannelEvent::Readable { .. } | ChannelEvent::Writable { .. } => {}
            }
        }
        if let (Some(every), Some(at)) = (self.read_every, self.next_read)
            && at <= now
        {
            let ids: Vec<ChannelId> = self.inc.keys().copied().collect();
            for id in ids {
                if let Ok(bytes) = self.mux.recv(id, self.read_chunk) {
                    self.accept(id, &bytes);
                }
            }
            self.next_read = Some(at + every);
        }
        for o in &mut self.out {
            while o.written < o.total {
                let n = (o.total - o.written).min(4096);
                let chunk: Vec<u8> = (o.written..o.written + n)
                    .map(|i| pattern(o.seed, i))
                    .collect();
                match self.mux.send(o.id, &chunk) {
                    Ok(()) => o.written += n,
                    Err(ChannelError::WouldBlock) => {
                        self.would_block += 1;
                        break;
                    }
                    Err(e) => panic!("send: {e}"),
                }
            }
            if o.written == o.total
                && let Some(code) = o.close_code.take()
            {
                self.mux.close(o.id, code, "done").unwrap();
            }
        }
        self.max_buffered = self.max_buffered.max(self.mux.buffered_bytes());
    }
}

impl Endpoint for Node {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        let _ = self.mux.handle_datagram(now, &dgram.payload);
        self.pump(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.mux.handle_timeout(now);
        self.pump(now);
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        if self.next_read.is_none() && self.read_every.is_some() {
            self.next_read = Some(now);
        }
        self.pump(now);
        let payload = self.mux.poll_transmit(now)?;
        assert!(
            payload.len() <= self.mux.config().mtu,
            "datagram over the MTU"
        );
        Some(Datagram {
            src: SocketAddr::from(([0, 0, 0, 0], 0)),
            dst: self.peer,
            payload,
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match (self.mux.poll_timeout(), self.next_read) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

struct Net {
    sim: Sim,
    a: EndpointId,
    b: EndpointId,
    /// The A → B link (the data direction of the bulk tests).
    ab: LinkId,
}

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Two hosts on a duplex link; `setup` prepares each node before it is attached.
fn net(seed: u64, link: LinkConfig, cfg: Config, setup: impl Fn(&mut Node, &mut Node)) -> Net {
    let mut sim = Sim::new(seed);
    let ha = sim.add_host(A);
    let hb = sim.add_host(B);
    let (ab, _) = sim.add_duplex_droptail(ha, hb, link);
    let mut na = Node::new(
        Side::Initiator,
        cfg.clone(),
        SocketAddr::new(B.into(), PORT),
    );
    let mut nb = Node::new(Side::Responder, cfg, SocketAddr::new(A.into(), PORT));
    setup(&mut na, &mut nb);
    let b = sim.attach(hb, PORT, Box::new(nb));
    let a = sim.attach(ha, PORT, Box::new(na));
    Net { sim, a, b, ab }
}

fn node(n: &Net, id: EndpointId) -> &Node {
    n.sim.endpoint::<Node>(id).unwrap()
}

fn all_received(sim: &Sim, id: EndpointId, expect: &[(u64, u64)]) -> bool {
    let n = sim.endpoint::<Node>(id).unwrap();
    expect.iter().all(|&(seed, total)| {
        n.inc
            .values()
            .any(|i| i.seed == seed && i.received >= total)
    })
}

fn link(loss: f64) -> LinkConfig {
    let cfg = LinkConfig::new(20_000_000, Duration::from_millis(10));
    if loss > 0.0 {
        cfg.with_loss(LossModel::bernoulli(loss).unwrap())
    } else {
        cfg
    }
}

/// What one bulk transfer measured.
struct Bulk {
    sender: mesh::channel::mux::ChannelStats,
    receiver: mesh::channel::mux::ChannelStats,
    /// Simulated seconds to deliver everything.
    secs: f64,
    /// Drops at the bottleneck queue (A → B).
    queue_drops: u64,
}

const BULK_TOTAL: u64 = 2 * 1024 * 1024;

/// Runs a one-way 2 MiB transfer A → B and checks delivery. With `MESH_SIM_TRACE` set, prints
/// the sender's congestion state every 20 ms of simulated time.
fn bulk(seed: u64, link: LinkConfig) -> Bulk {
    let mut n = net(seed, link, Config::default(), |a, _| {
        a.stream(1, BULK_TOTAL, None);
    });
    let trace = std::env::var_os("MESH_SIM_TRACE").is_some();
    let step = Duration::from_millis(20);
    let mut done = false;
    let mut until = Duration::ZERO;
    while !done && until < Duration::from_secs(120) {
        until += step;
        done = n
            .sim
            .run_until_condition(until, |s| all_received(s, n.b, &[(1, BULK_TOTAL)]));
        if trace {
            let a = node(&n, n.a);
            let id = a.out[0].id;
            if let (Some(c), Some(st)) = (a.mux.congestion(id), a.mux.channel_stats(id)) {
                let drops = n.sim.link_stats(n.ab).map_or(0, |l| l.queue_drops);
                println!(
                    "t={:>5.0}ms cwnd={:>7.1} ssthresh={:>7.1} flight={:>4} lost={:>3} srtt={:?} rto={:?} rtos={} frs={} ss_delay_exits={} queue_drops={drops} sent={} rexmit={}",
                    n.sim.elapsed().as_secs_f64() * 1e3,
                    c.cwnd,
                    c.ssthresh,
                    c.in_flight,
                    c.lost,
                    c.srtt,
                    c.rto,
                    st.send.rto_expiries,
                    st.send.fast_recoveries,
                    st.send.slow_start_delay_exits,
                    st.send.bytes_sent,
                    st.send.bytes_retransmitted,
                );
            }
        }
    }
    let secs = n.sim.elapsed().as_secs_f64();
    assert!(done, "transfer incomplete after {secs} s");
    let b = node(&n, n.b);
    let inc = b.inc.values().find(|i| i.seed == 1).unwrap();
    assert_eq!(inc.received, BULK_TOTAL, "exactly once");
    assert!(!inc.corrupt, "in order, unaltered");
    let a = node(&n, n.a);
    let id = a.out[0].id;
    let sender = a.mux.channel_stats(id).unwrap();
    let receiver = b.mux.channel_stats(id).unwrap();
    assert!(a.max_buffered <= Config::default().max_send_buffer);
    let queue_drops = n.sim.link_stats(n.ab).map_or(0, |l| l.queue_drops);
    Bulk {
        sender,
        receiver,
        secs,
        queue_drops,
    }
}

impl Bulk {
    fn mbps(&self) -> f64 {
        BULK_TOTAL as f64 * 8.0 / self.secs / 1e6
    }
}

#[test]
fn reliable_2mb_clean_link() {
    let r = bulk(1, link(0.0));
    let (sa, sb) = (r.sender, r.receiver);
    // No random loss: retransmissions only repair drops at the bottleneck queue (slow start
    // overshoot), never spurious ones.
    assert!(
        sa.send.bytes_retransmitted < sa.send.bytes_sent / 10,
        "{sa:?}"
    );
    assert_eq!(sb.duplicate_segments, 0);
    println!(
        "clean link: 2 MiB in {:.2} s simulated = {:.1} Mbit/s ({} RTOs, {} fast recoveries, {} delay exits from slow start, {} queue drops)",
        r.secs,
        r.mbps(),
        sa.send.rto_expiries,
        sa.send.fast_recoveries,
        sa.send.slow_start_delay_exits,
        r.queue_drops
    );
}

/// Congestion control on a clean 20 Mbit/s, 10 ms link with a one-BDP queue: slow start must
/// end before it overflows the queue (no RTO), and a 2 MiB transfer (handshake and slow start
/// included) must run at ≥ 70 % of the link rate. Simulated time, so this is deterministic.
#[test]
fn clean_link_goodput_at_least_70_percent_without_rto() {
    let r = bulk(11, link(0.0));
    let rate = r.mbps();
    assert_eq!(
        r.sender.send.rto_expiries, 0,
        "spurious RTO: {:?}",
        r.sender
    );
    assert!(
        rate >= 0.70 * 20.0,
        "goodput {rate:.1} Mbit/s < 70 % of 20 Mbit/s: {:?}, {} queue drops",
        r.sender,
        r.queue_drops
    );
}

#[test]
fn reliable_2mb_five_percent_loss_retransmits_only_missing() {
    let r = bulk(2, link(0.05));
    let (sa, sb, secs) = (r.sender, r.receiver, r.secs);
    let total = sa.send.bytes_sent as f64;
    let re = sa.send.bytes_retransmitted as f64;
    println!(
        "5% loss: 2 MiB in {secs:.2} s simulated = {:.1} Mbit/s; retransmitted {:.1}% ({} RTOs, {} fast recoveries, {} dup segments at receiver)",
        r.mbps(),
        100.0 * re / total,
        sa.send.rto_expiries,
        sa.send.fast_recoveries,
        sb.duplicate_segments
    );
    assert!(re > 0.0, "loss must cause retransmissions");
    assert!(
        re < 0.12 * total,
        "retransmitted {re} of {total}: more than the missing segments"
    );
    assert!(
        sb.duplicate_segments * 1150 < (0.03 * total) as u64,
        "spurious retransmissions: {sb:?}"
    );
}

#[test]
fn reliable_2mb_reordering() {
    let l = link(0.0).with_reorder(0.05, Duration::from_millis(5));
    let sa = bulk(3, l).sender;
    let total = sa.send.bytes_sent as f64;
    assert!(
        (sa.send.bytes_retransmitted as f64) < 0.10 * total,
        "{sa:?}"
    );
}

#[test]
fn reliable_2mb_duplication_and_loss() {
    let l = link(0.01)
        .with_duplicate(0.05)
        .with_reorder(0.02, Duration::from_millis(3));
    let sb = bulk(4, l).receiver;
    assert!(
        sb.duplicate_segments > 0,
        "duplicates must have been seen and dropped"
    );
}

#[test]
fn parallel_channels_both_directions() {
    const TOTAL: u64 = 300_000;
    let mut n = net(5, link(0.02), Config::default(), |a, b| {
        for k in 10..13 {
            a.stream(k, TOTAL, None);
        }
        for k in 20..22 {
            b.stream(k, TOTAL, None);
        }
    });
    let done = n.sim.run_until_condition(Duration::from_secs(120), |s| {
        all_received(s, n.b, &[(10, TOTAL), (11, TOTAL), (12, TOTAL)])
            && all_received(s, n.a, &[(20, TOTAL), (21, TOTAL)])
    });
    assert!(done);
    for (ep, seeds) in [(n.b, vec![10, 11, 12]), (n.a, vec![20, 21])] {
        let nd = node(&n, ep);
        for s in seeds {
            let inc = nd.inc.values().find(|i| i.seed == s).unwrap();
            assert_eq!(inc.received, TOTAL);
            assert!(!inc.corrupt);
        }
    }
    // Ids by side: initiator even, responder odd.
    assert!(node(&n, n.a).out.iter().all(|o| o.id.0 % 2 == 0));
    assert!(node(&n, n.b).out.iter().all(|o| o.id.0 % 2 == 1));
}

#[test]
fn close_with_error_code_reaches_peer() {
    let mut n = net(6, link(0.05), Config::default(), |a, b| {
        a.stream(30, 50_000, Some(codes::NORMAL));
        a.stream(31, 0, Some(0x1234));
        b.stream(32, 10_000, Some(codes::APPLICATION + 7));
    });
    n.sim.run_for(Duration::from_secs(30));
    let b = node(&n, n.b);
    let graceful = b.inc.values().find(|i| i.seed == 30).unwrap();
    assert_eq!(
        graceful.received, 50_000,
        "graceful close delivers everything first"
    );
    let e = graceful.closed.as_ref().unwrap();
    assert_eq!(
        (e.code, e.by_peer, e.reason.as_str()),
        (codes::NORMAL, true, "done")
    );
    let aborted = b.inc.values().find(|i| i.seed == 31).unwrap();
    assert_eq!(aborted.closed.as_ref().unwrap().code, 0x1234);
    let a = node(&n, n.a);
    let other = a.inc.values().find(|i| i.seed == 32).unwrap();
    assert_eq!(other.closed.as_ref().unwrap().code, codes::APPLICATION + 7);
    // Every channel is gone on both sides once the CLOSE handshakes end.
    assert_eq!(a.mux.channel_count(), 0);
    assert_eq!(b.mux.channel_count(), 0);
}

#[test]
fn flow_control_slow_reader() {
    const TOTAL: u64 = 400_000;
    let cfg = Config {
        max_recv_buffer: 32 * 1024,
        ..Config::default()
    };
    let rcfg = Config {
        data_events: false,
        ..cfg.clone()
    };
    let mut sim = Sim::new(7);
    let ha = sim.add_host(A);
    let hb = sim.add_host(B);
    sim.add_duplex_droptail(ha, hb, link(0.0));
    let mut na = Node::new(
        Side::Initiator,
        cfg.clone(),
        SocketAddr::new(B.into(), PORT),
    );
    let mut nb = Node::new(Side::Responder, rcfg, SocketAddr::new(A.into(), PORT));
    na.stream(40, TOTAL, None);
    // 8 KiB every 100 ms = 80 KiB/s: the 20 Mbit/s link could go 30 times faster.
    nb.read_every = Some(Duration::from_millis(100));
    nb.read_chunk = 8 * 1024;
    let b = sim.attach(hb, PORT, Box::new(nb));
    let a = sim.attach(ha, PORT, Box::new(na));
    let mut window_full = 0;
    for _ in 0..30 {
        sim.run_for(Duration::from_millis(100));
        let na = sim.endpoint::<Node>(a).unwrap();
        let nb = sim.endpoint::<Node>(b).unwrap();
        let sent = na.mux.channel_stats(na.out[0].id).unwrap().send.bytes_sent;
        let read: u64 = nb.inc.values().map(|i| i.received).sum();
        // The sender never runs ahead of the reader by more than the window (+ one probe).
        assert!(sent <= read + 32 * 1024 + 1200, "sent {sent}, read {read}");
        assert!(nb.mux.buffered_bytes() <= 32 * 1024);
        if sent + 10 * 1024 >= read + 32 * 1024 {
            window_full += 1; // Stopped at the window, not for lack of data.
        }
    }
    let na = sim.endpoint::<Node>(a).unwrap();
    let nb = sim.endpoint::<Node>(b).unwrap();
    let read: u64 = nb.inc.values().map(|i| i.received).sum();
    assert!(
        (200_000..TOTAL).contains(&read),
        "read {read} in 3 s at 80 KiB/s"
    );
    assert!(
        window_full >= 20,
        "the sender sat at the window ({window_full} of 30 samples)"
    );
    assert!(na.would_block > 0, "the sender's buffer pushed back");
    assert!(!nb.inc.values().any(|i| i.corrupt));
    // Finish: the reader goes on and the sender resumes to the end.
    let done = sim.run_until_condition(Duration::from_secs(60), |s| {
        all_received(s, b, &[(40, TOTAL)])
    });
    assert!(done, "sender resumes after the window reopens");
}
