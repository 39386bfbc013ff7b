//! Firmware blocks over the real encrypted mesh: `mef-gateway firmware serve` and
//! `mef-gateway firmware get --peer …`.
//!
//! A thin tokio loop around the sans-IO exchange [`Engine`] (`firmware::exchange`) on the mesh
//! driver ([`mesh::driver`]: Noise-encrypted links over UDP, reliable channels), in the pattern
//! of `firmware::sim::DeviceEndpoint`: one reliable channel of kind [`CHANNEL_KIND`] per peer;
//! what the engine has for a peer is written into its channel until the channel's send buffer
//! is full (then resumed on the channel's `Writable`); received channel bytes are fed to the
//! engine; a peer the engine drops (garbage, corrupt blocks) has its channel closed.
//!
//! * [`fetch`]: connect to given peers (as providers), fetch the DAG under a root into the
//!   on-disk store, every block verified against its CID before it is stored. Blocks already
//!   in the store are not fetched again (an interrupted fetch resumes).
//! * [`FirmwareNode`] (`firmware_net/node.rs`): answers the wants of every peer that opens an
//!   exchange channel, from the on-disk [`Blockstore`], until a shutdown future resolves; with
//!   an [`UpdateConfig`], it is a gateway in the firmware swarm: dials configured providers and
//!   swarm peers, and fetches, verifies and stages the newest update among the signed
//!   manifests in a watched directory.
//!
//! Peers are named by a [`PeerAddr`]: `<X25519 public key, base64>@<ip:port>` (the hashname
//! is derived from the key). Mesh identities live in key files of one base64 line (32 secret
//! bytes, mode 0600), written by `mef-gateway keygen --mesh` ([`write_mesh_key`]). mDNS is not
//! used here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cid::Cid;
use firmware::blockstore::{Blockstore, BlockstoreError};
use firmware::exchange::{
    Engine, EngineEvent, EngineStats, FetchError, PeerId, PeerKind, Progress, ServerConfig,
    SessionConfig,
};
use mesh::channel::{ChannelError, ChannelEvent, ChannelId, codes};
use mesh::discovery::PeerRecord;
use mesh::discovery::record::decode_key;
use mesh::driver::{self, DriverConfig, DriverError, DriverEvent, MeshHandle};
use mesh::link::Acceptor;
use mesh::node::{MeshConfig, MeshError, MeshEvent};
use mesh::{Hashname, Identity};
use zeroize::Zeroize;

use pace::UploadCap;

pub use firmware::exchange::CHANNEL_KIND;

mod node;
pub mod pace;

pub use node::{FirmwareNode, NodeEvent, NodeReport, NodeStatus, UpdateConfig};

/// Bytes handed to a mesh channel per `send` call.
const WRITE_CHUNK: usize = 64 * 1024;
/// Under an upload cap, flushing resumes once this many bytes may be written.
const PACE_QUANTUM: usize = 16 * 1024;
/// Bytes taken from a mesh channel per `recv` call.
const READ_CHUNK: usize = 256 * 1024;
/// Housekeeping interval: retry blocked channels, re-dial unconnected providers.
const TICK: Duration = Duration::from_millis(500);
/// A provider without a link is dialled again after this long.
const REDIAL: Duration = Duration::from_secs(3);
/// Channel close code: the exchange dropped the peer (garbage, corrupt blocks).
const CLOSE_VIOLATION: u32 = codes::APPLICATION;
/// Channel close code: a channel this node does not take (wrong kind, unknown peer).
const CLOSE_UNWANTED: u32 = codes::APPLICATION + 1;

/// Why a network firmware operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The mesh driver failed (binding the socket, a refused call) or stopped.
    #[error("mesh: {0}")]
    Mesh(#[from] DriverError),
    /// The firmware blockstore failed.
    #[error("firmware store: {0}")]
    Store(#[source] BlockstoreError),
    /// The fetch ended without the whole DAG (peers lack a block, a block could not be stored).
    #[error("fetching {root}: {error}")]
    Fetch {
        /// The root being fetched.
        root: Cid,
        /// Why it ended.
        #[source]
        error: FetchError,
    },
    /// The fetch did not complete within its timeout.
    #[error(
        "fetching {root}: timed out after {}s ({} blocks fetched, {} held, {} connected peers)",
        after.as_secs(), progress.blocks_fetched, progress.blocks_held, connected
    )]
    Timeout {
        /// The root being fetched.
        root: Cid,
        /// The timeout.
        after: Duration,
        /// How far it got.
        progress: Progress,
        /// Peers with an open exchange channel when it gave up.
        connected: usize,
    },
    /// [`fetch`] was given no peers.
    #[error("no peers to fetch from")]
    NoPeers,
}

/// Why a mesh key file could not be made, written or read.
#[derive(Debug, thiserror::Error)]
pub enum MeshKeyError {
    /// The file could not be created, written or read (an existing file is never overwritten).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold 32 bytes of base64.
    #[error("{path}: not a base64 mesh secret key (32 bytes)")]
    Format {
        /// The file.
        path: PathBuf,
    },
}

fn key_io(path: &Path) -> impl Fn(std::io::Error) -> MeshKeyError + '_ {
    move |source| MeshKeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fresh mesh identity from the OS's random source (`/dev/urandom`, Linux).
pub fn generate_identity() -> Result<Identity, MeshKeyError> {
    let path = Path::new("/dev/urandom");
    let mut seed = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(key_io(path))?;
    // `from_bytes` zeroizes its copy; this one is wiped here.
    let id = Identity::from_bytes(seed);
    seed.zeroize();
    Ok(id)
}

/// Writes a mesh identity to `path`: one base64 line of its 32 secret bytes, mode 0600,
/// refusing to overwrite an existing file (the format of `mef-gateway keygen`'s key files).
pub fn write_mesh_key(path: &Path, id: &Identity) -> Result<(), MeshKeyError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(key_io(path))?;
    let mut secret = id.to_bytes();
    let mut line = STANDARD.encode(secret);
    secret.zeroize();
    let r = writeln!(f, "{line}").and_then(|()| f.sync_all());
    line.zeroize();
    r.map_err(key_io(path))
}

/// Reads a mesh identity written by [`write_mesh_key`].
pub fn read_mesh_key(path: &Path) -> Result<Identity, MeshKeyError> {
    let mut text = std::fs::read_to_string(path).map_err(key_io(path))?;
    let decoded = STANDARD.decode(text.trim());
    text.zeroize();
    let format = || MeshKeyError::Format {
        path: path.to_path_buf(),
    };
    let mut bytes = decoded.map_err(|_| format())?;
    let arr: Result<[u8; 32], _> = bytes.as_slice().try_into();
    bytes.zeroize();
    let mut arr = arr.map_err(|_| format())?;
    let id = Identity::from_bytes(arr);
    arr.zeroize();
    Ok(id)
}

/// How to reach a peer: its X25519 static public key (its hashname is derived from it) and
/// its mesh UDP address. Text form: `<key base64>@<ip:port>` (the key may also be given in
/// the 52-character base32 of a `[[mesh.seed]]` config entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    /// The peer's X25519 static public key.
    pub key: [u8; 32],
    /// Its mesh UDP address.
    pub addr: SocketAddr,
}

/// Why a peer string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAddrError {
    /// No `@` between key and address.
    #[error("peer {0:?}: expected <key base64>@<ip:port>")]
    Syntax(String),
    /// The key is not 32 bytes of base64 (or base32).
    #[error("peer key {0:?}: not 32 bytes of base64")]
    Key(String),
    /// The address is not `ip:port`.
    #[error("peer address {0:?}: not ip:port")]
    Addr(String),
}

impl PeerAddr {
    /// The peer's hashname.
    pub fn hashname(&self) -> Hashname {
        Hashname::of_x25519(&self.key)
    }

    /// The mesh peer record (self-certifying: the hashname is the key's).
    pub fn record(&self) -> PeerRecord {
        PeerRecord {
            hashname: self.hashname(),
            static_key: self.key,
            addrs: vec![self.addr],
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", STANDARD.encode(self.key), self.addr)
    }
}

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (key, addr) = s
            .rsplit_once('@')
            .ok_or_else(|| PeerAddrError::Syntax(s.to_owned()))?;
        let bad_key = || PeerAddrError::Key(key.to_owned());
        // 52 characters: the base32 of a `[[mesh.seed]]` key (also valid base64 characters,
        // so the length decides); else base64 (44 characters).
        let key: [u8; 32] = if key.len() == mesh::hashname::HASHNAME_TEXT_LEN {
            decode_key(key).map_err(|_| bad_key())?
        } else {
            let bytes = STANDARD.decode(key).map_err(|_| bad_key())?;
            bytes.as_slice().try_into().map_err(|_| bad_key())?
        };
        let addr = addr
            .parse()
            .map_err(|_| PeerAddrError::Addr(addr.to_owned()))?;
        Ok(PeerAddr { key, addr })
    }
}

/// The address to tell others for a socket bound to `local`: an unspecified IP is replaced by
/// the address this host would use to reach the outside (no packet is sent), else loopback.
pub fn advertised_addr(local: SocketAddr) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
        Ok(s.local_addr()?.ip())
    };
    let ip = probe()
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, local.port())
}

/// The mesh settings of these commands: larger channel buffers than the defaults (a block
/// of up to 256 KiB in flight per direction), as the roll-out simulation uses; no mDNS; no
/// automatic connections.
fn driver_config(bind: SocketAddr) -> DriverConfig {
    let mut mesh = MeshConfig::default();
    mesh.channels.max_send_buffer = firmware::exchange::CHANNEL_SEND_BUFFER;
    mesh.channels.max_recv_buffer = firmware::exchange::CHANNEL_RECV_BUFFER;
    DriverConfig {
        bind,
        mesh,
        seeds: Vec::new(),
        mdns: None,
        auto_connect: false,
    }
}

#[derive(Debug)]
struct Slot {
    id: PeerId,
    kind: PeerKind,
    chan: Option<ChannelId>,
    /// The channel's send buffer was full: wait for `Writable` (or the next tick).
    blocked: bool,
    link_up: bool,
    /// A configured peer this node dials (a provider, or a swarm peer of a [`FirmwareNode`]);
    /// inbound peers are forgotten when their link goes down.
    dialled: bool,
    /// The current channel was opened by this node (not by the peer).
    outbound: bool,
    last_dial: Option<Instant>,
}

/// A fetch's progress callback.
type ProgressFn = Box<dyn FnMut(&Progress)>;

/// The loop state shared by serving and fetching.
struct Exchange {
    handle: MeshHandle,
    engine: Engine<Blockstore>,
    slots: BTreeMap<Hashname, Slot>,
    by_id: BTreeMap<PeerId, Hashname>,
    next_id: u64,
    /// Take exchange channels opened by peers that are not providers (serve).
    accept_inbound: bool,
    /// Peers that ever had an exchange channel open.
    peers_seen: BTreeSet<Hashname>,
    /// The running fetch's end, once reported by the engine.
    done: Option<Result<(), FetchError>>,
    /// Called with the fetch's progress after each stored block.
    progress: Option<ProgressFn>,
    /// The upload cap, if any.
    upload: Option<UploadCap>,
    /// Flushing stopped at the cap: flush again at this time.
    paced_until: Option<Instant>,
}

impl Exchange {
    fn new(
        handle: MeshHandle,
        store: Blockstore,
        accept_inbound: bool,
        server: ServerConfig,
    ) -> Self {
        Self {
            handle,
            engine: Engine::new(store, server),
            slots: BTreeMap::new(),
            by_id: BTreeMap::new(),
            next_id: 1,
            accept_inbound,
            peers_seen: BTreeSet::new(),
            done: None,
            progress: None,
            upload: None,
            paced_until: None,
        }
    }

    fn new_id(&mut self, peer: Hashname) -> PeerId {
        let id = PeerId(self.next_id);
        self.next_id += 1;
        self.by_id.insert(id, peer);
        id
    }

    fn connected(&self) -> usize {
        self.slots.values().filter(|s| s.chan.is_some()).count()
    }

    /// Adds a configured peer this node dials (and re-dials) and opens the exchange channel
    /// to, as `kind`; a peer already known is left as it is. Dialling starts on the next tick.
    async fn add_dialled(&mut self, peer: PeerRecord, kind: PeerKind) -> Result<(), NetError> {
        let hn = peer.hashname;
        if self.slots.get(&hn).is_some_and(|s| s.dialled) {
            return Ok(());
        }
        self.handle.add_peer(peer).await?;
        if let Some(slot) = self.slots.get_mut(&hn) {
            // Already connected inbound: it becomes a configured peer of that kind from its
            // next channel on.
            slot.dialled = true;
            slot.kind = kind;
            return Ok(());
        }
        let id = self.new_id(hn);
        self.slots.insert(
            hn,
            Slot {
                id,
                kind,
                chan: None,
                blocked: false,
                link_up: false,
                dialled: true,
                outbound: false,
                last_dial: None,
            },
        );
        Ok(())
    }

    /// Dials a configured peer (errors are retried on later ticks).
    async fn dial(&mut self, peer: Hashname) -> Result<(), NetError> {
        if let Some(slot) = self.slots.get_mut(&peer) {
            slot.last_dial = Some(Instant::now());
        }
        match self.handle.connect(peer).await {
            Ok(()) => Ok(()),
            Err(DriverError::Stopped) => Err(NetError::Mesh(DriverError::Stopped)),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "firmware: dial");
                Ok(())
            }
        }
    }

    /// Opens the exchange channel to a provider whose link came up.
    async fn open_to(&mut self, peer: Hashname) -> Result<(), NetError> {
        let Some(slot) = self.slots.get(&peer) else {
            return Ok(());
        };
        if slot.chan.is_some() || !slot.dialled {
            return Ok(());
        }
        match self.handle.open_channel(peer, CHANNEL_KIND, true).await {
            Ok(ch) => {
                let id = self.new_id(peer);
                if let Some(slot) = self.slots.get_mut(&peer) {
                    let old = std::mem::replace(&mut slot.id, id);
                    self.by_id.remove(&old);
                    slot.chan = Some(ch);
                    slot.blocked = false;
                    slot.outbound = true;
                    let kind = slot.kind;
                    self.peers_seen.insert(peer);
                    self.engine.connect(Instant::now(), id, kind);
                    tracing::info!(%peer, "firmware: exchange channel open");
                }
                Ok(())
            }
            Err(DriverError::Stopped) => Err(NetError::Mesh(DriverError::Stopped)),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "firmware: open channel");
                Ok(())
            }
        }
    }

    /// Forgets the channel of `peer` on the engine's side.
    fn channel_gone(&mut self, peer: Hashname) {
        let now = Instant::now();
        let Some(slot) = self.slots.get_mut(&peer) else {
            return;
        };
        if slot.chan.take().is_some() {
            self.engine.disconnect(now, slot.id);
        }
        slot.blocked = false;
        if !slot.dialled && !slot.link_up {
            let id = slot.id;
            self.slots.remove(&peer);
            self.by_id.remove(&id);
        }
    }

    async fn close(&self, peer: Hashname, ch: ChannelId, code: u32, reason: &str) {
        if let Err(e) = self.handle.close_channel(peer, ch, code, reason).await {
            tracing::debug!(%peer, error = %e, "firmware: close channel");
        }
    }

    async fn on_driver_event(&mut self, ev: DriverEvent) -> Result<(), NetError> {
        let DriverEvent::Mesh(ev) = ev else {
            return Ok(()); // discovery is off
        };
        match ev {
            MeshEvent::LinkUp { peer, .. } => {
                if let Some(slot) = self.slots.get_mut(&peer) {
                    slot.link_up = true;
                }
                self.open_to(peer).await?;
            }
            MeshEvent::LinkDown { peer, reason } => {
                tracing::debug!(%peer, ?reason, "firmware: link down");
                if let Some(slot) = self.slots.get_mut(&peer) {
                    slot.link_up = false;
                }
                self.channel_gone(peer);
            }
            MeshEvent::PathChanged { .. } => {}
            MeshEvent::Channel { peer, event } => self.on_channel_event(peer, event).await?,
        }
        Ok(())
    }

    async fn on_channel_event(
        &mut self,
        peer: Hashname,
        event: ChannelEvent,
    ) -> Result<(), NetError> {
        match event {
            ChannelEvent::Opened { id, kind, reliable } => {
                let existing = self.slots.get(&peer);
                let wanted = kind == CHANNEL_KIND
                    && reliable
                    && (self.accept_inbound || existing.is_some_and(|s| s.dialled));
                if !wanted {
                    self.close(peer, id, CLOSE_UNWANTED, "not taken").await;
                    return Ok(());
                }
                // Two swarm members that dial each other open a channel each at about the
                // same time: both keep the one opened by the smaller hashname (else each would
                // replace its own by the other's and close both).
                if existing.is_some_and(|s| s.chan.is_some() && s.outbound)
                    && self.handle.hashname() < peer
                {
                    self.close(peer, id, codes::NORMAL, "duplicate").await;
                    return Ok(());
                }
                // A peer opening a new exchange channel replaces its old one (a restarted
                // fetch): the engine starts afresh with it.
                if let Some(old) = existing.and_then(|s| s.chan) {
                    self.channel_gone(peer);
                    self.close(peer, old, codes::NORMAL, "replaced").await;
                }
                let pid = self.new_id(peer);
                let slot = self.slots.entry(peer).or_insert(Slot {
                    id: pid,
                    kind: PeerKind::Swarm,
                    chan: None,
                    blocked: false,
                    link_up: true,
                    dialled: false,
                    outbound: false,
                    last_dial: None,
                });
                let old = std::mem::replace(&mut slot.id, pid);
                if old != pid {
                    self.by_id.remove(&old);
                }
                slot.chan = Some(id);
                slot.blocked = false;
                slot.outbound = false;
                slot.link_up = true;
                let kind = slot.kind;
                self.peers_seen.insert(peer);
                self.engine.connect(Instant::now(), pid, kind);
                tracing::info!(%peer, "firmware: peer opened an exchange channel");
            }
            ChannelEvent::Readable { id } => {
                let Some(slot) = self.slots.get(&peer) else {
                    return Ok(());
                };
                if slot.chan != Some(id) {
                    return Ok(());
                }
                let pid = slot.id;
                loop {
                    match self.handle.recv(peer, id, READ_CHUNK).await {
                        Ok(bytes) if bytes.is_empty() => break,
                        Ok(bytes) => {
                            self.engine.handle_bytes(Instant::now(), pid, &bytes);
                            // The engine may have dropped the peer (garbage).
                            if self.slots.get(&peer).and_then(|s| s.chan) != Some(id) {
                                break;
                            }
                        }
                        Err(DriverError::Stopped) => {
                            return Err(NetError::Mesh(DriverError::Stopped));
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "firmware: recv");
                            self.channel_gone(peer);
                            break;
                        }
                    }
                    self.drain_engine().await;
                }
            }
            ChannelEvent::Writable { id } => {
                if let Some(slot) = self.slots.get_mut(&peer)
                    && slot.chan == Some(id)
                {
                    slot.blocked = false;
                }
            }
            ChannelEvent::Closed { id, error } => {
                if self.slots.get(&peer).and_then(|s| s.chan) == Some(id) {
                    tracing::info!(%peer, ?error, "firmware: exchange channel closed");
                    self.channel_gone(peer);
                }
            }
            ChannelEvent::Data { .. } => {} // data events are off in the driver
        }
        Ok(())
    }

    /// Handles the engine's events: progress, the fetch's end, peers to drop.
    async fn drain_engine(&mut self) {
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                EngineEvent::BlockStored { .. } => {
                    let p = self.engine.progress();
                    if let Some(f) = self.progress.as_mut() {
                        f(&p);
                    }
                }
                EngineEvent::Complete { .. } => self.done = Some(Ok(())),
                EngineEvent::Failed { error, .. } => self.done = Some(Err(error)),
                EngineEvent::Penalised { peer, reason } => {
                    let hn = self.by_id.get(&peer).copied();
                    tracing::warn!(peer = ?hn, ?reason, "firmware: peer penalised");
                }
                EngineEvent::Disconnect { peer, reason } => {
                    let Some(hn) = self.by_id.get(&peer).copied() else {
                        continue;
                    };
                    tracing::warn!(peer = %hn, ?reason, "firmware: dropping peer");
                    let ch = self
                        .slots
                        .get_mut(&hn)
                        .filter(|s| s.id == peer)
                        .and_then(|s| s.chan.take());
                    if let Some(ch) = ch {
                        self.close(hn, ch, CLOSE_VIOLATION, "exchange violation")
                            .await;
                    }
                }
            }
        }
    }

    /// Writes what the engine has for each peer into its channel while the channel takes it,
    /// one chunk per peer per pass (so that under an upload cap every peer gets its share);
    /// at the cap, notes when to go on ([`Exchange::paced_until`]).
    async fn flush(&mut self) -> Result<(), NetError> {
        self.paced_until = None;
        let mut targets: Vec<(Hashname, PeerId, ChannelId)> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.blocked)
            .filter_map(|(hn, s)| s.chan.map(|ch| (*hn, s.id, ch)))
            .collect();
        'passes: while !targets.is_empty() {
            let mut again = Vec::with_capacity(targets.len());
            for (hn, pid, ch) in targets {
                if !self.engine.wants_transmit(pid) {
                    continue;
                }
                let max = match &mut self.upload {
                    Some(cap) => {
                        let now = Instant::now();
                        let n = cap.available(now, WRITE_CHUNK);
                        if n == 0 {
                            self.paced_until = Some(cap.ready_at(now, PACE_QUANTUM));
                            break 'passes;
                        }
                        n
                    }
                    None => WRITE_CHUNK,
                };
                let chunk = self.engine.peek_transmit(pid, max);
                if chunk.is_empty() {
                    continue;
                }
                let n = chunk.len();
                match self.handle.send(hn, ch, chunk).await {
                    Ok(()) => {
                        self.engine.advance_transmit(pid, n);
                        if let Some(cap) = &mut self.upload {
                            cap.spend(n);
                        }
                        again.push((hn, pid, ch));
                    }
                    Err(DriverError::Mesh(MeshError::Channel(ChannelError::WouldBlock))) => {
                        if let Some(slot) = self.slots.get_mut(&hn) {
                            slot.blocked = true;
                        }
                    }
                    Err(DriverError::Stopped) => return Err(NetError::Mesh(DriverError::Stopped)),
                    Err(e) => {
                        tracing::debug!(peer = %hn, error = %e, "firmware: send");
                        self.channel_gone(hn);
                    }
                }
            }
            targets = again;
        }
        self.drain_engine().await;
        Ok(())
    }

    /// Housekeeping: unblock channels (in case a `Writable` was missed), re-dial providers.
    async fn tick(&mut self) -> Result<(), NetError> {
        let now = Instant::now();
        let mut redial = Vec::new();
        for (hn, slot) in &mut self.slots {
            slot.blocked = false;
            if slot.dialled
                && slot.chan.is_none()
                && slot
                    .last_dial
                    .is_none_or(|t| now.saturating_duration_since(t) >= REDIAL)
            {
                redial.push(*hn);
            }
        }
        for hn in redial {
            let link_up = self.slots.get(&hn).is_some_and(|s| s.link_up);
            if link_up {
                if let Some(slot) = self.slots.get_mut(&hn) {
                    slot.last_dial = Some(now);
                }
                self.open_to(hn).await?;
            } else {
                self.dial(hn).await?;
            }
        }
        Ok(())
    }

    /// One turn of the loop: waits for a driver event, the engine's timer, the housekeeping
    /// tick or `stop`; returns `false` once `stop` resolved.
    async fn turn(
        &mut self,
        tick: &mut tokio::time::Interval,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<bool, NetError> {
        let deadline = self.engine.poll_timeout();
        let timer = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let paced_until = self.paced_until;
        let paced = async {
            match paced_until {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = self.handle.next_event() => match ev {
                Some(ev) => self.on_driver_event(ev).await?,
                None => return Err(NetError::Mesh(DriverError::Stopped)),
            },
            () = timer => self.engine.handle_timeout(Instant::now()),
            _ = tick.tick() => self.tick().await?,
            () = paced => {}
            () = stop => return Ok(false),
        }
        self.drain_engine().await;
        self.flush().await?;
        Ok(true)
    }

    /// Closes every exchange channel (so peers forget this node at once) and stops the driver.
    async fn finish(self) -> Result<EngineStats, NetError> {
        for (hn, slot) in &self.slots {
            if let Some(ch) = slot.chan {
                self.close(*hn, ch, codes::NORMAL, "done").await;
            }
        }
        let stats = self.engine.stats();
        self.handle.shutdown().await?;
        Ok(stats)
    }
}

/// Options of [`fetch`].
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Local UDP address to bind (default `0.0.0.0:0`).
    pub bind: SocketAddr,
    /// Give up after this long (default 10 minutes).
    pub timeout: Duration,
    /// Session tuning (default [`SessionConfig::default`]).
    pub session: SessionConfig,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            timeout: Duration::from_secs(600),
            session: SessionConfig::default(),
        }
    }
}

/// What a completed [`fetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchReport {
    /// The root fetched: every block of its DAG is now in the store.
    pub root: Cid,
    /// Blocks fetched, blocks already held, re-requests, ….
    pub progress: Progress,
    /// Bytes moved.
    pub stats: EngineStats,
    /// Peers that had an exchange channel open.
    pub peers: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// Fetches the DAG under `root` from `peers` (as providers) into `store`, every block verified
/// against its CID before it is stored. Blocks already in `store` are not fetched again.
/// `progress` is called after each stored block. Ends when the store holds the whole DAG (then
/// the caller rebuilds the file from it), the peers lack a block, or after
/// [`FetchOptions::timeout`].
pub async fn fetch(
    store: Blockstore,
    identity: Identity,
    peers: Vec<PeerRecord>,
    root: Cid,
    opts: &FetchOptions,
    progress: impl FnMut(&Progress) + 'static,
) -> Result<FetchReport, NetError> {
    if peers.is_empty() {
        return Err(NetError::NoPeers);
    }
    let start = Instant::now();
    // Blocks already in the store (an interrupted fetch) are walked, not requested.
    let held = store.clone();
    let handle = driver::start(identity, driver_config(opts.bind), Acceptor::allow_all()).await?;
    let mut ex = Exchange::new(handle, store, false, ServerConfig::default());
    ex.progress = Some(Box::new(progress));
    for p in peers {
        if let Err(e) = ex.add_dialled(p, PeerKind::Provider).await {
            let _ = ex.finish().await;
            return Err(e);
        }
    }
    if let Err(error) = ex.engine.fetch(
        Instant::now(),
        root,
        opts.session.clone(),
        Some(Box::new(held)),
    ) {
        let _ = ex.finish().await;
        return Err(NetError::Fetch { root, error });
    }
    ex.drain_engine().await;
    let hns: Vec<Hashname> = ex.slots.keys().copied().collect();
    if ex.done.is_none() {
        for hn in hns {
            ex.dial(hn).await?;
        }
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = std::pin::pin!(tokio::time::sleep(opts.timeout));
    let mut timed_out = false;
    while ex.done.is_none() {
        match ex.turn(&mut tick, &mut stop).await {
            Ok(true) => {}
            Ok(false) => {
                timed_out = true;
                break;
            }
            Err(e) => {
                let _ = ex.finish().await;
                return Err(e);
            }
        }
    }
    let progress = ex.engine.progress();
    let connected = ex.connected();
    let peers_seen = ex.peers_seen.len();
    let done = ex.done.take();
    let stats = ex.finish().await?;
    match done {
        Some(Ok(())) => Ok(FetchReport {
            root,
            progress,
            stats,
            peers: peers_seen,
            elapsed: start.elapsed(),
        }),
        Some(Err(error)) => Err(NetError::Fetch { root, error }),
        None => {
            debug_assert!(timed_out);
            Err(NetError::Timeout {
                root,
                after: opts.timeout,
                progress,
                connected,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_strings_round_trip_and_reject_garbage() {
        let id = Identity::from_bytes([9; 32]);
        let p = PeerAddr {
            key: id.public_key(),
            addr: SocketAddr::from(([127, 0, 0, 1], 4242)),
        };
        let text = p.to_string();
        assert_eq!(text.parse::<PeerAddr>(), Ok(p));
        assert_eq!(p.hashname(), id.hashname());
        // The base32 key of a `[[mesh.seed]]` entry works too.
        let b32 = format!(
            "{}@127.0.0.1:4242",
            mesh::discovery::record::encode_key(&p.key)
        );
        assert_eq!(b32.parse::<PeerAddr>(), Ok(p));
        assert!(matches!(
            "no-at-sign".parse::<PeerAddr>(),
            Err(PeerAddrError::Syntax(_))
        ));
        assert!(matches!(
            "AAAA@127.0.0.1:1".parse::<PeerAddr>(),
            Err(PeerAddrError::Key(_))
        ));
        let bad_addr = format!("{}@nowhere", STANDARD.encode(p.key));
        assert!(matches!(
            bad_addr.parse::<PeerAddr>(),
            Err(PeerAddrError::Addr(_))
        ));
        // IPv6 addresses keep their brackets.
        let v6 = format!("{}@[::1]:4242", STANDARD.encode(p.key));
        assert_eq!(
            v6.parse::<PeerAddr>().map(|p| p.addr),
            Ok(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 4242)))
        );
    }

    #[test]
    fn mesh_key_files_round_trip() {
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("mesh.key");
        let id = generate_identity().expect("identity");
        write_mesh_key(&path, &id).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_eq!(
            read_mesh_key(&path).expect("read").public_key(),
            id.public_key()
        );
        assert!(matches!(
            write_mesh_key(&path, &id),
            Err(MeshKeyError::Io { .. })
        ));
        std::fs::write(&path, "not a key\n").expect("overwrite");
        assert!(matches!(
            read_mesh_key(&path),
            Err(MeshKeyError::Format { .. })
        ));
    }
}
