//! TCP splitting: a performance-enhancing proxy (PEP, RFC 3135 §2.3 "split connections") built
//! on smoltcp, so unmodified TCP applications get MEF's behaviour on the long-haul segment.
//!
//! ```text
//!  LAN client ──TCP──▶ [ingress router: TcpSplitter] ══ MEF stream ══▶ [egress router: TcpSplitter] ──TCP──▶ LAN server
//!                      terminates TCP, Accepted{client,server}   SplitHeader{client,server}   connect(client, server)
//! ```
//!
//! * [`TcpSplitter`]: sans-IO (no sockets, threads or clock; every input takes `now`). IPv4
//!   packets from the LAN TUN device go in ([`TcpSplitter::handle_ip_packet`]), packets for the
//!   TUN come out ([`TcpSplitter::poll_ip_packet`]), connection [`SplitEvent`]s and deadlines
//!   come out, and bytes are read and written per [`ConnId`]. It terminates TCP to *any*
//!   destination (smoltcp `any_ip`) and originates TCP from the original client address.
//! * [`SplitHeader`]: the framing at the start of each MEF stream naming the original end points.
//! * [`Relay`]: moves bytes between one split connection and any [`ByteStream`] (a MEF transport
//!   stream in the daemon, an in-memory pipe in tests) with bounded buffers, FIN and RST
//!   propagated.
//!
//! Semantics note (RFC 3135 §4.1): the ingress splitter acknowledges the client's data before the
//! far end has it, so TCP's end-to-end acknowledgement becomes hop-by-hop. A reset on one side is
//! propagated as a reset to the other side by the relay; a clean FIN is propagated as a FIN.

mod config;
mod device;
pub mod error;
pub mod header;
pub mod relay;
pub mod splitter;
mod stack;

pub use config::{SplitConfig, WhenFull};
pub use error::{FrameError, MalformedReason, RelayError, SplitError};
pub use header::SplitHeader;
pub use relay::{ByteStream, Relay, RelayConfig, RelayStatus, StreamRead};
pub use splitter::{ConnId, SplitEvent, SplitStats, TcpSplitter};
