//! Link accuracy: what a probe measures is what the link was configured with.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use sim_netem::{
    EndpointId, LinkConfig, LinkId, LossModel, ProbeConfig, ProbeRecord, ProbeSender, ProbeSink,
    Sim,
};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Host A → host B over one link of `cfg`; a probe from A to B with `probe` settings.
struct Setup {
    sim: Sim,
    link: LinkId,
    tx: EndpointId,
    rx: EndpointId,
}

fn setup(seed: u64, cfg: LinkConfig, rate_bps: u64, payload: usize, count: u64) -> Setup {
    let mut sim = Sim::new(seed);
    let a = sim.add_host(A);
    let b = sim.add_host(B);
    let link = sim.add_link_droptail(a, b, cfg);
    let rx = sim.attach(b, 9, Box::new(ProbeSink::new(sim.epoch())));
    let probe = ProbeConfig::new(SocketAddr::new(B.into(), 9), rate_bps)
        .with_payload_len(payload)
        .with_count(count);
    let tx = sim.attach(a, 0, Box::new(ProbeSender::new(sim.epoch(), probe)));
    Setup { sim, link, tx, rx }
}

impl Setup {
    fn sink(&self) -> &ProbeSink {
        self.sim.endpoint::<ProbeSink>(self.rx).expect("sink")
    }
    fn sent(&self) -> u64 {
        self.sim
            .endpoint::<ProbeSender>(self.tx)
            .expect("sender")
            .sent()
    }
    fn stats(&self) -> &sim_netem::LinkStats {
        self.sim.link_stats(self.link).expect("link")
    }
}

/// Asserts `x` lies within `k` binomial standard deviations of `n·p`.
fn assert_binomial(x: u64, n: u64, p: f64, k: f64, what: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (x as f64 - mean).abs() <= k * sd,
        "{what}: {x} not within {k}σ of {mean:.1} (σ={sd:.1})"
    );
}

#[test]
fn delay_is_exact_without_jitter() {
    let delay = Duration::from_micros(37_123);
    let cfg = LinkConfig::new(100_000_000, delay);
    // 1 Mbit/s of 1500-byte packets: never queues.
    let mut s = setup(1, cfg, 1_000_000, 1472, 200);
    s.sim.run_for(Duration::from_secs(5));
    let sink = s.sink();
    assert_eq!(sink.received(), 200);
    // 1500 B at 100 Mbit/s serialise in exactly 120 µs.
    let want = delay + Duration::from_micros(120);
    for r in sink.records() {
        assert_eq!(r.delay(), want, "packet {}", r.seq);
    }
    assert_eq!(s.stats().queue_delay.max(), Some(Duration::ZERO));
}

#[test]
fn jitter_mean_and_bounds() {
    let delay = Duration::from_millis(20);
    let jitter = Duration::from_millis(5);
    let cfg = LinkConfig::new(1_000_000_000, delay).with_jitter(jitter);
    // One 100-byte packet every 20 ms (spacing > 2·jitter, so FIFO never clamps).
    let n = 10_000;
    let mut s = setup(2, cfg, 128 * 8 * 50, 100, n);
    s.sim.run_for(Duration::from_secs(210));
    let sink = s.sink();
    assert_eq!(sink.received(), n);
    let tx = Duration::from_nanos(1024); // 128 B at 1 Gbit/s
    let base = delay + tx;
    let mean = sink.delays().mean().expect("mean");
    // σ of the mean of U[-5 ms, 5 ms] over 10^4 samples is 29 µs.
    let err = mean.abs_diff(base);
    assert!(
        err < Duration::from_micros(120),
        "mean {mean:?} vs {base:?}"
    );
    assert!(sink.delays().min().expect("min") >= base - jitter);
    assert!(sink.delays().max().expect("max") <= base + jitter);
    // The spread really is there: some delays near each end.
    assert!(sink.delays().quantile(0.01).expect("p1") < base - Duration::from_millis(4));
    assert!(sink.delays().quantile(0.99).expect("p99") > base + Duration::from_millis(4));
    assert_eq!(sink.reordered(), 0);
}

#[test]
fn jitter_keeps_fifo_order_when_packets_are_dense() {
    let cfg = LinkConfig::new(100_000_000, Duration::from_millis(10))
        .with_jitter(Duration::from_millis(5));
    let mut s = setup(3, cfg, 50_000_000, 1472, 20_000);
    s.sim.run_for(Duration::from_secs(10));
    let sink = s.sink();
    assert_eq!(sink.received(), 20_000);
    assert_eq!(sink.reordered(), 0);
    assert!(
        sink.records()
            .windows(2)
            .all(|w| w[0].received <= w[1].received)
    );
}

#[test]
fn saturated_link_delivers_configured_rate() {
    let rate = 100_000_000;
    let cfg = LinkConfig::new(rate, Duration::from_millis(5));
    // Offer 120 Mbit/s for 10 s.
    let mut s = setup(4, cfg, 120_000_000, 1472, u64::MAX);
    s.sim.run_for(Duration::from_secs(10));
    let measured = s.sink().throughput_bps().expect("throughput");
    let err = (measured - rate as f64).abs() / rate as f64;
    assert!(err < 1e-3, "measured {measured} bit/s");
    // Serialisation is exact over the busy period (fractional nanoseconds carried).
    let st = s.stats();
    let exact = st.transmitted_bytes as f64 * 8.0 / st.busy_time.as_secs_f64();
    assert!(
        (exact - rate as f64).abs() / (rate as f64) < 1e-6,
        "busy-time rate {exact}"
    );
    assert!(st.queue_drops > 0, "the probe must saturate the link");
    assert!(st.utilization(Duration::from_secs(10)) > 0.99);
}

#[test]
fn odd_rate_does_not_drift() {
    // 1500 B at 7 Mbit/s is 1714285.714… ns: rounding each packet would drift by 0.7 ns each.
    let rate = 7_000_000;
    let mut s = setup(
        5,
        LinkConfig::new(rate, Duration::ZERO),
        8_000_000,
        1472,
        5_000,
    );
    s.sim.run_for(Duration::from_secs(20));
    let recs = s.sink().records();
    let span = recs.last().expect("last").received - recs[0].received;
    // The link is busy throughout (the probe offers 8 Mbit/s), so the k packets after the
    // first took exactly floor(k · 12000 bit / 7 Mbit/s) ± 1 ns.
    let k = recs.len() as u128 - 1;
    assert!(k > 4000);
    let want = k * 12_000 * 1_000_000_000 / 7_000_000;
    assert!(
        span.as_nanos().abs_diff(want) <= 1,
        "{} vs {want}",
        span.as_nanos()
    );
}

#[test]
fn bernoulli_loss_rate() {
    let n = 100_000;
    let cfg = LinkConfig::new(1_000_000_000, Duration::from_millis(1))
        .with_loss(LossModel::bernoulli(0.01).expect("p"));
    let mut s = setup(6, cfg, 100_000_000, 100, n);
    s.sim.run_for(Duration::from_secs(2));
    assert_eq!(s.sent(), n);
    let lost = n - s.sink().received();
    assert_eq!(lost, s.stats().random_losses);
    assert_eq!(s.stats().queue_drops, 0);
    assert_binomial(lost, n, 0.01, 4.0, "Bernoulli losses");
}

/// Lengths of runs of consecutive missing sequence numbers.
fn loss_bursts(records: &[ProbeRecord], n: u64) -> Vec<u64> {
    let mut got = vec![false; n as usize];
    for r in records {
        got[r.seq as usize] = true;
    }
    let mut bursts = Vec::new();
    let mut run = 0;
    for g in got {
        if g {
            if run > 0 {
                bursts.push(run);
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    if run > 0 {
        bursts.push(run);
    }
    bursts
}

#[test]
fn gilbert_elliott_mean_loss_and_burst_length() {
    let n = 1_000_000;
    let model = LossModel::gilbert_elliott(0.02, 4.0).expect("model");
    assert!((model.mean_loss() - 0.02).abs() < 1e-12);
    let cfg = LinkConfig::new(10_000_000_000, Duration::ZERO).with_loss(model);
    let mut s = setup(7, cfg, 1_000_000_000, 100, n);
    s.sim.run_for(Duration::from_secs(2));
    let sink = s.sink();
    let lost = n - sink.received();
    let rate = lost as f64 / n as f64;
    // ≈ 5000 bursts of mean 4: σ(rate) ≈ 0.02·sqrt(1.75/5000) ≈ 3.7e-4.
    assert!((rate - 0.02).abs() < 0.0015, "mean loss {rate}");
    let bursts = loss_bursts(sink.records(), n);
    let mean_burst = bursts.iter().sum::<u64>() as f64 / bursts.len() as f64;
    // σ(mean burst) ≈ 3.46/sqrt(5000) ≈ 0.05.
    assert!((mean_burst - 4.0).abs() < 0.2, "mean burst {mean_burst}");
    // Bursty: far more long bursts than Bernoulli loss of the same rate would give.
    assert!(bursts.iter().filter(|&&b| b >= 5).count() > 1000);
}

#[test]
fn gilbert_elliott_constructor_rejects_nonsense() {
    assert!(LossModel::gilbert_elliott(0.5, 0.5).is_err());
    assert!(LossModel::gilbert_elliott(1.0, 2.0).is_err());
    assert!(LossModel::gilbert_elliott(0.9, 1.0).is_err()); // p_gb would be 9
    assert!(LossModel::bernoulli(1.5).is_err());
    assert!(
        LinkConfig::default()
            .with_duplicate(-0.1)
            .validate()
            .is_err()
    );
    assert!(LinkConfig::default().with_rate(0).validate().is_err());
}

#[test]
fn reordering_rate_and_sink_agree() {
    let n = 20_000;
    let cfg = LinkConfig::new(100_000_000, Duration::from_millis(5))
        .with_reorder(0.05, Duration::from_millis(3));
    // One packet per ms: a held-back packet is overtaken by the next two.
    let mut s = setup(8, cfg, 1500 * 8 * 1000, 1472, n);
    s.sim.run_for(Duration::from_secs(25));
    let reordered = s.stats().reordered;
    assert_binomial(reordered, n, 0.05, 4.0, "reordered");
    let sink = s.sink();
    assert_eq!(sink.received(), n);
    // A held-back packet is seen out of order unless the next two packets were held back too
    // (probability 0.25 %), so the sink sees almost every one.
    assert!(
        sink.reordered() <= reordered && sink.reordered() as f64 >= 0.99 * reordered as f64,
        "sink {} link {reordered}",
        sink.reordered()
    );
}

#[test]
fn duplication_rate_and_sink_agree() {
    let n = 50_000;
    let cfg = LinkConfig::new(1_000_000_000, Duration::from_millis(1)).with_duplicate(0.02);
    let mut s = setup(9, cfg, 100_000_000, 200, n);
    s.sim.run_for(Duration::from_secs(2));
    let st = s.stats();
    assert_binomial(st.duplicated, n, 0.02, 4.0, "duplicated");
    assert_eq!(st.delivered_packets, n + st.duplicated);
    assert_eq!(s.sink().duplicates(), st.duplicated);
    assert_eq!(s.sink().received(), n);
}

#[test]
fn corruption_rate_and_every_corruption_detected() {
    let n = 50_000;
    let cfg = LinkConfig::new(1_000_000_000, Duration::from_millis(1)).with_corrupt(0.03);
    let mut s = setup(10, cfg, 100_000_000, 200, n);
    s.sim.run_for(Duration::from_secs(2));
    let st = s.stats();
    assert_binomial(st.corrupted, n, 0.03, 4.0, "corrupted");
    assert_eq!(s.sink().corrupted(), st.corrupted);
    assert_eq!(s.sink().received() + st.corrupted, n);
}

#[test]
fn drop_tail_limit_is_exact() {
    // 50 packets of 1000 wire bytes at once into a 10 000-byte queue: the first goes straight
    // onto the wire, ten fit in the queue, the rest are dropped.
    let cfg = LinkConfig::new(10_000_000, Duration::ZERO).with_queue_limit(10_000);
    let mut sim = Sim::new(11);
    let a = sim.add_host(A);
    let b = sim.add_host(B);
    let link = sim.add_link_droptail(a, b, cfg);
    let rx = sim.attach(b, 9, Box::new(ProbeSink::new(sim.epoch())));
    // A probe at an absurd rate sends one packet per nanosecond: 50 packets in 50 ns.
    let probe = ProbeConfig::new(SocketAddr::new(B.into(), 9), 8_000_000_000_000)
        .with_payload_len(972)
        .with_count(50);
    sim.attach(a, 0, Box::new(ProbeSender::new(sim.epoch(), probe)));
    sim.run_for(Duration::from_secs(1));
    let st = sim.link_stats(link).expect("stats");
    assert_eq!(st.offered_packets, 50);
    assert_eq!(st.queue_drops, 39);
    assert_eq!(st.max_backlog_bytes, 10_000);
    let sink = sim.endpoint::<ProbeSink>(rx).expect("sink");
    let seqs: Vec<u64> = sink.records().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..11).collect::<Vec<_>>());
    // Queueing delay: the k-th queued packet waited k × 800 µs minus its later arrival.
    assert!(st.queue_delay.max().expect("max") > Duration::from_micros(7_900));
}
