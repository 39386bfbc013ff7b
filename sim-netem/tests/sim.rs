//! Simulator behaviour: endpoint driving, timers, routing, topologies and determinism.

use std::any::Any;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sim_netem::{
    Datagram, DropTail, DumbbellBuilder, Endpoint, Enqueue, LinkConfig, LinkStats, LossModel,
    Packet, ParkingLotBuilder, ProbeConfig, ProbeRecord, ProbeSender, ProbeSink, Qdisc, Sim,
    SimStats,
};

const MS: Duration = Duration::from_millis(1);

/// Calls `handle_timeout` every `period`, recording when.
struct Ticker {
    next: Instant,
    period: Duration,
    ticks: Vec<Instant>,
}

impl Endpoint for Ticker {
    fn handle_datagram(&mut self, _now: Instant, _dgram: Datagram) {}
    fn handle_timeout(&mut self, now: Instant) {
        assert!(now >= self.next, "timer fired early");
        self.ticks.push(now);
        self.next += self.period;
    }
    fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }
}

/// Its deadline never advances: the simulator must detect the spin.
struct Spinner(Instant);

impl Endpoint for Spinner {
    fn handle_datagram(&mut self, _now: Instant, _dgram: Datagram) {}
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.0)
    }
}

/// Sends every received datagram back to its source; can also send one on request.
#[derive(Default)]
struct Echo {
    out: Vec<Datagram>,
    received: Vec<(Instant, Datagram)>,
}

impl Endpoint for Echo {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        self.out.push(Datagram {
            src: dgram.dst,
            dst: dgram.src,
            payload: dgram.payload.clone(),
        });
        self.received.push((now, dgram));
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
        self.out.pop()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Records when its echoes come back.
#[derive(Default)]
struct Pinger {
    out: Vec<Datagram>,
    sent_at: Vec<Instant>,
    rtts: Vec<Duration>,
}

impl Endpoint for Pinger {
    fn handle_datagram(&mut self, now: Instant, _dgram: Datagram) {
        // Echoes come back in order in these tests.
        self.rtts.push(now - self.sent_at[self.rtts.len()]);
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let d = self.out.pop()?;
        self.sent_at.push(now);
        Some(d)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn ping(dst: SocketAddr) -> Datagram {
    Datagram {
        src: sock(Ipv4Addr::UNSPECIFIED, 0),
        dst,
        payload: vec![0; 100],
    }
}

#[test]
fn timers_fire_exactly_on_time() {
    let mut sim = Sim::new(1);
    let h = sim.add_host(Ipv4Addr::new(10, 0, 0, 1));
    let t = Ticker {
        next: sim.instant_at(MS),
        period: 3 * MS,
        ticks: Vec::new(),
    };
    let id = sim.attach(h, 1, Box::new(t));
    sim.run_until(Duration::from_millis(100));
    assert_eq!(sim.now(), sim.instant_at(Duration::from_millis(100)));
    let ticks = &sim.endpoint::<Ticker>(id).expect("ticker").ticks;
    let want: Vec<Instant> = (0..34).map(|k| sim.instant_at(MS + k * 3 * MS)).collect();
    assert_eq!(ticks, &want);
}

#[test]
fn moved_deadlines_are_honoured() {
    let mut sim = Sim::new(1);
    let h = sim.add_host(Ipv4Addr::new(10, 0, 0, 1));
    let t = Ticker {
        next: sim.instant_at(10 * MS),
        period: Duration::from_secs(100),
        ticks: vec![],
    };
    let id = sim.attach(h, 1, Box::new(t));
    // Later: the stale 10 ms event must not fire the endpoint.
    let later = sim.instant_at(20 * MS);
    sim.with_endpoint::<Ticker, _>(id, |t, _| t.next = later)
        .expect("ticker");
    sim.run_until(15 * MS);
    assert!(sim.endpoint::<Ticker>(id).expect("t").ticks.is_empty());
    // Earlier than the queued one, and a deadline already in the past fires at once.
    let past = sim.instant_at(2 * MS);
    sim.with_endpoint::<Ticker, _>(id, |t, _| t.next = past)
        .expect("ticker");
    sim.run_until(16 * MS);
    let ticks = sim.endpoint::<Ticker>(id).expect("t").ticks.clone();
    assert_eq!(ticks, vec![sim.instant_at(15 * MS)]);
    assert_eq!(sim.stats().timeouts, 1);
}

#[test]
#[should_panic(expected = "spins")]
fn zero_time_spin_is_detected() {
    let mut sim = Sim::new(1);
    let h = sim.add_host(Ipv4Addr::new(10, 0, 0, 1));
    let epoch = sim.epoch();
    sim.attach(h, 1, Box::new(Spinner(epoch)));
    sim.run_for(MS);
}

#[test]
fn typed_access_and_detach() {
    let mut sim = Sim::new(1);
    let a = sim.add_host(Ipv4Addr::new(10, 0, 0, 1));
    let b = sim.add_host(Ipv4Addr::new(10, 0, 0, 2));
    let link = sim.add_link_droptail(a, b, LinkConfig::new(10_000_000, MS));
    let rx = sim.attach(b, 7, Box::new(ProbeSink::new(sim.epoch())));
    let cfg = ProbeConfig::new(sock(Ipv4Addr::new(10, 0, 0, 2), 7), 1_200_000); // 100 pkt/s
    let tx = sim.attach(a, 0, Box::new(ProbeSender::new(sim.epoch(), cfg)));
    assert_eq!(
        sim.endpoint_addr(tx),
        Some(sock(Ipv4Addr::new(10, 0, 0, 1), 49152))
    );
    assert!(
        sim.endpoint::<ProbeSender>(rx).is_none(),
        "wrong type must not downcast"
    );
    assert!(sim.qdisc::<DropTail>(link).is_some());
    assert!(sim.qdisc_mut::<DropTail>(link).is_some());
    sim.run_until(Duration::from_millis(995));
    let ep = sim.detach(rx).expect("detach");
    let sink = (ep as Box<dyn Any>).downcast::<ProbeSink>().expect("type");
    assert_eq!(sink.received(), 100);
    assert!(sim.endpoint::<ProbeSink>(rx).is_none());
    sim.run_until(Duration::from_millis(1995));
    assert_eq!(sim.stats().undeliverable, 100);
    // The port is free again.
    let rx2 = sim.attach(b, 7, Box::new(ProbeSink::new(sim.epoch())));
    sim.run_until(Duration::from_millis(2995));
    assert_eq!(
        sim.endpoint::<ProbeSink>(rx2).expect("sink").received(),
        100
    );
    assert!(sim.try_attach(b, 7, Box::new(Echo::default())).is_err());
}

#[test]
fn attach_mid_run_is_polled_immediately() {
    let mut sim = Sim::new(1);
    let a = sim.add_host(Ipv4Addr::new(10, 0, 0, 1));
    let b = sim.add_host(Ipv4Addr::new(10, 0, 0, 2));
    sim.add_duplex_droptail(a, b, LinkConfig::new(1_000_000_000, 5 * MS));
    let rx = sim.attach(b, 7, Box::new(ProbeSink::new(sim.epoch())));
    sim.run_until(Duration::from_millis(1234));
    let cfg = ProbeConfig::new(sock(Ipv4Addr::new(10, 0, 0, 2), 7), 1_000_000).with_count(3);
    sim.attach(a, 0, Box::new(ProbeSender::new(sim.epoch(), cfg)));
    sim.run_for(Duration::from_secs(1));
    let recs = sim
        .endpoint::<ProbeSink>(rx)
        .expect("sink")
        .records()
        .to_vec();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].sent, Duration::from_millis(1234));
    assert_eq!(recs[1].sent, Duration::from_millis(1246)); // 1500 B at 1 Mbit/s = 12 ms
}

#[test]
fn unbound_port_unknown_host_and_loopback() {
    let mut sim = Sim::new(1);
    let a = sim.add_host(Ipv4Addr::new(10, 0, 0, 1));
    let b = sim.add_host(Ipv4Addr::new(10, 0, 0, 2));
    sim.add_duplex_droptail(a, b, LinkConfig::default());
    let echo = sim.attach(a, 5, Box::new(Echo::default()));
    let p = sim.attach(a, 6, Box::new(Pinger::default()));
    sim.with_endpoint::<Pinger, _>(p, |p, _| {
        p.out.push(ping(sock(Ipv4Addr::new(10, 0, 0, 2), 9))); // no endpoint there
        p.out.push(ping(sock(Ipv4Addr::new(10, 9, 9, 9), 9))); // no such host
        p.out.push(Datagram {
            payload: vec![0],
            ..ping(sock(Ipv4Addr::new(10, 0, 0, 1), 5))
        });
    });
    sim.run_for(MS);
    assert_eq!(sim.stats().undeliverable, 1);
    assert_eq!(sim.stats().no_route, 1);
    assert_eq!(sim.endpoint::<Echo>(echo).expect("echo").received.len(), 1);
    assert_eq!(
        sim.endpoint::<Pinger>(p).expect("pinger").rtts,
        vec![Duration::ZERO]
    );
}

#[test]
fn dumbbell_routes_and_per_pair_rtts() {
    let mut sim = Sim::new(1);
    let rtts: Vec<Duration> = [40, 100, 330]
        .iter()
        .map(|&m| Duration::from_millis(m))
        .collect();
    let bottleneck = LinkConfig::new(100_000_000, 10 * MS);
    let d = DumbbellBuilder::new(3, bottleneck)
        .rtts(rtts.clone())
        .build_droptail(&mut sim);
    let d = d.expect("dumbbell");
    assert_eq!(d.rtts, rtts);
    for i in 0..3 {
        for j in 0..3 {
            let path = sim.path(d.senders[i], d.receiver_addrs[j]);
            assert_eq!(
                path,
                vec![d.sender_access[i].0, d.bottleneck, d.receiver_access[j].0]
            );
            let back = sim.path(d.receivers[j], d.sender_addrs[i]);
            assert_eq!(
                back,
                vec![d.receiver_access[j].1, d.reverse, d.sender_access[i].1]
            );
        }
    }
    let mut pingers = Vec::new();
    for i in 0..3 {
        sim.attach(d.receivers[i], 7, Box::new(Echo::default()));
        let p = sim.attach(d.senders[i], 0, Box::new(Pinger::default()));
        sim.with_endpoint::<Pinger, _>(p, |p, _| p.out.push(ping(sock(d.receiver_addrs[i], 7))));
        pingers.push(p);
    }
    sim.run_for(Duration::from_secs(1));
    for (i, &p) in pingers.iter().enumerate() {
        let rtt = sim.endpoint::<Pinger>(p).expect("pinger").rtts[0];
        // Propagation plus serialisation of 128 B: 2 × 10.24 µs at 100 Mbit/s, ~0.4 µs access.
        assert!(
            rtt > rtts[i] && rtt < rtts[i] + Duration::from_micros(25),
            "{i}: {rtt:?}"
        );
    }
    assert!(
        DumbbellBuilder::new(1, LinkConfig::new(1, 50 * MS))
            .rtt(50 * MS)
            .build_droptail(&mut sim)
            .is_err()
    );
}

#[test]
fn parking_lot_flows_cross_their_links() {
    let mut sim = Sim::new(1);
    let caps = [100_000_000, 50_000_000, 80_000_000];
    let links = caps.iter().map(|&c| LinkConfig::new(c, 2 * MS)).collect();
    let mut pl = ParkingLotBuilder::new(links)
        .build_droptail(&mut sim)
        .expect("parking lot");
    let hosts: Vec<_> = (0..4)
        .map(|r| pl.add_host(&mut sim, r).expect("host"))
        .collect();
    // (from router, to router, packets)
    let flows = [(0, 3, 100u64), (0, 1, 200), (1, 2, 300), (2, 3, 400)];
    let mut sinks = Vec::new();
    for (k, &(from, to, n)) in flows.iter().enumerate() {
        let port = 1000 + k as u16;
        sinks.push(sim.attach(hosts[to].0, port, Box::new(ProbeSink::new(sim.epoch()))));
        assert_eq!(sim.path(hosts[from].0, hosts[to].1).len(), to - from + 2);
        let cfg = ProbeConfig::new(sock(hosts[to].1, port), 10_000_000).with_count(n);
        sim.attach(
            hosts[from].0,
            0,
            Box::new(ProbeSender::new(sim.epoch(), cfg)),
        );
    }
    sim.run_for(Duration::from_secs(2));
    for (k, &s) in sinks.iter().enumerate() {
        assert_eq!(
            sim.endpoint::<ProbeSink>(s).expect("sink").received(),
            flows[k].2
        );
    }
    let crossing = |i: usize| {
        flows
            .iter()
            .filter(|f| f.0 <= i && i < f.1)
            .map(|f| f.2)
            .sum()
    };
    for i in 0..3 {
        let st = sim.link_stats(pl.forward[i]).expect("stats");
        assert_eq!(st.transmitted_packets, crossing(i), "link {i}");
        assert_eq!(
            sim.link_stats(pl.reverse[i])
                .expect("stats")
                .offered_packets,
            0
        );
    }
}

#[test]
fn route_override_forces_a_longer_path() {
    let mut sim = Sim::new(1);
    let (x, y, z) = (
        sim.add_router("X"),
        sim.add_router("Y"),
        sim.add_router("Z"),
    );
    let a = sim.add_host(Ipv4Addr::new(10, 0, 0, 1));
    let b_addr = Ipv4Addr::new(10, 0, 0, 2);
    let b = sim.add_host(b_addr);
    let fast = LinkConfig::new(1_000_000_000, Duration::ZERO);
    sim.add_link_droptail(a, x, fast.clone());
    sim.add_link_droptail(z, b, fast);
    let direct = sim.add_link_droptail(x, z, LinkConfig::new(1_000_000_000, MS));
    let via_y = sim.add_link_droptail(x, y, LinkConfig::new(1_000_000_000, 5 * MS));
    let y_z = sim.add_link_droptail(y, z, LinkConfig::new(1_000_000_000, 5 * MS));
    assert_eq!(sim.route(x, b_addr), Some(direct));
    assert!(
        sim.set_route(x, b_addr, y_z).is_err(),
        "link must leave the node"
    );
    sim.set_route(x, b_addr, via_y).expect("override");
    assert_eq!(sim.path(a, b_addr).len(), 4);
    let rx = sim.attach(b, 1, Box::new(ProbeSink::new(sim.epoch())));
    let cfg = ProbeConfig::new(sock(b_addr, 1), 1_000_000)
        .with_count(1)
        .with_payload_len(97);
    sim.attach(a, 1, Box::new(ProbeSender::new(sim.epoch(), cfg)));
    sim.run_for(Duration::from_secs(1));
    let d = sim
        .endpoint::<ProbeSink>(rx)
        .expect("sink")
        .delays()
        .max()
        .expect("delay");
    // 10 ms propagation + four 1 µs serialisations of 125 B at 1 Gbit/s.
    assert_eq!(d, Duration::from_micros(10_004));
    sim.clear_route(x, b_addr);
    assert_eq!(sim.route(x, b_addr), Some(direct));
}

/// A qdisc wrapping a drop-tail that counts enqueues and rewrites the first payload byte, as
/// the MEF router's rate stamping does.
struct Stamper {
    inner: DropTail,
    seen: u64,
}

impl Qdisc for Stamper {
    fn enqueue(&mut self, now: Instant, mut pkt: Packet) -> Enqueue {
        self.seen += 1;
        pkt.dgram.payload[0] = 0xAA;
        self.inner.enqueue(now, pkt)
    }
    fn dequeue(&mut self, now: Instant) -> Option<Packet> {
        self.inner.dequeue(now)
    }
    fn backlog_bytes(&self) -> usize {
        self.inner.backlog_bytes()
    }
    fn backlog_packets(&self) -> usize {
        self.inner.backlog_packets()
    }
}

#[test]
fn custom_bottleneck_qdisc_via_factory() {
    let mut sim = Sim::new(1);
    let d = DumbbellBuilder::new(1, LinkConfig::new(10_000_000, MS))
        .build(&mut sim, |cfg| {
            Box::new(Stamper {
                inner: DropTail::new(cfg.queue_limit_bytes),
                seen: 0,
            })
        })
        .expect("dumbbell");
    let echo = sim.attach(d.receivers[0], 7, Box::new(Echo::default()));
    let p = sim.attach(d.senders[0], 0, Box::new(Pinger::default()));
    sim.with_endpoint::<Pinger, _>(p, |p, _| {
        let mut d = ping(sock(d.receiver_addrs[0], 7));
        d.payload[0] = 0;
        p.out.push(d);
    });
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.qdisc::<Stamper>(d.bottleneck).expect("stamper").seen, 1);
    assert_eq!(sim.qdisc::<Stamper>(d.reverse).expect("stamper").seen, 1);
    assert!(sim.qdisc::<DropTail>(d.bottleneck).is_none());
    let got = &sim.endpoint::<Echo>(echo).expect("echo").received;
    assert_eq!(got[0].1.payload[0], 0xAA);
}

#[test]
fn reset_stats_excludes_warm_up() {
    let mut sim = Sim::new(1);
    let a = sim.add_host(Ipv4Addr::new(10, 0, 0, 1));
    let b = sim.add_host(Ipv4Addr::new(10, 0, 0, 2));
    let link = sim.add_link_droptail(a, b, LinkConfig::new(10_000_000, MS));
    sim.attach(b, 7, Box::new(ProbeSink::new(sim.epoch())));
    let cfg = ProbeConfig::new(sock(Ipv4Addr::new(10, 0, 0, 2), 7), 1_200_000);
    sim.attach(a, 0, Box::new(ProbeSender::new(sim.epoch(), cfg)));
    sim.run_until(Duration::from_millis(1005));
    sim.reset_stats();
    assert_eq!(sim.link_stats(link).expect("stats"), &LinkStats::default());
    sim.run_until(Duration::from_millis(2005));
    assert_eq!(sim.link_stats(link).expect("stats").delivered_packets, 100);
    assert_eq!(sim.stats().delivered, 100);
}

type RunResult = (Vec<LinkStats>, Vec<Vec<ProbeRecord>>, SimStats);

/// A congested, impaired dumbbell with three probes.
fn impaired_run(seed: u64) -> RunResult {
    let mut sim = Sim::new(seed);
    let bottleneck = LinkConfig::new(20_000_000, 10 * MS)
        .with_jitter(2 * MS)
        .with_loss(LossModel::gilbert_elliott(0.02, 3.0).expect("ge"))
        .with_reorder(0.01, 3 * MS)
        .with_duplicate(0.01)
        .with_corrupt(0.01)
        .with_queue_limit(30_000);
    let d = DumbbellBuilder::new(3, bottleneck)
        .build_droptail(&mut sim)
        .expect("dumbbell");
    let mut sinks = Vec::new();
    for i in 0..3 {
        sinks.push(sim.attach(d.receivers[i], 9, Box::new(ProbeSink::new(sim.epoch()))));
        let cfg = ProbeConfig::new(sock(d.receiver_addrs[i], 9), 8_000_000)
            .with_payload_len(200 + 500 * i);
        sim.attach(
            d.senders[i],
            0,
            Box::new(ProbeSender::new(sim.epoch(), cfg)),
        );
    }
    sim.run_for(Duration::from_secs(3));
    let stats = (0..sim.link_count())
        .map(|l| {
            sim.link_stats(sim_netem::LinkId::from_index(l))
                .expect("stats")
                .clone()
        })
        .collect();
    let records = sinks
        .iter()
        .map(|&s| {
            sim.endpoint::<ProbeSink>(s)
                .expect("sink")
                .records()
                .to_vec()
        })
        .collect();
    (stats, records, sim.stats().clone())
}

#[test]
fn same_seed_same_results_different_seed_different_losses() {
    let a = impaired_run(42);
    let b = impaired_run(42);
    assert!(a == b, "same seed must give identical results");
    let bottleneck = &a.0[0];
    assert!(bottleneck.queue_drops > 0 && bottleneck.random_losses > 0);
    assert!(bottleneck.duplicated > 0 && bottleneck.corrupted > 0 && bottleneck.reordered > 0);
    let c = impaired_run(43);
    let seqs = |r: &RunResult| -> Vec<Vec<u64>> {
        r.1.iter()
            .map(|v| v.iter().map(|x| x.seq).collect())
            .collect()
    };
    assert_ne!(
        seqs(&a),
        seqs(&c),
        "a different seed must lose different packets"
    );
}
