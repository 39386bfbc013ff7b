//! Kernel socket buffers of the daemon's UDP sockets.
//!
//! Linux gives a UDP socket `net.core.rmem_default` (about 208 KiB) of receive buffer, counted in
//! `skb` truesize, so roughly 90 full-size datagrams: 11 ms at 100 Mbit/s. A router descheduled
//! for longer than that (two cores shared with an emulator and end hosts is enough) loses tunnel
//! packets inside its own socket; the kernel counts them as `RcvbufErrors` in /proc/net/snmp and
//! the peer's transport has to retransmit them. WireGuard-go asks for 7 MiB for the same reason.
//! We ask for [`WanConfig::socket_buffer_bytes`](super::config::WanConfig) with
//! `SO_RCVBUFFORCE` (needs `CAP_NET_ADMIN`, which a router creating a TUN device has) and fall
//! back to `SO_RCVBUF`, which the kernel silently caps at `net.core.rmem_max`.

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, setsockopt, sockopt};

/// The buffer sizes a socket ended up with, as the kernel reports them (Linux doubles the value
/// asked for to account for bookkeeping, and reports the doubled value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    /// `SO_RCVBUF` after sizing.
    pub recv: usize,
    /// `SO_SNDBUF` after sizing.
    pub send: usize,
    /// Whether the forced (privileged) options were accepted for both directions.
    pub forced: bool,
}

/// Ask for `bytes` of receive and send buffer on `sock`; returns what the kernel granted.
pub fn size_socket_buffers(sock: &impl AsFd, bytes: usize) -> std::io::Result<SocketBuffers> {
    let rf = setsockopt(sock, sockopt::RcvBufForce, &bytes).is_ok();
    if !rf {
        setsockopt(sock, sockopt::RcvBuf, &bytes)?;
    }
    let sf = setsockopt(sock, sockopt::SndBufForce, &bytes).is_ok();
    if !sf {
        setsockopt(sock, sockopt::SndBuf, &bytes)?;
    }
    Ok(SocketBuffers {
        recv: getsockopt(sock, sockopt::RcvBuf)?,
        send: getsockopt(sock, sockopt::SndBuf)?,
        forced: rf && sf,
    })
}

/// [`size_socket_buffers`] for a daemon socket, logging the result and warning when the kernel
/// granted less than asked (the fix is then `sysctl net.core.rmem_max`/`wmem_max`).
pub fn size_and_log(sock: &impl AsFd, bytes: usize, what: &str) {
    match size_socket_buffers(sock, bytes) {
        Ok(b) if b.recv >= bytes && b.send >= bytes => {
            tracing::info!(
                socket = what,
                recv = b.recv,
                send = b.send,
                "UDP socket buffers"
            );
        }
        Ok(b) => tracing::warn!(
            socket = what,
            asked = bytes,
            recv = b.recv,
            send = b.send,
            "UDP socket buffers smaller than configured: raise net.core.rmem_max and wmem_max \
             or run with CAP_NET_ADMIN"
        ),
        Err(e) => tracing::warn!(socket = what, error = %e, "cannot size UDP socket buffers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default buffer is far below 4 MiB; with `CAP_NET_ADMIN` (root, as in CI) the forced
    /// option must lift it past the configured size whatever `rmem_max` says.
    #[test]
    fn forced_buffers_exceed_the_kernel_default() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let default: usize = getsockopt(&sock, sockopt::RcvBuf).expect("SO_RCVBUF");
        let want = 4 << 20;
        let got = size_socket_buffers(&sock, want).expect("sizing");
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping the forced-size check: not root (CAP_NET_ADMIN needed)");
            assert!(got.recv >= default, "sizing must never shrink the buffer");
            return;
        }
        assert!(got.forced, "{got:?}");
        assert!(default < want, "kernel default {default} already ≥ {want}");
        assert!(got.recv >= want && got.send >= want, "{got:?}");
    }
}
