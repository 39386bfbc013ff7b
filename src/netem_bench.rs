//! `mef bench netem`: calibration of the userspace link emulator (`sim_netem::realtime`) in
//! network namespaces — delay, rate and loss accuracy, and the highest rate this machine
//! sustains through it (issue 3, item 1). Needs root.

use std::path::Path;

use anyhow::{Context, bail};
use sim_netem::realtime::{CalibrationOptions, calibrate};

/// Runs the calibration, prints a table and writes JSON to `json` when given.
pub fn run(json: Option<&Path>) -> anyhow::Result<()> {
    if !sim_netem::testbed::is_root() {
        bail!("`mef bench netem` needs root (network namespaces and AF_PACKET sockets)");
    }
    let opts = CalibrationOptions::default();
    println!(
        "calibrating the userspace emulator: delays {:?}, rate {} Mbit/s, loss {} %, {:?} probes",
        opts.delays,
        opts.rate_bps / 1_000_000,
        opts.loss * 100.0,
        opts.probe_time
    );
    let r = calibrate(&opts).context("calibration")?;
    println!(
        "\n{:<22} {:>10} {:>14} {:>16} {:>16}",
        "check", "samples", "mean err µs", "p99 |err| µs", "max |err| µs"
    );
    for d in &r.delays {
        println!(
            "{:<22} {:>10} {:>14.1} {:>16.1} {:>16.1}",
            format!("delay {:?}", d.configured),
            d.samples,
            d.mean_error_us,
            d.p99_abs_error_us,
            d.max_abs_error_us
        );
    }
    println!(
        "rate: configured {:.2} Mbit/s, measured {:.2} Mbit/s, error {:+.3} %",
        r.rate_bps as f64 / 1e6,
        r.measured_rate_bps / 1e6,
        r.rate_error * 100.0
    );
    println!(
        "loss: configured {:.3} %, measured {:.3} % over {} probes (z = {:+.2})",
        r.loss_configured * 100.0,
        r.loss_measured * 100.0,
        r.loss_samples,
        r.loss_z
    );
    if let Some(bps) = r.highest_sustained_bps {
        println!(
            "highest rate sustained with < 1 % loss: {:.0} Mbit/s",
            bps as f64 / 1e6
        );
    }
    if let Some(path) = json {
        let delays: Vec<_> = r
            .delays
            .iter()
            .map(|d| {
                serde_json::json!({
                    "delay_ms": d.configured.as_secs_f64() * 1e3,
                    "samples": d.samples,
                    "mean_error_us": d.mean_error_us,
                    "p99_abs_error_us": d.p99_abs_error_us,
                    "max_abs_error_us": d.max_abs_error_us,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "delays": delays,
            "rate_bps": r.rate_bps,
            "measured_rate_bps": r.measured_rate_bps,
            "rate_error": r.rate_error,
            "loss_configured": r.loss_configured,
            "loss_measured": r.loss_measured,
            "loss_samples": r.loss_samples,
            "loss_z": r.loss_z,
            "highest_sustained_bps": r.highest_sustained_bps,
        });
        mef_benches::record::write_json(path, &doc)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
