//! `sim-netem`: a deterministic discrete-event network simulator that drives sans-IO protocol
//! cores (MEF, quinn-proto, ...) over links with capacity, delay, jitter, loss, reordering,
//! duplication and corruption. Same seed, same results, bit for bit.

pub mod endpoint;
pub mod qdisc;

pub use endpoint::{Datagram, Endpoint, IP_UDP_OVERHEAD};
pub use qdisc::{DropTail, Enqueue, Packet, Qdisc};
