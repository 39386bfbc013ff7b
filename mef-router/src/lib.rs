//! MEF router: the sans-IO data-plane core of an in-network rate-control router.
//!
//! Seed 003 ("MEF 原理") puts the congestion control *in the network*: the router next to the
//! bottleneck computes every connection's fair share from the start and writes it into the packets,
//! so senders pace at the right rate after one round trip instead of probing for it. This crate is
//! that router's per-link core, with no sockets and no clock (every input takes `now`), so the
//! simulator (`sim-netem`) and the daemon drive the same code:
//!
//! * [`RateController`] ([`controller`]): tracks the flows crossing one egress link and computes
//!   the fair rate μ by max-min water-filling (Charny's explicit-rate algorithm), corrected by the
//!   measured load and queue with the RCP law (Dukkipati & McKeown).
//! * [`FairQueue`] ([`fair_queue`]): Deficit Round Robin over per-flow queues (Shreedhar &
//!   Varghese 1995) with a shared byte limit and longest-queue drop, so MEF flows and Cubic/BBR
//!   cross traffic coexist and a flow that overruns only hurts itself.
//! * [`Policer`] ([`policer`]): a token bucket per MEF flow at μ plus slack, so a sender that
//!   ignores its rate cannot take others' shares.
//! * [`MefQdisc`] ([`qdisc`]): the three put together as a [`sim_netem::Qdisc`]: parse, register,
//!   stamp, police, enqueue; dequeue fairly.
//!
//! Panics: none on packet data. Every datagram either parses as a plausible MEF header
//! ([`mef_transport::wire::Packet::new_checked`] and [`is_plausible_mef`]) or is handled as
//! non-MEF traffic, whose bytes are never rewritten. Iteration orders are deterministic
//! (`BTreeMap`s, no hashing), so a simulation with the same seed repeats bit for bit.

pub mod bridge;
pub mod controller;
pub mod daemon;
pub mod error;
pub mod fair_queue;
pub mod flow;
pub mod history;
pub mod policer;
pub mod qdisc;
pub mod split;
pub mod tunnel;
pub mod waterfill;

pub use controller::{
    Constraint, ControllerConfig, FlowCounts, FlowEvent, FlowInfo, RateController,
};
pub use error::ConfigError;
pub use fair_queue::{Admit, FairQueue};
pub use flow::{FlowKey, is_plausible_mef};
pub use history::RateHistory;
pub use policer::{Policer, PolicerConfig, PolicerCounters, Verdict};
pub use qdisc::{FlowStats, MefQdisc, MefQdiscConfig, QdiscStats};
pub use waterfill::{WaterLevel, water_fill};
