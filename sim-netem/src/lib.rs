//! `sim-netem`: a deterministic discrete-event network simulator that drives sans-IO protocol
//! cores (MEF, quinn-proto, ...) over links with capacity, delay, jitter, loss, reordering,
//! duplication and corruption. Same seed, same results, bit for bit.

pub mod endpoint;
pub mod histogram;
pub mod link;
pub mod loss;
pub mod probe;
pub mod qdisc;
pub mod sim;
pub mod topology;

pub use endpoint::{Datagram, Endpoint, IP_UDP_OVERHEAD};
pub use histogram::DelayHistogram;
pub use link::{ConfigError, LinkConfig, LinkStats, MTU};
pub use loss::LossModel;
pub use probe::{ProbeConfig, ProbeRecord, ProbeSender, ProbeSink};
pub use qdisc::{DropTail, Enqueue, Packet, Qdisc};
pub use sim::{EndpointId, LinkId, NodeId, Sim, SimError, SimStats};
pub use topology::{Dumbbell, DumbbellBuilder, ParkingLot, ParkingLotBuilder};
