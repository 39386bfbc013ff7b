//! The firmware roll-out over `sim-netem` (feature `sim`): every device runs the real
//! exchange [`Engine`] over the real encrypted mesh ([`mesh::node::Mesh`], Noise links and
//! reliable channels), packet by packet over simulated links, deterministically from a seed.
//!
//! Seed 004's scenario: the manufacturer's node holds a new image; `gateways` devices learn of
//! it at once and fetch it. With swarm peers, each gateway also fetches from a few other
//! gateways (Bitswap 1.2 want-have: they announce blocks as they get them), and asks the
//! manufacturer only for what the swarm lacks; in the baseline every gateway fetches from the
//! manufacturer alone. [`run_rollout`] reports the time until the last gateway holds a verified
//! image and who served how many bytes.
//!
//! Each gateway runs the update flow: it checks the manufacturer's signed manifest against its
//! model, running version and trusted key ([`UpdatePolicy`]), fetches the manifest's root, and
//! once every block is in, rebuilds the whole image with the verifying reader and checks its
//! size and SHA-256; with [`RolloutConfig::stage_dir`] it stages it ([`Stager`], atomic
//! rename) instead.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cid::Cid;
use mesh::channel::{ChannelEvent, ChannelId};
use mesh::link::Acceptor;
use mesh::node::sim::{PORT, identity, node_ip};
use mesh::node::{Mesh, MeshConfig, MeshEvent};
use mesh::{Hashname, Identity};
use sha2::{Digest, Sha256};
use sim_netem::{Datagram, Endpoint, EndpointId, LinkConfig, Sim};

use crate::exchange::{Engine, EngineEvent, PeerId, PeerKind, ServerConfig, SessionConfig};
use crate::manifest::{Manifest, SignedManifest, Version};
use crate::unixfs::reader::export;
use crate::unixfs::{BlockSink, BlockSource, MemoryBlocks};
use crate::update::{Decision, Stager, UpdatePolicy, VerifiedUpdate};

pub use crate::exchange::CHANNEL_KIND;

/// Bytes handed to a mesh channel per `send` call.
const WRITE_CHUNK: usize = 64 * 1024;

/// A device's view of one shared image: which of its blocks this device holds. The bytes live
/// once in memory for all simulated devices (100 copies of a 32 MiB image would be 3.2 GiB);
/// every block still crosses the simulated network and is hashed against its CID on arrival.
#[derive(Debug, Clone)]
pub struct SharedImage {
    image: Rc<MemoryBlocks>,
    held: HashSet<Cid>,
}

impl SharedImage {
    /// A device holding none of `image`.
    pub fn empty(image: Rc<MemoryBlocks>) -> Self {
        Self {
            image,
            held: HashSet::new(),
        }
    }

    /// A device holding all of `image` (the manufacturer).
    pub fn full(image: Rc<MemoryBlocks>) -> Self {
        let held = image.blocks.keys().copied().collect();
        Self { image, held }
    }

    /// Blocks held.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

impl BlockSource for SharedImage {
    fn get(&self, cid: &Cid) -> Option<Vec<u8>> {
        if self.held.contains(cid) {
            self.image.get(cid)
        } else {
            None
        }
    }
    fn has(&self, cid: &Cid) -> bool {
        self.held.contains(cid)
    }
}

impl BlockSink for SharedImage {
    /// Records a block. Bytes that differ from the image's block under that CID (which the
    /// engine's verification must make impossible) are refused, so a verification bypass
    /// would surface as a failed fetch rather than be hidden by the shared copy.
    fn put_block(&mut self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        match self.image.blocks.get(cid) {
            Some(b) if b.as_slice() == data => {
                self.held.insert(*cid);
                Ok(())
            }
            Some(_) => Err(std::io::Error::other(format!("{cid}: bytes differ"))),
            None => Err(std::io::Error::other(format!("{cid} is not in the image"))),
        }
    }
}

#[derive(Debug)]
struct Slot {
    id: PeerId,
    kind: PeerKind,
    chan: Option<ChannelId>,
}

/// A device: a mesh node carrying an exchange engine, as a `sim-netem` endpoint.
#[derive(Debug)]
pub struct DeviceEndpoint {
    /// The mesh node.
    pub mesh: Mesh,
    /// The exchange.
    pub engine: Engine<SharedImage>,
    slots: BTreeMap<Hashname, Slot>,
    by_id: BTreeMap<PeerId, Hashname>,
    /// When the fetch completed, if it did.
    pub completed_at: Option<Instant>,
    /// Why the fetch failed, if it did.
    pub failed: Option<String>,
    /// Peers disconnected by the engine.
    pub disconnects: u64,
    /// Flip a byte in every block this device serves (a lying peer).
    pub liar: bool,
    /// The authenticated update being fetched.
    update: Option<VerifiedUpdate>,
    /// Where to stage the image once fetched (else it is rebuilt and checked in memory).
    stage_dir: Option<PathBuf>,
    /// SHA-256 of the image, to check the rebuilt one against.
    expect_sha256: [u8; 32],
    /// The whole image was rebuilt from the store, every block verified, and matched.
    pub image_verified: bool,
}

impl DeviceEndpoint {
    fn new(mesh: Mesh, engine: Engine<SharedImage>) -> Self {
        Self {
            mesh,
            engine,
            slots: BTreeMap::new(),
            by_id: BTreeMap::new(),
            completed_at: None,
            failed: None,
            disconnects: 0,
            liar: false,
            update: None,
            stage_dir: None,
            expect_sha256: [0; 32],
            image_verified: false,
        }
    }

    /// The update flow's last step: rebuild the whole image from the store, verifying every
    /// block, and check it against the manifest (size) and the image (SHA-256); or stage it.
    fn finish_update(&mut self) -> Result<(), String> {
        let Some(update) = &self.update else {
            return Err("no update".into());
        };
        if let Some(dir) = &self.stage_dir {
            let stager = Stager::open(dir).map_err(|e| e.to_string())?;
            let staged = stager
                .stage(update, self.engine.store())
                .map_err(|e| e.to_string())?;
            let bytes = std::fs::read(&staged.path).map_err(|e| e.to_string())?;
            if <[u8; 32]>::from(Sha256::digest(&bytes)) != self.expect_sha256 {
                return Err("staged image differs".into());
            }
            return Ok(());
        }
        let mut hasher = HashWriter(Sha256::new());
        let size = export(self.engine.store(), &update.manifest().root, &mut hasher)
            .map_err(|e| e.to_string())?;
        if size != update.manifest().size {
            return Err(format!(
                "image is {size} bytes, manifest says {}",
                update.manifest().size
            ));
        }
        if <[u8; 32]>::from(hasher.0.finalize()) != self.expect_sha256 {
            return Err("image differs".into());
        }
        Ok(())
    }

    /// Adds a peer; `open` makes this side open the exchange channel.
    fn add(&mut self, now: Instant, peer: Hashname, kind: PeerKind, open: bool) {
        let id = PeerId(self.slots.len() as u64 + 1);
        let chan = if open {
            self.mesh.open_channel(peer, CHANNEL_KIND, true).ok()
        } else {
            None
        };
        self.slots.insert(peer, Slot { id, kind, chan });
        self.by_id.insert(id, peer);
        if chan.is_some() {
            self.engine.connect(now, id, kind);
        }
    }

    fn drain(&mut self, now: Instant) {
        while let Some(e) = self.mesh.poll_event() {
            match e {
                MeshEvent::Channel { peer, event } => self.channel_event(now, peer, event),
                MeshEvent::LinkDown { peer, .. } => {
                    if let Some(slot) = self.slots.get_mut(&peer)
                        && slot.chan.take().is_some()
                    {
                        self.engine.disconnect(now, slot.id);
                    }
                }
                MeshEvent::LinkUp { .. } | MeshEvent::PathChanged { .. } => {}
            }
        }
        while let Some(e) = self.engine.poll_event() {
            match e {
                EngineEvent::Complete { .. } => match self.finish_update() {
                    Ok(()) => {
                        self.image_verified = true;
                        self.completed_at = Some(now);
                    }
                    Err(e) => self.failed = Some(e),
                },
                EngineEvent::Failed { error, .. } => self.failed = Some(error.to_string()),
                EngineEvent::Disconnect { peer, .. } => {
                    self.disconnects += 1;
                    if let Some(hn) = self.by_id.get(&peer).copied()
                        && let Some(slot) = self.slots.get_mut(&hn)
                        && let Some(ch) = slot.chan.take()
                    {
                        let _ = self.mesh.close_channel(hn, ch, 1, "exchange violation");
                    }
                }
                EngineEvent::BlockStored { .. } | EngineEvent::Penalised { .. } => {}
            }
        }
        self.flush();
    }

    fn channel_event(&mut self, now: Instant, peer: Hashname, event: ChannelEvent) {
        let Some(slot) = self.slots.get_mut(&peer) else {
            return;
        };
        match event {
            ChannelEvent::Opened { id, kind, .. }
                if kind == CHANNEL_KIND && slot.chan.is_none() =>
            {
                slot.chan = Some(id);
                self.engine.connect(now, slot.id, slot.kind);
            }
            ChannelEvent::Data { id, bytes } if slot.chan == Some(id) => {
                let pid = slot.id;
                self.engine.handle_bytes(now, pid, &bytes);
            }
            ChannelEvent::Closed { id, .. } if slot.chan == Some(id) => {
                slot.chan = None;
                let pid = slot.id;
                self.engine.disconnect(now, pid);
            }
            _ => {}
        }
    }

    /// Writes what the engine has for each peer into its channel while the channel takes it.
    fn flush(&mut self) {
        for (hn, slot) in &self.slots {
            let Some(ch) = slot.chan else { continue };
            while self.engine.wants_transmit(slot.id) {
                let chunk = self.engine.peek_transmit(slot.id, WRITE_CHUNK);
                if chunk.is_empty() {
                    break;
                }
                let n = chunk.len();
                let sent = if self.liar && n >= 4096 {
                    // Block data fills large chunks: flipping their last byte corrupts it.
                    let mut bad = chunk.to_vec();
                    if let Some(b) = bad.last_mut() {
                        *b ^= 0x55;
                    }
                    self.mesh.send(*hn, ch, &bad)
                } else {
                    self.mesh.send(*hn, ch, chunk)
                };
                if sent.is_err() {
                    break; // WouldBlock: resumed on the next event
                }
                self.engine.advance_transmit(slot.id, n);
            }
        }
    }
}

impl Endpoint for DeviceEndpoint {
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram) {
        self.mesh.handle_datagram(now, dgram.src, &dgram.payload);
        self.drain(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.mesh.handle_timeout(now);
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        self.drain(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        self.drain(now);
        let (dst, payload) = self.mesh.poll_transmit(now)?;
        Some(Datagram {
            src: SocketAddr::from(([0, 0, 0, 0], 0)),
            dst,
            payload,
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.mesh.poll_timeout(), self.engine.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// An `io::Write` that hashes.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The model name in the simulated manifest.
pub const MODEL: &str = "mef-gw-pi4";

/// Parameters of [`run_rollout`].
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    /// Image size in bytes (deterministic pseudo-random content).
    pub image_bytes: usize,
    /// Gateways fetching it.
    pub gateways: usize,
    /// Other gateways each gateway exchanges with (0: the manufacturer-only baseline).
    pub swarm_peers: usize,
    /// The manufacturer's uplink, bit/s.
    pub manufacturer_up_bps: u64,
    /// The manufacturer's downlink, bit/s.
    pub manufacturer_down_bps: u64,
    /// Each gateway's uplink, bit/s.
    pub gateway_up_bps: u64,
    /// Each gateway's downlink, bit/s.
    pub gateway_down_bps: u64,
    /// One-way delay of every access link (the RTT between two hosts is 4×).
    pub access_delay: Duration,
    /// Simulation seed.
    pub seed: u64,
    /// Give up after this much simulated time.
    pub deadline: Duration,
    /// Session tuning of the gateways (`seed` is replaced per gateway).
    pub session: SessionConfig,
    /// The manufacturer's super-seeding budget ([`ServerConfig::copies_per_block`]); ignored
    /// when `swarm_peers` is 0.
    pub manufacturer_copies: Option<u32>,
    /// Gateways `1..=liars` flip a byte in every block they serve.
    pub liars: usize,
    /// Stage every image under `stage_dir/gw-<i>` (else rebuild and check it in memory).
    pub stage_dir: Option<PathBuf>,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            image_bytes: 32 << 20,
            gateways: 100,
            swarm_peers: 8,
            manufacturer_up_bps: 100_000_000,
            manufacturer_down_bps: 100_000_000,
            gateway_up_bps: 10_000_000,
            gateway_down_bps: 50_000_000,
            access_delay: Duration::from_millis(10),
            seed: 1,
            deadline: Duration::from_secs(3600),
            session: SessionConfig::swarm(),
            manufacturer_copies: Some(2),
            liars: 0,
            stage_dir: None,
        }
    }
}

/// Figures of one [`run_rollout`].
#[derive(Debug, Clone, Default)]
pub struct RolloutReport {
    /// Image size in bytes.
    pub image_bytes: u64,
    /// Blocks in its DAG.
    pub image_blocks: usize,
    /// Gateways.
    pub gateways: usize,
    /// Gateways whose fetch completed.
    pub completed: usize,
    /// Gateways whose fetch failed.
    pub failed: usize,
    /// Simulated seconds until the last gateway completed (or the deadline).
    pub time_s: f64,
    /// Median gateway completion, simulated seconds.
    pub median_s: f64,
    /// Block payload bytes the manufacturer served.
    pub manufacturer_block_bytes: u64,
    /// Bytes on the manufacturer's uplink (IP packets: headers, encryption, acks, retransmits).
    pub manufacturer_wire_bytes: u64,
    /// Block payload bytes gateways served each other.
    pub peer_block_bytes: u64,
    /// Bytes on the gateways' uplinks, all together.
    pub peer_wire_bytes: u64,
    /// Blocks gateways got from the manufacturer.
    pub blocks_from_manufacturer: u64,
    /// Blocks gateways got from each other.
    pub blocks_from_peers: u64,
    /// Peers disconnected by engines (should be zero: everyone is honest here).
    pub disconnects: u64,
    /// Packets dropped at link queues.
    pub queue_drops: u64,
    /// Wants re-sent to another peer (timeouts, DONT_HAVE), all gateways.
    pub rerequests: u64,
    /// Wants that timed out, all gateways.
    pub timeouts: u64,
    /// Wants answered DONT_HAVE (the manufacturer's budget), all gateways.
    pub dont_haves: u64,
    /// Blocks accepted after their want had been re-requested, all gateways.
    pub late_blocks: u64,
    /// Urgent wants to the manufacturer, all gateways.
    pub urgent_wants: u64,
    /// The manufacturer's mesh channels: payload bytes sent for the first time / again.
    pub manufacturer_channel_bytes: (u64, u64),
    /// The manufacturer's mesh channels: retransmission timer expiries / fast recoveries.
    pub manufacturer_rto_expiries: (u64, u64),
    /// Progress of gateways that did not complete: (gateway, blocks fetched, in flight,
    /// pending).
    pub stuck: Vec<(usize, u64, usize, usize)>,
    /// Why gateways failed: (gateway, reason).
    pub failures: Vec<(usize, String)>,
    /// Gateways that rebuilt the whole image from their store and found it identical.
    pub images_verified: usize,
}

/// Deterministic pseudo-random image bytes (SHA-256 in counter mode).
pub fn image_data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(b"fw-image");
        h.update(seed.to_le_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// `k` distinct swarm neighbours of gateway `i` among `n`, from a symmetric random graph:
/// each gateway links to `k / 2` (at least 1) random others; links are used both ways.
fn swarm_graph(n: usize, k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
    if k == 0 || n < 2 {
        return adj;
    }
    let per = (k / 2).max(1);
    let mut ctr = 0u64;
    for i in 0..n {
        let mut added = 0;
        let mut tries = 0;
        while added < per && tries < 64 * per {
            tries += 1;
            let mut h = Sha256::new();
            h.update(b"fw-swarm");
            h.update(seed.to_le_bytes());
            h.update(ctr.to_le_bytes());
            ctr += 1;
            let d = h.finalize();
            let v = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            let j = (v % n as u64) as usize;
            if j != i && !adj[i].contains(&j) {
                adj[i].push(j);
                adj[j].push(i);
                added += 1;
            }
        }
    }
    adj
}

/// Runs the roll-out. Node 0 is the manufacturer (holds the image); nodes `1..=gateways`
/// fetch it from t = 0.
pub fn run_rollout(cfg: &RolloutConfig) -> RolloutReport {
    let data = image_data(cfg.image_bytes, cfg.seed);
    let (root, blocks) = match crate::unixfs::importer::import(&data[..], MemoryBlocks::default()) {
        Ok(r) => r,
        Err(_) => return RolloutReport::default(),
    };
    let expect_sha256: [u8; 32] = Sha256::digest(&data).into();
    drop(data);
    let image = Rc::new(blocks);
    // The manufacturer's release: a signed manifest every gateway checks before fetching.
    let maker =
        ed25519_dalek::SigningKey::from_bytes(&Sha256::digest(cfg.seed.to_le_bytes()).into());
    let manifest = Manifest {
        model: MODEL.into(),
        version: Version::new(1, 1, 0),
        root,
        size: cfg.image_bytes as u64,
        notes: "simulated roll-out".into(),
        released_ms: 0,
    };
    let Ok(signed): Result<SignedManifest, _> = manifest.sign(&maker) else {
        return RolloutReport::default();
    };
    let policy = UpdatePolicy::new(MODEL, Version::new(1, 0, 0), vec![maker.verifying_key()]);
    let n = cfg.gateways + 1;
    let mut sim = Sim::new(cfg.seed);
    let core = sim.add_router("core");
    let start = sim.now();
    let ids: Vec<Identity> = (0..n).map(|i| identity(cfg.seed, i)).collect();
    let hns: Vec<Hashname> = ids.iter().map(Identity::hashname).collect();
    let addr = |i: usize| SocketAddr::new(IpAddr::V4(node_ip(i)), PORT);
    let graph = swarm_graph(cfg.gateways, cfg.swarm_peers, cfg.seed);
    let mut mesh_cfg = MeshConfig::default();
    mesh_cfg.channels.max_send_buffer = crate::exchange::CHANNEL_SEND_BUFFER;
    mesh_cfg.channels.max_recv_buffer = crate::exchange::CHANNEL_RECV_BUFFER;
    let rtt = cfg.access_delay * 4;
    let mut eps: Vec<EndpointId> = Vec::with_capacity(n);
    let mut uplinks = Vec::with_capacity(n);
    for i in 0..n {
        let host = sim.add_host(node_ip(i));
        let (up, down) = if i == 0 {
            (cfg.manufacturer_up_bps, cfg.manufacturer_down_bps)
        } else {
            (cfg.gateway_up_bps, cfg.gateway_down_bps)
        };
        let up_cfg = LinkConfig::new(up, cfg.access_delay).with_queue_bdp(2.0, rtt);
        let down_cfg = LinkConfig::new(down, cfg.access_delay).with_queue_bdp(2.0, rtt);
        uplinks.push(sim.add_link_droptail(host, core, up_cfg));
        sim.add_link_droptail(core, host, down_cfg);
        let mut mesh = Mesh::new(
            start,
            // Deterministic wall clock: every run gives the same timestamps.
            mesh::link::Tai64N::default(),
            ids[i].clone(),
            mesh_cfg.clone(),
            Acceptor::allow_all(),
        );
        // Who this node talks to: (peer index, kind, whether this side opens the channel).
        let mut peers: Vec<(usize, PeerKind, bool)> = Vec::new();
        if i == 0 {
            peers.extend((1..n).map(|g| (g, PeerKind::Swarm, false)));
        } else {
            peers.push((0, PeerKind::Provider, true));
            for &j in &graph[i - 1] {
                peers.push((j + 1, PeerKind::Swarm, i < j + 1));
            }
        }
        for &(j, _, _) in &peers {
            let _ = mesh.add_peer(hns[j], ids[j].public_key(), &[addr(j)]);
        }
        let store = if i == 0 {
            SharedImage::full(image.clone())
        } else {
            SharedImage::empty(image.clone())
        };
        let server = ServerConfig {
            // Without swarm peers nobody else can serve: no budget (the baseline).
            copies_per_block: if i == 0 && cfg.swarm_peers > 0 {
                cfg.manufacturer_copies
            } else {
                None
            },
            ..ServerConfig::default()
        };
        let engine = Engine::new(store, server);
        let mut ep = DeviceEndpoint::new(mesh, engine);
        for &(j, kind, open) in &peers {
            if open {
                let _ = ep.mesh.connect(start, hns[j]);
            }
            ep.add(start, hns[j], kind, open);
        }
        if i > 0 {
            ep.liar = i <= cfg.liars;
            ep.expect_sha256 = expect_sha256;
            ep.stage_dir = cfg.stage_dir.as_ref().map(|d| d.join(format!("gw-{i}")));
            match policy.check(&signed) {
                Ok(Decision::Update(update)) => {
                    let session = SessionConfig {
                        seed: cfg.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
                        ..cfg.session.clone()
                    };
                    let root = update.manifest().root;
                    ep.update = Some(update);
                    if let Err(e) = ep.engine.fetch(start, root, session, None) {
                        ep.failed = Some(e.to_string());
                    }
                }
                Ok(Decision::UpToDate { .. }) => ep.failed = Some("up to date".into()),
                Err(e) => ep.failed = Some(e.to_string()),
            }
        }
        eps.push(sim.attach(host, PORT, Box::new(ep)));
    }
    sim.build_routes();
    for &ep in &eps {
        sim.wake(ep);
    }
    let gateways = &eps[1..];
    let done = |sim: &Sim| {
        gateways.iter().all(|&ep| {
            sim.endpoint::<DeviceEndpoint>(ep)
                .is_none_or(|e| e.completed_at.is_some() || e.failed.is_some())
        })
    };
    let step = Duration::from_millis(250);
    let mut t = Duration::ZERO;
    while t < cfg.deadline && !done(&sim) {
        t += step;
        sim.run_until(t);
    }
    let mut report = RolloutReport {
        image_bytes: cfg.image_bytes as u64,
        image_blocks: image.blocks.len(),
        gateways: cfg.gateways,
        ..RolloutReport::default()
    };
    let mut times = Vec::new();
    for (i, &ep) in eps.iter().enumerate() {
        let Some(e) = sim.endpoint::<DeviceEndpoint>(ep) else {
            continue;
        };
        let stats = e.engine.stats();
        report.disconnects += e.disconnects;
        if i == 0 {
            report.manufacturer_block_bytes = stats.served.block_bytes;
            for (hn, slot) in &e.slots {
                if let Some(c) = slot.chan.and_then(|ch| e.mesh.channel_stats(*hn, ch)) {
                    report.manufacturer_channel_bytes.0 += c.send.bytes_sent;
                    report.manufacturer_channel_bytes.1 += c.send.bytes_retransmitted;
                    report.manufacturer_rto_expiries.0 += c.send.rto_expiries;
                    report.manufacturer_rto_expiries.1 += c.send.fast_recoveries;
                }
            }
        } else {
            report.peer_block_bytes += stats.served.block_bytes;
            let p = e.engine.progress();
            report.blocks_from_manufacturer += p.blocks_from_providers;
            report.blocks_from_peers += p.blocks_from_swarm;
            report.rerequests += p.rerequests;
            report.timeouts += p.timeouts;
            report.dont_haves += p.dont_haves;
            report.late_blocks += p.late_blocks;
            report.urgent_wants += p.urgent_wants;
            if e.image_verified {
                report.images_verified += 1;
            }
            if let Some(at) = e.completed_at {
                report.completed += 1;
                times.push(at.saturating_duration_since(start).as_secs_f64());
            } else {
                report
                    .stuck
                    .push((i, p.blocks_fetched, p.in_flight, p.pending));
            }
            if let Some(f) = &e.failed {
                report.failed += 1;
                report.failures.push((i, f.clone()));
            }
        }
    }
    for (i, &l) in uplinks.iter().enumerate() {
        let bytes = sim.link_stats(l).map_or(0, |s| s.transmitted_bytes);
        if i == 0 {
            report.manufacturer_wire_bytes = bytes;
        } else {
            report.peer_wire_bytes += bytes;
        }
    }
    report.queue_drops = (0..sim.link_count())
        .filter_map(|l| sim.link_stats(sim_netem::LinkId::from_index(l)))
        .map(|s| s.queue_drops)
        .sum();
    times.sort_by(f64::total_cmp);
    report.time_s = if report.completed == cfg.gateways {
        times.last().copied().unwrap_or(0.0)
    } else {
        sim.since_start(sim.now()).as_secs_f64()
    };
    report.median_s = times.get(times.len() / 2).copied().unwrap_or(0.0);
    report
}
