//! Minimal end-to-end check that a probe crosses a dumbbell.

use std::net::SocketAddr;
use std::time::Duration;

use sim_netem::{DumbbellBuilder, LinkConfig, ProbeConfig, ProbeSender, ProbeSink, Sim};

#[test]
fn probe_crosses_dumbbell() {
    let mut sim = Sim::new(1);
    let d = DumbbellBuilder::new(1, LinkConfig::new(100_000_000, Duration::from_millis(10)))
        .build_droptail(&mut sim)
        .expect("topology");
    let sink = sim.attach(d.receivers[0], 9000, Box::new(ProbeSink::new(sim.epoch())));
    let dst = SocketAddr::new(d.receiver_addrs[0].into(), 9000);
    let cfg = ProbeConfig::new(dst, 10_000_000).with_count(100);
    let tx = sim.attach(
        d.senders[0],
        0,
        Box::new(ProbeSender::new(sim.epoch(), cfg)),
    );
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.endpoint::<ProbeSender>(tx).map(|s| s.sent()), Some(100));
    let sink = sim.endpoint::<ProbeSink>(sink).expect("sink");
    assert_eq!(sink.received(), 100);
    let min = sink.delays().min().expect("delay");
    assert!(
        min > Duration::from_millis(10) && min < Duration::from_millis(11),
        "{min:?}"
    );
}
