//! The kernel suite's table, JSON file and SVG plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
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
        "router A split/rst/drops",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for k in records {
        let r = &k.record;
        let flows = match (k.flows_completed, r.incomplete) {
            (Some(c), Some(i)) if i > 0 => format!("{c} (+{i} incomplete)"),
            (Some(c), _) => c.to_string(),
            _ => "-".to_string(),
        };
        rows.push(vec![
            format!("{:.0}", r.rtt_ms),
            format!("{}", r.loss * 100.0),
            r.protocol.clone(),
            k.tool.clone(),
            k.path.clone(),
            format!("{:.2}", r.goodput_mbps),
            format!("{:.3}", r.utilization),
            r.retransmits.to_string(),
            opt(k.srtt_ms, 1),
            opt(r.fct_mean_ms, 0),
            opt(k.fct_p99_ms, 0),
            flows,
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
        ]);
    }
    crate::record::render_table(&rows, |c| (2..5).contains(&c))
}

/// The comparison lines: for every (RTT, loss) cell and tool with a `mef-split` record, its
/// goodput over `kernel-bbr`'s and `kernel-cubic`'s (and, for iperf3, over the target
/// 0.90·C·(1−p)); for short flows the mean FCT against the best of kernel Cubic/BBR (target:
/// MEF ≤ best). Empty when there is nothing to compare.
pub fn ratios(records: &[KernelRecord]) -> String {
    let find = |rtt: f64, loss: f64, tool: &str, proto: &str| {
        records.iter().find(|k| {
            k.record.rtt_ms == rtt
                && k.record.loss == loss
                && k.tool == tool
                && k.record.protocol == proto
        })
    };
    let ratio = |a: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    };
    let mut out = String::new();
    for m in records.iter().filter(|k| k.record.protocol == "mef-split") {
        let r = &m.record;
        let cubic = find(r.rtt_ms, r.loss, &m.tool, "kernel-cubic");
        let bbr = find(r.rtt_ms, r.loss, &m.tool, "kernel-bbr");
        let cell = format!("{:.0}ms/{}%", r.rtt_ms, r.loss * 100.0);
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
                "{cell} short-flows ({}): mean FCT mef-split {} ms vs best kernel {} ({}), \
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
                "{cell} {} ({}): mef-split/bbr {}, mef-split/cubic {}",
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
    out
}

#[derive(Serialize)]
struct JsonOut<'a> {
    records: &'a [KernelRecord],
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel: Option<&'a super::tunnel::TunnelReport>,
    skipped: Vec<serde_json::Value>,
}

/// Writes `{"records": [...], "tunnel": {...}, "skipped": [...]}` as pretty JSON.
pub fn write_json(path: &Path, report: &KernelReport) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = JsonOut {
        records: &report.records,
        tunnel: report.tunnel.as_ref(),
        skipped: report
            .skipped
            .iter()
            .map(|s| serde_json::json!({"cell": s.cell, "case": s.case, "reason": s.reason}))
            .collect(),
    };
    let json = serde_json::to_string_pretty(&out).context("serialising records")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

/// `dir/name` (an SVG): goodput vs RTT (one panel per tool × loss, one line per protocol) and mean
/// FCT vs RTT for the short flows. Returns the files written (none without records).
pub fn plots(dir: &Path, name: &str, records: &[KernelRecord]) -> anyhow::Result<Vec<PathBuf>> {
    let mut panels: Vec<Panel> = Vec::new();
    let mut keys: Vec<(String, u64)> = records
        .iter()
        .map(|k| (k.tool.clone(), (k.record.loss * 1e6) as u64))
        .collect();
    keys.sort();
    keys.dedup();
    for (tool, loss_ppm) in keys {
        let sel: Vec<&KernelRecord> = records
            .iter()
            .filter(|k| k.tool == tool && (k.record.loss * 1e6) as u64 == loss_ppm)
            .collect();
        let mut protos: Vec<String> = sel.iter().map(|k| k.record.protocol.clone()).collect();
        protos.sort();
        protos.dedup();
        let fct = tool == "short-flows";
        let lines = protos
            .into_iter()
            .map(|p| {
                let mut points: Vec<(f64, f64)> = sel
                    .iter()
                    .filter(|k| k.record.protocol == p)
                    .filter_map(|k| {
                        let y = if fct {
                            k.record.fct_mean_ms?
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
        "goodput (Mbit/s) / mean FCT (ms)",
        records
            .iter()
            .map(|k| k.record.rtt_ms as u64)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            < 2,
    )?;
    Ok(vec![p])
}
