//! The benchmark harness behind `mef bench sim`: MEF against quinn-proto's Cubic and BBR on
//! identical simulated paths (`sim-netem`), scenario by scenario.
//!
//! [`run_sim`] runs every scenario cell (in parallel, one simulation per thread), prints an
//! aligned table, writes the records as JSON (`--json PATH`) and SVG plots into
//! [`BenchOptions::out_dir`], and returns the records. Cells that cannot run (the MEF adapter
//! before `mef-transport`/`mef-router` land) are reported as skipped with the reason; no figure
//! is ever invented.
//!
//! Threads: `MEF_BENCH_JOBS` (default: available parallelism).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

pub mod firmware_bench;
pub mod flow;
pub mod gateway_bench;
pub mod kernel;
pub mod mef_flow;
pub mod mesh_bench;
pub mod mesh_relay;
pub mod metrics;
pub mod plot;
pub mod poe_bench;
pub mod poe_net;
pub mod poe_scale;
pub mod protocol;
pub mod quinn_flow;
pub mod record;
pub mod scenarios;

pub use kernel::{KernelOptions, KernelRecord, run_kernel};
pub use record::Record;

/// Options of `mef bench sim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// CI mode: a subset of cells and shorter runs.
    pub quick: bool,
    /// Where to write the JSON records (`--json PATH`); plots go next to it.
    pub json: Option<PathBuf>,
    /// Directory for plots (and the JSON when `json` is relative-less); default `bench-out/`.
    pub out_dir: PathBuf,
    /// Base seed of every simulation.
    pub seed: u64,
    /// Run only scenarios whose name contains this string (e.g. `long-flow`, `fair`).
    pub only: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            quick: false,
            json: None,
            out_dir: PathBuf::from("bench-out"),
            seed: 1,
            only: None,
        }
    }
}

/// A cell that did not produce records, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Scenario name.
    pub scenario: String,
    /// Cell label.
    pub label: String,
    /// The error, with its causes.
    pub reason: String,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimReport {
    /// Measured records, in cell order.
    pub records: Vec<Record>,
    /// Series for plots.
    pub series: Vec<scenarios::Series>,
    /// Cells that failed or could not run.
    pub skipped: Vec<Skipped>,
}

/// Runs the selected cells and collects their outputs (no printing, no files).
pub fn run_cells(opts: &BenchOptions) -> anyhow::Result<SimReport> {
    let params = scenarios::Params {
        quick: opts.quick,
        seed: opts.seed,
    };
    let cells: Vec<scenarios::Cell> = scenarios::all_cells(params)
        .into_iter()
        .filter(|c| opts.only.as_deref().is_none_or(|o| c.scenario.contains(o)))
        .collect();
    if cells.is_empty() {
        bail!(
            "no scenario matches {:?} (scenarios: {})",
            opts.only.as_deref().unwrap_or(""),
            scenarios::SCENARIOS.join(", ")
        );
    }
    let n = cells.len();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} cells {elapsed} {msg}") {
        bar.set_style(style);
    }
    let jobs = std::env::var("MEF_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&j| j > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |p| p.get()))
        .min(n);
    let meta: Vec<(String, String)> = cells
        .iter()
        .map(|c| (c.scenario.to_string(), c.label.clone()))
        .collect();
    let queue: Mutex<Vec<Option<scenarios::Cell>>> =
        Mutex::new(cells.into_iter().map(Some).collect());
    let results: Mutex<Vec<Option<anyhow::Result<scenarios::CellOutput>>>> =
        Mutex::new((0..n).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let cell = queue.lock().ok().and_then(|mut q| q[i].take());
                    let Some(cell) = cell else { continue };
                    bar.set_message(cell.label.clone());
                    let out = (cell.run)();
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(out);
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    let mut report = SimReport::default();
    for ((scenario, label), out) in meta.into_iter().zip(results) {
        match out {
            Some(Ok(o)) => {
                report.records.extend(o.records);
                report.series.extend(o.series);
            }
            Some(Err(e)) => report.skipped.push(Skipped {
                scenario,
                label,
                reason: format!("{e:#}"),
            }),
            None => report.skipped.push(Skipped {
                scenario,
                label,
                reason: "the cell did not run (worker panicked)".to_string(),
            }),
        }
    }
    Ok(report)
}

/// `mef bench sim`: runs the scenarios, prints the table (and skipped cells) to stdout, writes
/// JSON and plots, and returns the records. Fails if no cell produced a record.
pub fn run_sim(opts: BenchOptions) -> anyhow::Result<Vec<Record>> {
    let report = run_cells(&opts)?;
    print!("{}", record::table(&report.records));
    if !report.skipped.is_empty() {
        println!("\nskipped {} cell(s):", report.skipped.len());
        for s in &report.skipped {
            println!("  {} {}: {}", s.scenario, s.label, s.reason);
        }
    }
    let plot_dir = match &opts.json {
        Some(path) => {
            record::write_json(path, &report.records)?;
            println!("\nwrote {}", path.display());
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
        }
        None => opts.out_dir.clone(),
    };
    std::fs::create_dir_all(&plot_dir)
        .with_context(|| format!("creating {}", plot_dir.display()))?;
    for p in plot::write_all(&plot_dir, &report.records, &report.series)? {
        println!("wrote {}", p.display());
    }
    if report.records.is_empty() {
        bail!(
            "no cell produced a record ({} skipped)",
            report.skipped.len()
        );
    }
    Ok(report.records)
}
