//! [`MefQdisc`]: the router's egress for one link, as a [`sim_netem::Qdisc`].
//!
//! Per arriving datagram, in order:
//! 1. run the controller's control step if its interval has passed;
//! 2. parse the UDP payload with [`Packet::new_checked`]; if it is not a (plausible,
//!    [`is_plausible_mef`]) MEF header the datagram is cross traffic (a quinn Cubic/BBR flow,
//!    anything): account it and go to 5;
//! 3. register / refresh / release the MEF flow; a new flow makes μ be recomputed *now*, so this
//!    very packet carries the new flow's fair share (seed 003 "MEF 原理");
//! 4. police the flow at the highest μ of its feedback window plus slack (dropped packets are
//!    counted as *policed*), then stamp the rate into the header ([`Packet::stamp`] only ever
//!    lowers it): μ, or less for a newcomer joining a burst of arrivals or a flow draining its
//!    own standing queue ([`RateController::stamp_kbps`]);
//! 5. enqueue into the DRR fair queue; overflow drops come from the longest queue.
//!
//! `dequeue` serves the fair queue (work-conserving) and feeds the MEF backlog back to the
//! controller. Nothing here reads a clock or panics on packet contents.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mef_transport::wire::{Header, Packet, PacketType};
use sim_netem::{Enqueue, Qdisc};

use crate::controller::{ControllerConfig, FlowEvent, RateController};
use crate::error::ConfigError;
use crate::fair_queue::{Admit, FairQueue};
use crate::flow::{FlowKey, is_plausible_mef};
use crate::policer::{Policer, PolicerConfig, Verdict};

/// Configuration of a [`MefQdisc`].
#[derive(Debug, Clone, PartialEq)]
pub struct MefQdiscConfig {
    /// The rate controller: capacity (bits/s of wire bytes), γ, α, β, timeouts. See
    /// [`ControllerConfig`] for every field and default (100 Mbit/s, γ 0.99, α 0.4, β 0.4).
    pub controller: ControllerConfig,
    /// The policer: slack (5 %), burst (10 ms + 8 packets), floor (200 kbit/s).
    pub policer: PolicerConfig,
    /// Whether MEF flows are policed. Default true.
    pub police: bool,
    /// Shared buffer in wire bytes. Default 150 000 (100 × 1500-byte packets, like
    /// `sim_netem::LinkConfig::default`).
    pub buffer_bytes: usize,
    /// DRR quantum in wire bytes. Default 1500 (one MTU).
    pub quantum_bytes: usize,
    /// Most μ samples kept; when full, every other sample is dropped and the sampling interval
    /// doubles, so the whole run stays covered. Default 4096.
    pub max_mu_samples: usize,
    /// Most per-flow entries kept in [`QdiscStats::flows`]. When full, entries of flows the
    /// controller no longer tracks and that have nothing queued are evicted, so a long-running
    /// daemon's memory follows the live flows, not every flow ever seen. Default 4096.
    pub max_flow_stats: usize,
}

impl Default for MefQdiscConfig {
    fn default() -> Self {
        Self {
            controller: ControllerConfig::default(),
            policer: PolicerConfig::default(),
            police: true,
            buffer_bytes: 150_000,
            quantum_bytes: 1500,
            max_mu_samples: 4096,
            max_flow_stats: 4096,
        }
    }
}

impl MefQdiscConfig {
    /// The defaults for a link of `capacity_bps` with a buffer of `buffer_bytes`.
    pub fn new(capacity_bps: u64, buffer_bytes: usize) -> Self {
        Self {
            controller: ControllerConfig::with_capacity(capacity_bps),
            buffer_bytes,
            ..Self::default()
        }
    }

    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.controller.validate()?;
        self.policer.validate()?;
        if self.buffer_bytes == 0 {
            return Err(ConfigError::ZeroSize("buffer_bytes"));
        }
        if self.quantum_bytes == 0 {
            return Err(ConfigError::ZeroSize("quantum_bytes"));
        }
        if self.max_mu_samples < 2 {
            return Err(ConfigError::ZeroSize("max_mu_samples (at least 2)"));
        }
        if self.max_flow_stats == 0 {
            return Err(ConfigError::ZeroSize("max_flow_stats"));
        }
        Ok(())
    }
}

/// Counters of one flow at this qdisc.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets offered.
    pub packets_in: u64,
    /// Wire bytes offered.
    pub bytes_in: u64,
    /// Packets sent on (dequeued).
    pub packets_out: u64,
    /// Wire bytes sent on.
    pub bytes_out: u64,
    /// Packets dropped because the shared buffer was full (this flow's queue was the longest).
    pub overflow_drops: u64,
    /// Wire bytes of `overflow_drops`.
    pub overflow_drop_bytes: u64,
    /// Packets dropped by the policer.
    pub policed_drops: u64,
    /// Wire bytes of `policed_drops`.
    pub policed_drop_bytes: u64,
    /// MEF packets stamped.
    pub stamps: u64,
    /// The last rate stamped, kbit/s (0 if never).
    pub last_stamp_kbps: u32,
}

/// Statistics of a [`MefQdisc`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QdiscStats {
    /// Per-flow counters (in key order): live flows, plus finished ones until
    /// [`MefQdiscConfig::max_flow_stats`] forces their eviction.
    pub flows: BTreeMap<FlowKey, FlowStats>,
    /// Per-flow entries evicted to respect [`MefQdiscConfig::max_flow_stats`].
    pub flows_evicted: u64,
    /// MEF packets offered.
    pub mef_packets: u64,
    /// Non-MEF packets offered.
    pub other_packets: u64,
    /// MEF packets stamped.
    pub stamped: u64,
    /// Flows registered (new MEF flows).
    pub registered: u64,
    /// MEF flows released by `CLOSING`.
    pub closed: u64,
    /// Overflow drops (all flows).
    pub overflow_drops: u64,
    /// Policer drops (all flows).
    pub policed_drops: u64,
    /// `(time, μ in bits/s)` samples, one per control step (decimated when full).
    pub mu_samples: Vec<(Instant, f64)>,
}

impl QdiscStats {
    /// Total drops of any kind.
    pub fn drops(&self) -> u64 {
        self.overflow_drops + self.policed_drops
    }
}

/// What happened to an arriving packet before the fair queue.
enum Admission {
    /// A MEF packet, stamped and allowed by the policer.
    Mef(FlowKey),
    /// A MEF packet dropped by the policer.
    Policed,
    /// Not a MEF packet.
    NotMef,
}

/// The MEF router egress: rate controller + policer + DRR fair queue (see the module docs).
#[derive(Debug)]
pub struct MefQdisc {
    controller: RateController,
    policer: Policer,
    fq: FairQueue<FlowKey, sim_netem::Packet>,
    police: bool,
    mef_backlog: usize,
    stats: QdiscStats,
    max_samples: usize,
    max_flow_stats: usize,
    sample_every: Duration,
    last_sample: Option<Instant>,
}

impl MefQdisc {
    /// Builds the qdisc. Fails if the configuration is out of range.
    pub fn new(cfg: MefQdiscConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            controller: RateController::new(cfg.controller)?,
            policer: Policer::new(cfg.policer)?,
            fq: FairQueue::new(cfg.buffer_bytes, cfg.quantum_bytes),
            police: cfg.police,
            mef_backlog: 0,
            stats: QdiscStats::default(),
            max_samples: cfg.max_mu_samples,
            max_flow_stats: cfg.max_flow_stats,
            sample_every: Duration::ZERO,
            last_sample: None,
        })
    }

    /// Changes the capacity the controller shares out (see
    /// [`RateController::set_capacity_bps`]).
    pub fn set_capacity_bps(&mut self, capacity_bps: u64) {
        self.controller.set_capacity_bps(capacity_bps);
    }

    /// The rate controller (μ, allocations, flows).
    pub fn controller(&self) -> &RateController {
        &self.controller
    }

    /// The policer (per-flow counters).
    pub fn policer(&self) -> &Policer {
        &self.policer
    }

    /// The fair queue.
    pub fn fair_queue(&self) -> &FairQueue<FlowKey, sim_netem::Packet> {
        &self.fq
    }

    /// Statistics.
    pub fn stats(&self) -> &QdiscStats {
        &self.stats
    }

    /// The current fair rate μ in bits/s.
    pub fn fair_rate_bps(&self) -> f64 {
        self.controller.fair_rate_bps()
    }

    /// Bytes queued by MEF flows.
    pub fn mef_backlog_bytes(&self) -> usize {
        self.mef_backlog
    }

    /// Runs the controller's control step if due (also called on every enqueue and dequeue;
    /// a daemon may call it from a timer at [`RateController::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        let fq = &self.fq;
        if self.controller.handle_timeout(now, &|k| fq.flow_backlog(k)) {
            self.sample_mu(now);
            self.policer.expire(now);
        }
    }

    fn sample_mu(&mut self, now: Instant) {
        if let Some(last) = self.last_sample
            && now.saturating_duration_since(last) < self.sample_every
        {
            return;
        }
        let s = &mut self.stats.mu_samples;
        if s.len() >= self.max_samples {
            let mut i = 0;
            s.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.sample_every = (self.sample_every * 2).max(self.controller.control_interval());
        }
        s.push((now, self.controller.fair_rate_bps()));
        self.last_sample = Some(now);
    }

    fn flow_stats(&mut self, key: FlowKey) -> &mut FlowStats {
        if self.stats.flows.len() >= self.max_flow_stats && !self.stats.flows.contains_key(&key) {
            let (controller, fq) = (&self.controller, &self.fq);
            let before = self.stats.flows.len();
            self.stats
                .flows
                .retain(|k, _| controller.flow(k).is_some() || fq.flow_backlog(k) > 0);
            self.stats.flows_evicted += (before - self.stats.flows.len()) as u64;
        }
        self.stats.flows.entry(key).or_default()
    }

    /// Handles a MEF packet up to (not including) the enqueue.
    fn admit_mef(&mut self, now: Instant, pkt: &mut sim_netem::Packet) -> Admission {
        let (src, dst) = (pkt.dgram.src, pkt.dgram.dst);
        let wire = pkt.wire_len();
        let mut view = match Packet::new_checked(&mut pkt.dgram.payload[..]) {
            Ok(view) if is_plausible_mef(&view) => view,
            _ => return Admission::NotMef,
        };
        let hdr = Header::parse(&view);
        let key = FlowKey::Mef {
            src,
            dst,
            conn_id: hdr.conn_id,
        };
        self.stats.mef_packets += 1;
        match self.controller.on_mef_packet(now, src, dst, &hdr) {
            FlowEvent::Registered => self.stats.registered += 1,
            FlowEvent::Closed => self.stats.closed += 1,
            FlowEvent::Updated | FlowEvent::Ignored => {}
        }
        let rtt = (hdr.rtt_us > 0).then(|| Duration::from_micros(u64::from(hdr.rtt_us)));
        let allowed = if hdr.packet_type == PacketType::Reset {
            0.0 // the policer's floor
        } else {
            self.controller.policing_rate_bps(now, &key, rtt)
        };
        if self.police && self.policer.police(now, key, wire, allowed) == Verdict::Exceed {
            self.stats.policed_drops += 1;
            self.controller.record_policed(now, &key);
            let fs = self.flow_stats(key);
            fs.packets_in += 1;
            fs.bytes_in += wire as u64;
            fs.policed_drops += 1;
            fs.policed_drop_bytes += wire as u64;
            return Admission::Policed;
        }
        let own_backlog = self.fq.flow_backlog(&key);
        let kbps = self
            .controller
            .stamp_kbps(now, &key, hdr.packet_type, own_backlog);
        view.stamp(kbps);
        self.stats.stamped += 1;
        let fs = self.flow_stats(key);
        fs.packets_in += 1;
        fs.bytes_in += wire as u64;
        fs.stamps += 1;
        fs.last_stamp_kbps = kbps;
        self.controller.record_admitted(&key, wire);
        Admission::Mef(key)
    }

    fn on_removed(&mut self, key: &FlowKey, len: usize) {
        if key.is_mef() {
            self.mef_backlog = self.mef_backlog.saturating_sub(len);
            self.controller.observe_mef_backlog(self.mef_backlog);
        }
    }
}

impl Qdisc for MefQdisc {
    fn enqueue(&mut self, now: Instant, mut pkt: sim_netem::Packet) -> Enqueue {
        self.handle_timeout(now);
        let wire = pkt.wire_len();
        let key = match self.admit_mef(now, &mut pkt) {
            Admission::Mef(key) => key,
            Admission::Policed => return Enqueue::Dropped(pkt),
            Admission::NotMef => {
                self.stats.other_packets += 1;
                let key = self
                    .controller
                    .on_other_packet(now, pkt.dgram.src, pkt.dgram.dst);
                self.controller.record_admitted(&key, wire);
                let fs = self.flow_stats(key);
                fs.packets_in += 1;
                fs.bytes_in += wire as u64;
                key
            }
        };
        match self.fq.enqueue(key, pkt, wire) {
            Admit::Queued => {
                if key.is_mef() {
                    self.mef_backlog += wire;
                    self.controller.observe_mef_backlog(self.mef_backlog);
                }
                Enqueue::Queued
            }
            Admit::Rejected(pkt) => {
                self.controller.record_dropped(&key, wire);
                self.stats.overflow_drops += 1;
                let fs = self.flow_stats(key);
                fs.overflow_drops += 1;
                fs.overflow_drop_bytes += wire as u64;
                Enqueue::Dropped(pkt)
            }
            Admit::QueuedWithDrops(victims) => {
                if key.is_mef() {
                    self.mef_backlog += wire;
                }
                let mut out = Vec::with_capacity(victims.len());
                for (vk, vp) in victims {
                    let len = vp.wire_len();
                    self.on_removed(&vk, len);
                    self.controller.record_dropped(&vk, len);
                    self.stats.overflow_drops += 1;
                    let fs = self.flow_stats(vk);
                    fs.overflow_drops += 1;
                    fs.overflow_drop_bytes += len as u64;
                    out.push(vp);
                }
                self.controller.observe_mef_backlog(self.mef_backlog);
                if out.is_empty() {
                    Enqueue::Queued
                } else {
                    Enqueue::QueuedWithDrops(out)
                }
            }
        }
    }

    fn dequeue(&mut self, now: Instant) -> Option<sim_netem::Packet> {
        self.handle_timeout(now);
        let (key, pkt, len) = self.fq.dequeue()?;
        self.on_removed(&key, len);
        let fs = self.flow_stats(key);
        fs.packets_out += 1;
        fs.bytes_out += len as u64;
        Some(pkt)
    }

    fn backlog_bytes(&self) -> usize {
        self.fq.backlog_bytes()
    }

    fn backlog_packets(&self) -> usize {
        self.fq.backlog_packets()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mef_transport::wire::HEADER_LEN;
    use mef_transport::wire::header::{UNLIMITED_KBPS, flags};
    use sim_netem::Datagram;
    use std::net::SocketAddr;

    fn sock(host: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, host], port))
    }

    fn mef_packet(id: u64, port: u16, ty: PacketType, fl: u8, at: Instant) -> sim_netem::Packet {
        let mut payload = vec![0u8; 1200];
        Header {
            packet_type: ty,
            flags: fl,
            hops: 0,
            conn_id: u64::from(port),
            packet_number: id,
            demand_kbps: UNLIMITED_KBPS,
            current_rate_kbps: 0,
            stamp_kbps: UNLIMITED_KBPS,
            rtt_us: 20_000,
        }
        .emit(&mut payload);
        sim_netem::Packet {
            dgram: Datagram {
                src: sock(1, port),
                dst: sock(2, 443),
                payload,
            },
            id,
            enqueued_at: at,
        }
    }

    #[test]
    fn stamps_mef_and_leaves_other_traffic_untouched() {
        let mut q = MefQdisc::new(MefQdiscConfig::default()).expect("valid");
        let t0 = Instant::now();
        assert!(matches!(
            q.enqueue(t0, mef_packet(1, 1000, PacketType::Initial, 0, t0)),
            Enqueue::Queued
        ));
        let other = vec![0x4d, 0x12, 0xff, 0x00, 7, 7, 7];
        let udp = sim_netem::Packet {
            dgram: Datagram {
                src: sock(3, 5000),
                dst: sock(2, 443),
                payload: other.clone(),
            },
            id: 2,
            enqueued_at: t0,
        };
        assert!(matches!(q.enqueue(t0, udp), Enqueue::Queued));
        // The second flow joins once the first is past its handshake (a join during it would
        // be a burst, see `RateController::stamp_kbps`).
        let t1 = t0 + Duration::from_millis(50);
        assert!(matches!(
            q.enqueue(t1, mef_packet(3, 1001, PacketType::Initial, 0, t1)),
            Enqueue::Queued
        ));
        assert_eq!(q.backlog_packets(), 3);
        let mut out = Vec::new();
        while let Some(p) = q.dequeue(t1) {
            out.push(p);
        }
        assert_eq!(out.len(), 3);
        let first = Header::decode(&out[0].dgram.payload).expect("MEF");
        // The first flow was alone when its Initial arrived: the whole γC.
        assert_eq!(first.stamp_kbps, 99_000);
        assert_eq!(first.hops, 1);
        assert_ne!(first.flags & flags::STAMPED, 0);
        let udp_out = out.iter().find(|p| p.id == 2).expect("udp");
        assert_eq!(
            udp_out.dgram.payload, other,
            "non-MEF bytes are never rewritten"
        );
        let third = out.iter().find(|p| p.id == 3).expect("second flow");
        let h = Header::decode(&third.dgram.payload[..HEADER_LEN]).expect("MEF");
        // Its fair share: half of γC (less the few kbit/s the UDP flow is counted at).
        assert!(
            (49_400..=49_500).contains(&h.stamp_kbps),
            "the second flow's first stamp is its fair share: {}",
            h.stamp_kbps
        );
        let st = q.stats();
        assert_eq!(
            (st.mef_packets, st.other_packets, st.stamped, st.registered),
            (2, 1, 2, 2)
        );
        assert_eq!(st.drops(), 0);
        assert_eq!(q.controller().flow_counts().mef, 2);
        // CLOSING releases the share at once.
        let close = mef_packet(4, 1001, PacketType::Data, flags::CLOSING, t1);
        assert!(matches!(q.enqueue(t1, close), Enqueue::Queued));
        assert_eq!(q.controller().flow_counts().mef, 1);
        assert_eq!(q.stats().closed, 1);
    }

    #[test]
    fn polices_a_sender_far_above_its_rate_and_samples_mu() {
        let cfg = MefQdiscConfig::new(10_000_000, 1_000_000);
        let mut q = MefQdisc::new(cfg).expect("valid");
        let t0 = Instant::now();
        q.enqueue(t0, mef_packet(0, 1000, PacketType::Initial, 0, t0));
        // 1228-byte packets every 100 µs = 98 Mbit/s against a 9.9 Mbit/s allocation.
        let mut dropped = 0;
        for i in 1..2000u64 {
            let t = t0 + Duration::from_micros(100 * i);
            if let Enqueue::Dropped(_) = q.enqueue(t, mef_packet(i, 1000, PacketType::Data, 0, t)) {
                dropped += 1;
            }
            q.dequeue(t);
        }
        assert!(dropped > 1500, "{dropped} dropped");
        assert_eq!(q.stats().policed_drops, dropped);
        assert!(!q.stats().mu_samples.is_empty());
        assert!(
            MefQdisc::new(MefQdiscConfig {
                buffer_bytes: 0,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn per_flow_statistics_stay_bounded_as_flows_come_and_go() {
        let cfg = MefQdiscConfig {
            max_flow_stats: 8,
            ..MefQdiscConfig::default()
        };
        let mut q = MefQdisc::new(cfg).expect("valid");
        let mut t = Instant::now();
        for i in 0..100u16 {
            // Each flow sends one packet, is drained, then closes: the controller forgets it.
            let _ = q.enqueue(
                t,
                mef_packet(u64::from(i), 2000 + i, PacketType::Initial, 0, t),
            );
            while q.dequeue(t).is_some() {}
            let _ = q.enqueue(
                t,
                mef_packet(
                    u64::from(i) + 1000,
                    2000 + i,
                    PacketType::Data,
                    flags::CLOSING,
                    t,
                ),
            );
            while q.dequeue(t).is_some() {}
            t += Duration::from_millis(5);
        }
        assert!(
            q.stats().flows.len() <= 8,
            "{} entries",
            q.stats().flows.len()
        );
        assert!(q.stats().flows_evicted >= 90);
    }
}
