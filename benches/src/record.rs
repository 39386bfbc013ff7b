//! One row of results, its JSON form and the aligned text table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One measured result: a protocol in one scenario cell, or one flow of it.
///
/// Field names are the JSON interface later tools rely on (`scenario`, `protocol`, `rtt_ms`,
/// `loss`, `capacity_mbps`, `goodput_mbps`, `utilization`, `retransmits`, `drops`,
/// `queue_p99_ms`); optional fields are omitted when not measured for the scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Scenario name: `long-flow`, `convergence`, `fairness`, `fairness-rtt`, `parking-lot`,
    /// `short-flows`, `coexistence`, `cheater`.
    pub scenario: String,
    /// `mef`, `quinn-cubic` or `quinn-bbr`.
    pub protocol: String,
    /// Round-trip propagation delay in ms (the smallest one when flows differ).
    pub rtt_ms: f64,
    /// Random loss probability on the bottleneck (0.01 = 1 %).
    pub loss: f64,
    /// Bottleneck capacity in Mbit/s (wire bytes).
    pub capacity_mbps: f64,
    /// Payload delivered in order to receivers, after the warm-up, in Mbit/s (the flow's own, or
    /// the sum over the cell's flows).
    pub goodput_mbps: f64,
    /// `goodput / (C·(1 − loss))`.
    pub utilization: f64,
    /// Packets the senders retransmitted (declared lost) during the measurement.
    pub retransmits: u64,
    /// Packets the bottleneck queue dropped during the measurement.
    pub drops: u64,
    /// 99th percentile of the bottleneck's queueing delay in ms.
    pub queue_p99_ms: f64,
    /// Median of the bottleneck's queueing delay in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_p50_ms: Option<f64>,
    /// Wire bytes the bottleneck transmitted / (C × measurement time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_utilization: Option<f64>,
    /// Jain's index of the flows' shares of their fair rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jain: Option<f64>,
    /// Mean flow completion time / mean processor-sharing ideal (short flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fct_ratio: Option<f64>,
    /// 99th-percentile flow completion time / 99th-percentile ideal (short flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fct_p99_ratio: Option<f64>,
    /// Mean flow completion time in ms (short flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fct_mean_ms: Option<f64>,
    /// Flows that had not completed when the run ended (short flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<u64>,
    /// Round trips from the joining flow's first packet until both flows stay within 10 % of
    /// the fair share; `null` when they never did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence_rtts: Option<f64>,
    /// Whether the convergence criterion was met (convergence scenario only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged: Option<bool>,
    /// Flow label of a per-flow record (e.g. `0`, `cross-1`, `cheater`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Number of flows in the cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<u64>,
    /// The flow's goodput / its fair share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// The flow's fair (max-min) share in goodput Mbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_share_mbps: Option<f64>,
    /// Whether this run repeats bit for bit for the same seed (quinn's BBR does not).
    pub deterministic: bool,
    /// The simulation seed.
    pub seed: u64,
}

impl Record {
    /// A record with the required fields and every optional one empty.
    pub fn new(scenario: &str, protocol: &str, seed: u64, deterministic: bool) -> Self {
        Self {
            scenario: scenario.to_string(),
            protocol: protocol.to_string(),
            rtt_ms: 0.0,
            loss: 0.0,
            capacity_mbps: 0.0,
            goodput_mbps: 0.0,
            utilization: 0.0,
            retransmits: 0,
            drops: 0,
            queue_p99_ms: 0.0,
            queue_p50_ms: None,
            link_utilization: None,
            jain: None,
            fct_ratio: None,
            fct_p99_ratio: None,
            fct_mean_ms: None,
            incomplete: None,
            convergence_rtts: None,
            converged: None,
            flow: None,
            flows: None,
            share: None,
            fair_share_mbps: None,
            deterministic,
            seed,
        }
    }
}

/// Writes `value` (the records, a suite's report) as pretty-printed JSON, creating the
/// directory.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(value).context("serialising records")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

/// `json`, or `bench-out/<suite>.json` when none was given.
pub fn report_path(json: Option<&Path>, suite: &str) -> PathBuf {
    json.map_or_else(
        || Path::new("bench-out").join(format!("{suite}.json")),
        Path::to_path_buf,
    )
}

/// Writes a suite's report as JSON to `path` and its plot next to it (`.svg`), printing both
/// paths.
pub fn write_report<T: Serialize + ?Sized>(
    path: &Path,
    value: &T,
    plot: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    write_json(path, value)?;
    println!("wrote {}", path.display());
    let svg = path.with_extension("svg");
    plot(&svg)?;
    println!("wrote {}", svg.display());
    Ok(())
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.prec$}"))
}

/// The records as an aligned text table (one line per record, scenario-specific figures in
/// the last column).
pub fn table(records: &[Record]) -> String {
    let head = [
        "scenario", "protocol", "flow", "rtt ms", "loss %", "goodput", "util", "retx", "drops",
        "q p50", "q p99", "extra",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for r in records {
        let mut extra = Vec::new();
        if let Some(n) = r.flows {
            extra.push(format!("n={n}"));
        }
        if let Some(j) = r.jain {
            extra.push(format!("jain={j:.3}"));
        }
        if let Some(s) = r.share {
            extra.push(format!("share={s:.2}"));
        }
        if let Some(f) = r.fair_share_mbps {
            extra.push(format!("fair={f:.1}Mb/s"));
        }
        if let Some(c) = r.converged {
            extra.push(match (c, r.convergence_rtts) {
                (true, Some(x)) => format!("conv={x:.1}rtt"),
                _ => "conv=never".to_string(),
            });
        }
        if let Some(x) = r.fct_ratio {
            extra.push(format!("fct/ps={x:.2}"));
        }
        if let Some(x) = r.fct_p99_ratio {
            extra.push(format!("p99/ps={x:.2}"));
        }
        if let Some(x) = r.fct_mean_ms {
            extra.push(format!("fct={x:.0}ms"));
        }
        if let Some(x) = r.incomplete.filter(|&x| x > 0) {
            extra.push(format!("incomplete={x}"));
        }
        if let Some(x) = r.link_utilization {
            extra.push(format!("link={x:.3}"));
        }
        if !r.deterministic {
            extra.push("nondet".to_string());
        }
        rows.push(vec![
            r.scenario.clone(),
            r.protocol.clone(),
            r.flow.clone().unwrap_or_else(|| "-".to_string()),
            format!("{:.0}", r.rtt_ms),
            format!("{}", r.loss * 100.0),
            format!("{:.2}", r.goodput_mbps),
            format!("{:.3}", r.utilization),
            r.retransmits.to_string(),
            r.drops.to_string(),
            opt(r.queue_p50_ms, 2),
            format!("{:.2}", r.queue_p99_ms),
            extra.join(" "),
        ]);
    }
    // Text columns left-aligned, numbers right-aligned, the last column unpadded.
    render_table(&rows, |c| c < 3)
}

/// Renders `rows` (the first one the header) as aligned columns with a rule under the header:
/// columns for which `left(c)` holds are left-aligned, the others right-aligned, and the last
/// column is not padded.
pub fn render_table(rows: &[Vec<String>], left: impl Fn(usize) -> bool) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else if left(c) {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            } else {
                let _ = write!(line, "{cell:>w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (cols.saturating_sub(1));
            out.push_str(&"-".repeat(total.min(160)));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_interface_field_names() {
        let mut r = Record::new("long-flow", "quinn-cubic", 7, true);
        r.rtt_ms = 200.0;
        r.loss = 0.01;
        r.capacity_mbps = 100.0;
        r.goodput_mbps = 3.5;
        r.utilization = 0.035;
        r.retransmits = 12;
        r.drops = 3;
        r.queue_p99_ms = 4.5;
        r.jain = Some(0.99);
        let v = serde_json::to_value(vec![r.clone()]).expect("serialises");
        let obj = v
            .as_array()
            .and_then(|a| a.first())
            .and_then(|o| o.as_object())
            .expect("a list of objects");
        for key in [
            "scenario",
            "protocol",
            "rtt_ms",
            "loss",
            "capacity_mbps",
            "goodput_mbps",
            "utilization",
            "retransmits",
            "drops",
            "queue_p99_ms",
            "jain",
            "deterministic",
        ] {
            assert!(obj.contains_key(key), "missing {key}: {obj:?}");
        }
        assert_eq!(obj["scenario"], "long-flow");
        assert_eq!(obj["protocol"], "quinn-cubic");
        assert_eq!(obj["loss"], 0.01);
        // Unmeasured optional fields are omitted, not null.
        assert!(!obj.contains_key("fct_ratio"));
        let back: Vec<Record> = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, vec![r]);
    }

    #[test]
    fn table_is_aligned() {
        let mut a = Record::new("long-flow", "mef", 1, true);
        a.goodput_mbps = 95.123;
        let mut b = Record::new("fairness", "quinn-bbr", 1, false);
        b.goodput_mbps = 5.0;
        b.jain = Some(0.5);
        let t = table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        let col = |l: &str| l.find("quinn-bbr").or_else(|| l.find("mef"));
        assert_eq!(col(lines[2]), col(lines[3]));
        assert!(t.contains("jain=0.500"));
        assert!(t.contains("nondet"));
    }
}
