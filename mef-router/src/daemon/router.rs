//! [`Router`]: the daemon's whole data plane as a sans-IO state machine. The tokio loop in
//! [`super::run()`] only moves bytes between it, the TUN device and the UDP socket, so the same
//! code is tested in memory (`tests/daemon_router.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::FlowKey;
use crate::tunnel::{
    PeerId, PrivateKey, Tai64N, TunnResult, TunnelConfig, TunnelError, TunnelSet, TunnelSetConfig,
};

use crate::bridge::{BridgeConfig, Ipv4Prefix, PeerConfig as BridgePeer, SplitBridge};
use crate::split::SplitConfig;

use super::config::{Config, Prefix};
use super::egress::{Egress, PacketError, Release, parse_ipv4};

/// Buffer size for one datagram.
pub const BUF_LEN: usize = 65_536;

/// Drop counters of the router (besides the tunnels' and the qdisc's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterCounters {
    /// Packets read from the TUN device.
    pub tun_rx: u64,
    /// TUN packets that were not valid IPv4.
    pub tun_malformed: u64,
    /// TUN packets that were IPv6 (not routed by this version).
    pub tun_not_ipv4: u64,
    /// TUN packets whose destination matches no peer prefix.
    pub no_route: u64,
    /// Datagrams on the tunnel socket that were rejected (malformed, MAC, replay, ...).
    pub udp_rejected: u64,
    /// Decrypted packets whose source is not in the sending peer's prefixes.
    pub not_allowed: u64,
    /// Packets for a peer whose endpoint is unknown.
    pub no_endpoint: u64,
    /// Packets written to the TUN device.
    pub tun_tx: u64,
}

/// Outputs of one step.
#[derive(Debug, Default)]
pub struct Output {
    /// Datagrams to send on the UDP socket.
    pub net: Vec<(SocketAddr, Vec<u8>)>,
    /// IP packets to write to the TUN device.
    pub tun: Vec<Vec<u8>>,
    /// Datagrams to send on the split (MEF transport) UDP socket.
    pub split_net: Vec<(SocketAddr, Vec<u8>)>,
}

struct PeerInfo {
    name: String,
    prefixes: Vec<Prefix>,
    endpoint: Option<SocketAddr>,
}

/// The data plane: routing table, tunnels, shaped MEF egress.
pub struct Router {
    tunnels: TunnelSet,
    peers: Vec<PeerInfo>,
    /// (prefix, peer), longest prefix first.
    routes: Vec<(Prefix, PeerId)>,
    egress: Egress,
    capacity_bps: u64,
    lan: Vec<Prefix>,
    counters: RouterCounters,
    out: Vec<u8>,
    last_flow_bytes: BTreeMap<FlowKey, u64>,
    flow_rates: BTreeMap<FlowKey, f64>,
    last_rates_at: Option<Instant>,
    split: Option<SplitBridge>,
    split_src: SocketAddr,
    pending_tun: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("public_key", &self.tunnels.public_key())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Builds the router from a parsed configuration and its private key.
    pub fn new(cfg: &Config, key: PrivateKey, now: Instant, wall: Tai64N) -> Result<Self, String> {
        let mut tunnels = TunnelSet::new(
            key,
            TunnelSetConfig {
                handshake_load_threshold: cfg.handshake_load_threshold,
            },
        );
        let mut peers = Vec::new();
        let mut routes = Vec::new();
        for p in &cfg.peers {
            let tc = TunnelConfig {
                psk: p.preshared_key.clone(),
                persistent_keepalive: p.persistent_keepalive,
                ..TunnelConfig::default()
            };
            let id = tunnels
                .add_peer(p.public_key, tc, now, wall)
                .map_err(|e| e.to_string())?;
            for pre in &p.prefixes {
                routes.push((*pre, id));
            }
            peers.push(PeerInfo {
                name: p.display_name(),
                prefixes: p.prefixes.clone(),
                endpoint: p.endpoint,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len));
        let egress =
            Egress::new(cfg.wan.capacity, cfg.wan.buffer_bytes).map_err(|e| e.to_string())?;
        let split = if cfg.split.enabled {
            Some(build_bridge(cfg, now)?)
        } else {
            None
        };
        Ok(Self {
            tunnels,
            peers,
            routes,
            egress,
            capacity_bps: cfg.wan.capacity,
            lan: cfg.lan.prefixes.clone(),
            counters: RouterCounters::default(),
            out: vec![0u8; BUF_LEN],
            last_flow_bytes: BTreeMap::new(),
            flow_rates: BTreeMap::new(),
            last_rates_at: None,
            split,
            split_src: SocketAddr::new(cfg.listen.ip(), cfg.split.port),
            pending_tun: Vec::new(),
        })
    }

    /// The TCP split bridge, when `[split] enabled`.
    pub fn split(&self) -> Option<&SplitBridge> {
        self.split.as_ref()
    }

    /// Moves the bridge's outputs: LAN packets to the TUN, MEF transport datagrams into the
    /// shaped egress (where they are stamped like any MEF flow).
    fn drain_split(&mut self, now: Instant, out: &mut Output) {
        let Some(b) = self.split.as_mut() else { return };
        for _ in 0..1024 {
            let mut moved = false;
            while let Some(p) = b.poll_lan_packet() {
                out.tun.push(p);
                self.counters.tun_tx += 1;
                moved = true;
            }
            while let Some((dst, d)) = b.poll_wan_transmit(now) {
                self.egress.enqueue_datagram(now, self.split_src, dst, d);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        while let Some(ev) = b.poll_event() {
            tracing::debug!(event = ?ev, "split");
        }
    }

    /// A datagram on the split (MEF transport) socket.
    pub fn on_split_udp(&mut self, now: Instant, src: SocketAddr, data: &[u8], out: &mut Output) {
        if let Some(b) = self.split.as_mut() {
            b.handle_wan_datagram(now, src, data);
            self.drain_split(now, out);
        }
    }

    /// The tunnels.
    pub fn tunnels(&self) -> &TunnelSet {
        &self.tunnels
    }

    /// The egress.
    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// Counters.
    pub fn counters(&self) -> &RouterCounters {
        &self.counters
    }

    /// All routed prefixes with their peers (longest first).
    pub fn routes(&self) -> &[(Prefix, PeerId)] {
        &self.routes
    }

    /// An IP packet read from the TUN device: validate, route, queue on the WAN egress.
    pub fn on_tun_packet(&mut self, now: Instant, packet: &[u8]) {
        self.counters.tun_rx += 1;
        let info = match parse_ipv4(packet) {
            Ok(i) => i,
            Err(PacketError::NotIpv4) => {
                self.counters.tun_not_ipv4 += 1;
                return;
            }
            Err(PacketError::Malformed) => {
                self.counters.tun_malformed += 1;
                return;
            }
        };
        let Some(&(_, peer)) = self.routes.iter().find(|(p, _)| p.contains(info.dst)) else {
            self.counters.no_route += 1;
            return;
        };
        if info.protocol == 6
            && !info.fragment
            && let Some(b) = self.split.as_mut()
            && b.route(info.dst).is_some()
        {
            // Dropped packets are counted in the bridge's split stats.
            let _ = b.handle_lan_packet(now, packet);
            let mut out = Output::default();
            self.drain_split(now, &mut out);
            self.pending_tun.append(&mut out.tun);
            return;
        }
        self.egress.enqueue(now, peer, packet.to_vec(), info);
    }

    /// IP packets for the TUN device produced while handling TUN input (the splitter's answers).
    pub fn take_tun_output(&mut self, out: &mut Output) {
        out.tun.append(&mut self.pending_tun);
    }

    fn send_to_peer(&mut self, peer: PeerId, bytes: &[u8], out: &mut Output) {
        match self.peers.get(peer.0).and_then(|p| p.endpoint) {
            Some(ep) => out.net.push((ep, bytes.to_vec())),
            None => self.counters.no_endpoint += 1,
        }
    }

    fn drain_peer(&mut self, now: Instant, peer: PeerId, out: &mut Output) {
        let mut buf = std::mem::take(&mut self.out);
        while let Some(t) = self.tunnels.peer_mut(peer) {
            match t.poll_transmit(now, &mut buf) {
                TunnResult::WriteToNetwork(b) => {
                    let b = b.to_vec();
                    self.send_to_peer(peer, &b, out);
                }
                _ => break,
            }
        }
        self.out = buf;
    }

    /// A datagram from the tunnel socket.
    pub fn on_udp(&mut self, now: Instant, src: SocketAddr, datagram: &[u8], out: &mut Output) {
        let mut buf = std::mem::take(&mut self.out);
        let (peer, r) = self.tunnels.decapsulate(now, src, datagram, &mut buf);
        let authenticated = !matches!(r, TunnResult::Err(_));
        if let (Some(p), true) = (peer, authenticated)
            && let Some(info) = self.peers.get_mut(p.0)
            && info.endpoint != Some(src)
        {
            // WireGuard §2 "roaming": the endpoint follows authenticated packets.
            tracing::info!(peer = %info.name, endpoint = %src, "peer endpoint updated");
            info.endpoint = Some(src);
        }
        match r {
            TunnResult::WriteToNetwork(b) => {
                let dst = match peer {
                    Some(p) => self.peers.get(p.0).and_then(|i| i.endpoint).unwrap_or(src),
                    None => src, // a cookie reply goes back to where the message came from
                };
                out.net.push((dst, b.to_vec()));
            }
            TunnResult::WriteToTunnel(pkt) => {
                // Cryptokey routing (WireGuard §2): the inner source must be one of the peer's
                // prefixes.
                let ok = peer.and_then(|p| self.peers.get(p.0)).is_some_and(|info| {
                    parse_ipv4(pkt).is_ok_and(|ip| info.prefixes.iter().any(|x| x.contains(ip.src)))
                });
                if ok {
                    out.tun.push(pkt.to_vec());
                    self.counters.tun_tx += 1;
                } else {
                    self.counters.not_allowed += 1;
                }
            }
            TunnResult::Err(e) => {
                self.counters.udp_rejected += 1;
                log_reject(&e, src);
            }
            TunnResult::Done => {}
        }
        self.out = buf;
        if let Some(p) = peer {
            self.drain_peer(now, p, out);
        }
    }

    /// Runs tunnel timers that are due and releases what the shaper allows.
    pub fn on_timers(&mut self, now: Instant, out: &mut Output) {
        let mut buf = std::mem::take(&mut self.out);
        for i in 0..self.tunnels.peers().len() {
            let id = PeerId(i);
            for _ in 0..4 {
                let Some(t) = self.tunnels.peer_mut(id) else {
                    break;
                };
                if t.next_deadline().is_none_or(|d| d > now) {
                    break;
                }
                match t.update_timers(now, &mut buf) {
                    TunnResult::WriteToNetwork(b) => {
                        let b = b.to_vec();
                        self.send_to_peer(id, &b, out);
                    }
                    TunnResult::Err(e) => {
                        tracing::warn!(peer = %self.peers[i].name, error = %e, "tunnel timer");
                        break;
                    }
                    _ => break,
                }
            }
            self.out = std::mem::take(&mut buf);
            self.drain_peer(now, id, out);
            buf = std::mem::take(&mut self.out);
        }
        if let Some(b) = self.split.as_mut()
            && b.poll_timeout().is_some_and(|t| t <= now)
        {
            b.handle_timeout(now);
        }
        self.drain_split(now, out);
        out.tun.append(&mut self.pending_tun);
        while let Some(rel) = self.egress.poll(now) {
            let (peer, pkt) = match rel {
                Release::Tunnel(peer, pkt) => (peer, pkt),
                Release::Datagram(dst, d) => {
                    out.split_net.push((dst, d));
                    continue;
                }
            };
            let r = match self.tunnels.peer_mut(peer) {
                Some(t) => t.encapsulate(now, &pkt, &mut buf),
                None => continue,
            };
            match r {
                TunnResult::WriteToNetwork(b) => {
                    let b = b.to_vec();
                    self.send_to_peer(peer, &b, out);
                }
                TunnResult::Err(e) => tracing::debug!(error = %e, "encapsulate"),
                _ => {}
            }
        }
        self.out = buf;
    }

    /// The next instant [`on_timers`](Self::on_timers) has work.
    pub fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        let split = self.split.as_mut().and_then(SplitBridge::poll_timeout);
        [
            self.tunnels.next_deadline(),
            self.egress.next_release(now),
            split,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Recomputes per-flow rates from the qdisc's byte counters (call about once a second).
    pub fn sample_rates(&mut self, now: Instant) {
        let dt = self
            .last_rates_at
            .map(|t| now.saturating_duration_since(t).as_secs_f64());
        self.last_rates_at = Some(now);
        self.flow_rates.clear();
        let flows = &self.egress.qdisc().stats().flows;
        // Forget the counters of flows the qdisc evicted, so this map stays bounded too.
        self.last_flow_bytes.retain(|k, _| flows.contains_key(k));
        for (k, s) in flows {
            let prev = self.last_flow_bytes.insert(*k, s.bytes_out).unwrap_or(0);
            if let Some(dt) = dt.filter(|d| *d > 0.0)
                && s.bytes_out > prev
            {
                self.flow_rates
                    .insert(*k, (s.bytes_out - prev) as f64 * 8.0 / dt);
            }
        }
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render_metrics(&self) -> String {
        super::metrics::render(self, &self.flow_rates, self.capacity_bps)
    }

    /// Human-readable status.
    pub fn render_status(&self, now: Instant) -> String {
        super::metrics::status(self, &self.flow_rates, self.capacity_bps, &self.lan, now)
    }

    /// Name of a peer.
    pub fn peer_name(&self, id: PeerId) -> &str {
        self.peers.get(id.0).map_or("?", |p| p.name.as_str())
    }

    /// Endpoint of a peer.
    pub fn peer_endpoint(&self, id: PeerId) -> Option<SocketAddr> {
        self.peers.get(id.0).and_then(|p| p.endpoint)
    }
}

fn log_reject(e: &TunnelError, src: SocketAddr) {
    match e {
        TunnelError::Replay(_) | TunnelError::DecryptFailed | TunnelError::InvalidMac1 => {
            tracing::debug!(%src, error = %e, "tunnel datagram rejected");
        }
        _ => tracing::trace!(%src, error = %e, "tunnel datagram rejected"),
    }
}

fn ipv4_prefix(p: &Prefix) -> Ipv4Prefix {
    Ipv4Prefix::new(p.addr, p.len)
}

/// Builds the TCP split bridge: same static key as the tunnel (different Noise protocol name
/// and prologue, so the two handshakes can never be confused; Noise spec §14), peers reached at
/// their endpoint address on the split port.
fn build_bridge(cfg: &Config, now: Instant) -> Result<SplitBridge, String> {
    use rand::Rng as _;
    let key = cfg.private_key().map_err(|e| e.to_string())?;
    let peers = cfg
        .peers
        .iter()
        .filter_map(|p| {
            let ep = p.endpoint?;
            Some(BridgePeer {
                public_key: p.public_key.0,
                wan_addr: SocketAddr::new(ep.ip(), cfg.split.port),
                prefixes: p.prefixes.iter().map(ipv4_prefix).collect(),
            })
        })
        .collect();
    let mut rng = rand::rng();
    let split = SplitConfig {
        mtu: usize::from(cfg.tun.mtu),
        rx_buffer: cfg.split.window_bytes,
        tx_buffer: cfg.split.window_bytes,
        max_connections: cfg.split.max_connections,
        random_seed: rng.next_u64(),
        ..SplitConfig::default()
    };
    let bc = BridgeConfig {
        split,
        peers,
        local_prefixes: cfg.lan.prefixes.iter().map(ipv4_prefix).collect(),
        ..BridgeConfig::default()
    };
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let kp = mef_transport::StaticKeypair::from_secret(*key.as_bytes());
    SplitBridge::new(bc, kp, seed, now).map_err(|e| format!("split bridge: {e}"))
}
