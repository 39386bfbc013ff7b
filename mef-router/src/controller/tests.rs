//! Unit tests of the rate controller.

use super::*;
use mef_transport::wire::PacketType;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}
fn sink() -> SocketAddr {
    SocketAddr::from(([10, 0, 1, 1], 9000))
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn hdr(cid: u64, ty: PacketType, fl: u8, demand: u32, cur: u32, rtt_ms: u32) -> Header {
    Header {
        packet_type: ty,
        flags: fl,
        hops: 0,
        conn_id: cid,
        packet_number: 0,
        demand_kbps: demand,
        current_rate_kbps: cur,
        stamp_kbps: UNLIMITED_KBPS,
        rtt_us: rtt_ms * 1000,
    }
}

fn ctl() -> RateController {
    RateController::new(ControllerConfig::default()).expect("valid config")
}

const GC: f64 = 0.99 * 100e6;

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

#[test]
fn new_flow_gets_fair_share_on_first_packet() {
    let mut c = ctl();
    let t0 = Instant::now();
    let h = hdr(1, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 50);
    assert_eq!(
        c.on_mef_packet(t0, addr(1), sink(), &h),
        FlowEvent::Registered
    );
    assert!(near(c.fair_rate_bps(), GC));
    let h2 = hdr(2, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 50);
    assert_eq!(
        c.on_mef_packet(t0 + ms(1), addr(2), sink(), &h2),
        FlowEvent::Registered
    );
    assert!(near(c.fair_rate_bps(), GC / 2.0), "{}", c.fair_rate_bps());
    let h3 = hdr(3, PacketType::Data, 0, UNLIMITED_KBPS, 0, 50);
    assert_eq!(
        c.on_mef_packet(t0 + ms(2), addr(3), sink(), &h3),
        FlowEvent::Registered
    );
    assert!(near(c.fair_rate_bps(), GC / 3.0));
    assert_eq!(c.fair_rate_kbps(), (GC / 3.0 / 1000.0) as u32);
    assert_eq!(
        c.flow_counts(),
        FlowCounts {
            mef: 3,
            other: 0,
            bottlenecked: 3
        }
    );
}

#[test]
fn demand_limited_flow_leaves_the_rest() {
    let mut c = ctl();
    let t0 = Instant::now();
    c.on_mef_packet(
        t0,
        addr(1),
        sink(),
        &hdr(1, PacketType::Initial, 0, 9_000, 0, 50),
    );
    c.on_mef_packet(
        t0,
        addr(2),
        sink(),
        &hdr(2, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 50),
    );
    assert!(near(c.fair_rate_bps(), GC - 9e6));
    let k1 = FlowKey::Mef {
        src: addr(1),
        dst: sink(),
        conn_id: 1,
    };
    assert_eq!(c.allocation_bps(&k1), Some(9e6));
    assert_eq!(c.flow(&k1).map(|f| f.constraint), Some(Constraint::Demand));
}

#[test]
fn closing_releases_at_once_and_late_packets_do_not_reregister() {
    let mut c = ctl();
    let t0 = Instant::now();
    for cid in 1..=4u64 {
        let h = hdr(cid, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 50);
        c.on_mef_packet(t0, addr(cid as u16), sink(), &h);
    }
    assert!(near(c.fair_rate_bps(), GC / 4.0));
    let close = hdr(
        4,
        PacketType::Data,
        flags::CLOSING,
        UNLIMITED_KBPS,
        24_000,
        50,
    );
    assert_eq!(
        c.on_mef_packet(t0 + ms(5), addr(4), sink(), &close),
        FlowEvent::Closed
    );
    assert!(near(c.fair_rate_bps(), GC / 3.0));
    let late = hdr(4, PacketType::Data, 0, UNLIMITED_KBPS, 24_000, 50);
    assert_eq!(
        c.on_mef_packet(t0 + ms(6), addr(4), sink(), &late),
        FlowEvent::Ignored
    );
    assert_eq!(c.flow_counts().mef, 3);
    // A new connection reusing the id starts with an Initial and is accepted.
    let again = hdr(4, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 50);
    assert_eq!(
        c.on_mef_packet(t0 + ms(7), addr(4), sink(), &again),
        FlowEvent::Registered
    );
    assert_eq!(c.flow_counts().mef, 4);
    // CLOSING of an unknown flow registers nothing.
    let stray = hdr(99, PacketType::Data, flags::CLOSING, UNLIMITED_KBPS, 1, 50);
    assert_eq!(
        c.on_mef_packet(t0 + ms(8), addr(99), sink(), &stray),
        FlowEvent::Ignored
    );
    assert_eq!(c.flow_counts().mef, 4);
}

#[test]
fn idle_flows_expire_after_rtt_based_timeout() {
    let mut c = ctl();
    let t0 = Instant::now();
    // RTT 10 ms → timeout max(30 ms, 20 ms) = 30 ms.
    c.on_mef_packet(
        t0,
        addr(1),
        sink(),
        &hdr(1, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 10),
    );
    // RTT 100 ms → timeout 300 ms.
    c.on_mef_packet(
        t0,
        addr(2),
        sink(),
        &hdr(2, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 100),
    );
    assert!(near(c.fair_rate_bps(), GC / 2.0));
    let none = |_: &FlowKey| 0usize;
    let mut t = t0;
    while t < t0 + ms(40) {
        t += ms(1);
        c.handle_timeout(t, &none);
        // keep flow 2 alive
        c.on_mef_packet(
            t,
            addr(2),
            sink(),
            &hdr(2, PacketType::Data, 0, UNLIMITED_KBPS, 0, 100),
        );
    }
    assert_eq!(
        c.flow_counts().mef,
        1,
        "the 10 ms-RTT flow idle for 40 ms expired"
    );
    assert!(
        c.fair_rate_bps() > GC * 0.9,
        "its share went back: μ={}",
        c.fair_rate_bps()
    );
    // The 100 ms-RTT flow survives 250 ms of silence but not 350 ms.
    let t1 = t;
    while t < t1 + ms(250) {
        t += ms(10);
        c.handle_timeout(t, &none);
    }
    assert_eq!(c.flow_counts().mef, 1);
    while t < t1 + ms(350) {
        t += ms(10);
        c.handle_timeout(t, &none);
    }
    assert_eq!(c.flow_counts().mef, 0);
}

/// Drives one MEF flow per entry of `flows` — `(conn id, sent, declared)`: with `declared`
/// `None` an honest sender sending `sent × μ` and declaring μ as its current rate, otherwise
/// sending `sent` bits/s and declaring `declared` — through `secs` of ticks at 1 ms, each flow
/// keeping a constant backlog `backlogs[i]` in the scheduler. Returns the final time.
fn drive(
    c: &mut RateController,
    t0: Instant,
    flows: &[(u64, f64, Option<f64>)],
    backlogs: &[usize],
    secs: f64,
) -> Instant {
    let q: usize = backlogs.iter().sum();
    let per_flow = |k: &FlowKey| match k {
        FlowKey::Mef { conn_id, .. } => flows
            .iter()
            .position(|f| f.0 == *conn_id)
            .and_then(|i| backlogs.get(i).copied())
            .unwrap_or(0),
        FlowKey::Other { .. } => 0,
    };
    let mut t = t0;
    let steps = (secs * 1000.0) as u64;
    for _ in 0..steps {
        t += ms(1);
        for &(cid, send_bps, declared) in flows {
            // declared None: the honest sender paces at μ and says so.
            let mu = c.fair_rate_bps();
            let cur = declared.unwrap_or(mu);
            let sent = if declared.is_none() {
                mu * send_bps
            } else {
                send_bps
            };
            let h = hdr(
                cid,
                PacketType::Data,
                0,
                UNLIMITED_KBPS,
                (cur / 1000.0) as u32,
                20,
            );
            c.on_mef_packet(t, addr(cid as u16), sink(), &h);
            let key = FlowKey::Mef {
                src: addr(cid as u16),
                dst: sink(),
                conn_id: cid,
            };
            c.record_admitted(&key, (sent / 8.0 / 1000.0) as usize);
        }
        c.observe_mef_backlog(q);
        c.handle_timeout(t, &per_flow);
    }
    t
}

#[test]
fn correction_pulls_down_when_a_queue_persists() {
    let mut c = ctl();
    let t0 = Instant::now();
    drive(
        &mut c,
        t0,
        &[(1, 1.0, None), (2, 1.0, None)],
        &[30_000, 30_000],
        1.0,
    );
    assert!(c.correction() < 0.9, "k = {}", c.correction());
    assert!(c.fair_rate_bps() < 0.9 * GC / 2.0);
}

#[test]
fn one_flows_own_queue_does_not_pull_everyone_down() {
    // A standing queue in one flow's bucket only (its own excess, kept off the others by DRR)
    // leaves μ alone; the same total spread over every flow is over-allocation and pulls it down.
    let mut c = ctl();
    let t0 = Instant::now();
    let three = [(1, 1.0, None), (2, 1.0, None), (3, 1.0, None)];
    drive(&mut c, t0, &three, &[90_000, 0, 0], 1.0);
    assert!(
        (c.correction() - 1.0).abs() < 0.02,
        "k = {}",
        c.correction()
    );
    let mut c = ctl();
    drive(&mut c, t0, &three, &[30_000, 30_000, 30_000], 1.0);
    assert!(c.correction() < 0.9, "k = {}", c.correction());
}

#[test]
fn correction_pulls_up_when_the_link_is_under_used() {
    let mut c = ctl();
    let t0 = Instant::now();
    // Both flows use only 80 % of what they are given (say, an accounting mismatch).
    drive(&mut c, t0, &[(1, 0.8, None), (2, 0.8, None)], &[0, 0], 1.0);
    assert!(c.correction() > 1.1, "k = {}", c.correction());
    assert!(c.fair_rate_bps() > 1.1 * GC / 2.0);
}

#[test]
fn correction_stays_put_when_flows_use_exactly_their_share() {
    let mut c = ctl();
    let t0 = Instant::now();
    drive(&mut c, t0, &[(1, 1.0, None), (2, 1.0, None)], &[0, 0], 1.0);
    assert!(
        (c.correction() - 1.0).abs() < 0.02,
        "k = {}",
        c.correction()
    );
}

#[test]
fn constrained_elsewhere_share_goes_to_others() {
    let mut c = ctl();
    let t0 = Instant::now();
    // Flow 1 is held to 10 Mbit/s downstream and says so in its current rate; flow 2 is
    // honest and unconstrained.
    drive(
        &mut c,
        t0,
        &[(1, 10e6, Some(10e6)), (2, 1.0, None)],
        &[0, 0],
        1.0,
    );
    let k1 = FlowKey::Mef {
        src: addr(1),
        dst: sink(),
        conn_id: 1,
    };
    let f1 = c.flow(&k1).expect("flow 1");
    assert_eq!(f1.constraint, Constraint::Elsewhere);
    // Flow 2 gets everything flow 1 does not use, up to γC in total.
    let mu = c.fair_rate_bps();
    assert!(mu > 0.97 * (GC - 10e6) && mu < 1.01 * (GC - 10e6), "μ={mu}");
}

#[test]
fn upstream_stamp_caps_the_demand() {
    let mut c = ctl();
    let t0 = Instant::now();
    let mut h = hdr(
        1,
        PacketType::Initial,
        flags::STAMPED,
        UNLIMITED_KBPS,
        0,
        50,
    );
    h.hops = 1;
    h.stamp_kbps = 20_000;
    c.on_mef_packet(t0, addr(1), sink(), &h);
    c.on_mef_packet(
        t0,
        addr(2),
        sink(),
        &hdr(2, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 50),
    );
    assert!(near(c.fair_rate_bps(), GC - 20e6));
}

#[test]
fn non_mef_flow_is_counted() {
    let mut c = ctl();
    let t0 = Instant::now();
    c.on_mef_packet(
        t0,
        addr(1),
        sink(),
        &hdr(1, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 20),
    );
    let other = c.on_other_packet(t0, addr(50), sink());
    assert_eq!(
        c.flow_counts(),
        FlowCounts {
            mef: 1,
            other: 1,
            bottlenecked: 1
        }
    );
    // A non-MEF flow sending 20 Mbit/s without a queue: counted at measured rate + 10 %.
    let none = |_: &FlowKey| 0usize;
    let mef = FlowKey::Mef {
        src: addr(1),
        dst: sink(),
        conn_id: 1,
    };
    let mut t = t0;
    for _ in 0..300 {
        t += ms(1);
        c.on_other_packet(t, addr(50), sink());
        c.record_admitted(&other, 2500);
        let mu = c.fair_rate_bps();
        let cur = (mu / 1000.0) as u32;
        let h = hdr(1, PacketType::Data, 0, UNLIMITED_KBPS, cur, 20);
        c.on_mef_packet(t, addr(1), sink(), &h);
        c.record_admitted(&mef, (mu / 8000.0) as usize);
        c.handle_timeout(t, &none);
    }
    let f = c.flow(&other).expect("tracked");
    assert_eq!(f.constraint, Constraint::Measured);
    assert!((f.measured_bps - 20e6).abs() < 0.5e6, "{}", f.measured_bps);
    let mu = c.fair_rate_bps();
    let expect = c.effective_capacity_bps() - f.demand_bps;
    assert!(near(mu, expect));
    assert!(mu < GC - 15e6, "μ={mu}");
    // Once it keeps a standing queue it is greedy: counted at μ, a fair half.
    let fat = |k: &FlowKey| if *k == other { 30_000 } else { 0 };
    for _ in 0..2 {
        t += ms(10);
        c.on_other_packet(t, addr(50), sink());
        let cur = (c.fair_rate_bps() / 1000.0) as u32;
        let h = hdr(1, PacketType::Data, 0, UNLIMITED_KBPS, cur, 20);
        c.on_mef_packet(t, addr(1), sink(), &h);
        c.handle_timeout(t, &fat);
    }
    assert_eq!(
        c.flow(&other).map(|f| f.constraint),
        Some(Constraint::Greedy)
    );
    let f = c.flow(&other).expect("tracked");
    assert!(
        near(c.fair_rate_bps(), c.effective_capacity_bps() / 2.0),
        "μ={} C_eff={} {f:?}",
        c.fair_rate_bps(),
        c.effective_capacity_bps()
    );
}

#[test]
fn policing_rate_remembers_recent_higher_mu() {
    let mut c = ctl();
    let t0 = Instant::now();
    c.on_mef_packet(
        t0,
        addr(1),
        sink(),
        &hdr(1, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 20),
    );
    let t1 = t0 + ms(100);
    c.on_mef_packet(
        t1,
        addr(2),
        sink(),
        &hdr(2, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 20),
    );
    assert!(near(c.fair_rate_bps(), GC / 2.0));
    let rtt = Some(ms(20));
    let k1 = FlowKey::Mef {
        src: addr(1),
        dst: sink(),
        conn_id: 1,
    };
    let k2 = FlowKey::Mef {
        src: addr(2),
        dst: sink(),
        conn_id: 2,
    };
    // Within 2·rtt + margin = 50 ms the old, higher μ still counts for flow 1 ...
    assert!(near(c.policing_rate_bps(t1 + ms(30), &k1, rtt), GC));
    assert!(near(c.policing_rate_bps(t1 + ms(70), &k1, rtt), GC / 2.0));
    // ... but not for flow 2, which never was told it.
    assert!(near(c.policing_rate_bps(t1 + ms(30), &k2, rtt), GC / 2.0));
}

#[test]
fn rejects_bad_config() {
    let bad = ControllerConfig {
        gamma: 1.5,
        ..ControllerConfig::default()
    };
    assert!(matches!(
        RateController::new(bad),
        Err(ConfigError::OutOfRange { name: "gamma", .. })
    ));
    let bad = ControllerConfig {
        capacity_bps: 0,
        ..ControllerConfig::default()
    };
    assert_eq!(
        RateController::new(bad).err(),
        Some(ConfigError::ZeroCapacity)
    );
}

#[test]
fn connection_id_change_after_handshake_continues_the_flow() {
    // The client's Initial goes to its own id; its data goes to the id the server chose.
    let mut c = ctl();
    let t0 = Instant::now();
    let init = hdr(0xc1, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 0);
    assert_eq!(
        c.on_mef_packet(t0, addr(1), sink(), &init),
        FlowEvent::Registered
    );
    let other = hdr(9, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 0);
    c.on_mef_packet(t0, addr(2), sink(), &other);
    assert!(near(c.fair_rate_bps(), GC / 2.0));
    let data = hdr(0x5e, PacketType::Data, 0, UNLIMITED_KBPS, 49_000, 40);
    assert_eq!(
        c.on_mef_packet(t0 + ms(40), addr(1), sink(), &data),
        FlowEvent::Updated
    );
    assert_eq!(c.flow_counts().mef, 2, "not counted twice");
    assert!(near(c.fair_rate_bps(), GC / 2.0));
    let new_key = FlowKey::Mef {
        src: addr(1),
        dst: sink(),
        conn_id: 0x5e,
    };
    assert_eq!(c.flow(&new_key).map(|f| f.first_seen), Some(t0));
    // A second data packet under the old id is a different (new) flow only if no handshake-only
    // flow is left to adopt: here it registers.
    let stray = hdr(0x77, PacketType::Data, 0, UNLIMITED_KBPS, 1_000, 40);
    assert_eq!(
        c.on_mef_packet(t0 + ms(41), addr(1), sink(), &stray),
        FlowEvent::Registered
    );
}

#[test]
fn handshake_only_flow_without_rtt_expires() {
    let mut c = ctl();
    let t0 = Instant::now();
    let init = hdr(0xc1, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 0);
    c.on_mef_packet(t0, addr(1), sink(), &init);
    let other = hdr(9, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 20);
    let none = |_: &FlowKey| 0usize;
    let mut t = t0;
    for _ in 0..100 {
        t += ms(5);
        let h = Header {
            packet_type: PacketType::Data,
            ..other
        };
        c.on_mef_packet(t, addr(2), sink(), &h);
        c.handle_timeout(t, &none);
    }
    assert_eq!(
        c.flow_counts().mef,
        1,
        "the silent Initial-only flow expired"
    );
}

#[test]
fn a_flow_that_stops_sending_is_paused_and_resumes() {
    let mut c = ctl();
    let t0 = Instant::now();
    let none = |_: &FlowKey| 0usize;
    c.on_mef_packet(
        t0,
        addr(1),
        sink(),
        &hdr(0xc1, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 0),
    );
    c.on_mef_packet(
        t0,
        addr(2),
        sink(),
        &hdr(2, PacketType::Initial, 0, UNLIMITED_KBPS, 0, 0),
    );
    let mut t = t0 + ms(50);
    // Flow 1 sends data for 20 ms at μ (one packet per ms), flow 2 keeps sending.
    for i in 0..60 {
        t += ms(1);
        let h2 = hdr(2, PacketType::Data, 0, UNLIMITED_KBPS, 49_000, 50);
        c.on_mef_packet(t, addr(2), sink(), &h2);
        if i < 20 {
            let h1 = hdr(0x5e, PacketType::Data, 0, UNLIMITED_KBPS, 49_000, 50);
            c.on_mef_packet(t, addr(1), sink(), &h1);
        }
        c.handle_timeout(t, &none);
    }
    let k1 = FlowKey::Mef {
        src: addr(1),
        dst: sink(),
        conn_id: 0x5e,
    };
    assert_eq!(c.flow(&k1).map(|f| f.constraint), Some(Constraint::Paused));
    assert!(
        c.fair_rate_bps() > 0.9 * GC,
        "its share went to flow 2: {}",
        c.fair_rate_bps()
    );
    let h1 = hdr(0x5e, PacketType::Data, 0, UNLIMITED_KBPS, 49_000, 50);
    c.on_mef_packet(t + ms(1), addr(1), sink(), &h1);
    assert_eq!(
        c.flow(&k1).map(|f| f.constraint),
        Some(Constraint::Unlimited)
    );
    assert!(near(c.fair_rate_bps(), c.effective_capacity_bps() / 2.0));
}
