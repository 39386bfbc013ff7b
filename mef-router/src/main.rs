//! The `mef-router` daemon (placeholder).
fn main() {}
