//! The daemon's threads and tasks:
//!
//! - **LoRa receive thread**: a blocking UDP socket on `[lora] listen`; every datagram goes to
//!   the input queue (bounded; a datagram dropped there is never acknowledged).
//! - **BLE** (feature `bluez`): the BlueZ scanner task; its adverts go to the same input queue.
//! - **Ingest thread**: owns the [`Ingest`] pipeline; takes inputs, appends when a batch is due
//!   and only then sends the PUSH_ACKs of the datagrams in that batch (from a clone of the LoRa
//!   socket, so they leave from the port the forwarder talks to).
//! - **Forwarding thread**: [`Forwarder::pump`] from the store to the uplink, with back-off.
//! - **Metrics task**: a minimal HTTP/1.1 responder for `GET /metrics` and `GET /status`.
//! - **Simulator thread** with `--simulate` ([`super::simulate`]).
//! - **Firmware task** with `[firmware]`: a [`FirmwareNode`] on the tokio runtime, serving the
//!   blockstore to the swarm and, with `manifests`, fetching and staging newer images. Its live
//!   [`NodeStatus`] feeds `/metrics` and `/status`; a failure there is logged and never stops
//!   the sensor path.
//!
//! The store is one SQLite connection behind a mutex shared by the ingest and forwarding
//! threads (and briefly by the metrics task for [`Store::stats`]).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use firmware::blockstore::{Blockstore, BlockstoreError};
use firmware::exchange::PeerKind;
use tokio::sync::{oneshot, watch};

use crate::firmware_net::{FirmwareNode, MeshKeyError, NetError, NodeStatus, read_mesh_key};
use crate::lpp::LoraDevices;
use crate::store::{Store, StoreError};
use crate::uplink::{FileUplink, Forwarder, ForwarderConfig, PumpState, Uplink, UplinkError};

use super::config::{Config, ConfigError, FirmwareConfig, UplinkKind};
use super::ingest::{Ingest, IngestConfig, IngestCounters, lock};
use super::key::KeyError;
use super::metrics::UplinkCounters;
use super::simulate::{self, SimConfig};

/// Capacity of the input queue (frames waiting for the ingest thread).
pub const INPUT_CAPACITY: usize = 16_384;
/// Devices listed by `/status`.
const STATUS_DEVICES: usize = 16;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key file.
    #[error("gateway key: {0}")]
    Key(#[from] KeyError),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The uplink could not be opened.
    #[error("uplink: {0}")]
    Uplink(#[from] UplinkError),
    /// A socket or thread failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The firmware node's mesh key file.
    #[error("firmware mesh key: {0}")]
    MeshKey(#[from] MeshKeyError),
    /// The firmware blockstore could not be opened.
    #[error("firmware store: {0}")]
    Blockstore(#[from] BlockstoreError),
    /// The firmware node could not start (mesh socket, peers).
    #[error("firmware node: {0}")]
    Firmware(Box<NetError>),
    /// `[ble] enabled = true` in a binary built without the `bluez` feature.
    #[error("[ble] enabled = true, but this mef-gateway was built without the `bluez` feature")]
    NoBluez,
}

impl From<NetError> for DaemonError {
    fn from(e: NetError) -> Self {
        DaemonError::Firmware(Box::new(e))
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

pub use crate::reading::now_ms;

/// A frame for the ingest thread.
#[derive(Debug)]
pub enum Input {
    /// A Semtech UDP datagram.
    Datagram {
        /// Its source.
        from: SocketAddr,
        /// Its bytes.
        data: Vec<u8>,
        /// When it arrived, ms since the Unix epoch.
        time_ms: u64,
    },
    /// A BTHome service data value.
    Ble {
        /// Sender MAC, as printed.
        mac: [u8; 6],
        /// RSSI, dBm.
        rssi: Option<i16>,
        /// The service data (no UUID).
        data: Vec<u8>,
        /// When it arrived, ms since the Unix epoch.
        time_ms: u64,
    },
}

/// `--simulate` options.
#[derive(Debug, Clone, Copy)]
pub struct Simulate {
    /// Number of simulated sensors.
    pub sensors: usize,
    /// Total readings per second.
    pub rate: f64,
}

/// Run options beyond the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Simulated sensors.
    pub simulate: Option<Simulate>,
}

/// State shared between the threads and the metrics task.
#[derive(Debug)]
struct Shared {
    store: Arc<Mutex<Store>>,
    ingest: Mutex<IngestCounters>,
    uplink: Mutex<UplinkCounters>,
    input_dropped: AtomicU64,
    stop: AtomicBool,
    firmware: Option<watch::Receiver<NodeStatus>>,
}

fn get<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn set<T>(m: &Mutex<T>, v: T) {
    *m.lock().unwrap_or_else(|e| e.into_inner()) = v;
}

/// Runs the daemon until `shutdown` completes (SIGINT/SIGTERM in the binary), then flushes
/// what is pending (sending its acks) and stops.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let key = super::key::read(&cfg.key_path)?;
    tracing::info!("gateway key {}", super::key::public_base64(&key));
    let store = Store::open(&cfg.store.path, cfg.limits(), key)?;
    tracing::info!("store {} opened", cfg.store.path.display());
    let uplink: Box<dyn Uplink + Send> = match cfg.uplink.kind {
        UplinkKind::File => Box::new(FileUplink::open(&cfg.uplink.path)?),
    };
    // Bound before any thread starts, so a bad address fails the start cleanly.
    let listener = TcpListener::bind(cfg.metrics.listen)
        .await
        .map_err(io(format!("binding metrics {}", cfg.metrics.listen)))?;
    tracing::info!(
        "metrics on http://{}/metrics",
        listener.local_addr().map_err(io("metrics address"))?
    );
    // Started before any thread too: a bad key, store or address fails the start.
    let firmware = match &cfg.firmware {
        Some(f) => Some(start_firmware(f).await?),
        None => None,
    };
    let shared = Arc::new(Shared {
        store: Arc::new(Mutex::new(store)),
        ingest: Mutex::new(IngestCounters::default()),
        uplink: Mutex::new(UplinkCounters::default()),
        input_dropped: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        firmware: firmware.as_ref().map(|f| f.status.clone()),
    });

    let mut lora = LoraDevices::new();
    for a in &cfg.lora_plaintext {
        lora = lora.with_plaintext(*a);
    }
    for (a, k) in &cfg.lora_keys {
        lora = lora.with_app_skey(*a, *k);
    }
    let mut ble_keys = cfg.ble_keys.clone();
    const SIM_SEED: u64 = 0x6d65_662d_6777;
    if let Some(sim) = opts.simulate {
        let d = simulate::devices(sim.sensors, SIM_SEED);
        for a in d.lora_plaintext {
            lora = lora.with_plaintext(a);
        }
        ble_keys.extend(d.ble_keys);
    }
    let ingest = Ingest::new(
        shared.store.clone(),
        IngestConfig {
            batch_readings: cfg.ingest.batch_readings,
            batch_interval_ms: cfg.ingest.batch_interval_ms,
            ble_keys,
            lora,
            ..IngestConfig::default()
        },
    );

    let (tx, rx) = std::sync::mpsc::sync_channel::<Input>(INPUT_CAPACITY);
    let mut threads = Vec::new();
    let mut lora_addr = None;
    let mut ack_socket = None;
    if cfg.lora.enabled {
        let socket = UdpSocket::bind(cfg.lora.listen)
            .map_err(io(format!("binding LoRa UDP {}", cfg.lora.listen)))?;
        let addr = socket.local_addr().map_err(io("LoRa socket address"))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(io("LoRa socket timeout"))?;
        ack_socket = Some(socket.try_clone().map_err(io("cloning LoRa socket"))?);
        tracing::info!("LoRa (Semtech UDP) listening on {addr}");
        lora_addr = Some(addr);
        let (tx, shared) = (tx.clone(), shared.clone());
        threads.push(spawn("lora-rx", move || lora_receive(socket, tx, &shared))?);
    }
    {
        let shared = shared.clone();
        threads.push(spawn("ingest", move || {
            ingest_loop(ingest, rx, ack_socket, &shared);
        })?);
    }
    {
        let shared = shared.clone();
        threads.push(spawn("forward", move || forward_loop(uplink, &shared))?);
    }
    if cfg.ble.enabled {
        start_ble(tx.clone(), shared.clone())?;
    }
    if let Some(sim) = opts.simulate {
        tracing::info!(
            "simulating {} sensors at {} readings/s",
            sim.sensors,
            sim.rate
        );
        let stop = Arc::new(AtomicBool::new(false));
        let h = simulate::spawn(
            SimConfig {
                sensors: sim.sensors,
                rate: sim.rate,
                lora_target: lora_addr,
                seed: SIM_SEED,
            },
            tx.clone(),
            stop.clone(),
        )
        .map_err(io("starting the simulator"))?;
        let shared = shared.clone();
        threads.push(spawn("simulate-stop", move || {
            while !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        })?);
    }
    drop(tx);
    let http = tokio::spawn(serve_http(listener, shared.clone()));
    shutdown.await;
    tracing::info!("shutting down");
    shared.stop.store(true, Ordering::Relaxed);
    http.abort();
    if let Some(f) = firmware {
        f.stop().await;
    }
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .map_err(|e| DaemonError::Io {
        what: "joining threads".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(())
}

/// The running firmware node, on its own thread.
struct FirmwareTask {
    status: watch::Receiver<NodeStatus>,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts the [`FirmwareNode`] on a thread of its own with a current-thread runtime (the
/// node's future is not `Send`: its fetch session holds the store as a `dyn BlockSource`):
/// opens the blockstore, binds the mesh, adds the peers, and returns once that is done, or
/// with the reason it failed.
async fn start_firmware(f: &FirmwareConfig) -> Result<FirmwareTask, DaemonError> {
    let identity = read_mesh_key(&f.key)?;
    let store = Blockstore::open(&f.store)?;
    let f = f.clone();
    let (started_tx, started) =
        oneshot::channel::<Result<watch::Receiver<NodeStatus>, DaemonError>>();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("firmware".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started_tx.send(Err(io("firmware runtime")(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let node = async {
                    let mut node = FirmwareNode::start(
                        store,
                        identity,
                        f.listen,
                        f.update.clone(),
                        f.server.clone(),
                    )
                    .await?;
                    node.set_upload_cap(f.max_upload);
                    for p in &f.providers {
                        node.add_peer(*p, PeerKind::Provider).await?;
                    }
                    for p in &f.swarm_peers {
                        node.add_peer(*p, PeerKind::Swarm).await?;
                    }
                    Ok::<_, NetError>(node)
                };
                let node = match node.await {
                    Ok(node) => node,
                    Err(e) => {
                        let _ = started_tx.send(Err(e.into()));
                        return;
                    }
                };
                tracing::info!(
                    peer = %node.peer_addr(),
                    store = %f.store.display(),
                    providers = f.providers.len(),
                    swarm_peers = f.swarm_peers.len(),
                    manifests = ?f.update.as_ref().map(|u| u.manifests.display().to_string()),
                    "firmware node on the mesh"
                );
                let _ = started_tx.send(Ok(node.status()));
                let stop = async move {
                    let _ = stopped.await;
                };
                match node.run(stop, |_| {}).await {
                    Ok(r) => tracing::info!(
                        served_blocks = r.stats.served.blocks,
                        served_bytes = r.stats.served.block_bytes,
                        peers = r.peers,
                        staged = r.staged.len(),
                        "firmware node stopped"
                    ),
                    Err(e) => tracing::error!("firmware node stopped: {e}"),
                }
            });
        })
        .map_err(io("starting thread firmware"))?;
    let status = match started.await {
        Ok(r) => r?,
        Err(_) => {
            return Err(DaemonError::Io {
                what: "starting the firmware node".into(),
                source: std::io::Error::other("its thread ended"),
            });
        }
    };
    Ok(FirmwareTask {
        status,
        stop,
        thread,
    })
}

impl FirmwareTask {
    /// Stops the node (channels closed, driver stopped) and waits for its thread.
    async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(io(format!("starting thread {name}")))
}

#[cfg(feature = "bluez")]
fn start_ble(tx: SyncSender<Input>, shared: Arc<Shared>) -> Result<(), DaemonError> {
    let (btx, mut brx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        if let Err(e) = crate::ble::scan(btx).await {
            tracing::error!("BLE scanning stopped: {e}");
        }
    });
    tokio::spawn(async move {
        while let Some(a) = brx.recv().await {
            let input = Input::Ble {
                mac: a.mac,
                rssi: a.rssi,
                data: a.data,
                time_ms: a.time_ms,
            };
            if tx.try_send(input).is_err() {
                shared.input_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    tracing::info!("BLE scanning through BlueZ (default adapter)");
    Ok(())
}

#[cfg(not(feature = "bluez"))]
fn start_ble(_tx: SyncSender<Input>, _shared: Arc<Shared>) -> Result<(), DaemonError> {
    Err(DaemonError::NoBluez)
}

fn lora_receive(socket: UdpSocket, tx: SyncSender<Input>, shared: &Shared) {
    // 65 535 bytes: the largest UDP payload; a PUSH_DATA with many rxpk can exceed 2 KiB.
    let mut buf = vec![0u8; 65_535];
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::debug!("LoRa UDP receive error: {e}");
                continue;
            }
        };
        let input = Input::Datagram {
            from,
            data: buf[..n].to_vec(),
            time_ms: now_ms(),
        };
        match tx.try_send(input) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                shared.input_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

fn ingest_loop(
    mut ingest: Ingest,
    rx: Receiver<Input>,
    socket: Option<UdpSocket>,
    shared: &Shared,
) {
    let send = |to: SocketAddr, bytes: &[u8]| {
        if let Some(s) = &socket
            && let Err(e) = s.send_to(bytes, to)
        {
            tracing::debug!("reply to {to} failed: {e}");
        }
    };
    let mut last_publish = 0u64;
    loop {
        let now = now_ms();
        let wait = ingest
            .deadline_ms()
            .map_or(100, |d| d.saturating_sub(now).min(100));
        let stopping = shared.stop.load(Ordering::Relaxed);
        // Stopping: drain what is queued without waiting, then flush and return.
        let (input, done) = if stopping {
            match rx.try_recv() {
                Ok(i) => (Some(i), false),
                Err(_) => (None, true),
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(wait)) {
                Ok(i) => (Some(i), false),
                Err(RecvTimeoutError::Timeout) => (None, false),
                Err(RecvTimeoutError::Disconnected) => {
                    // No input source at all (LoRa and BLE disabled): just keep time.
                    std::thread::sleep(Duration::from_millis(wait.max(1)));
                    (None, false)
                }
            }
        };
        match input {
            Some(Input::Datagram {
                from,
                data,
                time_ms,
            }) => {
                if let Some(reply) = ingest.push_semtech(from, &data, time_ms) {
                    send(from, &reply);
                }
            }
            Some(Input::Ble {
                mac,
                rssi,
                data,
                time_ms,
            }) => {
                ingest.push_ble(mac, rssi, &data, time_ms);
            }
            None => {}
        }
        let now = now_ms();
        if ingest.should_flush(now) || (done && (ingest.pending() > 0 || ingest.held_acks() > 0)) {
            let flushed = ingest.flush(now);
            for (to, ack) in &flushed.acks {
                send(*to, ack);
            }
        }
        if done || now.saturating_sub(last_publish) >= 100 {
            last_publish = now;
            set(&shared.ingest, ingest.counters().clone());
        }
        if done {
            return;
        }
    }
}

fn forward_loop(mut uplink: Box<dyn Uplink + Send>, shared: &Shared) {
    let mut fwd = Forwarder::new(ForwarderConfig {
        max_batches_per_pump: 4,
        ..ForwarderConfig::default()
    });
    let mut c = UplinkCounters::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = now_ms();
        let r = {
            let mut store = lock(&shared.store);
            fwd.pump(&mut store, uplink.as_mut(), now)
        };
        let pause = match r {
            Ok(o) => {
                c.batches += o.batches;
                c.readings += o.readings;
                c.duplicate_acks += o.duplicate_acks;
                c.failures = fwd.failures();
                c.down = matches!(
                    o.state,
                    PumpState::Down { .. } | PumpState::BackingOff { .. }
                );
                match o.state {
                    PumpState::More => 0,
                    PumpState::Idle => 50,
                    PumpState::Down { retry_at_ms } | PumpState::BackingOff { retry_at_ms } => {
                        retry_at_ms.saturating_sub(now).clamp(1, 200)
                    }
                }
            }
            Err(e) => {
                c.store_errors += 1;
                tracing::error!("forwarding: {e}");
                1000
            }
        };
        set(&shared.uplink, c.clone());
        if pause > 0 {
            std::thread::sleep(Duration::from_millis(pause));
        }
    }
}

fn metrics_body(shared: &Shared, path: &str) -> Option<Result<String, StoreError>> {
    if path != "/metrics" && path != "/status" {
        return None;
    }
    let now = now_ms();
    let stats = lock(&shared.store).stats(now, STATUS_DEVICES);
    let ingest = get(&shared.ingest);
    let uplink = get(&shared.uplink);
    let firmware = shared.firmware.as_ref().map(|f| f.borrow().clone());
    Some(stats.map(|q| {
        if path == "/metrics" {
            super::metrics::render(
                &q,
                &ingest,
                &uplink,
                shared.input_dropped.load(Ordering::Relaxed),
                firmware.as_ref(),
            )
        } else {
            super::status::render(&q, Some((&ingest, &uplink)), firmware.as_ref(), now)
        }
    }))
}

async fn serve_http(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let k = conn.read(&mut buf[n..]).await?;
                    if k == 0 {
                        break;
                    }
                    n += k;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let mut parts = req.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = path.to_string();
            let body = if method == "GET" {
                tokio::task::spawn_blocking(move || metrics_body(&shared, &path))
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            let (status, body) = match body {
                Some(Ok(b)) => ("200 OK", b),
                Some(Err(e)) => ("500 Internal Server Error", format!("{e}\n")),
                None => ("404 Not Found", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Fetches `path` from a running daemon's HTTP endpoint (blocking).
pub fn fetch(addr: SocketAddr, path: &str) -> Result<String, DaemonError> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(io(format!("connecting to {addr}")))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io("setting timeout"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(io("sending request"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(io("reading response"))?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(DaemonError::Io {
            what: format!("GET {path}"),
            source: std::io::Error::other(head.lines().next().unwrap_or("").to_string()),
        });
    }
    Ok(body.to_string())
}

/// `mef-gateway status`: asks the running daemon (`[metrics] listen`, `GET /status`); if none
/// answers, opens the store directly (the daemon is not running, so this process may) and
/// reports the queue without live counters.
pub fn status(cfg: &Config) -> Result<String, DaemonError> {
    let mut addr = cfg.metrics.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    match fetch(addr, "/status") {
        Ok(body) => Ok(body),
        Err(e) => {
            tracing::debug!("no daemon at {addr} ({e}); opening the store directly");
            let key = super::key::read(&cfg.key_path)?;
            let store = Store::open(&cfg.store.path, cfg.limits(), key)?;
            let now = now_ms();
            let q = store.stats(now, STATUS_DEVICES)?;
            Ok(super::status::render(&q, None, None, now))
        }
    }
}
