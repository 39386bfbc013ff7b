//! The thin tokio adapter around [`SemtechServer`]: one UDP socket (default `0.0.0.0:1700`, the
//! port ChirpStack's gateway bridge and lora_pkt_fwd's `serv_port_up`/`serv_port_down` default
//! to), one task that feeds datagrams in, sends replies out and delivers events over an mpsc
//! channel. All protocol logic lives in the sans-IO server.

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::semtech::{Eui, TxPk};
use super::server::{Counters, DownlinkError, Event, SemtechServer, ServerConfig};

/// The conventional Semtech UDP port.
pub const DEFAULT_PORT: u16 = 1700;

/// Adapter settings.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Server limits.
    pub server: ServerConfig,
    /// Capacity of the event channel (the task waits when it is full, after sending the ACK).
    pub event_capacity: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            server: ServerConfig::default(),
            event_capacity: 1024,
        }
    }
}

/// Why a downlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum UdpDownlinkError {
    /// The server refused it.
    #[error(transparent)]
    Server(#[from] DownlinkError),
    /// The socket could not send it.
    #[error("send failed: {0}")]
    Io(#[from] std::io::Error),
    /// The adapter task has stopped.
    #[error("the Semtech UDP task has stopped")]
    Stopped,
}

enum Command {
    Downlink(
        Eui,
        Box<TxPk>,
        oneshot::Sender<Result<(), UdpDownlinkError>>,
    ),
    Counters(oneshot::Sender<Counters>),
}

/// A handle to the running adapter. Dropping it (all clones) stops the task.
#[derive(Debug, Clone)]
pub struct SemtechUdp {
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Downlink(eui, ..) => write!(f, "Downlink({eui:02x?})"),
            Command::Counters(_) => f.write_str("Counters"),
        }
    }
}

impl SemtechUdp {
    /// Binds the socket and spawns the task; events arrive on the returned receiver.
    pub async fn spawn(
        config: UdpConfig,
    ) -> std::io::Result<(SemtechUdp, mpsc::Receiver<Event>, JoinHandle<()>)> {
        let socket = UdpSocket::bind(config.bind).await?;
        let local_addr = socket.local_addr()?;
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity.max(1));
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let server = SemtechServer::new(config.server);
        let task = tokio::spawn(run(socket, server, cmd_rx, event_tx));
        Ok((
            SemtechUdp {
                local_addr,
                commands: cmd_tx,
            },
            event_rx,
            task,
        ))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends `txpk` to forwarder `eui` as a PULL_RESP.
    pub async fn send_downlink(&self, eui: Eui, txpk: TxPk) -> Result<(), UdpDownlinkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Downlink(eui, Box::new(txpk), tx))
            .await
            .map_err(|_| UdpDownlinkError::Stopped)?;
        rx.await.map_err(|_| UdpDownlinkError::Stopped)?
    }

    /// The server's counters.
    pub async fn counters(&self) -> Option<Counters> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Counters(tx)).await.ok()?;
        rx.await.ok()
    }
}

use crate::reading::now_ms;

async fn run(
    socket: UdpSocket,
    mut server: SemtechServer,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    // 65 535 bytes: the largest UDP payload; a PUSH_DATA with many rxpk can exceed 2 KiB.
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            recv = socket.recv_from(&mut buf) => {
                let (n, from) = match recv {
                    Ok(r) => r,
                    Err(e) => {
                        // ICMP port-unreachable from an earlier send surfaces here on some OSes.
                        tracing::debug!("semtech udp recv error: {e}");
                        continue;
                    }
                };
                let handled = server.handle_datagram(now_ms(), from, &buf[..n]);
                if let Some(reply) = handled.reply
                    && let Err(e) = socket.send_to(&reply, from).await
                {
                    tracing::debug!("semtech udp ack to {from} failed: {e}");
                }
                if let Some(e) = &handled.dropped {
                    tracing::debug!("semtech udp: dropped datagram from {from}: {e}");
                }
                for event in handled.events {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
            cmd = commands.recv() => {
                match cmd {
                    None => return,
                    Some(Command::Counters(reply)) => {
                        let _ = reply.send(server.counters());
                    }
                    Some(Command::Downlink(eui, txpk, reply)) => {
                        let result = match server.send_downlink(now_ms(), eui, *txpk) {
                            Ok((addr, bytes)) => socket.send_to(&bytes, addr).await.map(|_| ()).map_err(UdpDownlinkError::from),
                            Err(e) => Err(e.into()),
                        };
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }
}
