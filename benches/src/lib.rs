//! The benchmark harness behind `mef bench`.
