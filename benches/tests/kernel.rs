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
    // Quick mode is exactly the issue's cases: RTT {50, 200} ms × loss {0, 1} %.
    let q = kernel::grid(true);
    assert_eq!(q.len(), 4);
    let full = kernel::grid(false);
    for grid in [&q, &full] {
        for rtt in [50, 200] {
            for loss in [0.0, 0.01] {
                assert!(grid.iter().any(|c| c.rtt_ms == rtt && c.loss == loss));
            }
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
    let bed = match kernel::bed::Bed::build(&spec, false, 1, false) {
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

fn rec(proto: &str, tool: &str, goodput: f64, fct: Option<f64>) -> kernel::KernelRecord {
    let mut r = mef_benches::record::Record::new("long-flow", proto, 1, false);
    r.rtt_ms = 200.0;
    r.loss = 0.01;
    r.capacity_mbps = 100.0;
    r.goodput_mbps = goodput;
    r.fct_mean_ms = fct;
    let path = if proto.starts_with("mef-") {
        "split"
    } else {
        "direct"
    };
    let tool = match tool {
        "iperf3" => kernel::Tool::Iperf3,
        "bulk" => kernel::Tool::Bulk,
        "short-flows" => kernel::Tool::ShortFlows,
        _ => kernel::Tool::Fairness,
    };
    kernel::KernelRecord::new(r, tool, path, "cubic", 10.0)
}

#[test]
fn ratio_lines_compare_mef_with_both_kernels() {
    let records = vec![
        rec("kernel-cubic", "iperf3", 2.0, None),
        rec("kernel-bbr", "iperf3", 80.0, None),
        rec("mef-split", "iperf3", 90.0, None),
        rec("kernel-cubic", "short-flows", 40.0, Some(600.0)),
        rec("kernel-bbr", "short-flows", 60.0, Some(800.0)),
        rec("mef-split", "short-flows", 50.0, Some(550.0)),
    ];
    let text = kernel::report::ratios(&records);
    assert!(
        text.contains("mef-split/bbr 1.12x, mef-split/cubic 45.00x"),
        "{text}"
    );
    assert!(text.contains("target 0.90*C*(1-p) = 89.1: met"), "{text}");
    assert!(text.contains("best kernel 600 (kernel-cubic)"), "{text}");
    assert!(text.contains("target mef <= best: met"), "{text}");
    // Nothing to compare without a mef-split record.
    assert!(kernel::report::ratios(&records[..2]).is_empty());
}

#[test]
fn only_selects_by_cell_and_case() {
    let c0 = kernel::CellSpec {
        rtt_ms: 200,
        loss: 0.0,
    };
    let c01 = kernel::CellSpec {
        rtt_ms: 200,
        loss: 0.001,
    };
    let c50 = kernel::CellSpec {
        rtt_ms: 50,
        loss: 0.01,
    };
    let sel = |o: Option<&str>, c: &kernel::CellSpec, p: &str, t: kernel::Tool| {
        kernel::case_selected(o, c, p, t)
    };
    assert!(sel(None, &c0, "kernel-bbr", kernel::Tool::Bulk));
    assert!(sel(Some("bbr"), &c0, "kernel-bbr", kernel::Tool::Bulk));
    assert!(!sel(Some("cubic"), &c0, "kernel-bbr", kernel::Tool::Bulk));
    let only = Some("200ms/0%,200ms/1%");
    assert!(sel(only, &c0, "mef-split", kernel::Tool::Iperf3));
    assert!(!sel(only, &c01, "mef-split", kernel::Tool::Iperf3));
    assert!(!sel(only, &c50, "mef-split", kernel::Tool::Iperf3));
    // `mef` selects both MEF protocols and neither kernel one.
    assert!(sel(Some("mef"), &c0, "mef-split", kernel::Tool::Bulk));
    assert!(sel(Some("mef"), &c0, "mef-native", kernel::Tool::Bulk));
    assert!(!sel(Some("mef"), &c0, "kernel-cubic", kernel::Tool::Bulk));
    assert!(sel(
        Some("50ms/1% mef-split/iperf3"),
        &c50,
        "mef-split",
        kernel::Tool::Iperf3
    ));
}

#[test]
fn routed_cell_through_two_mef_routers_as_root() {
    if kernel::effective_uid().unwrap_or(u32::MAX) != 0 {
        eprintln!("skipping: needs root to create network namespaces");
        return;
    }
    if let Err(e) = kernel::check_environment() {
        eprintln!("skipping: {e:#}");
        return;
    }
    if let Err(e) = kernel::bed::router_binary() {
        eprintln!("skipping: {e:#}");
        return;
    }
    let spec = kernel::CellSpec {
        rtt_ms: 50,
        loss: 0.0,
    };
    // The daemons must start and the tunnel come up; a testbed that cannot be built skips.
    let bed = match kernel::bed::Bed::build(&spec, true, 1, false) {
        Ok(b) => b,
        Err(e) if format!("{e:#}").contains("building the namespace testbed") => {
            eprintln!("skipping: testbed unavailable: {e:#}");
            return;
        }
        Err(e) => panic!("routed testbed: {e:#}"),
    };
    let before = bed
        .router_counters()
        .expect("routed bed has routers")
        .expect("router A metrics");
    let t = kernel::Timing {
        bulk: std::time::Duration::from_secs(2),
        iperf_omit: 0,
        arrivals: std::time::Duration::from_secs(1),
        drain: std::time::Duration::from_secs(10),
    };
    let r = kernel::run_case(
        &bed,
        &spec,
        Cc::Cubic,
        "mef-split",
        kernel::Tool::Bulk,
        &t,
        1,
    )
    .unwrap_or_else(|e| panic!("bulk through the routers: {e:#}"));
    assert!(r.record.goodput_mbps > 1.0, "{r:?}");
    assert!(r.record.goodput_mbps < 110.0, "{r:?}");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let after = bed
        .router_counters()
        .expect("routed bed has routers")
        .expect("router A metrics");
    assert!(
        after.path_since(&before, 1e5).is_some(),
        "traffic crossed router A: {before:?} -> {after:?}"
    );
}

#[test]
fn cell_cases_select_new_cases_and_report_native_iperf3_not_applicable() {
    use kernel::{Protocol, Tool};
    let c = kernel::CellSpec {
        rtt_ms: 200,
        loss: 0.0,
    };
    let only = Some("native,fair");
    let direct = kernel::cell_cases(only, &c, false);
    assert_eq!(
        direct.run,
        vec![
            (Protocol::KernelCubic, Tool::Fairness),
            (Protocol::KernelBbr, Tool::Fairness)
        ]
    );
    assert!(direct.not_applicable.is_empty());
    let routed = kernel::cell_cases(only, &c, true);
    assert_eq!(
        routed.run,
        vec![
            (Protocol::MefSplit, Tool::Fairness),
            (Protocol::MefNative, Tool::Bulk),
            (Protocol::MefNative, Tool::ShortFlows),
            (Protocol::MefNative, Tool::Fairness),
        ]
    );
    assert_eq!(routed.not_applicable.len(), 1);
    assert_eq!(routed.not_applicable[0].0, "mef-native/iperf3");
    // Everything: 4 tools for each kernel protocol and mef-split, 3 for mef-native.
    let all = kernel::cell_cases(None, &c, true);
    assert_eq!(all.run.len(), 7);
    assert_eq!(kernel::cell_cases(None, &c, false).run.len(), 8);
    assert_eq!(Protocol::MefNative.cc(), None);
    assert_eq!(Protocol::MefSplit.cc(), Some(Cc::Cubic));
    assert!(Protocol::MefNative.routed() && !Protocol::KernelBbr.routed());
}

#[test]
fn fairness_and_stamping_lines_and_table() {
    let spec = kernel::CellSpec {
        rtt_ms: 200,
        loss: 0.0,
    };
    let flow = |rtt_ms, goodput_mbps, mode: Option<&str>| kernel::fairness::FlowResult {
        rtt_ms,
        goodput_mbps,
        retransmits: 0,
        srtt_ms: None,
        seconds: 10.0,
        mef_rate_mode: mode.map(str::to_string),
    };
    let res = kernel::fairness::FairnessResult {
        flows: [
            flow(200, 45.0, Some("explicit")),
            flow(400, 44.0, Some("explicit")),
        ],
    };
    let mut records = res.records(&spec, "mef-native", "tunnel", "mef", 1);
    records[0].router_mef_stamped = Some(1234);
    let mut bulk = rec("mef-native", "bulk", 80.0, None);
    bulk.record.loss = 0.0;
    bulk.router_mef_stamped = Some(0);
    bulk.mef_rate_mode = Some("fallback-cubic".into());
    records.push(bulk);
    let lines = kernel::report::fairness_lines(&records);
    assert!(
        lines.contains(
            "200ms/0% fairness (mef-native, tunnel): jain 1.000, rtt200ms 45.00 Mbit/s, \
             rtt400ms 44.00 Mbit/s"
        ),
        "{lines}"
    );
    let st = kernel::report::stamping(&records);
    assert!(
        st.contains("mef-native/fairness: router A stamped 1234 MEF packets, sender rate mode explicit/explicit"),
        "{st}"
    );
    assert!(
        st.contains("fairness") && st.contains(": stamped\n"),
        "{st}"
    );
    assert!(
        st.contains("mef-native/bulk: router A stamped 0 MEF packets, sender rate mode fallback-cubic, last echo - Mbit/s: NOT stamped"),
        "{st}"
    );
    let table = kernel::report::table(&records);
    assert!(table.contains("fairness rtt400ms"), "{table}");
    assert!(table.contains("1.000"), "{table}");
    assert!(table.contains("1234"), "{table}");
}

#[test]
fn mef_native_through_two_routers_is_stamped_as_root() {
    if kernel::effective_uid().unwrap_or(u32::MAX) != 0 {
        eprintln!("skipping: needs root to create network namespaces");
        return;
    }
    if let Err(e) = kernel::check_environment() {
        eprintln!("skipping: {e:#}");
        return;
    }
    if let Err(e) = kernel::bed::router_binary() {
        eprintln!("skipping: {e:#}");
        return;
    }
    let spec = kernel::CellSpec {
        rtt_ms: 50,
        loss: 0.0,
    };
    let bed = match kernel::bed::Bed::build(&spec, true, 1, false) {
        Ok(b) => b,
        Err(e) if format!("{e:#}").contains("building the namespace testbed") => {
            eprintln!("skipping: testbed unavailable: {e:#}");
            return;
        }
        Err(e) => panic!("routed testbed: {e:#}"),
    };
    let before = bed
        .router_counters()
        .expect("routed bed has routers")
        .expect("router A metrics");
    let t = kernel::Timing {
        bulk: std::time::Duration::from_secs(2),
        iperf_omit: 0,
        arrivals: std::time::Duration::from_secs(1),
        drain: std::time::Duration::from_secs(10),
    };
    // Content is checked by the server; a mismatch is an error.
    let r = kernel::native_case(&bed, &spec, kernel::Tool::Bulk, &t, 1)
        .unwrap_or_else(|e| panic!("mef-native bulk through the routers: {e:#}"));
    assert!(r.record.goodput_mbps > 1.0, "{r:?}");
    assert!(r.record.goodput_mbps < 110.0, "{r:?}");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let after = bed
        .router_counters()
        .expect("routed bed has routers")
        .expect("router A metrics");
    assert!(
        after.mef_stamped > before.mef_stamped,
        "router A stamped no MEF packet: {before:?} -> {after:?}"
    );
    assert_eq!(r.mef_rate_mode.as_deref(), Some("explicit"), "{r:?}");
}
