//! [`SplitConfig`]: limits, buffers and timers of a [`TcpSplitter`](super::TcpSplitter).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::error::SplitError;
use super::header::usable;

/// What to do with a new connection's SYN when [`SplitConfig::max_connections`] is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Answer with a RST (RFC 9293 §3.10.7.1): the client fails fast ("connection refused").
    Reset,
    /// Drop the SYN silently: the client retransmits it and may succeed once a slot frees.
    Drop,
}

/// Configuration of a [`TcpSplitter`](super::TcpSplitter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitConfig {
    /// The splitter's own address (a /32 on the smoltcp interface, and the gateway of its
    /// default route). Never seen by LAN hosts when splitting; pick an unused link-local address.
    pub local_addr: Ipv4Addr,
    /// Maximum number of connections held at once (including ones lingering in TIME-WAIT, which
    /// are evicted first when a new connection needs the slot).
    pub max_connections: usize,
    /// Receive buffer per connection in bytes (also the advertised window; smoltcp uses window
    /// scaling, RFC 7323, above 64 KiB).
    pub rx_buffer: usize,
    /// Send buffer per connection in bytes ([`TcpSplitter::write`](super::TcpSplitter::write)
    /// returns 0 when it is full).
    pub tx_buffer: usize,
    /// MTU of the LAN side (the TUN device), which bounds the MSS smoltcp announces and uses.
    pub mtu: usize,
    /// What to do with a SYN when the connection limit is reached.
    pub when_full: WhenFull,
    /// How long a cleanly closed connection lingers in TIME-WAIT before its socket is freed
    /// (smoltcp's own timer is 10 s). At a few hundred connections per second smoltcp's 10 s
    /// would keep `max_connections` sockets lingering; on a LAN a few seconds still answer a
    /// retransmitted FIN (RFC 9293 §3.6.1 only needs the last ACK repeatable while the peer may
    /// retransmit its FIN).
    pub time_wait: Duration,
    /// Abort a connection whose unacknowledged data (or SYN) stays unacknowledged this long
    /// (RFC 9293 §3.8.3 USER TIMEOUT); `None` retries forever.
    pub user_timeout: Option<Duration>,
    /// Send TCP keep-alives after this much idle time (RFC 9293 §3.8.4); `None` disables them.
    pub keep_alive: Option<Duration>,
    /// Nagle's algorithm (RFC 9293 §3.7.4). Off by default: the relay writes whatever arrives,
    /// and the LAN end points run their own Nagle.
    pub nagle: bool,
    /// Soft bound on packets waiting in
    /// [`TcpSplitter::poll_ip_packet`](super::TcpSplitter::poll_ip_packet); when reached smoltcp
    /// stops transmitting until the caller drains packets.
    pub max_queued_packets: usize,
    /// Seed for smoltcp's initial sequence numbers and ephemeral choices. Use a fresh random value
    /// per process (RFC 6528: predictable ISNs permit blind injection).
    pub random_seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            local_addr: Ipv4Addr::new(169, 254, 77, 1),
            max_connections: 1024,
            rx_buffer: 256 * 1024,
            tx_buffer: 256 * 1024,
            mtu: 1500,
            when_full: WhenFull::Reset,
            time_wait: Duration::from_secs(2),
            user_timeout: Some(Duration::from_secs(60)),
            keep_alive: None,
            nagle: false,
            max_queued_packets: 4096,
            random_seed: 0x5eed_0f5e_11e7,
        }
    }
}

impl SplitConfig {
    pub(crate) fn validate(&self) -> Result<(), SplitError> {
        if !usable(SocketAddrV4::new(self.local_addr, 1)) {
            return Err(SplitError::InvalidConfig(
                "local_addr must be a unicast address",
            ));
        }
        if self.max_connections == 0 {
            return Err(SplitError::InvalidConfig(
                "max_connections must be at least 1",
            ));
        }
        // smoltcp's window scale is at most 14 (RFC 7323 §2.3), i.e. a 1 GiB window.
        let buf_ok = |b: usize| (1024..=1 << 30).contains(&b);
        if !buf_ok(self.rx_buffer) || !buf_ok(self.tx_buffer) {
            return Err(SplitError::InvalidConfig(
                "rx_buffer and tx_buffer must be between 1 KiB and 1 GiB",
            ));
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(SplitError::InvalidConfig(
                "mtu must be between 576 and 65535",
            ));
        }
        if self.max_queued_packets == 0 {
            return Err(SplitError::InvalidConfig(
                "max_queued_packets must be at least 1",
            ));
        }
        Ok(())
    }
}
