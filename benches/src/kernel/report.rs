//! The kernel suite's table, JSON file and SVG plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{KernelRecord, KernelReport};
use crate::plot::{Line, Panel, draw};

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.prec$}"))
}

/// The records as an aligned text table, one line per case.
pub fn table(records: &[KernelRecord]) -> String {
    let head = [
        "rtt ms",
        "loss %",
        "protocol",
        "tool",
        "path",
        "goodput",
        "util",
        "retx",
        "srtt ms",
        "fct mean",
        "fct p99",
        "flows",
        "jain",
        "router A split/rst/drops",
        "stamped",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for k in records {
        let r = &k.record;
        let flows = match (k.flows_completed, r.incomplete) {
            (Some(c), Some(i)) if i > 0 => format!("{c} (+{i} incomplete)"),
            (Some(c), _) => c.to_string(),
            _ => "-".to_string(),
        };
        let tool = match &r.flow {
            Some(f) => format!("{} {f}", k.tool),
            None => k.tool.clone(),
        };
        let stamped = match (k.router_mef_stamped, &k.mef_rate_mode) {
            (Some(n), Some(m)) => format!("{n} ({m})"),
            (Some(n), None) => n.to_string(),
            (None, Some(m)) => format!("- ({m})"),
            (None, None) => "-".to_string(),
        };
        rows.push(vec![
            format!("{:.0}", r.rtt_ms),
            format!("{}", r.loss * 100.0),
            r.protocol.clone(),
            tool,
            k.path.clone(),
            format!("{:.2}", r.goodput_mbps),
            format!("{:.3}", r.utilization),
            r.retransmits.to_string(),
            opt(k.srtt_ms, 1),
            opt(r.fct_mean_ms, 0),
            opt(k.fct_p99_ms, 0),
            flows,
            opt(r.jain, 3),
            match (k.router_split_flows, k.router_split_resets, k.router_drops) {
                (Some(s), Some(r), Some(d)) => {
                    let reasons: Vec<String> = k
                        .router_drop_reasons
                        .iter()
                        .flatten()
                        .map(|(why, n)| format!("{why} {n}"))
                        .collect();
                    if reasons.is_empty() {
                        format!("{s}/{r}/{d}")
                    } else {
                        format!("{s}/{r}/{d} ({})", reasons.join(", "))
                    }
                }
                _ => "-".to_string(),
            },
            stamped,
        ]);
    }
    crate::record::render_table(&rows, |c| (2..5).contains(&c))
}

/// The comparison lines: for every (RTT, loss) cell and tool with a `mef-split` or
/// `mef-native` record, its goodput over `kernel-bbr`'s and `kernel-cubic`'s (and, for iperf3,
/// over the target 0.90·C·(1−p)); for short flows the mean FCT against the best of kernel
/// Cubic/BBR (target: MEF ≤ best); for the fairness case every protocol's Jain index and
/// per-flow goodputs. Empty when there is nothing to compare.
pub fn ratios(records: &[KernelRecord]) -> String {
    // Whole-case records only (per-flow fairness records carry `flow`).
    let find = |rtt: f64, loss: f64, tool: &str, proto: &str| {
        records.iter().find(|k| {
            k.record.rtt_ms == rtt
                && k.record.loss == loss
                && k.tool == tool
                && k.record.protocol == proto
                && k.record.flow.is_none()
        })
    };
    let ratio = |a: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    };
    let mut out = String::new();
    let mef = records.iter().filter(|k| {
        matches!(k.record.protocol.as_str(), "mef-split" | "mef-native")
            && k.record.flow.is_none()
            && k.tool != "fairness"
    });
    for m in mef {
        let r = &m.record;
        let proto = r.protocol.as_str();
        let cubic = find(r.rtt_ms, r.loss, &m.tool, "kernel-cubic");
        let bbr = find(r.rtt_ms, r.loss, &m.tool, "kernel-bbr");
        let cell = format!("{:.0}ms/{}%", r.rtt_ms, r.loss * 100.0);
        if cubic.is_none() && bbr.is_none() && m.tool != "iperf3" {
            // No kernel record of this cell and tool to compare with.
            continue;
        }
        if m.tool == "short-flows" {
            let best = [cubic, bbr]
                .into_iter()
                .flatten()
                .filter_map(|k| {
                    k.record
                        .fct_mean_ms
                        .map(|f| (f, k.record.protocol.as_str()))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let verdict = match (r.fct_mean_ms, best) {
                (Some(f), Some((b, _))) if f <= b => "met",
                (Some(_), Some(_)) => "NOT met",
                _ => "not comparable",
            };
            let _ = writeln!(
                out,
                "{cell} short-flows ({}): mean FCT {proto} {} ms vs best kernel {} ({}), \
                 cubic {} ms, bbr {} ms; target mef <= best: {verdict}",
                m.path,
                opt(r.fct_mean_ms, 0),
                opt(best.map(|b| b.0), 0),
                best.map_or("-", |b| b.1),
                opt(cubic.and_then(|k| k.record.fct_mean_ms), 0),
                opt(bbr.and_then(|k| k.record.fct_mean_ms), 0),
            );
        } else {
            let mut line = format!(
                "{cell} {} ({}): {proto}/bbr {}, {proto}/cubic {}",
                m.tool,
                m.path,
                ratio(r.goodput_mbps, bbr.map(|k| k.record.goodput_mbps)),
                ratio(r.goodput_mbps, cubic.map(|k| k.record.goodput_mbps)),
            );
            if m.tool == "iperf3" {
                let target = 0.9 * r.capacity_mbps * (1.0 - r.loss);
                let _ = write!(
                    line,
                    ", {:.2} Mbit/s vs target 0.90*C*(1-p) = {target:.1}: {}",
                    r.goodput_mbps,
                    if r.goodput_mbps >= target {
                        "met"
                    } else {
                        "NOT met"
                    }
                );
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str(&fairness_lines(records));
    out
}

/// One line per fairness case: `CELL fairness (PROTO, PATH): jain J, rttAms G1 Mbit/s, rttBms
/// G2 Mbit/s`.
pub fn fairness_lines(records: &[KernelRecord]) -> String {
    let mut out = String::new();
    for agg in records
        .iter()
        .filter(|k| k.tool == "fairness" && k.record.flow.is_none())
    {
        let r = &agg.record;
        let flows: Vec<String> = records
            .iter()
            .filter(|k| {
                k.tool == "fairness"
                    && k.record.protocol == r.protocol
                    && k.record.rtt_ms == r.rtt_ms
                    && k.record.loss == r.loss
            })
            .filter_map(|k| {
                let f = k.record.flow.as_ref()?;
                Some(format!("{f} {:.2} Mbit/s", k.record.goodput_mbps))
            })
            .collect();
        let _ = writeln!(
            out,
            "{:.0}ms/{}% fairness ({}, {}): jain {}, {}",
            r.rtt_ms,
            r.loss * 100.0,
            r.protocol,
            agg.path,
            opt(r.jain, 3),
            flows.join(", ")
        );
    }
    out
}

/// One line per routed MEF-native record: the MEF packets router A stamped during the case and
/// the sender's final rate mode, with a verdict (`stamped` when router A stamped packets and the
/// sender ended in explicit mode). Empty without such records.
pub fn stamping(records: &[KernelRecord]) -> String {
    let mut out = String::new();
    for k in records
        .iter()
        .filter(|k| k.record.protocol == "mef-native" && k.record.flow.is_none())
    {
        let r = &k.record;
        let stamped = k.router_mef_stamped.unwrap_or(0);
        // Fairness aggregates carry no mode; their per-flow records do.
        let modes: Vec<&str> = if k.tool == "fairness" {
            records
                .iter()
                .filter(|f| {
                    f.tool == "fairness"
                        && f.record.protocol == r.protocol
                        && f.record.rtt_ms == r.rtt_ms
                        && f.record.loss == r.loss
                        && f.record.flow.is_some()
                })
                .filter_map(|f| f.mef_rate_mode.as_deref())
                .collect()
        } else {
            k.mef_rate_mode.as_deref().into_iter().collect()
        };
        let explicit = !modes.is_empty() && modes.iter().all(|m| *m == "explicit");
        let verdict = if stamped > 0 && explicit {
            "stamped"
        } else {
            "NOT stamped"
        };
        let _ = writeln!(
            out,
            "{:.0}ms/{}% mef-native/{}: router A stamped {} MEF packets, sender rate mode {}, \
             last echo {} Mbit/s: {verdict}",
            r.rtt_ms,
            r.loss * 100.0,
            k.tool,
            k.router_mef_stamped
                .map_or_else(|| "?".to_string(), |n| n.to_string()),
            if modes.is_empty() {
                "?".to_string()
            } else {
                modes.join("/")
            },
            opt(k.mef_echo_mbps, 1),
        );
    }
    out
}

#[derive(Serialize)]
struct JsonOut<'a> {
    records: &'a [KernelRecord],
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel: Option<&'a super::tunnel::TunnelReport>,
    skipped: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_applicable: Vec<serde_json::Value>,
}

/// Writes `{"records": [...], "tunnel": {...}, "skipped": [...], "not_applicable": [...]}` as
/// pretty JSON (`not_applicable` only when some selected case does not apply).
pub fn write_json(path: &Path, report: &KernelReport) -> anyhow::Result<()> {
    let out = JsonOut {
        records: &report.records,
        tunnel: report.tunnel.as_ref(),
        skipped: report
            .skipped
            .iter()
            .map(|s| serde_json::json!({"cell": s.cell, "case": s.case, "reason": s.reason}))
            .collect(),
        not_applicable: report
            .not_applicable
            .iter()
            .map(|s| serde_json::json!({"cell": s.cell, "case": s.case, "reason": s.reason}))
            .collect(),
    };
    crate::record::write_json(path, &out)
}

/// `dir/name` (an SVG): goodput vs RTT (one panel per tool × loss, one line per protocol), mean
/// FCT vs RTT for the short flows and Jain's index vs RTT for the fairness case (per-flow
/// records are in the table and JSON only). Returns the files written (none without records).
pub fn plots(dir: &Path, name: &str, records: &[KernelRecord]) -> anyhow::Result<Vec<PathBuf>> {
    let mut panels: Vec<Panel> = Vec::new();
    let records: Vec<&KernelRecord> = records.iter().filter(|k| k.record.flow.is_none()).collect();
    let mut keys: Vec<(String, u64)> = records
        .iter()
        .map(|k| (k.tool.clone(), (k.record.loss * 1e6) as u64))
        .collect();
    keys.sort();
    keys.dedup();
    for (tool, loss_ppm) in keys {
        let sel: Vec<&KernelRecord> = records
            .iter()
            .copied()
            .filter(|k| k.tool == tool && (k.record.loss * 1e6) as u64 == loss_ppm)
            .collect();
        let mut protos: Vec<String> = sel.iter().map(|k| k.record.protocol.clone()).collect();
        protos.sort();
        protos.dedup();
        let fct = tool == "short-flows";
        let jain = tool == "fairness";
        let lines = protos
            .into_iter()
            .map(|p| {
                let mut points: Vec<(f64, f64)> = sel
                    .iter()
                    .filter(|k| k.record.protocol == p)
                    .filter_map(|k| {
                        let y = if fct {
                            k.record.fct_mean_ms?
                        } else if jain {
                            k.record.jain?
                        } else {
                            k.record.goodput_mbps
                        };
                        Some((k.record.rtt_ms, y))
                    })
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Line { label: p, points }
            })
            .collect();
        let what = if fct {
            "mean FCT (ms)"
        } else if jain {
            "Jain index of 2 flows, RTT and 2xRTT"
        } else {
            "goodput (Mbit/s)"
        };
        panels.push(Panel {
            title: format!("{tool}, loss {}%: {what}", loss_ppm as f64 / 1e4),
            lines,
        });
    }
    if panels.is_empty() {
        return Ok(Vec::new());
    }
    let p = dir.join(name);
    draw(
        &p,
        "kernel TCP vs MEF routers (100 Mbit/s, 1 BDP buffer)",
        &panels,
        "RTT (ms)",
        "goodput (Mbit/s) / mean FCT (ms) / Jain",
        records
            .iter()
            .map(|k| k.record.rtt_ms as u64)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            < 2,
    )?;
    Ok(vec![p])
}
