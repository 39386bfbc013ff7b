//! Closed-loop tests of `MefQdisc` on one bottleneck: paced MEF senders that learn the stamped
//! rate one RTT later (as the transport does), a cheater, and non-MEF cross traffic, driven by
//! a tiny event loop on a virtual clock. The full simulator lives in `sim-netem`; this keeps the
//! router's own guarantees testable in isolation.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mef_router::{FlowKey, MefQdisc, MefQdiscConfig};
use mef_transport::wire::header::{UNLIMITED_KBPS, flags};
use mef_transport::wire::{HEADER_LEN, Header, Packet, PacketType};
use sim_netem::{Datagram, Enqueue, Qdisc};

const C: u64 = 100_000_000;
const PAYLOAD: usize = 1200;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Paces at min(echoed stamp, demand).
    Honest,
    /// Sends at a fixed rate whatever it is told (and claims to pace at the stamp).
    Cheater(f64),
    /// Non-MEF UDP at a fixed rate.
    Udp(f64),
}

#[derive(Debug)]
struct Sender {
    kind: Kind,
    port: u16,
    rtt: Duration,
    stop: Duration,
    demand_kbps: u32,
    rate_bps: f64,
    next_send: Duration,
    started: bool,
    closed: bool,
    feedback: VecDeque<(Duration, u32)>,
    pn: u64,
    first_stamp_kbps: Option<u32>,
    /// (time, wire bytes) delivered by the bottleneck.
    delivered: Vec<(Duration, usize)>,
    /// A sized transfer: this many data packets, then CLOSING one RTT later.
    size_packets: Option<u64>,
    data_sent: u64,
    data_delivered: u64,
    start: Duration,
    /// When the last data packet of a sized transfer left the bottleneck.
    done_at: Option<Duration>,
}

impl Sender {
    fn new(kind: Kind, port: u16, rtt_ms: u64, start_ms: u64, stop_ms: u64) -> Self {
        Self {
            kind,
            port,
            rtt: Duration::from_millis(rtt_ms),
            stop: Duration::from_millis(stop_ms),
            demand_kbps: UNLIMITED_KBPS,
            rate_bps: 0.0,
            next_send: Duration::from_millis(start_ms),
            started: false,
            closed: false,
            feedback: VecDeque::new(),
            pn: 0,
            first_stamp_kbps: None,
            delivered: Vec::new(),
            size_packets: None,
            data_sent: 0,
            data_delivered: 0,
            start: Duration::from_millis(start_ms),
            done_at: None,
        }
    }

    /// A transfer of `packets` data packets starting at `start_ms`.
    fn sized(port: u16, rtt_ms: u64, start: Duration, packets: u64) -> Self {
        let mut s = Self::new(Kind::Honest, port, rtt_ms, 0, u64::MAX / 4);
        s.next_send = start;
        s.start = start;
        s.size_packets = Some(packets);
        s
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], self.port))
    }

    fn active(&self) -> bool {
        !self.closed
    }

    fn send_rate(&self) -> f64 {
        match self.kind {
            Kind::Honest => self.rate_bps,
            Kind::Cheater(r) | Kind::Udp(r) => r,
        }
    }

    /// Builds the next datagram (or `None` if waiting for the handshake echo).
    fn build(&mut self, now: Duration) -> Option<Datagram> {
        let dst = SocketAddr::from(([10, 0, 9, 9], 4433));
        if let Kind::Udp(_) = self.kind {
            let payload = vec![0u8; PAYLOAD];
            self.next_send = now + gap(PAYLOAD + 28, self.send_rate());
            return Some(Datagram {
                src: self.addr(),
                dst,
                payload,
            });
        }
        let finished = self.size_packets.is_some_and(|n| self.data_sent >= n);
        if finished && now < self.stop {
            // Wait one RTT for the last acknowledgements, then close.
            self.stop = now + self.rtt;
            self.next_send = self.stop;
            return None;
        }
        let (ty, fl, len) = if !self.started {
            self.started = true;
            (PacketType::Initial, 0, HEADER_LEN + 64)
        } else if now >= self.stop {
            self.closed = true;
            (PacketType::Data, flags::CLOSING, HEADER_LEN + 16)
        } else {
            self.data_sent += 1;
            (PacketType::Data, 0, PAYLOAD)
        };
        let cur = match self.kind {
            Kind::Honest => (self.rate_bps / 1000.0) as u32,
            Kind::Cheater(_) => (self.rate_bps / 1000.0) as u32, // lies: claims the stamp
            Kind::Udp(_) => 0,
        };
        let h = Header {
            packet_type: ty,
            flags: fl,
            hops: 0,
            // Like the transport: the Initial goes to the client's own id, with no RTT sample
            // yet; data goes to the id the server chose.
            conn_id: u64::from(self.port) + if ty == PacketType::Initial { 10_000 } else { 0 },
            packet_number: self.pn,
            demand_kbps: self.demand_kbps,
            current_rate_kbps: cur,
            stamp_kbps: UNLIMITED_KBPS,
            rtt_us: if ty == PacketType::Initial {
                0
            } else {
                self.rtt.as_micros() as u32
            },
        };
        self.pn += 1;
        let mut payload = vec![0u8; len];
        h.emit(&mut payload);
        let rate = self.send_rate();
        self.next_send = if ty == PacketType::Initial && self.kind == Kind::Honest {
            Duration::MAX // wait for the echo
        } else if rate > 0.0 {
            now + gap(len + 28, rate)
        } else {
            Duration::MAX
        };
        Some(Datagram {
            src: self.addr(),
            dst,
            payload,
        })
    }

    fn on_feedback(&mut self, now: Duration, stamp_kbps: u32) {
        let was_waiting = self.rate_bps == 0.0;
        self.rate_bps = f64::from(stamp_kbps.min(self.demand_kbps)) * 1000.0;
        if matches!(self.kind, Kind::Cheater(_)) && was_waiting {
            self.next_send = now;
        }
        if self.kind == Kind::Honest && was_waiting && !self.closed {
            self.next_send = now;
        }
    }

    fn goodput_bps(&self, from: Duration, to: Duration) -> f64 {
        let bytes: usize = self
            .delivered
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, b)| b)
            .sum();
        bytes as f64 * 8.0 / (to - from).as_secs_f64()
    }
}

fn gap(wire: usize, rate_bps: f64) -> Duration {
    Duration::from_secs_f64(wire as f64 * 8.0 / rate_bps)
}

struct Run {
    q: MefQdisc,
    senders: Vec<Sender>,
    /// (dequeue time, queueing delay) per packet.
    queue_delays: Vec<(Duration, Duration, u16)>,
    drops: Vec<(u16, bool)>, // (port, policed?)
    busy: Duration,
}

fn run(cfg: MefQdiscConfig, mut senders: Vec<Sender>, end: Duration) -> Run {
    let base = Instant::now();
    let mut q = MefQdisc::new(cfg).expect("valid config");
    let mut now = Duration::ZERO;
    let mut busy_until = Duration::ZERO;
    let mut busy = Duration::ZERO;
    let mut queue_delays = Vec::new();
    let mut drops = Vec::new();
    let mut next_id = 0u64;
    let trace = std::env::var_os("MEF_TRACE").is_some();
    let mut next_trace = Duration::ZERO;
    loop {
        let t_send = senders
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active())
            .map(|(i, s)| (s.next_send, i))
            .min();
        let t_fb = senders
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.feedback.front().map(|f| (f.0, i)))
            .min();
        let t_link = (q.backlog_packets() > 0).then(|| busy_until.max(now));
        let mut t = Duration::MAX;
        for c in [t_send.map(|x| x.0), t_fb.map(|x| x.0), t_link]
            .into_iter()
            .flatten()
        {
            t = t.min(c);
        }
        if t >= end {
            break;
        }
        now = now.max(t);
        let at = base + now;
        if trace && now >= next_trace {
            next_trace += ms(25);
            let rates: Vec<u64> = senders
                .iter()
                .map(|s| (s.send_rate() / 1e5) as u64)
                .collect();
            eprintln!(
                "t={:>5}ms mu={:.2}M k={:.4} l={:.3} rho={:.3} qe={} q={}B mefq={} rates(0.1M)={rates:?}",
                now.as_millis(),
                q.fair_rate_bps() / 1e6,
                q.controller().correction(),
                q.controller().lending(),
                q.controller().usage_ratio(),
                q.controller().queue_estimate(),
                q.backlog_bytes(),
                q.mef_backlog_bytes()
            );
        }
        if Some(t) == t_link {
            let pkt = q.dequeue(at).expect("work-conserving");
            let wire = pkt.wire_len();
            queue_delays.push((now, at - pkt.enqueued_at, pkt.dgram.src.port()));
            let tx = gap(wire, C as f64);
            busy_until = now + tx;
            busy += tx;
            let port = pkt.dgram.src.port();
            if let Some(s) = senders.iter_mut().find(|s| s.port == port) {
                s.delivered.push((now, wire));
                if pkt.dgram.payload.len() == PAYLOAD {
                    s.data_delivered += 1;
                    if s.size_packets == Some(s.data_delivered) {
                        s.done_at = Some(now);
                    }
                }
                if let Ok(p) = Packet::new_checked(&pkt.dgram.payload[..]) {
                    let at_sender = now + s.rtt;
                    s.feedback.push_back((at_sender, p.stamp_kbps()));
                    if s.first_stamp_kbps.is_none() {
                        s.first_stamp_kbps = Some(p.stamp_kbps());
                    }
                }
            }
        } else if t_fb.map(|x| x.0) == Some(t) {
            let i = t_fb.map(|x| x.1).unwrap_or(0);
            if let Some((_, stamp)) = senders[i].feedback.pop_front() {
                senders[i].on_feedback(now, stamp);
            }
        } else if let Some((_, i)) = t_send
            && let Some(d) = senders[i].build(now)
        {
            next_id += 1;
            let pkt = sim_netem::Packet {
                dgram: d,
                id: next_id,
                enqueued_at: at,
            };
            let policed_before = q.stats().policed_drops;
            match q.enqueue(at, pkt) {
                Enqueue::Queued => {}
                Enqueue::Dropped(p) => {
                    let policed = q.stats().policed_drops > policed_before;
                    drops.push((p.dgram.src.port(), policed));
                }
                Enqueue::QueuedWithDrops(v) => {
                    for p in v {
                        drops.push((p.dgram.src.port(), false));
                    }
                }
            }
        }
    }
    Run {
        q,
        senders,
        queue_delays,
        drops,
        busy,
    }
}

/// The `p` quantile of the queueing delays of packets dequeued in `[from, to)`.
fn percentile(v: &[(Duration, Duration, u16)], from: Duration, to: Duration, p: f64) -> Duration {
    percentile_of(v, from, to, p, |_| true)
}

/// Like [`percentile`], for the packets of the flows `which` selects by source port.
fn percentile_of(
    v: &[(Duration, Duration, u16)],
    from: Duration,
    to: Duration,
    p: f64,
    which: impl Fn(u16) -> bool,
) -> Duration {
    let mut d: Vec<Duration> = v
        .iter()
        .filter(|(t, _, port)| *t >= from && *t < to && which(*port))
        .map(|(_, d, _)| *d)
        .collect();
    if d.is_empty() {
        return Duration::ZERO;
    }
    d.sort();
    let i = ((d.len() - 1) as f64 * p).round() as usize;
    d[i]
}

fn cfg() -> MefQdiscConfig {
    // One BDP at 50 ms of buffer.
    MefQdiscConfig::new(C, 625_000)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn honest_flows_converge_fair_full_and_without_drops_or_queue() {
    let senders = vec![
        Sender::new(Kind::Honest, 1, 10, 0, 3000),
        Sender::new(Kind::Honest, 2, 40, 0, 3000),
        Sender::new(Kind::Honest, 3, 80, 0, 3000),
        // Joins late and leaves early: μ falls, then rises; nobody may be policed.
        Sender::new(Kind::Honest, 4, 20, 1000, 2000),
    ];
    let r = run(cfg(), senders, ms(3000));
    assert!(
        r.drops.is_empty(),
        "drops: {:?}",
        &r.drops[..r.drops.len().min(10)]
    );
    assert_eq!(r.q.stats().drops(), 0);
    // Fair and full while the four share the link (after one RTT of the slowest flow).
    let (from, to) = (ms(1200), ms(2000));
    let rates: Vec<f64> = r.senders.iter().map(|s| s.goodput_bps(from, to)).collect();
    let total: f64 = rates.iter().sum();
    assert!(total > 0.97 * C as f64, "utilisation {}", total / C as f64);
    let jain = total * total / (rates.len() as f64 * rates.iter().map(|x| x * x).sum::<f64>());
    assert!(jain > 0.99, "jain {jain}: {rates:?}");
    // And after flow 4 left, the other three take its share back.
    let rates3: Vec<f64> = r.senders[..3]
        .iter()
        .map(|s| s.goodput_bps(ms(2300), ms(3000)))
        .collect();
    let total3: f64 = rates3.iter().sum();
    assert!(
        total3 > 0.97 * C as f64,
        "utilisation after leave {}",
        total3 / C as f64
    );
    // No standing queue in steady state. The join of a short-RTT flow makes the longer-RTT
    // flows overshoot until they hear the lower μ (80 ms − 20 ms later): that transient queue
    // is bounded by the RTT difference times the overshoot, and drained by the β term.
    for (a, b) in [(200, 1000), (1300, 2000), (2300, 3000)] {
        let p99 = percentile(&r.queue_delays, ms(a), ms(b), 0.99);
        assert!(p99 <= ms(2), "queueing delay p99 {p99:?} in [{a}, {b}) ms");
    }
    // DRR puts that queue on the flows that overshoot (each waits for its own excess at its
    // own share), not on the newcomer, which gets its share with no queue from the start.
    let worst = percentile(&r.queue_delays, ms(0), ms(3000), 1.0);
    assert!(worst <= ms(30), "worst queueing delay {worst:?}");
    let newcomer = percentile_of(&r.queue_delays, ms(0), ms(3000), 1.0, |p| p == 4);
    assert!(
        newcomer <= ms(2),
        "newcomer's worst queueing delay {newcomer:?}"
    );
    // Busy 95 % of the run, start-up included (flows starting together with no RTT sample
    // yet get their first stamps conservatively, see `RateController::stamp_kbps`).
    assert!(r.busy > ms(2850), "busy {:?}", r.busy);
}

#[test]
fn single_long_flow_fills_the_link_without_queue() {
    for rtt in [10, 50, 200] {
        let senders = vec![Sender::new(Kind::Honest, 1, rtt, 0, 4000)];
        let r = run(cfg(), senders, ms(4000));
        let g = r.senders[0].goodput_bps(ms(1000), ms(4000));
        assert!(
            g >= 0.98 * C as f64,
            "rtt {rtt}: utilisation {}",
            g / C as f64
        );
        assert!(r.drops.is_empty());
        let p99 = percentile(&r.queue_delays, ms(0), ms(4000), 0.99);
        assert!(p99 <= ms(1), "rtt {rtt}: p99 {p99:?}");
    }
}

#[test]
fn many_flows_with_different_rtts_are_fair() {
    // 30 flows, RTTs spread over 40–330 ms, joining 20 ms apart.
    let senders: Vec<Sender> = (0..30u16)
        .map(|i| {
            Sender::new(
                Kind::Honest,
                i + 1,
                40 + u64::from(i) * 10,
                u64::from(i) * 20,
                4000,
            )
        })
        .collect();
    let r = run(cfg(), senders, ms(4000));
    assert!(r.drops.is_empty(), "{} drops", r.drops.len());
    let rates: Vec<f64> = r
        .senders
        .iter()
        .map(|s| s.goodput_bps(ms(2000), ms(4000)))
        .collect();
    let total: f64 = rates.iter().sum();
    let jain = total * total / (rates.len() as f64 * rates.iter().map(|x| x * x).sum::<f64>());
    assert!(jain > 0.99, "jain {jain}");
    assert!(total > 0.97 * C as f64, "utilisation {}", total / C as f64);
    let p99 = percentile(&r.queue_delays, ms(2000), ms(4000), 0.99);
    assert!(p99 <= ms(5), "p99 {p99:?}");
}

#[test]
fn second_flow_gets_its_fair_share_on_its_first_packet() {
    let senders = vec![
        Sender::new(Kind::Honest, 1, 50, 0, 2000),
        Sender::new(Kind::Honest, 2, 50, 1000, 2000),
    ];
    let r = run(cfg(), senders, ms(2000));
    let first = r.senders[1].first_stamp_kbps.expect("flow 2 stamped");
    let fair = 0.99 * C as f64 / 2.0 / 1000.0;
    assert!(
        (f64::from(first) - fair).abs() < 0.02 * fair,
        "first stamp {first} vs fair {fair}"
    );
    // Within 2 RTTs of its first packet (learns at +1 RTT, sends from then on) it is near fair.
    let g = r.senders[1].goodput_bps(ms(1110), ms(1300));
    assert!(g > 0.9 * fair * 1000.0, "flow 2 goodput {g}");
    assert!(r.drops.is_empty());
}

#[test]
fn cheater_cannot_take_honest_shares() {
    let senders = vec![
        Sender::new(Kind::Honest, 1, 20, 0, 3000),
        Sender::new(Kind::Honest, 2, 60, 0, 3000),
        Sender::new(Kind::Cheater(90e6), 3, 20, 0, 3000),
    ];
    let r = run(cfg(), senders, ms(3000));
    let fair = C as f64 / 3.0;
    for s in &r.senders[..2] {
        let g = s.goodput_bps(ms(1000), ms(3000));
        assert!(
            g >= 0.9 * fair,
            "honest flow {} got {g} of fair {fair}",
            s.port
        );
        let key = FlowKey::Mef {
            src: s.addr(),
            dst: SocketAddr::from(([10, 0, 9, 9], 4433)),
            conn_id: u64::from(s.port),
        };
        let st = r.q.stats().flows.get(&key).copied().unwrap_or_default();
        assert_eq!(st.policed_drops, 0, "honest flow {} policed", s.port);
        assert_eq!(st.overflow_drops, 0, "honest flow {} overflowed", s.port);
    }
    let cheat = r.senders[2].goodput_bps(ms(1000), ms(3000));
    assert!(cheat < 1.15 * fair, "cheater got {cheat}");
    assert!(r.q.stats().policed_drops > 1000);
}

#[test]
fn mef_and_unresponsive_udp_share_the_link() {
    let senders = vec![
        Sender::new(Kind::Honest, 1, 40, 0, 3000),
        Sender::new(Kind::Udp(150e6), 2, 40, 0, 3000),
    ];
    let r = run(cfg(), senders, ms(3000));
    let mef = r.senders[0].goodput_bps(ms(1000), ms(3000));
    let udp = r.senders[1].goodput_bps(ms(1000), ms(3000));
    assert!(mef > 0.47 * C as f64, "MEF got {mef}, UDP {udp}");
    assert!(udp > 0.45 * C as f64, "UDP got {udp}");
    // Drops hit the UDP flood only.
    assert!(r.drops.iter().all(|d| d.0 == 2));
}

#[test]
fn light_udp_flow_leaves_the_rest_to_mef() {
    let senders = vec![
        // The cross traffic is there first, as on a real link (if both start at the same
        // instant, the MEF flow's Initial is stamped before the UDP rate is measured and the
        // β term has to drain the resulting queue).
        Sender::new(Kind::Honest, 1, 30, 200, 3000),
        Sender::new(Kind::Udp(20e6), 2, 30, 0, 3000),
    ];
    let r = run(cfg(), senders, ms(3000));
    let mef = r.senders[0].goodput_bps(ms(1000), ms(3000));
    let udp = r.senders[1].goodput_bps(ms(1000), ms(3000));
    assert!(udp > 0.99 * 20e6, "UDP {udp}");
    assert!(mef > 0.93 * (C as f64 - 20e6), "MEF got {mef}");
    assert!(r.drops.is_empty());
    let p99 = percentile(&r.queue_delays, ms(0), ms(3000), 0.99);
    assert!(p99 <= ms(2), "p99 {p99:?}");
}

#[test]
fn simultaneous_start_of_many_flows_loses_nothing() {
    let only: Option<u16> = std::env::var("MEF_N").ok().and_then(|v| v.parse().ok());
    for n in [2u16, 8, 64]
        .into_iter()
        .filter(|n| only.is_none_or(|o| o == *n))
    {
        let senders: Vec<Sender> = (0..n)
            .map(|i| Sender::new(Kind::Honest, i + 1, 50, 0, 3000))
            .collect();
        let r = run(cfg(), senders, ms(3000));
        let rates: Vec<f64> = r
            .senders
            .iter()
            .map(|s| s.goodput_bps(ms(1000), ms(3000)))
            .collect();
        let total: f64 = rates.iter().sum();
        let jain = total * total / (rates.len() as f64 * rates.iter().map(|x| x * x).sum::<f64>());
        let worst = percentile(&r.queue_delays, ms(0), ms(3000), 1.0);
        let p99 = percentile(&r.queue_delays, ms(0), ms(3000), 0.99);
        eprintln!(
            "n={n} drops={} jain={jain:.4} util={:.4} worst={worst:?} p99={p99:?}",
            r.drops.len(),
            total / C as f64
        );
        assert!(r.drops.is_empty(), "n={n}: {} drops", r.drops.len());
        assert!(jain > 0.99, "n={n}: jain {jain}");
    }
}

/// Short transfers arriving all the time (load 0.8): mean completion time and drops.
fn short_transfers(cfg: MefQdiscConfig) -> (f64, usize, usize) {
    let sizes = [5u64, 10, 20, 40, 100, 10, 15];
    let senders: Vec<Sender> = (0..570u16)
        .map(|i| {
            let start = Duration::from_micros(3500 * u64::from(i));
            Sender::sized(i + 1, 50, start, sizes[usize::from(i) % sizes.len()])
        })
        .collect();
    let r = run(cfg, senders, ms(3500));
    let fcts: Vec<f64> = r
        .senders
        .iter()
        .filter_map(|s| s.done_at.map(|d| (d - s.start).as_secs_f64()))
        .collect();
    let mean = fcts.iter().sum::<f64>() / fcts.len().max(1) as f64;
    (mean, fcts.len(), r.drops.len())
}

#[test]
fn lending_shortens_short_transfers_without_drops() {
    let (with, done_with, drops_with) = short_transfers(cfg());
    let mut no_lending = cfg();
    no_lending.controller.lending_max = 1.0;
    let (without, done_without, drops_without) = short_transfers(no_lending);
    eprintln!(
        "mean FCT with lending {with:.4}s ({done_with} done), without {without:.4}s ({done_without} done)"
    );
    assert_eq!(done_with, 570);
    assert_eq!(done_without, 570);
    assert_eq!(drops_with + drops_without, 0);
    assert!(with < 0.9 * without, "lending {with} vs none {without}");
}
