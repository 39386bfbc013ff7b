//! Tokio UDP adapter: one driver task per endpoint moves datagrams and time in and out of the
//! sans-IO [`Endpoint`]; connections and streams are thin handles onto it (quinn's split
//! between `quinn-proto` and `quinn`).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mef_transport::tokio_io::MefEndpoint;
//! use mef_transport::{Config, StaticKeypair};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let server_key = StaticKeypair::generate(&mut rand::rng());
//! let server_pub = server_key.public();
//! let server = MefEndpoint::bind("127.0.0.1:0".parse().unwrap(), server_key, Config::default())?;
//! let addr = server.local_addr()?;
//! let client = MefEndpoint::bind("127.0.0.1:0".parse().unwrap(),
//!     StaticKeypair::generate(&mut rand::rng()), Config::default())?;
//! let conn = client.connect(addr, server_pub).await?;
//! let mut s = conn.open_stream()?;
//! s.write_all(b"hello").await?;
//! s.shutdown().await?; // FIN, and wait until the peer acknowledged everything
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::{
    CloseReason, Config, ConnectionHandle, ConnectionStats, Endpoint, Event, ReadError,
    StaticKeypair, StreamId, WriteError,
};

/// Most datagrams received in one batch before the driver sends again.
const RECV_BATCH: usize = 64;

#[derive(Default)]
struct ConnState {
    connected: bool,
    closed: Option<CloseReason>,
    incoming_streams: VecDeque<StreamId>,
    finished: HashSet<StreamId>,
    waker: Option<Waker>,
    stream_accept_waker: Option<Waker>,
}

struct State {
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, ConnState>,
    incoming: VecDeque<ConnectionHandle>,
    accept_waker: Option<Waker>,
    read_wakers: HashMap<(ConnectionHandle, StreamId), Waker>,
    write_wakers: HashMap<(ConnectionHandle, StreamId), Waker>,
    driver_error: Option<String>,
}

impl State {
    fn process_events(&mut self) {
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                Event::Connected(h) => {
                    let c = self.conns.entry(h).or_default();
                    c.connected = true;
                    wake(&mut c.waker);
                }
                Event::Accepted(h) => {
                    self.conns.entry(h).or_default().connected = true;
                    self.incoming.push_back(h);
                    wake(&mut self.accept_waker);
                }
                Event::StreamOpened { conn, stream } => {
                    let c = self.conns.entry(conn).or_default();
                    c.incoming_streams.push_back(stream);
                    wake(&mut c.stream_accept_waker);
                }
                Event::StreamReadable { conn, stream } => {
                    if let Some(w) = self.read_wakers.remove(&(conn, stream)) {
                        w.wake();
                    }
                }
                Event::StreamWritable { conn, stream } => {
                    if let Some(w) = self.write_wakers.remove(&(conn, stream)) {
                        w.wake();
                    }
                }
                Event::StreamFinished { conn, stream } => {
                    self.conns.entry(conn).or_default().finished.insert(stream);
                    if let Some(w) = self.write_wakers.remove(&(conn, stream)) {
                        w.wake();
                    }
                }
                Event::Closed { conn, reason } => {
                    let c = self.conns.entry(conn).or_default();
                    c.closed = Some(reason);
                    wake(&mut c.waker);
                    wake(&mut c.stream_accept_waker);
                    self.wake_streams(conn);
                }
            }
        }
    }

    fn wake_streams(&mut self, conn: ConnectionHandle) {
        for map in [&mut self.read_wakers, &mut self.write_wakers] {
            let keys: Vec<_> = map.keys().filter(|(c, _)| *c == conn).copied().collect();
            for k in keys {
                if let Some(w) = map.remove(&k) {
                    w.wake();
                }
            }
        }
    }

    fn wake_all(&mut self) {
        wake(&mut self.accept_waker);
        for c in self.conns.values_mut() {
            wake(&mut c.waker);
            wake(&mut c.stream_accept_waker);
        }
        for (_, w) in self.read_wakers.drain().chain(self.write_wakers.drain()) {
            w.wake();
        }
    }
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
    socket: Arc<UdpSocket>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state for the handles to
        // report errors; recover the guard instead of propagating the poison.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps the driver alive while any endpoint, connection or stream handle exists.
struct Handle {
    shared: Arc<Shared>,
    driver: AbortHandle,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn closed_err(reason: &CloseReason) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, reason.to_string())
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection no longer exists")
}

/// A MEF endpoint bound to a UDP socket.
#[derive(Clone)]
pub struct MefEndpoint {
    h: Arc<Handle>,
}

impl std::fmt::Debug for MefEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MefEndpoint")
            .field("local_addr", &self.h.shared.socket.local_addr().ok())
            .finish()
    }
}

impl MefEndpoint {
    /// Binds a UDP socket and starts the driver task (must be called inside a tokio runtime).
    /// The endpoint both connects and accepts.
    pub fn bind(addr: SocketAddr, keypair: StaticKeypair, config: Config) -> io::Result<Self> {
        let std_sock = std::net::UdpSocket::bind(addr)?;
        std_sock.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_sock)?);
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let state = State {
            endpoint: Endpoint::new(config, keypair, seed),
            conns: HashMap::new(),
            incoming: VecDeque::new(),
            accept_waker: None,
            read_wakers: HashMap::new(),
            write_wakers: HashMap::new(),
            driver_error: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            notify: Notify::new(),
            socket,
        });
        let task = tokio::spawn(drive(shared.clone()));
        Ok(Self {
            h: Arc::new(Handle {
                shared,
                driver: task.abort_handle(),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.h.shared.socket.local_addr()
    }

    /// This endpoint's static public key (give it to clients).
    pub fn public_key(&self) -> [u8; 32] {
        self.h.shared.lock().endpoint.public_key()
    }

    /// Connects to a server whose static public key is known; resolves after one round trip
    /// (or with an error on handshake timeout).
    pub async fn connect(
        &self,
        remote: SocketAddr,
        server_pub: [u8; 32],
    ) -> io::Result<Connection> {
        let handle = {
            let mut st = self.h.shared.lock();
            let h = st
                .endpoint
                .connect(Instant::now(), remote, server_pub)
                .map_err(|e| io::Error::other(e.to_string()))?;
            st.conns.entry(h).or_default();
            h
        };
        self.h.shared.notify.notify_one();
        poll_fn(|cx| {
            let mut st = self.h.shared.lock();
            let c = st.conns.entry(handle).or_default();
            if let Some(r) = &c.closed {
                return Poll::Ready(Err(closed_err(r)));
            }
            if c.connected {
                return Poll::Ready(Ok(()));
            }
            c.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(Connection {
            h: self.h.clone(),
            handle,
        })
    }

    /// Waits for the next incoming connection. `None` if the driver stopped.
    pub async fn accept(&self) -> Option<Connection> {
        let handle = poll_fn(|cx| {
            let mut st = self.h.shared.lock();
            if let Some(h) = st.incoming.pop_front() {
                return Poll::Ready(Some(h));
            }
            if st.driver_error.is_some() {
                return Poll::Ready(None);
            }
            st.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Some(Connection {
            h: self.h.clone(),
            handle,
        })
    }
}

/// The driver: receive, run timers, transmit, wake handles; sleep until the next deadline, a
/// datagram or an application command.
async fn drive(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    let mut out: Vec<crate::Transmit> = Vec::new();
    loop {
        let deadline = {
            let mut st = shared.lock();
            let now = Instant::now();
            if st.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                st.endpoint.handle_timeout(now);
            }
            while let Some(t) = st.endpoint.poll_transmit(now) {
                out.push(t);
            }
            st.process_events();
            st.endpoint.poll_timeout()
        };
        for t in out.drain(..) {
            // UDP send errors (e.g. ICMP unreachable reported on the socket) are like loss.
            if let Err(e) = shared.socket.send_to(&t.payload, t.dst).await {
                tracing::debug!(dst = %t.dst, error = %e, "send failed");
            }
        }
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = shared.socket.recv_from(&mut buf) => {
                match r {
                    Ok((n, from)) => {
                        let mut st = shared.lock();
                        let now = Instant::now();
                        st.endpoint.handle_datagram(now, from, &buf[..n]);
                        for _ in 0..RECV_BATCH {
                            match shared.socket.try_recv_from(&mut buf) {
                                Ok((n, from)) => st.endpoint.handle_datagram(now, from, &buf[..n]),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "socket receive failed; endpoint driver stops");
                        let mut st = shared.lock();
                        st.driver_error = Some(e.to_string());
                        st.wake_all();
                        return;
                    }
                }
            }
            () = sleep => {}
            () = shared.notify.notified() => {}
        }
    }
}

/// A connection handle (cheap to clone).
#[derive(Clone)]
pub struct Connection {
    h: Arc<Handle>,
    handle: ConnectionHandle,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("handle", &self.handle)
            .finish()
    }
}

impl Connection {
    /// The sans-IO handle.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle
    }

    /// The peer's address.
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.h
            .shared
            .lock()
            .endpoint
            .connection(self.handle)
            .map(|c| c.remote())
    }

    /// The peer's authenticated static public key.
    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.h
            .shared
            .lock()
            .endpoint
            .connection(self.handle)
            .and_then(|c| c.remote_static())
    }

    /// Statistics (`None` once the connection is gone).
    pub fn stats(&self) -> Option<ConnectionStats> {
        self.h
            .shared
            .lock()
            .endpoint
            .connection(self.handle)
            .map(|c| c.stats())
    }

    /// Opens a bidirectional stream.
    pub fn open_stream(&self) -> io::Result<MefStream> {
        let id = {
            let mut st = self.h.shared.lock();
            let c = st.endpoint.connection_mut(self.handle).ok_or_else(gone)?;
            c.open_stream()
                .ok_or_else(|| io::Error::other("stream limit reached or connection closed"))?
        };
        Ok(MefStream {
            h: self.h.clone(),
            conn: self.handle,
            id,
            finishing: false,
        })
    }

    /// Waits for the peer to open a stream; `None` once the connection is closed.
    pub async fn accept_stream(&self) -> Option<MefStream> {
        let id = poll_fn(|cx| {
            let mut st = self.h.shared.lock();
            let c = st.conns.entry(self.handle).or_default();
            if let Some(id) = c.incoming_streams.pop_front() {
                return Poll::Ready(Some(id));
            }
            if c.closed.is_some() {
                return Poll::Ready(None);
            }
            c.stream_accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Some(MefStream {
            h: self.h.clone(),
            conn: self.handle,
            id,
            finishing: false,
        })
    }

    /// Closes the connection (CLOSE frame with the CLOSING flag, then draining).
    pub fn close(&self, code: u64, reason: &[u8]) {
        {
            let mut st = self.h.shared.lock();
            if let Some(c) = st.endpoint.connection_mut(self.handle) {
                c.close(Instant::now(), code, reason);
            }
        }
        self.h.shared.notify.notify_one();
    }

    /// Waits until the connection is closed and returns why.
    pub async fn closed(&self) -> CloseReason {
        poll_fn(|cx| {
            let mut st = self.h.shared.lock();
            let c = st.conns.entry(self.handle).or_default();
            if let Some(r) = &c.closed {
                return Poll::Ready(r.clone());
            }
            c.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// A bidirectional stream: `AsyncRead` for the peer's bytes, `AsyncWrite` for ours;
/// `shutdown` sends FIN and resolves once the peer acknowledged everything.
pub struct MefStream {
    h: Arc<Handle>,
    conn: ConnectionHandle,
    id: StreamId,
    finishing: bool,
}

impl std::fmt::Debug for MefStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MefStream")
            .field("conn", &self.conn)
            .field("id", &self.id)
            .finish()
    }
}

impl MefStream {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }
}

impl AsyncRead for MefStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.h.shared.lock();
        let closed = st.conns.get(&this.conn).and_then(|c| c.closed.clone());
        let Some(c) = st.endpoint.connection_mut(this.conn) else {
            return Poll::Ready(Err(closed.as_ref().map_or_else(gone, closed_err)));
        };
        let dst = buf.initialize_unfilled();
        match c.read(this.id, dst) {
            Ok(Some(n)) => {
                buf.advance(n);
                drop(st);
                // Reading may have opened flow-control credit to advertise.
                this.h.shared.notify.notify_one();
                Poll::Ready(Ok(()))
            }
            Ok(None) => Poll::Ready(Ok(())),
            Err(ReadError::Blocked) => {
                st.read_wakers
                    .insert((this.conn, this.id), cx.waker().clone());
                Poll::Pending
            }
            Err(ReadError::ConnectionClosed) => {
                Poll::Ready(Err(closed.as_ref().map_or_else(gone, closed_err)))
            }
            Err(ReadError::UnknownStream) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotFound,
                "unknown stream",
            ))),
        }
    }
}

fn write_err(e: WriteError) -> io::Error {
    match e {
        WriteError::ConnectionClosed => {
            io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())
        }
        WriteError::Finished => io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()),
        WriteError::UnknownStream => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
    }
}

impl AsyncWrite for MefStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut st = this.h.shared.lock();
        let Some(c) = st.endpoint.connection_mut(this.conn) else {
            return Poll::Ready(Err(gone()));
        };
        match c.write(this.id, data) {
            Ok(0) if !data.is_empty() => {
                st.write_wakers
                    .insert((this.conn, this.id), cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                drop(st);
                this.h.shared.notify.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(write_err(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.h.shared.lock();
        let closed = st.conns.get(&this.conn).and_then(|c| c.closed.clone());
        let finished = st
            .conns
            .get(&this.conn)
            .is_some_and(|c| c.finished.contains(&this.id));
        let Some(c) = st.endpoint.connection_mut(this.conn) else {
            return Poll::Ready(if finished { Ok(()) } else { Err(gone()) });
        };
        if !this.finishing {
            if let Err(e) = c.finish(this.id) {
                return Poll::Ready(Err(write_err(e)));
            }
            this.finishing = true;
            drop(st);
            this.h.shared.notify.notify_one();
            st = this.h.shared.lock();
        }
        let complete = st
            .endpoint
            .connection(this.conn)
            .is_none_or(|c| c.stream_send_complete(this.id));
        if finished || complete {
            return Poll::Ready(Ok(()));
        }
        if let Some(r) = closed {
            return Poll::Ready(Err(closed_err(&r)));
        }
        st.write_wakers
            .insert((this.conn, this.id), cx.waker().clone());
        Poll::Pending
    }
}
