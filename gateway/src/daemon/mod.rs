//! The `mef-gateway` daemon (issue 6): configuration, the ingest pipeline (batched durable
//! appends, PUSH_ACK only after commit), forwarding to the uplink, metrics, status and the
//! simulator. The binary (`src/bin/mef-gateway.rs`) is a thin clap + tracing wrapper.

pub mod config;
pub mod ingest;
pub mod key;
pub mod metrics;
pub mod run;
pub mod simulate;
pub mod status;

pub use config::{Config, ConfigError};
pub use ingest::{Flushed, Ingest, IngestConfig, IngestCounters};
pub use run::{DaemonError, RunOptions, Simulate, fetch, run, status};

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: when `mef-gateway run` and `firmware serve` stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
