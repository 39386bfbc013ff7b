//! Runs the simulated benchmark like `mef bench sim` will:
//! `cargo run --release -p mef-benches --example sim -- [--quick] [--json PATH] [--out DIR]
//! [--seed N] [--only SCENARIO]`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use mef_benches::{BenchOptions, run_sim};

fn main() -> anyhow::Result<()> {
    let mut opts = BenchOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--json" => {
                opts.json = Some(PathBuf::from(args.next().context("--json needs a path")?))
            }
            "--out" => {
                opts.out_dir = PathBuf::from(args.next().context("--out needs a directory")?)
            }
            "--seed" => opts.seed = args.next().context("--seed needs a number")?.parse()?,
            "--only" => opts.only = Some(args.next().context("--only needs a scenario")?),
            other => bail!("unknown argument {other}"),
        }
    }
    let records = run_sim(opts)?;
    eprintln!("{} records", records.len());
    Ok(())
}
