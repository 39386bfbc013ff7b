//! A real-time userspace link emulator: `tc netem` in userspace, in the spirit of mahimahi.
//!
//! [`Emulator`] forwards Ethernet frames between two interfaces like a two-port bridge and
//! applies, per direction, the same [`LinkConfig`] semantics as the simulator: rate with exact
//! serialisation timing, delay, jitter, random loss (Bernoulli or Gilbert-Elliott, the
//! [`LossModel`](crate::LossModel) code itself), a drop-tail queue limit in bytes, reordering,
//! duplication and corruption. The per-direction decisions are the sans-IO [`Shaper`]; the
//! impairments after serialisation are the simulator links' own function.
//!
//! # Why AF_PACKET on veth, not TUN
//!
//! The emulator owns two interfaces, normally the two veth ends inside a dedicated emulator
//! network namespace (see [`crate::testbed`]), and opens one `AF_PACKET`/`SOCK_RAW`/`ETH_P_ALL`
//! socket on each (through `pnet`). A two-port bridge is transparent: neither end needs routes,
//! addresses or policy routing to steer traffic through the emulator, ARP and any protocol
//! pass, and the emulator namespace has no IP configuration at all. With TUN devices the
//! emulator would have to be an IP router with two TUN devices and routing rules that force
//! traffic through each, which is more configuration and an extra hop (TTL, ICMP redirects).
//! Each socket both receives on and sends to its interface; the kernel never loops a packet
//! socket's own transmissions back to it, so a frame the emulator sends out of B is not
//! received again on B. IPv6 should be disabled in the emulator namespace, so that the kernel's
//! own router solicitations are not forwarded (the testbed does).
//!
//! # Offloads
//!
//! veth devices offload segmentation and checksums by default: a TCP sender's veth hands the
//! peer 64 KB GSO super-frames with unfinished checksums, which an AF_PACKET socket sees as is
//! and cannot send on (too long), and whose checksums the receiver would reject. The emulator
//! therefore expects `tso`, `gso`, `gro` and `tx`/`rx` checksum offloads to be **off** on every
//! veth end of the path ([`disable_offloads`] runs `ethtool -K`; the testbed does it for every
//! device it creates). Frames longer than `mtu + 14` that still arrive are counted in
//! [`DirectionStats::oversize`] and dropped, never segmented.
//!
//! # Timing
//!
//! Per direction, a receive thread timestamps each frame, asks the [`Shaper`] for its verdict
//! and hands delivered frames to a release thread through a channel; the release thread keeps
//! a deadline heap, sleeps until `spin` (100 µs by default) before the earliest deadline (with
//! a 1 ns timer slack) and spins the rest, then sends. The rate counts IP bytes (frame length
//! minus the 14-byte Ethernet header), the same "wire bytes" the simulator counts.
//!
//! # Counters and shutdown
//!
//! [`Emulator::stats`] reads a direction's counters at any time; [`Emulator::stop`] (or
//! dropping the emulator) stops and joins all four threads within about 50 ms.

mod shaper;

#[cfg(target_os = "linux")]
mod calibrate;

#[cfg(target_os = "linux")]
mod engine;

pub use shaper::{Shaper, Verdict};

#[cfg(target_os = "linux")]
pub use calibrate::{
    CalibrationError, CalibrationOptions, CalibrationReport, DelayCheck, calibrate, check_delay,
    check_loss, check_rate, search_sustained,
};
#[cfg(target_os = "linux")]
pub use engine::{Emulator, EmulatorError, disable_offloads};
#[cfg(target_os = "linux")]
pub(crate) use engine::{enter_netns, make_realtime};

use std::time::Duration;

use crate::link::LinkConfig;

/// How long before a deadline the release threads stop sleeping and spin, by default.
///
/// 20 µs rather than mahimahi-style 100 µs: the threads run at `SCHED_FIFO` with a 1 ns timer
/// slack, so a sleep wakes within a few µs, and a `SCHED_FIFO` thread spinning 100 µs out of
/// every 121 µs (one 1500-byte packet at 100 Mbit/s) would take most of a core from the
/// applications under test on a small machine.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// Which way a frame travels through the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received on interface A, sent out of interface B.
    AtoB,
    /// Received on interface B, sent out of interface A.
    BtoA,
}

/// Configuration of an `Emulator`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmulatorConfig {
    /// The link from A to B.
    pub a_to_b: LinkConfig,
    /// The link from B to A.
    pub b_to_a: LinkConfig,
    /// Seed of the random decisions (each direction derives its own stream from it).
    pub seed: u64,
    /// How long before a deadline the release thread stops sleeping and spins.
    pub spin: Duration,
    /// Largest IP packet forwarded; longer frames are counted as oversize and dropped.
    pub mtu: usize,
    /// `SCHED_FIFO` priority of the emulator threads (set with `chrt`, best effort); `None`
    /// leaves them at normal priority.
    pub rt_priority: Option<u8>,
}

impl EmulatorConfig {
    /// The same link in both directions, seed 0, [`DEFAULT_SPIN`], MTU 1500, `SCHED_FIFO`
    /// priority 20.
    pub fn symmetric(link: LinkConfig) -> Self {
        Self {
            a_to_b: link.clone(),
            b_to_a: link,
            seed: 0,
            spin: DEFAULT_SPIN,
            mtu: crate::MTU,
            rt_priority: Some(20),
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The link of one direction.
    pub fn link(&self, dir: Direction) -> &LinkConfig {
        match dir {
            Direction::AtoB => &self.a_to_b,
            Direction::BtoA => &self.b_to_a,
        }
    }
}

/// Counters of one direction. Byte counts are IP bytes (frame length minus 14).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Frames received on the ingress interface.
    pub received: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Frames sent out of the egress interface (duplicates included).
    pub forwarded: u64,
    /// Bytes sent.
    pub forwarded_bytes: u64,
    /// Frames dropped because the queue was full (drop-tail).
    pub queue_drops: u64,
    /// Frames lost by the random loss model.
    pub lost: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Frames held back by the reorder delay.
    pub reordered: u64,
    /// Frames with one bit flipped.
    pub corrupted: u64,
    /// Frames longer than the MTU (offloads left on) or shorter than an Ethernet header.
    pub oversize: u64,
    /// Frames the egress socket refused to send.
    pub send_errors: u64,
    /// Largest lateness of a release behind its deadline, in nanoseconds.
    pub max_late_ns: u64,
}
