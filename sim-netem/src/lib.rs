//! `sim-netem`: a deterministic discrete-event network simulator that drives sans-IO protocol
//! cores (MEF, quinn-proto, ...) over links with capacity, delay, jitter, loss, reordering,
//! duplication and corruption. Same seed, same results, bit for bit.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use sim_netem::{DumbbellBuilder, LinkConfig, ProbeConfig, ProbeSender, ProbeSink, Sim};
//!
//! let mut sim = Sim::new(42);
//! let bottleneck = LinkConfig::new(100_000_000, Duration::from_millis(20)); // 100 Mbit/s
//! let d = DumbbellBuilder::new(1, bottleneck).build_droptail(&mut sim)?;
//! let sink = sim.attach(d.receivers[0], 9000, Box::new(ProbeSink::new(sim.epoch())));
//! let dst = SocketAddr::new(d.receiver_addrs[0].into(), 9000);
//! let probe = ProbeConfig::new(dst, 10_000_000).with_count(1000); // 10 Mbit/s CBR
//! sim.attach(d.senders[0], 0, Box::new(ProbeSender::new(sim.epoch(), probe)));
//! sim.run_for(Duration::from_secs(2));
//! let sink = sim.endpoint::<ProbeSink>(sink).expect("a ProbeSink");
//! assert_eq!(sink.received(), 1000);
//! assert!(sink.delays().min() > Some(Duration::from_millis(20)));
//! # Ok::<(), sim_netem::SimError>(())
//! ```
//!
//! # The model
//!
//! **Time.** [`Sim`] captures one `Instant` (the epoch) at construction and keeps virtual time
//! as an integer number of nanoseconds since it; endpoints see `epoch + offset`. Events (link
//! transmission ends, packet arrivals, endpoint timers) sit in a binary heap keyed by
//! `(time, sequence number)`, so events at the same nanosecond run in the order they were
//! scheduled. Nothing reads the wall clock.
//!
//! **Endpoints** ([`Endpoint`]) are driven the quinn-proto way: after every input
//! (`handle_datagram`, `handle_timeout`, attach, [`Sim::with_endpoint`], [`Sim::wake`]) the
//! simulator drains `poll_transmit` until `None`, then arms one timer at `poll_timeout()`
//! (a deadline in the past fires at the current time; an endpoint asking for more than
//! a million timeouts at one instant panics with a message naming it). A datagram whose `src` is
//! unspecified gets the endpoint's bound address. Datagrams addressed to the sending host are
//! delivered through the event queue at the same instant (loopback).
//!
//! **Routing.** Hosts have one IPv4 address and many ports; routers forward. Each node sends
//! a packet for host address `dst` over the first link of a shortest (hop-count) path, ties
//! broken by link creation order; hosts never forward. [`Sim::set_route`] overrides it.
//! Packets without a route, or to a port nobody is bound to, are counted in [`SimStats`].
//!
//! **A link** ([`LinkConfig`]) is a queue discipline ([`Qdisc`]) feeding a serialiser:
//! 1. *Enqueue.* The packet is offered to the qdisc; a packet the qdisc rejects or evicts is a
//!    **queue drop** ([`LinkStats::queue_drops`], the "bottleneck drops" of a benchmark). The
//!    queue limit belongs to the qdisc (a [`DropTail`] of `queue_limit_bytes` by default).
//! 2. *Serialise.* When idle the link dequeues the next packet; it occupies the link for
//!    `wire_len·8/rate` (wire length = payload + 28 bytes of IPv4/UDP header). Fractional
//!    nanoseconds are carried from one back-to-back packet to the next, so a saturated link
//!    delivers exactly its rate over any horizon. Queueing delay (enqueue to start of
//!    serialisation) is recorded per packet in a [`DelayHistogram`].
//! 3. *Impair*, once serialisation ends, in this order, each from the link's own random stream:
//!    **random loss** ([`LossModel`]; the packet consumed capacity, and counts in
//!    `random_losses`, never in `queue_drops`), **corruption** (one uniformly chosen payload bit
//!    flipped), **duplication** (a second copy delivered right after the first).
//! 4. *Propagate.* Delivery at `tx_end + delay + U[-jitter, +jitter]` (total never negative).
//!    Jitter never reorders: a packet is not delivered before the previous one. A packet picked
//!    for **reordering** (probability `reorder`) is instead held back an extra `reorder_delay`
//!    and does not hold later packets back, so they overtake it.
//!
//! **Determinism.** Every random draw comes from `ChaCha8Rng` streams derived from the seed
//! given to [`Sim::new`]: one per link (from the seed and the link's index) and
//! [`Sim::rng_for`] for callers. Nothing depends on hash-map iteration order, addresses in
//! memory or the wall clock, so the same seed, topology (built in the same order) and
//! endpoints give bit-identical statistics and traces. (Endpoints with their own unseeded
//! randomness, such as quinn's BBR, break this on their own.)
//!
//! # Modules
//! - [`sim`]: [`Sim`], ids, errors, simulation-wide counters;
//! - [`link`]: [`LinkConfig`], [`LinkStats`]; [`loss`]: [`LossModel`];
//! - [`endpoint`], [`qdisc`]: what plugs in;
//! - [`topology`]: [`DumbbellBuilder`], [`ParkingLotBuilder`];
//! - [`probe`]: [`ProbeSender`] and [`ProbeSink`], constant-bit-rate measurement endpoints;
//! - [`histogram`]: [`DelayHistogram`], bounded-memory quantiles.

pub mod endpoint;
pub mod histogram;
pub mod link;
pub mod loss;
pub mod probe;
pub mod qdisc;
pub mod realtime;
pub mod sim;
#[cfg(target_os = "linux")]
pub mod testbed;
pub mod topology;
pub mod units;

pub use endpoint::{Datagram, Endpoint, IP_UDP_OVERHEAD};
pub use histogram::DelayHistogram;
pub use link::{ConfigError, LinkConfig, LinkStats, MTU};
pub use loss::LossModel;
pub use probe::{ProbeConfig, ProbeRecord, ProbeSender, ProbeSink};
pub use qdisc::{DropTail, Enqueue, Packet, Qdisc};
pub use sim::{EndpointId, LinkId, NodeId, Sim, SimError, SimStats};
pub use topology::{Dumbbell, DumbbellBuilder, ParkingLot, ParkingLotBuilder};
