//! The `mef` command.
fn main() {}
