//! `mef bench kernel` pieces that run anywhere: iperf3 report parsing against real captured
//! reports, and (as root, when the namespace testbed is available) one quick direct cell.

use std::path::Path;

use mef_benches::kernel::{self, iperf, tcp::Cc};

fn sample(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

#[test]
fn parses_captured_iperf3_reports() {
    // `iperf3 -c 127.0.0.1 -t 2 -C cubic -J` (iperf 3.12) on loopback.
    let c = iperf::parse(&sample("iperf3-cubic-loopback.json")).expect("cubic report parses");
    assert_eq!(c.congestion.as_deref(), Some("cubic"));
    assert!(c.goodput_mbps > 1000.0, "{c:?}");
    assert!(c.seconds > 1.9 && c.seconds < 2.2, "{c:?}");
    assert!(c.bytes_received > 0);
    assert!(c.mean_rtt_ms.is_some_and(|r| r > 0.0 && r < 10.0), "{c:?}");
    // `-t 1 -C bbr`: 17 retransmits in the capture.
    let b = iperf::parse(&sample("iperf3-bbr-loopback.json")).expect("bbr report parses");
    assert_eq!(b.congestion.as_deref(), Some("bbr"));
    assert_eq!(b.retransmits, 17);
    assert!(
        (b.goodput_mbps - 16_813.329_652_753_21).abs() < 1e-6,
        "{b:?}"
    );
    assert_eq!(b.bytes_received, 2_108_948_480);
    // A refused connection is reported by iperf3 itself, not parsed into zeros.
    match iperf::parse(&sample("iperf3-error-refused.json")) {
        Err(iperf::IperfError::Reported(e)) => assert!(e.contains("refused"), "{e}"),
        other => panic!("expected iperf3's own error, got {other:?}"),
    }
}

#[test]
fn grid_matches_the_issue() {
    let q = kernel::grid(true);
    assert!(q.iter().all(|c| c.rtt_ms == 200));
    assert_eq!(q.len(), 2);
    let full = kernel::grid(false);
    for rtt in [50, 200] {
        for loss in [0.0, 0.01] {
            assert!(full.iter().any(|c| c.rtt_ms == rtt && c.loss == loss));
        }
    }
    assert_eq!(
        kernel::CellSpec {
            rtt_ms: 200,
            loss: 0.0
        }
        .bdp_bytes(),
        2_500_000
    );
}

#[test]
fn quick_direct_cell_in_namespaces_as_root() {
    if kernel::effective_uid().unwrap_or(u32::MAX) != 0 {
        eprintln!("skipping: needs root to create network namespaces");
        return;
    }
    if let Err(e) = kernel::check_environment() {
        eprintln!("skipping: {e:#}");
        return;
    }
    let spec = kernel::CellSpec {
        rtt_ms: 50,
        loss: 0.0,
    };
    let bed = match kernel::bed::Bed::build(&spec, false, 1) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipping: testbed unavailable: {e:#}");
            return;
        }
    };
    let t = kernel::Timing {
        bulk: std::time::Duration::from_secs(2),
        iperf_omit: 0,
        arrivals: std::time::Duration::from_secs(1),
        drain: std::time::Duration::from_secs(10),
    };
    for tool in [
        kernel::Tool::Iperf3,
        kernel::Tool::Bulk,
        kernel::Tool::ShortFlows,
    ] {
        let r = kernel::run_case(&bed, &spec, Cc::Cubic, "kernel-cubic", tool, &t, 1)
            .unwrap_or_else(|e| panic!("{}: {e:#}", tool.name()));
        assert!(r.record.goodput_mbps > 1.0, "{r:?}");
        assert!(
            r.record.goodput_mbps < 110.0,
            "over the 100 Mbit/s link: {r:?}"
        );
    }
}
