//! The tokio driver: a thin loop around the sans-IO [`Mesh`] on a real UDP socket, fed by
//! static seed peers and mDNS discovery ([`crate::discovery`]).
//!
//! One task owns the socket, the [`Mesh`] and the [`Mdns`] daemon handle; the application
//! talks to it through a [`MeshHandle`]: commands (connect by hashname, open, send, receive,
//! close, stats) with replies, and a stream of [`DriverEvent`]s (link up/down and path
//! changes, channel opened/readable/writable/closed, peers discovered and lost).
//!
//! Channel data is pulled with [`MeshHandle::recv`] after a [`crate::channel::ChannelEvent::Readable`]: the
//! driver sets [`crate::channel::Config::data_events`] to `false`, so events stay small and
//! few (bytes not taken count against the channel's receive window, which is the
//! application's backpressure), and the event queue cannot grow with the data.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::channel::ChannelId;
use crate::discovery::{DiscoveryError, DiscoveryEvent, Mdns, MdnsConfig, PeerRecord};
use crate::hashname::{Hashname, Identity};
use crate::link::AcceptPolicy;
use crate::node::{Mesh, MeshConfig, MeshError, MeshEvent, MeshStats};
use crate::packet::MAX_PACKET_LEN;

/// How often the driver polls the mDNS daemon for discoveries.
const DISCOVERY_POLL: Duration = Duration::from_millis(100);
/// Commands queued from the application at most.
const COMMAND_QUEUE: usize = 256;

/// What the driver starts with.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// UDP address to bind (port 0: any).
    pub bind: SocketAddr,
    /// The node's configuration.
    pub mesh: MeshConfig,
    /// Static seed peers (from the config file's `[[mesh.seed]]`).
    pub seeds: Vec<PeerRecord>,
    /// mDNS discovery on the LAN, advertising this node; `None`: off.
    pub mdns: Option<MdnsConfig>,
    /// Connect to every peer as soon as it is discovered or configured as a seed.
    pub auto_connect: bool,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 4242)),
            mesh: MeshConfig::default(),
            seeds: Vec::new(),
            mdns: Some(MdnsConfig::default()),
            auto_connect: true,
        }
    }
}

impl DriverConfig {
    /// The driver settings a gateway's `[mesh]` config section gives
    /// ([`crate::discovery::MeshFileConfig`]): its listen address, its seeds, and mDNS on all
    /// interfaces if enabled; the node's limits and timers stay at their defaults.
    pub fn from_file(file: &crate::discovery::MeshFileConfig) -> Self {
        DriverConfig {
            bind: file.listen,
            seeds: file.seeds.clone(),
            mdns: file.mdns.then(MdnsConfig::default),
            ..DriverConfig::default()
        }
    }
}

/// What the application hears from the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverEvent {
    /// A link or channel event of the node.
    Mesh(MeshEvent),
    /// mDNS found a peer (its record verified: the key hashes to the hashname).
    Discovered(PeerRecord),
    /// mDNS saw a peer go.
    Lost(Hashname),
}

/// Why the driver failed or refused a call.
#[derive(Debug, Error)]
pub enum DriverError {
    /// Binding or using the UDP socket failed.
    #[error("UDP socket: {0}")]
    Io(#[from] std::io::Error),
    /// mDNS could not start.
    #[error("mDNS: {0}")]
    Discovery(#[from] DiscoveryError),
    /// The node refused the call.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The driver task has stopped.
    #[error("the mesh driver has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, MeshError>>;

enum Command {
    AddPeer(PeerRecord, Reply<()>),
    Connect(Hashname, Reply<()>),
    Open {
        peer: Hashname,
        kind: String,
        reliable: bool,
        reply: Reply<ChannelId>,
    },
    Send {
        peer: Hashname,
        channel: ChannelId,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    Recv {
        peer: Hashname,
        channel: ChannelId,
        max: usize,
        reply: Reply<Vec<u8>>,
    },
    Close {
        peer: Hashname,
        channel: ChannelId,
        code: u32,
        reason: String,
        reply: Reply<()>,
    },
    Stats(oneshot::Sender<MeshStats>),
    Shutdown,
}

/// The application's side of a running driver.
#[derive(Debug)]
pub struct MeshHandle {
    hashname: Hashname,
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    events: mpsc::UnboundedReceiver<DriverEvent>,
    task: Option<JoinHandle<Result<(), DriverError>>>,
}

/// Binds the socket, starts mDNS (if configured), adds the seeds, and spawns the driver task
/// on the current tokio runtime.
pub async fn start(
    identity: Identity,
    mut cfg: DriverConfig,
    policy: AcceptPolicy,
) -> Result<MeshHandle, DriverError> {
    let socket = UdpSocket::bind(cfg.bind).await?;
    let local_addr = socket.local_addr()?;
    let hashname = identity.hashname();
    let mdns = match &cfg.mdns {
        Some(m) => Some(Mdns::start(
            hashname,
            identity.public_key(),
            local_addr.port(),
            m,
        )?),
        None => None,
    };
    cfg.mesh.channels.data_events = false;
    let mut mesh = Mesh::new(
        Instant::now(),
        wg_guard::Tai64N::now(),
        identity,
        cfg.mesh.clone(),
        policy,
    );
    for seed in &cfg.seeds {
        mesh.add_peer(seed.hashname, seed.static_key, &seed.addrs)?;
        if cfg.auto_connect {
            mesh.connect(Instant::now(), seed.hashname)?;
        }
    }
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(socket, mesh, mdns, cfg.auto_connect, rx, events_tx));
    Ok(MeshHandle {
        hashname,
        local_addr,
        commands,
        events,
        task: Some(task),
    })
}

impl MeshHandle {
    /// This node's hashname.
    pub fn hashname(&self) -> Hashname {
        self.hashname
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        Ok(rx.await.map_err(|_| DriverError::Stopped)??)
    }

    /// Adds a peer (e.g. from configuration), connecting at once if `auto_connect` is set.
    pub async fn add_peer(&self, peer: PeerRecord) -> Result<(), DriverError> {
        self.call(|r| Command::AddPeer(peer, r)).await
    }

    /// Connects to `peer` by hashname: directly if an address is known, else through a
    /// connected peer that knows it. Completion is a [`MeshEvent::LinkUp`].
    pub async fn connect(&self, peer: Hashname) -> Result<(), DriverError> {
        self.call(|r| Command::Connect(peer, r)).await
    }

    /// Opens a channel of `kind` (e.g. `"readings"`) to `peer`.
    pub async fn open_channel(
        &self,
        peer: Hashname,
        kind: &str,
        reliable: bool,
    ) -> Result<ChannelId, DriverError> {
        let kind = kind.to_owned();
        self.call(|reply| Command::Open {
            peer,
            kind,
            reliable,
            reply,
        })
        .await
    }

    /// Queues `data` on a channel (all or nothing: [`crate::channel::ChannelError::WouldBlock`]
    /// when its send buffer is full; wait for [`crate::channel::ChannelEvent::Writable`]).
    pub async fn send(
        &self,
        peer: Hashname,
        channel: ChannelId,
        data: &[u8],
    ) -> Result<(), DriverError> {
        let data = data.to_vec();
        self.call(|reply| Command::Send {
            peer,
            channel,
            data,
            reply,
        })
        .await
    }

    /// Takes up to `max` received bytes of a channel (after [`crate::channel::ChannelEvent::Readable`]).
    pub async fn recv(
        &self,
        peer: Hashname,
        channel: ChannelId,
        max: usize,
    ) -> Result<Vec<u8>, DriverError> {
        self.call(|reply| Command::Recv {
            peer,
            channel,
            max,
            reply,
        })
        .await
    }

    /// Closes a channel with an error code and reason.
    pub async fn close_channel(
        &self,
        peer: Hashname,
        channel: ChannelId,
        code: u32,
        reason: &str,
    ) -> Result<(), DriverError> {
        let reason = reason.to_owned();
        self.call(|reply| Command::Close {
            peer,
            channel,
            code,
            reason,
            reply,
        })
        .await
    }

    /// The node's counters.
    pub async fn stats(&self) -> Result<MeshStats, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// The next event; `None` once the driver has stopped.
    pub async fn next_event(&mut self) -> Option<DriverEvent> {
        self.events.recv().await
    }

    /// Stops the driver (withdrawing the mDNS advertisement) and returns how it ended.
    pub async fn shutdown(mut self) -> Result<(), DriverError> {
        let _ = self.commands.send(Command::Shutdown).await;
        match self.task.take() {
            Some(t) => t.await.map_err(|_| DriverError::Stopped)?,
            None => Ok(()),
        }
    }
}

/// The driver loop: socket, commands, the node's timer and discovery, then the node's output.
async fn run(
    socket: UdpSocket,
    mut mesh: Mesh,
    mut mdns: Option<Mdns>,
    auto_connect: bool,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<DriverEvent>,
) -> Result<(), DriverError> {
    let mut buf = vec![0u8; MAX_PACKET_LEN];
    let mut discovery = tokio::time::interval(DISCOVERY_POLL);
    discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        if let Err(e) = flush(&mut mesh, &socket, &events).await {
            break Err(e);
        }
        let deadline = mesh.poll_timeout();
        let timer = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => mesh.handle_datagram(Instant::now(), from, &buf[..n]),
                // ICMP errors surface as recv errors on Linux UDP sockets: not fatal.
                Err(e) if is_transient(&e) => {}
                Err(e) => break Err(e.into()),
            },
            cmd = commands.recv() => match cmd {
                None | Some(Command::Shutdown) => break Ok(()),
                Some(c) => command(&mut mesh, c),
            },
            () = timer => mesh.handle_timeout(Instant::now()),
            _ = discovery.tick(), if mdns.is_some() => {
                if let Some(m) = mdns.as_mut() {
                    while let Some(ev) = m.try_recv() {
                        discovered(&mut mesh, auto_connect, &events, ev);
                    }
                }
            }
        }
    };
    if let Some(mut m) = mdns {
        // Withdraws the advertisement; a failure here only delays the peers' `Lost`.
        let _ = m.shutdown();
    }
    result
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

/// Sends what the node queued and forwards its events.
async fn flush(
    mesh: &mut Mesh,
    socket: &UdpSocket,
    events: &mpsc::UnboundedSender<DriverEvent>,
) -> Result<(), DriverError> {
    while let Some((to, bytes)) = mesh.poll_transmit(Instant::now()) {
        if let Err(e) = socket.send_to(&bytes, to).await
            && !is_transient(&e)
        {
            // An unreachable destination is the node's business (timeouts); anything else
            // is logged and the datagram dropped, like a lossy network.
            tracing::debug!(%to, error = %e, "mesh: send failed");
        }
    }
    while let Some(ev) = mesh.poll_event() {
        // The application may have dropped its handle: events are then discarded.
        let _ = events.send(DriverEvent::Mesh(ev));
    }
    Ok(())
}

fn discovered(
    mesh: &mut Mesh,
    auto_connect: bool,
    events: &mpsc::UnboundedSender<DriverEvent>,
    ev: DiscoveryEvent,
) {
    match ev {
        DiscoveryEvent::Found(rec) => {
            match mesh.add_peer(rec.hashname, rec.static_key, &rec.addrs) {
                Ok(()) if auto_connect => {
                    if let Err(e) = mesh.connect(Instant::now(), rec.hashname) {
                        tracing::debug!(peer = %rec.hashname, error = %e, "mesh: connect");
                    }
                }
                Ok(()) => {}
                Err(e) => tracing::debug!(peer = %rec.hashname, error = %e, "mesh: add_peer"),
            }
            let _ = events.send(DriverEvent::Discovered(rec));
        }
        DiscoveryEvent::Lost(h) => {
            let _ = events.send(DriverEvent::Lost(h));
        }
    }
}

fn command(mesh: &mut Mesh, c: Command) {
    let now = Instant::now();
    // A dropped reply receiver only means the caller stopped waiting.
    match c {
        Command::AddPeer(rec, reply) => {
            let _ = reply.send(mesh.add_peer(rec.hashname, rec.static_key, &rec.addrs));
        }
        Command::Connect(peer, reply) => {
            let _ = reply.send(mesh.connect(now, peer));
        }
        Command::Open {
            peer,
            kind,
            reliable,
            reply,
        } => {
            let _ = reply.send(mesh.open_channel(peer, &kind, reliable));
        }
        Command::Send {
            peer,
            channel,
            data,
            reply,
        } => {
            let _ = reply.send(mesh.send(peer, channel, &data));
        }
        Command::Recv {
            peer,
            channel,
            max,
            reply,
        } => {
            let _ = reply.send(mesh.recv(peer, channel, max));
        }
        Command::Close {
            peer,
            channel,
            code,
            reason,
            reply,
        } => {
            let _ = reply.send(mesh.close_channel(peer, channel, code, &reason));
        }
        Command::Stats(reply) => {
            let _ = reply.send(mesh.stats());
        }
        Command::Shutdown => {}
    }
}
