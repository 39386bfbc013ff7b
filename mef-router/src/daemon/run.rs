//! The tokio event loop: TUN device ⇄ [`Router`] ⇄ UDP socket, plus the HTTP control endpoint.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant as TokioInstant;

use crate::tunnel::Tai64N;

use super::config::{Config, ConfigFileError};
use super::router::{BUF_LEN, Output, Router};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// A socket, device or command failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TUN device could not be created.
    #[error("creating TUN device {name}: {reason}")]
    Tun {
        /// Interface name.
        name: String,
        /// The error.
        reason: String,
    },
    /// The data plane could not be built.
    #[error("router setup: {0}")]
    Setup(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// What the control endpoint serves, refreshed by the loop once a second.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    metrics: String,
    status: String,
}

async fn serve_control(listener: TcpListener, snap: Arc<Mutex<Snapshot>>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let snap = snap.clone();
        tokio::spawn(async move {
            // Read the request head (up to 4 KiB, 2 s); closing with unread bytes would reset
            // the connection before the client reads the answer.
            let mut req = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 4096 {
                match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => req.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let line = String::from_utf8_lossy(&req);
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let s = snap.lock().map(|s| s.clone()).unwrap_or_default();
            let (code, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", s.metrics),
                "/status" | "/" => ("200 OK", "text/plain; charset=utf-8", s.status),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

fn add_routes(cfg: &Config) -> Result<(), DaemonError> {
    for p in cfg.peers.iter().flat_map(|p| p.prefixes.iter()) {
        let status = std::process::Command::new("ip")
            .args(["route", "replace", &p.to_string(), "dev", &cfg.tun.name])
            .status()
            .map_err(io("running ip route"))?;
        if !status.success() {
            return Err(DaemonError::Io {
                what: format!("ip route replace {p} dev {}", cfg.tun.name),
                source: std::io::Error::other(format!("exit status {status}")),
            });
        }
        tracing::info!(prefix = %p, dev = %cfg.tun.name, "route added");
    }
    Ok(())
}

async fn split_recv(s: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let key = cfg.private_key()?;
    let start = TokioInstant::now().into_std();
    let mut router = Router::new(&cfg, key, start, Tai64N::now()).map_err(DaemonError::Setup)?;
    tracing::info!(public_key = %router.tunnels().public_key(), listen = %cfg.listen, "starting");

    let mut tc = tun::Configuration::default();
    tc.tun_name(&cfg.tun.name).mtu(cfg.tun.mtu).up();
    if let Some(a) = cfg.tun.address {
        tc.address(a.addr)
            .netmask(std::net::Ipv4Addr::from(a.mask()));
    }
    let dev = tun::create_as_async(&tc).map_err(|e| DaemonError::Tun {
        name: cfg.tun.name.clone(),
        reason: e.to_string(),
    })?;
    if cfg.tun.routes {
        add_routes(&cfg)?;
    }
    let udp = UdpSocket::bind(cfg.listen)
        .await
        .map_err(io(format!("binding UDP {}", cfg.listen)))?;
    super::sockbuf::size_and_log(&udp, cfg.wan.socket_buffer_bytes, "tunnel");
    let split_udp = if cfg.split.enabled {
        let addr = SocketAddr::new(cfg.listen.ip(), cfg.split.port);
        let s = UdpSocket::bind(addr)
            .await
            .map_err(io(format!("binding split UDP {addr}")))?;
        super::sockbuf::size_and_log(&s, cfg.wan.socket_buffer_bytes, "split");
        tracing::info!(%addr, "TCP splitting on (MEF transport)");
        Some(s)
    } else {
        None
    };
    let control = TcpListener::bind(cfg.control)
        .await
        .map_err(io(format!("binding control {}", cfg.control)))?;
    let snap = Arc::new(Mutex::new(Snapshot::default()));
    let server = tokio::spawn(serve_control(control, snap.clone()));
    tracing::info!(tun = %cfg.tun.name, control = %cfg.control, "running");

    let mut tun_buf = vec![0u8; BUF_LEN];
    let mut udp_buf = vec![0u8; BUF_LEN];
    let mut split_buf = vec![0u8; BUF_LEN];
    let mut out = Output::default();
    let mut next_snapshot = TokioInstant::now();
    tokio::pin!(shutdown);
    loop {
        let now = TokioInstant::now();
        let deadline = router
            .next_deadline(now.into_std())
            .map(TokioInstant::from_std)
            .unwrap_or(now + Duration::from_secs(1))
            .min(next_snapshot)
            // `on_timers` has already done everything due, so a deadline in the past only means
            // "nothing to do yet": never spin (tokio timers have 1 ms granularity anyway).
            .max(now + Duration::from_millis(1));
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = dev.recv(&mut tun_buf) => match r {
                Ok(n) => router.on_tun_packet(TokioInstant::now().into_std(), &tun_buf[..n]),
                Err(e) => tracing::warn!(error = %e, "TUN read"),
            },
            r = udp.recv_from(&mut udp_buf) => match r {
                Ok((n, src)) => router.on_udp(TokioInstant::now().into_std(), src, &udp_buf[..n], &mut out),
                Err(e) => tracing::debug!(error = %e, "UDP read"),
            },
            r = split_recv(split_udp.as_ref(), &mut split_buf) => match r {
                Ok((n, src)) => router.on_split_udp(TokioInstant::now().into_std(), src, &split_buf[..n], &mut out),
                Err(e) => tracing::debug!(error = %e, "split UDP read"),
            },
            () = tokio::time::sleep_until(deadline) => {}
        }
        let now = TokioInstant::now();
        router.take_tun_output(&mut out);
        router.on_timers(now.into_std(), &mut out);
        if let Some(s) = &split_udp {
            for (dst, bytes) in out.split_net.drain(..) {
                if let Err(e) = s.send_to(&bytes, dst).await {
                    tracing::debug!(%dst, error = %e, "split UDP send");
                }
            }
        }
        for (dst, bytes) in out.net.drain(..) {
            if let Err(e) = udp.send_to(&bytes, dst).await {
                tracing::debug!(%dst, error = %e, "UDP send");
            }
        }
        for pkt in out.tun.drain(..) {
            if let Err(e) = dev.send(&pkt).await {
                tracing::debug!(error = %e, "TUN write");
            }
        }
        if now >= next_snapshot {
            router.sample_rates(now.into_std());
            let s = Snapshot {
                metrics: router.render_metrics(),
                status: router.render_status(now.into_std()),
            };
            if let Ok(mut g) = snap.lock() {
                *g = s;
            }
            next_snapshot = now + Duration::from_secs(1);
        }
    }
    server.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Fetches `path` from a running daemon's control endpoint (plain HTTP/1.1, for `status`).
pub fn fetch(control: SocketAddr, path: &str) -> Result<String, DaemonError> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&control, Duration::from_secs(3))
        .map_err(io(format!("connecting to {control}")))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io("setting timeout"))?;
    // One write: a request split over several segments could be answered and closed early.
    let req = format!("GET {path} HTTP/1.1\r\nHost: {control}\r\nConnection: close\r\n\r\n");
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
