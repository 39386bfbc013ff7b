//! Connection and endpoint configuration.

use std::time::Duration;

/// Default largest UDP payload: a 1500-byte Ethernet MTU minus IPv4 (20) and UDP (8) headers.
pub const DEFAULT_MAX_UDP_PAYLOAD: usize = 1472;
/// Smallest UDP payload a peer may advertise (QUIC's minimum, RFC 9000 §14).
pub const MIN_UDP_PAYLOAD: usize = 1200;

/// Transport configuration, shared by every connection of an endpoint.
///
/// Defaults aim at long fat paths: 16 MiB flow-control windows so a 400 ms × 100 Mbit/s path
/// (5 MB BDP) is never window-limited.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Largest UDP payload this endpoint sends or accepts (default 1472 = 1500-byte MTU). The
    /// smaller of both sides' values is used.
    pub max_udp_payload: usize,
    /// The sender's demand in bit/s, advertised in every header and the ceiling of its rate
    /// (`None` = unlimited). While the application has nothing queued the advertised demand falls
    /// to its measured need and the `APP_LIMITED` flag is set, so routers do not reserve an idle
    /// flow a share.
    pub demand_bps: Option<u64>,
    /// **Test and benchmark use only.** Ignore router stamps and the in-flight cap, and blast at
    /// [`Config::fixed_rate_bps`]. The benchmark's "cheater" uses it to check that routers
    /// police senders that exceed their share. Never set this in production.
    pub ignore_rate: bool,
    /// The rate used when [`Config::ignore_rate`] is set, bit/s.
    pub fixed_rate_bps: u64,
    /// RTT assumed before the first sample (RFC 9002 §6.2.2 kInitialRtt = 333 ms).
    pub initial_rtt: Duration,
    /// Longest time a receiver delays an ACK (RFC 9000 §13.2.1; default 5 ms).
    pub max_ack_delay: Duration,
    /// Acknowledge after this many ack-eliciting packets (RFC 9000 §13.2.2 recommends 2).
    pub ack_eliciting_threshold: u32,
    /// Most ACK ranges kept and sent; older ranges are forgotten (the sender then retransmits
    /// what they covered if it had not yet seen them acknowledged).
    pub max_ack_ranges: usize,
    /// First Initial retransmission interval; doubles on each retry.
    pub handshake_retransmit: Duration,
    /// Give up on a handshake after this long ([`crate::CloseReason::HandshakeTimeout`]).
    pub handshake_timeout: Duration,
    /// Close a connection silently after this long without an authenticated packet
    /// (RFC 9000 §10.1; default 30 s).
    pub idle_timeout: Duration,
    /// Per-stream receive window (default 16 MiB).
    pub stream_receive_window: u64,
    /// Connection receive window over all streams (default 16 MiB).
    pub receive_window: u64,
    /// Most unacknowledged bytes buffered per stream on the sending side; `write` accepts no
    /// more until the peer acknowledges some (default 16 MiB).
    pub send_buffer: u64,
    /// Most streams the peer may open (default 1024).
    pub max_concurrent_streams: u64,
    /// Safety cap on bytes in flight when pacing at a router-given rate, as a multiple of
    /// `rate × srtt` (default 2.0). A stale or wrong rate can then overshoot by at most this
    /// much before acknowledgements stop the sender.
    pub inflight_cap_rtts: f64,
    /// Floor of the in-flight cap, in full-size packets (default 16).
    pub inflight_cap_min_packets: u64,
    /// Largest pacing burst expressed as time at the pacing rate (default 2 ms, like quinn);
    /// at least two packets. Timer-driven runtimes need it to be above their timer resolution.
    pub pacing_burst: Duration,
    /// Initial congestion window of the fallback controller, in packets (RFC 9002 §7.2: 10).
    pub initial_window_packets: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
            demand_bps: None,
            ignore_rate: false,
            fixed_rate_bps: 1_000_000_000,
            initial_rtt: Duration::from_millis(333),
            max_ack_delay: Duration::from_millis(5),
            ack_eliciting_threshold: 2,
            max_ack_ranges: 32,
            handshake_retransmit: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            stream_receive_window: 16 << 20,
            receive_window: 16 << 20,
            send_buffer: 16 << 20,
            max_concurrent_streams: 1024,
            inflight_cap_rtts: 2.0,
            inflight_cap_min_packets: 16,
            pacing_burst: Duration::from_millis(2),
            initial_window_packets: 10,
        }
    }
}
