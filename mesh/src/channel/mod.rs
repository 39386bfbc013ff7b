//! Channels multiplexed over one link's plaintext datagrams (telehash v3 channels,
//! <https://telehash.github.io/v3/channels/>): reliable (ordered, exactly-once byte streams
//! with SACK, RTO, flow and congestion control) and unreliable (fire-and-forget messages).
//!
//! Sans-IO like the rest of the crate: [`Channels`] takes plaintext datagrams and `now`, and
//! returns datagrams of at most [`Config::mtu`] bytes, [`ChannelEvent`]s and its next deadline.
//! It knows nothing of the link under it (which encrypts and authenticates the datagrams).
//!
//! - [`frame`]: the wire format (byte layout in its module doc);
//! - [`reliable`]: the reliable sender and receiver (ACKs, loss recovery, RTO, windows);
//! - [`mux`]: [`Channels`], one per link: ids, open/accept/close, packing, limits.
//!
//! **Channel ids** are split by side like QUIC stream ids: the link initiator opens even ids
//! (0, 2, 4, …), the responder odd ones, so both can open at once without colliding. Ids are
//! never reused on a link.
//!
//! **Opening**: the opener sends OPEN (repeated before every frame of the channel, and on a
//! timer, until the peer answers with any frame on it); the acceptor answers with an ACK.
//! **Closing**: CLOSE carries an error code ([`codes`]) and a reason; it is repeated with
//! back-off until answered by a CLOSE with the ack flag (or given up after
//! [`Config::max_close_retries`]). Closing with [`codes::NORMAL`] on a reliable channel first
//! delivers everything already written; any other code aborts at once.

pub mod frame;
pub mod mux;
pub mod reliable;

use std::fmt;
use std::time::Duration;

use thiserror::Error;

pub use frame::{Frame, FrameError, SackRange};
pub use mux::{ChannelStats, Channels};
pub use reliable::{CongestionState, SendStats};

/// Close error codes. Codes from [`codes::APPLICATION`] up are the application's.
pub mod codes {
    /// Normal close (graceful on reliable channels).
    pub const NORMAL: u32 = 0;
    /// The peer broke the channel protocol.
    pub const PROTOCOL: u32 = 1;
    /// The OPEN was refused (too many channels).
    pub const REFUSED: u32 = 2;
    /// First application-defined code.
    pub const APPLICATION: u32 = 0x100;
}

/// Which end of the link this mux is on; decides the parity of the ids it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The link initiator: opens even ids.
    Initiator,
    /// The link responder: opens odd ids.
    Responder,
}

impl Side {
    fn parity(self) -> u32 {
        match self {
            Side::Initiator => 0,
            Side::Responder => 1,
        }
    }
}

/// A channel id on one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub u32);

impl ChannelId {
    /// The side that opened this channel.
    pub fn opener(self) -> Side {
        if self.0 & 1 == 0 {
            Side::Initiator
        } else {
            Side::Responder
        }
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "channel {}", self.0)
    }
}

/// Why a channel closed, as reported in [`ChannelEvent::Closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseError {
    /// Error code ([`codes`]).
    pub code: u32,
    /// Reason text.
    pub reason: String,
    /// The peer closed it (otherwise this side did, on a protocol violation).
    pub by_peer: bool,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The peer opened a channel.
    Opened {
        /// Its id.
        id: ChannelId,
        /// Its type string.
        kind: String,
        /// Reliable or unreliable.
        reliable: bool,
    },
    /// Bytes arrived (in order on a reliable channel; one whole message on an unreliable one).
    /// Only with [`Config::data_events`].
    Data {
        /// The channel.
        id: ChannelId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Bytes wait in [`Channels::recv`] (without [`Config::data_events`]).
    Readable {
        /// The channel.
        id: ChannelId,
    },
    /// A send that failed with [`ChannelError::WouldBlock`] may now succeed.
    Writable {
        /// The channel.
        id: ChannelId,
    },
    /// The channel closed: by the peer, or by this side on a protocol violation (an
    /// application's own [`Channels::close`] is not reported).
    Closed {
        /// The channel.
        id: ChannelId,
        /// Code and reason.
        error: CloseError,
    },
}

/// Errors of the application-facing calls.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    /// No such (open) channel.
    #[error("unknown {0}")]
    UnknownChannel(ChannelId),
    /// The channel is closing or closed; nothing more can be sent.
    #[error("{0} is closing")]
    Closing(ChannelId),
    /// The send buffer cannot take these bytes now; wait for [`ChannelEvent::Writable`].
    #[error("send buffer full")]
    WouldBlock,
    /// The bytes can never be sent in one call (larger than the send buffer, or than one
    /// datagram on an unreliable channel).
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// Most allowed.
        max: usize,
    },
    /// [`Config::max_channels`] channels are open.
    #[error("too many channels")]
    TooManyChannels,
    /// The type string is empty or longer than [`frame::MAX_KIND_LEN`].
    #[error("invalid channel type")]
    InvalidKind,
    /// The reason is longer than [`frame::MAX_REASON_LEN`].
    #[error("close reason too long")]
    ReasonTooLong,
    /// This side has used up its channel ids.
    #[error("channel ids exhausted")]
    IdsExhausted,
}

/// An invalid [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The MTU cannot hold a useful data frame (at least 256 bytes, at most 65,535).
    #[error("mtu {0} out of range 256..=65535")]
    Mtu(usize),
    /// A limit is zero or out of range.
    #[error("invalid limit: {0}")]
    Limit(&'static str),
}

/// Limits and tuning of a [`Channels`] mux.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest datagram produced, in bytes (e.g. 1,200).
    pub mtu: usize,
    /// Most channels open at once (both sides' together).
    pub max_channels: usize,
    /// Most bytes buffered for sending per channel (unsent + unacknowledged).
    pub max_send_buffer: usize,
    /// Most bytes buffered for receiving per channel (unread + out of order); also the
    /// largest window advertised.
    pub max_recv_buffer: usize,
    /// Most segments a reliable receiver holds above a hole.
    pub max_out_of_order_segments: usize,
    /// SACK ranges reported per ACK (at most [`frame::MAX_SACK_RANGES`]).
    pub max_sack_ranges: usize,
    /// Delayed-ACK timer.
    pub ack_delay: Duration,
    /// Initial retransmission timeout (RFC 6298 §2.1).
    pub initial_rto: Duration,
    /// Lower bound of the RTO.
    pub min_rto: Duration,
    /// Upper bound of the RTO (RFC 6298 §2.5).
    pub max_rto: Duration,
    /// Initial congestion window in segments (RFC 6928 uses 10).
    pub initial_cwnd: u32,
    /// Upper bound of the congestion window in segments.
    pub max_cwnd: u32,
    /// Pace reliable sends at a multiple of `cwnd / srtt` (with small bursts) instead of
    /// sending whole windows back to back.
    pub pacing: bool,
    /// Times a CLOSE is repeated before the channel is forgotten.
    pub max_close_retries: u32,
    /// Most queued events and control frames each (beyond, OPENs are refused and control
    /// frames dropped).
    pub max_queued: usize,
    /// Deliver bytes in [`ChannelEvent::Data`] (default) or leave them for
    /// [`Channels::recv`] with [`ChannelEvent::Readable`]. Undelivered bytes count against
    /// the receive window either way.
    pub data_events: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mtu: 1200,
            max_channels: 64,
            max_send_buffer: 256 * 1024,
            max_recv_buffer: 256 * 1024,
            max_out_of_order_segments: 512,
            max_sack_ranges: frame::MAX_SACK_RANGES,
            ack_delay: Duration::from_millis(25),
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            initial_cwnd: 10,
            max_cwnd: 4096,
            pacing: true,
            max_close_retries: 6,
            max_queued: 1024,
            data_events: true,
        }
    }
}

impl Config {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(256..=65535).contains(&self.mtu) {
            return Err(ConfigError::Mtu(self.mtu));
        }
        let checks = [
            (self.max_channels == 0, "max_channels"),
            (self.max_send_buffer == 0, "max_send_buffer"),
            (
                self.max_recv_buffer == 0 || self.max_recv_buffer > u32::MAX as usize,
                "max_recv_buffer",
            ),
            (
                self.max_out_of_order_segments == 0,
                "max_out_of_order_segments",
            ),
            (
                self.max_sack_ranges > frame::MAX_SACK_RANGES,
                "max_sack_ranges",
            ),
            (
                self.initial_cwnd == 0 || self.max_cwnd < self.initial_cwnd,
                "cwnd",
            ),
            (
                self.min_rto.is_zero() || self.max_rto < self.min_rto,
                "rto bounds",
            ),
            (self.max_queued == 0, "max_queued"),
        ];
        for (bad, what) in checks {
            if bad {
                return Err(ConfigError::Limit(what));
            }
        }
        Ok(())
    }

    /// Largest reliable segment payload: the MTU less a DATA header and room for an OPEN.
    pub fn segment_size(&self) -> usize {
        self.mtu - frame::DATA_HEADER_LEN - frame::MAX_OPEN_LEN
    }

    /// Largest unreliable message.
    pub fn max_unreliable_len(&self) -> usize {
        self.mtu - frame::UDATA_HEADER_LEN - frame::MAX_OPEN_LEN
    }
}
