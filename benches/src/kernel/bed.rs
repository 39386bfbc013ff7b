//! The testbed of one cell, built with `sim_netem::testbed`: client ns — emulator — server ns
//! (direct), or client ns — router A — emulator — router B — server ns (routed), torn down on
//! drop.

use std::net::Ipv4Addr;

use anyhow::bail;

use super::CellSpec;

/// A built testbed; dropping it tears every namespace, device and process down.
#[derive(Debug)]
pub struct Bed {
    client_ns: String,
    server_ns: String,
    server_ip: Ipv4Addr,
    path: &'static str,
}

impl Bed {
    /// Builds the testbed for `spec` (100 Mbit/s, the cell's RTT and loss, 1 BDP buffer), with
    /// MEF routers at both site edges when `routed`.
    pub fn build(spec: &CellSpec, routed: bool) -> anyhow::Result<Self> {
        let _ = (spec, routed);
        bail!(
            "the namespace testbed (sim_netem::testbed) and the real-time emulator are not \
             available in this build yet"
        )
    }

    /// Name of the client namespace (as `ip netns` knows it).
    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    /// Name of the server namespace.
    pub fn server_ns(&self) -> &str {
        &self.server_ns
    }

    /// The server's address as the client reaches it.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.server_ip
    }

    /// `direct`, `split` or `tunnel`.
    pub fn path_label(&self) -> &'static str {
        self.path
    }
}
