//! The benchmark harness behind `mef bench`.

pub mod flow;
pub mod mef_flow;
pub mod metrics;
pub mod protocol;
pub mod quinn_flow;
pub mod record;
