//! The benchmark harness behind `mef bench`.

pub mod quinn_flow;
