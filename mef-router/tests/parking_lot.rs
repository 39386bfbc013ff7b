//! Max-min fairness across several bottlenecks (Charny's distributed algorithm): each link's
//! controller stamps its own μ, every flow paces at the minimum over its path one RTT later, and
//! the flows end at their max-min fair shares. A fluid model at 1 ms steps drives the
//! controllers directly (the packet-level version is the simulator's parking-lot scenario).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mef_router::{ControllerConfig, FlowKey, RateController};
use mef_transport::wire::header::{UNLIMITED_KBPS, flags};
use mef_transport::wire::{Header, PacketType};

struct Flow {
    id: u64,
    path: Vec<usize>,
    rtt_ms: u64,
    rate_bps: f64,
    /// Stamps on their way back to the sender: (arrival step, kbit/s).
    echoes: VecDeque<(u64, u32)>,
}

fn addr(id: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, id as u8], 1000))
}

fn sink() -> SocketAddr {
    SocketAddr::from(([10, 9, 9, 9], 2000))
}

/// Runs `steps` ms; returns the flows' final rates.
fn run(capacities: &[u64], flows: &mut [Flow], steps: u64) -> Vec<RateController> {
    let mut links: Vec<RateController> = capacities
        .iter()
        .map(|&c| RateController::new(ControllerConfig::with_capacity(c)).expect("valid"))
        .collect();
    let t0 = Instant::now();
    let none = |_: &FlowKey| 0usize;
    for step in 0..steps {
        let now = t0 + Duration::from_millis(step);
        for f in flows.iter_mut() {
            while f.echoes.front().is_some_and(|e| e.0 <= step) {
                if let Some((_, kbps)) = f.echoes.pop_front() {
                    f.rate_bps = f64::from(kbps) * 1000.0;
                }
            }
            let first = step == 0;
            let mut stamp = UNLIMITED_KBPS;
            for (hops, &l) in f.path.iter().enumerate() {
                let hops = u8::try_from(hops).unwrap_or(u8::MAX);
                let h = Header {
                    packet_type: if first {
                        PacketType::Initial
                    } else {
                        PacketType::Data
                    },
                    flags: if hops > 0 { flags::STAMPED } else { 0 },
                    hops,
                    conn_id: f.id,
                    packet_number: step,
                    demand_kbps: UNLIMITED_KBPS,
                    current_rate_kbps: (f.rate_bps / 1000.0) as u32,
                    stamp_kbps: stamp,
                    rtt_us: (f.rtt_ms * 1000) as u32,
                };
                let c = &mut links[l];
                c.on_mef_packet(now, addr(f.id), sink(), &h);
                let key = FlowKey::Mef {
                    src: addr(f.id),
                    dst: sink(),
                    conn_id: f.id,
                };
                stamp = stamp.min(c.stamp_kbps(now, &key, h.packet_type, 0));
                // One millisecond of traffic at the current rate.
                c.record_admitted(&key, (f.rate_bps / 8000.0) as usize);
            }
            f.echoes.push_back((step + f.rtt_ms, stamp));
        }
        for c in links.iter_mut() {
            c.handle_timeout(now, &none);
        }
    }
    links
}

fn within(x: f64, target: f64, tol: f64) -> bool {
    (x - target).abs() <= tol * target
}

#[test]
fn two_bottlenecks_reach_max_min_shares() {
    // Link 0: 100 Mbit/s, link 1: 30 Mbit/s. Flow A crosses both, B only link 0, C only link 1.
    // Max-min: link 1 is the tighter one, A and C get γ·30/2 each; B gets what A leaves on
    // link 0.
    let mk = |id, path: Vec<usize>, rtt_ms| Flow {
        id,
        path,
        rtt_ms,
        rate_bps: 0.0,
        echoes: VecDeque::new(),
    };
    let mut flows = vec![
        mk(1, vec![0, 1], 60),
        mk(2, vec![0], 20),
        mk(3, vec![1], 40),
    ];
    let links = run(&[100_000_000, 30_000_000], &mut flows, 3000);
    let (a, b, c) = (flows[0].rate_bps, flows[1].rate_bps, flows[2].rate_bps);
    let share1 = 0.99 * 30e6 / 2.0;
    assert!(within(a, share1, 0.05), "A {a} vs {share1}");
    assert!(within(c, share1, 0.05), "C {c} vs {share1}");
    let share0 = 0.99 * 100e6 - a;
    assert!(
        within(b, share0, 0.05),
        "B {b} vs {share0} (μ0 = {})",
        links[0].fair_rate_bps()
    );
    // Link 1 is downstream of link 0 for A: link 0 learns that A is held elsewhere from A's
    // current rate (Charny's test), not from the stamp.
    let key_a = FlowKey::Mef {
        src: addr(1),
        dst: sink(),
        conn_id: 1,
    };
    let info = links[0].flow(&key_a).expect("A on link 0");
    assert_eq!(info.constraint, mef_router::Constraint::Elsewhere);
}

#[test]
fn parking_lot_of_three_links() {
    // Classic parking lot: one long flow over links 0..3 and one short flow per link, with
    // capacities 100, 60, 80 Mbit/s. Max-min: the long flow is limited on link 1 to 30
    // (with γ), the short flows get the rest of their link.
    let mk = |id, path: Vec<usize>, rtt_ms| Flow {
        id,
        path,
        rtt_ms,
        rate_bps: 0.0,
        echoes: VecDeque::new(),
    };
    let mut flows = vec![
        mk(1, vec![0, 1, 2], 80),
        mk(2, vec![0], 20),
        mk(3, vec![1], 30),
        mk(4, vec![2], 40),
    ];
    run(&[100_000_000, 60_000_000, 80_000_000], &mut flows, 4000);
    let long = 0.99 * 60e6 / 2.0;
    let expect = [long, 0.99 * 100e6 - long, long, 0.99 * 80e6 - long];
    for (f, e) in flows.iter().zip(expect) {
        assert!(
            within(f.rate_bps, e, 0.05),
            "flow {}: {} vs max-min {e}",
            f.id,
            f.rate_bps
        );
    }
}
