//! The kernel's own view of a TCP connection: `getsockopt(TCP_INFO)` (Linux `struct tcp_info`,
//! include/uapi/linux/tcp.h). iperf3 reports the same fields for its streams; the built-in
//! generator reads them here for its sender sockets.
//!
//! Neither `nix` nor `socket2` exposes `TCP_INFO`, so this is the one place the benchmarks call
//! `getsockopt` directly; the unsafe block is audited below.

use std::os::fd::{AsFd, AsRawFd};

/// What the bench records from `TCP_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpStats {
    /// Smoothed RTT (`tcpi_rtt`), microseconds.
    pub srtt_us: u32,
    /// Segments retransmitted over the connection's life (`tcpi_total_retrans`).
    pub total_retrans: u64,
}

impl TcpStats {
    /// The smoothed RTT in milliseconds.
    pub fn srtt_ms(&self) -> f64 {
        f64::from(self.srtt_us) / 1000.0
    }
}

/// Reads `TCP_INFO` of a connected TCP socket.
#[allow(unsafe_code)] // the only unsafe in the benches: see the SAFETY notes
pub fn tcp_info(sock: &impl AsFd) -> std::io::Result<TcpStats> {
    let fd = sock.as_fd();
    // SAFETY: `libc::tcp_info` has only integer fields, for which all-zero bits are valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor borrowed for the call; `info` is a writable buffer of
    // `len` bytes that outlives it; the kernel writes at most `len` bytes and stores the length
    // written in `len`. No pointer escapes the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // An older kernel fills a prefix of the struct; `tcpi_rtt` and `tcpi_total_retrans` have
    // been in it since Linux 2.6, inside any prefix a kernel returns.
    Ok(TcpStats {
        srtt_us: info.tcpi_rtt,
        total_retrans: u64::from(info.tcpi_total_retrans),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback connection that moved data has a measured RTT and no retransmissions; a
    /// listening (unconnected) UDP socket is refused with an error, not garbage.
    #[test]
    fn reads_rtt_of_a_loopback_connection() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let mut c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        for _ in 0..10 {
            c.write_all(&[7u8; 1000]).expect("write");
            let mut b = [0u8; 1000];
            s.read_exact(&mut b).expect("read");
            s.write_all(&b[..1]).expect("echo");
            c.read_exact(&mut b[..1]).expect("read echo");
        }
        let st = tcp_info(&c).expect("TCP_INFO");
        assert!(st.srtt_us > 0 && st.srtt_ms() < 1000.0, "{st:?}");
        assert_eq!(st.total_retrans, 0, "{st:?}");
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        assert!(tcp_info(&u).is_err());
    }
}
