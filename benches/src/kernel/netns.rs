//! Running code inside a network namespace without a helper process: a scoped thread that
//! `setns(2)`es into the namespace and then opens its sockets there.
//!
//! A network namespace is a per-thread attribute on Linux, so one thread of the benchmark can
//! sit in the client namespace and another in the server namespace while the main thread stays
//! in the root namespace. Sockets keep the namespace they were created in. Every runtime the
//! generator builds inside such a thread is tokio's current-thread flavour, so no task ever
//! runs on a thread outside the namespace.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sched::CloneFlags;

/// Where `ip netns add NAME` keeps the namespace handle.
pub fn ns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    nix::sched::setns(&f, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns into {}", path.display()))
}

/// Spawns a thread that enters the namespace at `path` and runs `f` there.
pub fn spawn_in<T, F>(
    path: PathBuf,
    name: &str,
    f: F,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            enter(&path)?;
            f()
        })
        .context("spawning a namespace thread")
}

/// Joins a thread from [`spawn_in`], turning a panic into an error.
pub fn join<T>(h: std::thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("a namespace thread panicked"))?
}

/// `RetransSegs` of `/proc/thread-self/net/snmp`: the TCP segments every socket of the calling
/// thread's network namespace retransmitted so far.
pub fn retrans_segs() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp")
        .context("reading /proc/thread-self/net/snmp")?;
    parse_retrans_segs(&text).context("no Tcp RetransSegs in /proc/net/snmp")
}

/// Extracts `Tcp: ... RetransSegs` from the text of `/proc/net/snmp` (a header line of names
/// followed by a line of values).
pub fn parse_retrans_segs(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let names = tcp.next()?;
    let values = tcp.next()?;
    let idx = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(idx)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snmp() {
        let s = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin RetransSegs InErrs\nTcp: 1 200 42 0\nUdp: InDatagrams\nUdp: 5\n";
        assert_eq!(parse_retrans_segs(s), Some(42));
        assert_eq!(parse_retrans_segs("Tcp: A\n"), None);
    }

    #[test]
    fn reads_own_namespace_counter() {
        // Readable without privileges in the current namespace.
        assert!(retrans_segs().is_ok());
    }
}
