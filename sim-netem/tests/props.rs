//! Property tests: queue invariants, packet conservation, loss-model statistics, histogram
//! accuracy.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use sim_netem::{
    Datagram, DelayHistogram, LinkConfig, LossModel, ProbeConfig, ProbeSender, ProbeSink, Sim,
};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A burst injected at once into an idle drop-tail link: the first packet goes on the wire,
    /// each later one is dropped exactly when it would push the backlog past the limit.
    #[test]
    fn drop_tail_drops_exactly_when_over_limit(
        sizes in prop::collection::vec(0usize..1472, 1..200),
        limit in 0usize..40_000,
        seed in any::<u64>(),
    ) {
        let mut sim = Sim::new(seed);
        let a = sim.add_host(A);
        let b = sim.add_host(B);
        let cfg = LinkConfig::new(10_000_000, Duration::from_millis(1)).with_queue_limit(limit);
        let link = sim.add_link_droptail(a, b, cfg);
        for (i, &n) in sizes.iter().enumerate() {
            let dgram = Datagram {
                src: SocketAddr::new(A.into(), 1),
                dst: SocketAddr::new(B.into(), 1),
                payload: vec![i as u8; n],
            };
            sim.inject(a, dgram);
        }
        // Reference model.
        let mut backlog = 0usize;
        let mut queued = 0usize;
        let mut drops = 0u64;
        let mut max_backlog = 0usize;
        for &n in &sizes[1..] {
            let len = n + 28;
            if queued > 0 && backlog + len > limit {
                drops += 1;
            } else {
                backlog += len;
                queued += 1;
                max_backlog = max_backlog.max(backlog);
            }
        }
        let st = sim.link_stats(link).expect("stats").clone();
        prop_assert_eq!(st.queue_drops, drops);
        prop_assert_eq!(st.max_backlog_bytes, max_backlog);
        prop_assert_eq!(sim.backlog(link), Some((backlog, queued)));
        sim.run_for(Duration::from_secs(10));
        let st = sim.link_stats(link).expect("stats");
        prop_assert_eq!(st.delivered_packets + drops, sizes.len() as u64);
        prop_assert_eq!(sim.stats().undeliverable, st.delivered_packets);
    }

    /// Every offered packet is dropped, lost or delivered (duplicates on top), whatever the
    /// impairments.
    #[test]
    fn packets_are_conserved(
        seed in any::<u64>(),
        loss in 0.0f64..0.3,
        dup in 0.0f64..0.3,
        corrupt in 0.0f64..0.3,
        reorder in 0.0f64..0.3,
        rate_mbps in 1u64..100,
        limit in 0usize..20_000,
    ) {
        let mut sim = Sim::new(seed);
        let a = sim.add_host(A);
        let b = sim.add_host(B);
        let cfg = LinkConfig::new(rate_mbps * 1_000_000, Duration::from_millis(3))
            .with_jitter(Duration::from_millis(2))
            .with_loss(LossModel::bernoulli(loss).expect("p"))
            .with_duplicate(dup)
            .with_corrupt(corrupt)
            .with_reorder(reorder, Duration::from_millis(4))
            .with_queue_limit(limit);
        let link = sim.add_link_droptail(a, b, cfg);
        let rx = sim.attach(b, 9, Box::new(ProbeSink::new(sim.epoch())));
        let probe = ProbeConfig::new(SocketAddr::new(B.into(), 9), 20_000_000)
            .with_payload_len(500)
            .with_count(500);
        sim.attach(a, 0, Box::new(ProbeSender::new(sim.epoch(), probe)));
        sim.run_for(Duration::from_secs(5));
        let st = sim.link_stats(link).expect("stats");
        prop_assert_eq!(st.offered_packets, 500);
        prop_assert_eq!(st.transmitted_packets + st.queue_drops, 500);
        prop_assert_eq!(st.transmitted_packets, st.random_losses + st.delivered_packets - st.duplicated);
        let sink = sim.endpoint::<ProbeSink>(rx).expect("sink");
        prop_assert_eq!(sink.received() + sink.duplicates() + sink.corrupted(), st.delivered_packets);
        // A corrupted packet may also be duplicated.
        prop_assert!(sink.corrupted() <= st.corrupted + st.duplicated);
        prop_assert!(sink.corrupted() >= st.corrupted);
    }

    /// The measured loss rate of either model is its stationary mean, within 5 standard
    /// deviations (accounting for the Gilbert chain's correlation).
    #[test]
    fn loss_models_hit_their_mean(
        seed in any::<u64>(),
        p in 0.002f64..0.2,
        burst in 1.0f64..8.0,
        gilbert in any::<bool>(),
    ) {
        let model = if gilbert {
            LossModel::gilbert_elliott(p, burst).expect("model")
        } else {
            LossModel::bernoulli(p).expect("model")
        };
        // Lag-one correlation of the loss indicator.
        let rho = match model {
            LossModel::GilbertElliott { p_good_to_bad, p_bad_to_good, .. } => {
                1.0 - p_good_to_bad - p_bad_to_good
            }
            _ => 0.0,
        };
        let n = 50_000u64;
        let mut sim = Sim::new(seed);
        let a = sim.add_host(A);
        let b = sim.add_host(B);
        let cfg = LinkConfig::new(10_000_000_000, Duration::ZERO).with_loss(model);
        let link = sim.add_link_droptail(a, b, cfg);
        sim.attach(b, 9, Box::new(ProbeSink::summary_only(sim.epoch())));
        let probe = ProbeConfig::new(SocketAddr::new(B.into(), 9), 1_000_000_000)
            .with_payload_len(24)
            .with_count(n);
        sim.attach(a, 0, Box::new(ProbeSender::new(sim.epoch(), probe)));
        sim.run_for(Duration::from_secs(1));
        let lost = sim.link_stats(link).expect("stats").random_losses as f64;
        let var = n as f64 * p * (1.0 - p) * (1.0 + rho) / (1.0 - rho);
        prop_assert!((lost - n as f64 * p).abs() <= 5.0 * var.sqrt() + 1.0,
            "lost {} expected {} sd {}", lost, n as f64 * p, var.sqrt());
    }

    /// Histogram quantiles are within 0.5 % of the exact order statistic.
    #[test]
    fn histogram_quantiles_are_accurate(
        mut samples in prop::collection::vec(0u64..10_000_000_000, 1..2000),
        q in 0.0f64..1.0,
    ) {
        let mut h = DelayHistogram::new();
        samples.iter().for_each(|&s| h.record_ns(s));
        samples.sort_unstable();
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        let exact = samples[rank - 1] as f64;
        let got = h.quantile(q).expect("quantile").as_nanos() as f64;
        prop_assert!((got - exact).abs() <= exact * 0.005 + 0.5, "q={} got {} exact {}", q, got, exact);
        prop_assert_eq!(h.max().expect("max").as_nanos() as u64, samples[samples.len() - 1]);
    }
}
