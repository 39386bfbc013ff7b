//! Small helpers around `ip`, namespace sysctls and teardown.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{KILL_WAIT, TestbedError};

/// Whether the process runs as root (effective uid 0, read from `/proc/self`'s owner).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `ip args...`; a non-zero exit is an error carrying its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<(), TestbedError> {
    let cmd = || format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| TestbedError::Command {
            cmd: cmd(),
            reason: format!("cannot run ip ({e}); install iproute2"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Command {
            cmd: cmd(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Disables IPv6 (no router solicitations or DAD traffic through the emulator) and sets IPv4
/// forwarding in namespace `ns`. Net sysctls under /proc/sys/net belong to the network
/// namespace of the thread that opens them, so a helper thread enters `ns` and writes them.
pub(crate) fn sysctls(ns: &str, forward: bool) -> Result<(), TestbedError> {
    let ns_owned = ns.to_string();
    let r = std::thread::scope(|s| {
        s.spawn(move || -> std::io::Result<()> {
            crate::realtime::enter_netns(&ns_owned)?;
            for key in ["all", "default", "lo"] {
                // Best effort: IPv6 may be compiled out.
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6"), "1");
            }
            std::fs::write(
                "/proc/sys/net/ipv4/ip_forward",
                if forward { "1" } else { "0" },
            )
        })
        .join()
    });
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(TestbedError::Io {
            what: format!("setting sysctls in namespace {ns}"),
            source,
        }),
        Err(_) => Err(TestbedError::Io {
            what: format!("setting sysctls in namespace {ns}"),
            source: std::io::Error::other("helper thread panicked"),
        }),
    }
}

/// Processes (other than this one) whose network namespace is the one named `ns`.
fn pids_in(ns: &str) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(format!("/run/netns/{ns}")) else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// Kills every process in the namespaces, waits for them to go, deletes the namespaces.
/// Best effort: failures are logged, never returned (this runs in Drop and signal handlers).
pub(crate) fn destroy(names: &[String]) {
    for ns in names {
        for pid in pids_in(ns) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let start = Instant::now();
    while start.elapsed() < KILL_WAIT && names.iter().any(|ns| !pids_in(ns).is_empty()) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for ns in names.iter().rev() {
        if std::path::Path::new(&format!("/run/netns/{ns}")).exists()
            && let Err(e) = ip(&["netns", "del", ns])
        {
            tracing::warn!("testbed teardown: {e}");
        }
    }
}

/// A process started in a namespace (e.g. by `Testbed::spawn_in`) that is stopped gracefully
/// when dropped: SIGTERM, up to `StopOnDrop::GRACE` to exit, then SIGKILL. The testbed's own
/// teardown kills whatever is left in its namespaces; this lets a daemon shut down cleanly first
/// (and lets a test stop one daemon, e.g. to restart it, without tearing the testbed down).
#[derive(Debug)]
pub struct StopOnDrop(pub std::process::Child);

impl StopOnDrop {
    /// Time a process gets to exit after SIGTERM.
    pub const GRACE: std::time::Duration = std::time::Duration::from_secs(3);
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let t = std::time::Instant::now();
        while t.elapsed() < Self::GRACE {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
