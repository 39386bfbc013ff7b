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
