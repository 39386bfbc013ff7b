//! Ready-made topologies: the [`Dumbbell`] (n sender/receiver pairs across one bottleneck)
//! and the [`ParkingLot`] (a chain of bottlenecks, hosts at any router).
//!
//! Bottleneck links get their queue from a caller-supplied factory
//! `FnMut(&LinkConfig) -> Box<dyn Qdisc>` (so the MEF router's scheduler can be plugged in);
//! every other link gets a [`DropTail`] of its `queue_limit_bytes`.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::link::LinkConfig;
use crate::qdisc::{DropTail, Qdisc};
use crate::sim::{LinkId, NodeId, Sim, SimError};

/// The default access link: 10 Gbit/s, 10 µs, a 10 MB queue (never the bottleneck).
pub fn default_access() -> LinkConfig {
    LinkConfig::default()
        .with_rate(10_000_000_000)
        .with_delay(Duration::from_micros(10))
        .with_queue_limit(10_000_000)
}

/// A qdisc factory giving a [`DropTail`] of the configuration's queue limit.
pub fn droptail_factory(cfg: &LinkConfig) -> Box<dyn Qdisc> {
    Box::new(DropTail::new(cfg.queue_limit_bytes))
}

/// The address `10.net.(i / 250).(i % 250 + 1)`.
fn numbered_addr(net: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, net, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Builds a dumbbell: senders `S_i` — router `L` — bottleneck — router `R` — receivers `D_i`.
#[derive(Debug, Clone)]
pub struct DumbbellBuilder {
    pairs: usize,
    bottleneck: LinkConfig,
    reverse: Option<LinkConfig>,
    access: LinkConfig,
    rtts: Option<Vec<Duration>>,
}

/// What [`DumbbellBuilder::build`] created.
#[derive(Debug, Clone)]
pub struct Dumbbell {
    /// Sender hosts (left side), one per pair.
    pub senders: Vec<NodeId>,
    /// Receiver hosts (right side), one per pair.
    pub receivers: Vec<NodeId>,
    /// Sender addresses: `10.1.x.y`.
    pub sender_addrs: Vec<Ipv4Addr>,
    /// Receiver addresses: `10.2.x.y`.
    pub receiver_addrs: Vec<Ipv4Addr>,
    /// Router L (senders' side).
    pub left: NodeId,
    /// Router R (receivers' side).
    pub right: NodeId,
    /// The bottleneck L → R (data direction).
    pub bottleneck: LinkId,
    /// The link R → L (acknowledgement direction).
    pub reverse: LinkId,
    /// Per pair, the sender's access links `(S_i → L, L → S_i)`.
    pub sender_access: Vec<(LinkId, LinkId)>,
    /// Per pair, the receiver's access links `(R → D_i, D_i → R)`.
    pub receiver_access: Vec<(LinkId, LinkId)>,
    /// Per pair, the round-trip propagation delay (serialisation and queueing excluded).
    pub rtts: Vec<Duration>,
}

impl DumbbellBuilder {
    /// `pairs` sender/receiver pairs across `bottleneck` (also used for R → L unless
    /// [`reverse_bottleneck`](Self::reverse_bottleneck) is set), with [`default_access`] links.
    pub fn new(pairs: usize, bottleneck: LinkConfig) -> Self {
        Self {
            pairs,
            bottleneck,
            reverse: None,
            access: default_access(),
            rtts: None,
        }
    }

    /// Sets the R → L link configuration.
    pub fn reverse_bottleneck(mut self, cfg: LinkConfig) -> Self {
        self.reverse = Some(cfg);
        self
    }

    /// Sets the access link configuration (both sides, both directions).
    pub fn access(mut self, cfg: LinkConfig) -> Self {
        self.access = cfg;
        self
    }

    /// Gives every pair the same round-trip propagation delay (see [`rtts`](Self::rtts)).
    pub fn rtt(self, rtt: Duration) -> Self {
        let n = self.pairs;
        self.rtts(vec![rtt; n])
    }

    /// Per-pair round-trip propagation delays. Pair `i`'s sender access links get one-way
    /// delay `(rtt_i − bottleneck.delay − reverse.delay)/2 − access.delay`; receiver access
    /// links keep `access.delay`. Missing entries keep the access delay.
    pub fn rtts(mut self, rtts: Vec<Duration>) -> Self {
        self.rtts = Some(rtts);
        self
    }

    /// Creates the nodes and links in `sim`. `qdisc` builds the queue of both bottleneck
    /// directions (called L → R first).
    pub fn build(
        self,
        sim: &mut Sim,
        mut qdisc: impl FnMut(&LinkConfig) -> Box<dyn Qdisc>,
    ) -> Result<Dumbbell, SimError> {
        let reverse_cfg = self
            .reverse
            .clone()
            .unwrap_or_else(|| self.bottleneck.clone());
        let core = self.bottleneck.delay + reverse_cfg.delay;
        let left = sim.add_router("L");
        let right = sim.add_router("R");
        let q = qdisc(&self.bottleneck);
        let bottleneck = sim.try_add_link(left, right, self.bottleneck.clone(), q)?;
        let q = qdisc(&reverse_cfg);
        let reverse = sim.try_add_link(right, left, reverse_cfg, q)?;
        let mut d = Dumbbell {
            senders: Vec::new(),
            receivers: Vec::new(),
            sender_addrs: Vec::new(),
            receiver_addrs: Vec::new(),
            left,
            right,
            bottleneck,
            reverse,
            sender_access: Vec::new(),
            receiver_access: Vec::new(),
            rtts: Vec::new(),
        };
        for i in 0..self.pairs {
            let mut sender_access = self.access.clone();
            if let Some(&rtt) = self.rtts.as_ref().and_then(|r| r.get(i)) {
                let min = core + 2 * self.access.delay;
                if rtt < min {
                    return Err(SimError::RttTooSmall { rtt, min });
                }
                sender_access.delay = (rtt - core) / 2 - self.access.delay;
            }
            let (sa, ra) = (numbered_addr(1, i), numbered_addr(2, i));
            let s = sim.try_add_host(sa)?;
            let r = sim.try_add_host(ra)?;
            let up = droptail_link(sim, s, left, &sender_access)?;
            let down = droptail_link(sim, left, s, &sender_access)?;
            let r_down = droptail_link(sim, right, r, &self.access)?;
            let r_up = droptail_link(sim, r, right, &self.access)?;
            d.rtts
                .push(core + 2 * (sender_access.delay + self.access.delay));
            d.senders.push(s);
            d.receivers.push(r);
            d.sender_addrs.push(sa);
            d.receiver_addrs.push(ra);
            d.sender_access.push((up, down));
            d.receiver_access.push((r_down, r_up));
        }
        sim.build_routes();
        Ok(d)
    }

    /// [`build`](Self::build) with drop-tail bottleneck queues.
    pub fn build_droptail(self, sim: &mut Sim) -> Result<Dumbbell, SimError> {
        self.build(sim, droptail_factory)
    }
}

fn droptail_link(
    sim: &mut Sim,
    from: NodeId,
    to: NodeId,
    cfg: &LinkConfig,
) -> Result<LinkId, SimError> {
    sim.try_add_link(from, to, cfg.clone(), droptail_factory(cfg))
}

/// Builds a parking lot: routers `R0 → R1 → … → Rk` joined by k bottleneck links (and the
/// reverse links `R(i+1) → Ri` with the same configuration).
#[derive(Debug, Clone)]
pub struct ParkingLotBuilder {
    links: Vec<LinkConfig>,
    access: LinkConfig,
}

/// What [`ParkingLotBuilder::build`] created. Add hosts with [`add_host`](Self::add_host): a
/// flow from a host at router `i` to a host at router `j > i` crosses `forward[i..j]`.
#[derive(Debug, Clone)]
pub struct ParkingLot {
    /// Routers `R0..=Rk`.
    pub routers: Vec<NodeId>,
    /// Bottleneck `i` is `R_i → R_{i+1}`.
    pub forward: Vec<LinkId>,
    /// Reverse link `i` is `R_{i+1} → R_i`.
    pub reverse: Vec<LinkId>,
    /// Hosts added so far: `(host, address, router index)`.
    pub hosts: Vec<(NodeId, Ipv4Addr, usize)>,
    access: LinkConfig,
}

impl ParkingLotBuilder {
    /// A chain with one bottleneck per configuration, in order, and [`default_access`] links.
    pub fn new(links: Vec<LinkConfig>) -> Self {
        Self {
            links,
            access: default_access(),
        }
    }

    /// Sets the access link configuration of hosts added later.
    pub fn access(mut self, cfg: LinkConfig) -> Self {
        self.access = cfg;
        self
    }

    /// Creates routers and links in `sim`; `qdisc` builds the queue of every inter-router link
    /// (forward `i`, then reverse `i`, for each `i`).
    pub fn build(
        self,
        sim: &mut Sim,
        mut qdisc: impl FnMut(&LinkConfig) -> Box<dyn Qdisc>,
    ) -> Result<ParkingLot, SimError> {
        let routers: Vec<NodeId> = (0..=self.links.len())
            .map(|i| sim.add_router(format!("R{i}")))
            .collect();
        let mut forward = Vec::new();
        let mut reverse = Vec::new();
        for (i, cfg) in self.links.iter().enumerate() {
            let q = qdisc(cfg);
            forward.push(sim.try_add_link(routers[i], routers[i + 1], cfg.clone(), q)?);
            let q = qdisc(cfg);
            reverse.push(sim.try_add_link(routers[i + 1], routers[i], cfg.clone(), q)?);
        }
        Ok(ParkingLot {
            routers,
            forward,
            reverse,
            hosts: Vec::new(),
            access: self.access,
        })
    }

    /// [`build`](Self::build) with drop-tail queues everywhere.
    pub fn build_droptail(self, sim: &mut Sim) -> Result<ParkingLot, SimError> {
        self.build(sim, droptail_factory)
    }
}

impl ParkingLot {
    /// Adds a host `10.3.x.y` attached to router `router` by a duplex access link.
    pub fn add_host(
        &mut self,
        sim: &mut Sim,
        router: usize,
    ) -> Result<(NodeId, Ipv4Addr), SimError> {
        let cfg = self.access.clone();
        self.add_host_with(sim, router, &cfg)
    }

    /// Adds a host attached to router `router` by a duplex access link of configuration `cfg`
    /// (e.g. to give its flows a longer RTT).
    pub fn add_host_with(
        &mut self,
        sim: &mut Sim,
        router: usize,
        cfg: &LinkConfig,
    ) -> Result<(NodeId, Ipv4Addr), SimError> {
        let r = *self
            .routers
            .get(router)
            .ok_or(SimError::NoSuchRouter(router))?;
        let addr = numbered_addr(3, self.hosts.len());
        let h = sim.try_add_host(addr)?;
        droptail_link(sim, h, r, cfg)?;
        droptail_link(sim, r, h, cfg)?;
        self.hosts.push((h, addr, router));
        Ok((h, addr))
    }
}
