//! A gateway in the firmware swarm (seed 004: "once enough devices have the update they serve
//! each other"): a [`FirmwareNode`] serves its blockstore to every peer that opens an exchange
//! channel and, with an [`UpdateConfig`], while serving, runs the update flow of
//! `firmware::sim::DeviceEndpoint` over the real mesh:
//!
//! * it dials configured peers: providers (the manufacturer's node, [`PeerKind::Provider`],
//!   asked only for what the swarm lacks) and swarm peers (other gateways,
//!   [`PeerKind::Swarm`], asked for blocks they announced). Exchange channels other gateways
//!   open to it are swarm peers too;
//! * it watches a manifest directory ([`UpdateConfig::manifests`], read every
//!   [`UpdateConfig::poll`]): each `*.manifest` file (a `SignedManifest` encoding, as
//!   `mef-gateway firmware publish` writes it) is checked with the node's [`UpdatePolicy`]. The
//!   newest valid update starts a fetch of its root as a swarm member ([`SessionConfig::swarm`]),
//!   blocks already in the store not fetched again. Refused manifests (untrusted signer,
//!   another model, a downgrade, not a manifest) are logged once per file version; up-to-date
//!   ones are ignored;
//! * once every block is in, the image is rebuilt with every block verified and staged
//!   ([`Stager`]), pinned (replacing the pin of the image this node staged before; the
//!   blockstore is then garbage-collected, so the old image's blocks go), and the
//!   staged version becomes the running one for later manifests. The node keeps serving: its
//!   blocks go to the gateways still fetching;
//! * a failed fetch, or one running longer than [`UpdateConfig::fetch_timeout`], is abandoned
//!   (nothing is staged) and tried again after [`UpdateConfig::retry_after`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use cid::Cid;
use firmware::blockstore::Blockstore;
use firmware::exchange::{
    EngineStats, FetchError, PeerKind, Progress, ServerConfig, SessionConfig,
};
use firmware::manifest::{SignedManifest, Version};
use firmware::update::{
    Decision, StagedImage, Stager, StoreBlocks, UpdateError, UpdatePolicy, VerifiedUpdate,
    replace_pin,
};
use mesh::driver;
use mesh::link::Acceptor;
use mesh::{Hashname, Identity};
use tokio::sync::watch;

use super::{Exchange, NetError, PeerAddr, TICK, advertised_addr, driver_config};
use mesh::discovery::record::encode_key;

/// The update side of a [`FirmwareNode`]: where manifests appear, what the node accepts, where
/// verified images go.
#[derive(Debug, Clone)]
pub struct UpdateConfig {
    /// The directory watched for `*.manifest` files.
    pub manifests: PathBuf,
    /// Model, running version and trusted manufacturer keys. The running version advances
    /// (in memory) with every image staged.
    pub policy: UpdatePolicy,
    /// The staging directory (created if needed).
    pub staging: PathBuf,
    /// The fetch session's tuning (default [`SessionConfig::swarm`], as the roll-out simulation).
    pub session: SessionConfig,
    /// How often the manifest directory is read (default 1 s).
    pub poll: Duration,
    /// A fetch still running after this long is abandoned (default 10 minutes).
    pub fetch_timeout: Duration,
    /// After a failed or abandoned fetch (or a failed staging), wait this long before trying
    /// again (default 10 s).
    pub retry_after: Duration,
}

impl UpdateConfig {
    /// Watches `manifests`, checks with `policy`, stages into `staging`; default timings.
    pub fn new(manifests: PathBuf, policy: UpdatePolicy, staging: PathBuf) -> Self {
        Self {
            manifests,
            policy,
            staging,
            session: SessionConfig::swarm(),
            poll: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(600),
            retry_after: Duration::from_secs(10),
        }
    }
}

/// What a [`FirmwareNode`] reports as it goes (also logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A manifest file was refused (reported once per version of the file).
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A fetch started.
    Fetching {
        /// The manifest file.
        path: PathBuf,
        /// The update's version.
        version: Version,
        /// Its root.
        root: Cid,
    },
    /// A fetch ended without the image, or was abandoned (timeout), or the image could not be
    /// staged; tried again after [`UpdateConfig::retry_after`].
    Failed {
        /// The root.
        root: Cid,
        /// Why.
        reason: String,
    },
    /// A verified image was staged and pinned.
    Staged {
        /// The staged image.
        image: StagedImage,
        /// The fetch's progress (blocks from providers and from swarm peers, …).
        progress: Progress,
    },
}

/// What [`FirmwareNode::run`] reports when stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// What the exchange served and moved.
    pub stats: EngineStats,
    /// Peers that had an exchange channel open.
    pub peers: usize,
    /// The images staged, oldest first.
    pub staged: Vec<StagedImage>,
    /// The running version at the end (`None` without an [`UpdateConfig`]).
    pub current: Option<Version>,
}

/// A live view of a running [`FirmwareNode`] ([`FirmwareNode::status`]), refreshed every loop
/// turn: what the daemon's `/metrics` and `/status` report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// What the exchange served and moved so far.
    pub stats: EngineStats,
    /// Peers with an exchange channel open now.
    pub connected: usize,
    /// Peers that ever had an exchange channel open.
    pub peers_seen: usize,
    /// The running version (`None` without an [`UpdateConfig`]).
    pub current: Option<Version>,
    /// The update being fetched, and how far it is.
    pub fetching: Option<(Version, Progress)>,
    /// Images staged since the start.
    pub staged: u64,
    /// Manifest files refused (once per file version).
    pub refused: u64,
    /// Fetches or stagings that failed (each retried later).
    pub failed: u64,
}

/// A manifest file as last read.
#[derive(Debug)]
struct ManifestFile {
    /// Modification time and length when read: a change means reading it again.
    stamp: (Option<SystemTime>, u64),
    /// The decoded manifest, or why it is not one.
    manifest: Result<SignedManifest, String>,
    /// A refusal was reported for this version of the file.
    reported: bool,
}

/// The running fetch.
#[derive(Debug)]
struct Running {
    update: VerifiedUpdate,
    started: Instant,
}

/// The update flow's state.
#[derive(Debug)]
struct Updater {
    cfg: UpdateConfig,
    files: BTreeMap<PathBuf, ManifestFile>,
    running: Option<Running>,
    retry_at: Option<Instant>,
    next_poll: Instant,
    /// The root this node pinned last (unpinned when the next image is pinned).
    pinned: Option<Cid>,
    staged: Vec<StagedImage>,
    refused: u64,
    failed: u64,
}

/// A firmware node: serves its store to the swarm and, with an [`UpdateConfig`], fetches and
/// stages newer images as a swarm member. See the module docs.
pub struct FirmwareNode {
    exchange: Exchange,
    key: [u8; 32],
    updater: Option<Updater>,
    status: watch::Sender<NodeStatus>,
}

impl fmt::Debug for FirmwareNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirmwareNode")
            .field("hashname", &self.exchange.handle.hashname())
            .field("addr", &self.exchange.handle.local_addr())
            .finish_non_exhaustive()
    }
}

impl FirmwareNode {
    /// Binds the mesh on `bind` (port 0: any) with `identity`, serving from `store` as `server`
    /// says (the manufacturer's node sets [`ServerConfig::copies_per_block`]); with `update`,
    /// runs the update flow too. Add peers with [`FirmwareNode::add_peer`], then
    /// [`FirmwareNode::run`].
    pub async fn start(
        store: Blockstore,
        identity: Identity,
        bind: SocketAddr,
        update: Option<UpdateConfig>,
        server: ServerConfig,
    ) -> Result<Self, NetError> {
        let key = identity.public_key();
        let handle = driver::start(identity, driver_config(bind), Acceptor::allow_all()).await?;
        let updater = update.map(|mut cfg| {
            let pinned = installed(&mut cfg);
            Updater {
                cfg,
                files: BTreeMap::new(),
                running: None,
                retry_at: None,
                next_poll: Instant::now(),
                pinned,
                staged: Vec::new(),
                refused: 0,
                failed: 0,
            }
        });
        let (status, _) = watch::channel(NodeStatus {
            current: updater.as_ref().map(|u| u.cfg.policy.current),
            ..NodeStatus::default()
        });
        Ok(Self {
            exchange: Exchange::new(handle, store, true, server),
            key,
            updater,
            status,
        })
    }

    /// Adds a peer this node dials and keeps connected: [`PeerKind::Provider`] for the
    /// manufacturer's node, [`PeerKind::Swarm`] for another gateway.
    pub async fn add_peer(&mut self, peer: PeerAddr, kind: PeerKind) -> Result<(), NetError> {
        self.exchange.add_dialled(peer.record(), kind).await
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.exchange.handle.local_addr()
    }

    /// This node's hashname.
    pub fn hashname(&self) -> Hashname {
        self.exchange.handle.hashname()
    }

    /// How others reach this node (see [`advertised_addr`]).
    pub fn peer_addr(&self) -> PeerAddr {
        PeerAddr {
            key: self.key,
            addr: advertised_addr(self.local_addr()),
        }
    }

    /// Caps what the node writes into exchange channels (blocks served, and its own wants)
    /// at `bits_per_second` (`None`: no cap). See [`super::pace::UploadCap`].
    pub fn set_upload_cap(&mut self, bits_per_second: Option<u64>) {
        self.exchange.upload = bits_per_second.map(super::pace::UploadCap::new);
    }

    /// A live view of the node, refreshed every loop turn of [`FirmwareNode::run`] (every
    /// event, and at least every half second).
    pub fn status(&self) -> watch::Receiver<NodeStatus> {
        self.status.subscribe()
    }

    /// This node's public key in the base32 of `[[mesh.seed]] key`.
    pub fn key_base32(&self) -> String {
        encode_key(&self.key)
    }

    /// Serves (and updates) until `shutdown` resolves, calling `on_event` with what the update
    /// flow does; then closes the channels and stops the driver.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut on_event: impl FnMut(&NodeEvent),
    ) -> Result<NodeReport, NetError> {
        let mut stop = std::pin::pin!(shutdown);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Dial the configured peers at once (not only on the first tick).
        let dialled: Vec<Hashname> = self
            .exchange
            .slots
            .iter()
            .filter(|(_, s)| s.dialled)
            .map(|(hn, _)| *hn)
            .collect();
        let run = async {
            for hn in dialled {
                self.exchange.dial(hn).await?;
            }
            loop {
                self.update_step(&mut on_event).await?;
                self.publish_status();
                if !self.exchange.turn(&mut tick, &mut stop).await? {
                    return Ok::<(), NetError>(());
                }
            }
        };
        let result = run.await;
        let peers = self.exchange.peers_seen.len();
        let (staged, current) = match self.updater.take() {
            Some(u) => (u.staged, Some(u.cfg.policy.current)),
            None => (Vec::new(), None),
        };
        let finished = self.exchange.finish().await;
        result?;
        Ok(NodeReport {
            stats: finished?,
            peers,
            staged,
            current,
        })
    }

    /// Refreshes what [`FirmwareNode::status`] shows.
    fn publish_status(&self) {
        let ex = &self.exchange;
        let up = self.updater.as_ref();
        let status = NodeStatus {
            stats: ex.engine.stats(),
            connected: ex.connected(),
            peers_seen: ex.peers_seen.len(),
            current: up.map(|u| u.cfg.policy.current),
            fetching: up
                .and_then(|u| u.running.as_ref())
                .map(|r| (r.update.manifest().version, ex.engine.progress())),
            staged: up.map_or(0, |u| u.staged.len() as u64),
            refused: up.map_or(0, |u| u.refused),
            failed: up.map_or(0, |u| u.failed),
        };
        self.status.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }

    /// The update flow's part of a loop turn: the fetch's end, the manifest directory, the
    /// fetch timeout.
    async fn update_step(&mut self, on_event: &mut impl FnMut(&NodeEvent)) -> Result<(), NetError> {
        let Some(up) = self.updater.as_mut() else {
            return Ok(());
        };
        let ex = &mut self.exchange;
        // Twice: a fetch started below may end at once (every block already held).
        for _ in 0..2 {
            if let Some(done) = ex.done.take() {
                up.finish_fetch(ex, done, on_event);
            }
            let now = Instant::now();
            if now < up.next_poll {
                break;
            }
            up.next_poll = now + up.cfg.poll;
            if let Some(r) = &up.running
                && now.saturating_duration_since(r.started) >= up.cfg.fetch_timeout
            {
                let root = r.update.manifest().root;
                ex.engine.cancel_fetch();
                up.running = None;
                up.retry_at = Some(now + up.cfg.retry_after);
                let p = ex.engine.progress();
                up.report(
                    on_event,
                    NodeEvent::Failed {
                        root,
                        reason: format!(
                            "timed out after {}s ({} blocks fetched, {} held, {} connected peers)",
                            up.cfg.fetch_timeout.as_secs(),
                            p.blocks_fetched,
                            p.blocks_held,
                            ex.connected()
                        ),
                    },
                );
            }
            up.scan(on_event);
            if up.running.is_none() && up.retry_at.is_none_or(|t| now >= t) {
                up.retry_at = None;
                up.start_fetch(ex, on_event);
            }
            ex.drain_engine().await;
            ex.flush().await?;
        }
        Ok(())
    }
}

impl Updater {
    fn report(&mut self, on_event: &mut impl FnMut(&NodeEvent), ev: NodeEvent) {
        match &ev {
            NodeEvent::Refused { path, reason } => {
                self.refused += 1;
                tracing::warn!(path = %path.display(), %reason, "firmware: manifest refused");
            }
            NodeEvent::Fetching {
                path,
                version,
                root,
            } => {
                tracing::info!(path = %path.display(), %version, %root, "firmware: fetching update");
            }
            NodeEvent::Failed { root, reason } => {
                self.failed += 1;
                tracing::warn!(%root, %reason, retry_in_s = self.cfg.retry_after.as_secs(),
                    "firmware: update failed, will retry");
            }
            NodeEvent::Staged { image, progress } => {
                tracing::info!(
                    path = %image.path.display(),
                    version = %image.version,
                    root = %image.root,
                    from_providers = progress.blocks_from_providers,
                    from_swarm = progress.blocks_from_swarm,
                    held = progress.blocks_held,
                    "firmware: update staged"
                );
            }
        }
        on_event(&ev);
    }

    /// Reads the manifest directory: new or changed files are decoded; refusals are reported
    /// once per file version; files gone are forgotten.
    fn scan(&mut self, on_event: &mut impl FnMut(&NodeEvent)) {
        let entries = match std::fs::read_dir(&self.cfg.manifests) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(dir = %self.cfg.manifests.display(), error = %e,
                    "firmware: manifest directory");
                self.files.clear();
                return;
            }
        };
        let mut present = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "manifest") {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let stamp = (meta.modified().ok(), meta.len());
            present.push(path.clone());
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let manifest = crate::firmware_cli::read_manifest(&path).map_err(|e| e.to_string());
            self.files.insert(
                path,
                ManifestFile {
                    stamp,
                    manifest,
                    reported: false,
                },
            );
        }
        self.files.retain(|p, _| present.contains(p));
        let mut refused = Vec::new();
        for (path, f) in &mut self.files {
            if f.reported {
                continue;
            }
            let reason = match &f.manifest {
                Err(e) => Some(e.clone()),
                Ok(m) => self.cfg.policy.check(m).err().map(|e| e.to_string()),
            };
            if let Some(reason) = reason {
                f.reported = true;
                refused.push(NodeEvent::Refused {
                    path: path.clone(),
                    reason,
                });
            }
        }
        for ev in refused {
            self.report(on_event, ev);
        }
    }

    /// The newest update among the manifest files, if any.
    fn best(&self) -> Option<(PathBuf, VerifiedUpdate)> {
        self.files
            .iter()
            .filter_map(
                |(path, f)| match self.cfg.policy.check(f.manifest.as_ref().ok()?) {
                    Ok(Decision::Update(u)) => Some((path.clone(), u)),
                    _ => None,
                },
            )
            .max_by_key(|(_, u)| u.manifest().version)
    }

    fn start_fetch(&mut self, ex: &mut Exchange, on_event: &mut impl FnMut(&NodeEvent)) {
        let Some((path, update)) = self.best() else {
            return;
        };
        let root = update.manifest().root;
        let now = Instant::now();
        // Blocks already in the store are walked, not requested.
        let held = ex.engine.store().clone();
        let started = ex
            .engine
            .fetch(now, root, self.cfg.session.clone(), Some(Box::new(held)))
            .map_err(|e| e.to_string());
        if let Err(reason) = started {
            self.retry_at = Some(now + self.cfg.retry_after);
            self.report(on_event, NodeEvent::Failed { root, reason });
            return;
        }
        self.report(
            on_event,
            NodeEvent::Fetching {
                path,
                version: update.manifest().version,
                root,
            },
        );
        self.running = Some(Running {
            update,
            started: now,
        });
    }

    /// The engine's fetch ended: stage the image (rebuilt and verified again from the store),
    /// pin it, or schedule a retry.
    fn finish_fetch(
        &mut self,
        ex: &Exchange,
        done: Result<(), FetchError>,
        on_event: &mut impl FnMut(&NodeEvent),
    ) {
        let Some(running) = self.running.take() else {
            return;
        };
        let root = running.update.manifest().root;
        let outcome = done.map_err(|e| e.to_string()).and_then(|()| {
            stage(
                &self.cfg.staging,
                &running.update,
                ex.engine.store(),
                self.pinned.as_ref(),
            )
        });
        match outcome {
            Ok(image) => {
                self.pinned = Some(image.root);
                self.cfg.policy.current = image.version;
                self.staged.push(image.clone());
                let progress = ex.engine.progress();
                self.report(on_event, NodeEvent::Staged { image, progress });
            }
            Err(reason) => {
                self.retry_at = Some(Instant::now() + self.cfg.retry_after);
                self.report(on_event, NodeEvent::Failed { root, reason });
            }
        }
    }
}

/// What a restarted node already staged: the newest trusted image in the staging directory for
/// this model, if newer than the configured running version, becomes the running version (and
/// the pin the next staging replaces), so a restart does not fetch and stage it again.
fn installed(cfg: &mut UpdateConfig) -> Option<Cid> {
    let newest = match Stager::open(&cfg.staging) {
        Ok(stager) => stager.newest(&cfg.policy),
        Err(e) => Err(e),
    };
    match newest {
        Ok(Some(image)) if image.version > cfg.policy.current => {
            tracing::info!(
                version = %image.version,
                path = %image.path.display(),
                "firmware: already staged; running version taken from it"
            );
            cfg.policy.current = image.version;
            Some(image.root)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "firmware: cannot read the staging directory");
            None
        }
    }
}

/// Rebuilds `update`'s image from `store` (every block checked against its CID), stages it in
/// `staging`, and pins it in place of `previous`.
fn stage(
    staging: &Path,
    update: &VerifiedUpdate,
    store: &Blockstore,
    previous: Option<&Cid>,
) -> Result<StagedImage, String> {
    let stager = Stager::open(staging).map_err(|e| e.to_string())?;
    let src = StoreBlocks::new(store);
    let staged = stager.stage(update, &src).map_err(|e| match e {
        UpdateError::Export(source) => src.explain(source).to_string(),
        other => other.to_string(),
    })?;
    replace_pin(store, &staged.root, previous).map_err(|e| e.to_string())?;
    // The previous image is unpinned and the fetch is over (no unpinned block is still being
    // fetched): reclaim its blocks. A failure here does not undo the staging.
    match store.gc() {
        Ok(r) => tracing::info!(
            blocks_removed = r.blocks_removed,
            bytes_freed = r.bytes_freed,
            blocks_kept = r.blocks_kept,
            "firmware: blockstore collected"
        ),
        Err(e) => tracing::warn!(error = %e, "firmware: blockstore gc failed"),
    }
    Ok(staged)
}
