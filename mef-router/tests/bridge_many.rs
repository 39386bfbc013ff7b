//! Many short TCP connections through two split bridges: 1,500 connections arriving at 300 per
//! second over a 200 ms RTT, 100 Mbit/s WAN (Pareto-sized uploads like the kernel bench's
//! short flows, or 20–50 KB downloads). Every flow must complete with a bounded flow completion
//! time (FCT), none may be reset, and the splitters must not hold TIME-WAIT sockets up to their
//! connection limit. Deterministic: the in-memory world of `bridge_world.rs` on a virtual clock.

#[path = "bridge_world.rs"]
mod world;

use std::net::SocketAddrV4;
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use world::{Host, SERVER_IP, World};

const MS: Duration = Duration::from_millis(1);
const PORT: u16 = 80;
/// Request bytes each client sends before closing its sending half.
const REQUEST: usize = 200;
/// The server's answer after an upload (like the kernel bench's short-flows server).
const ANSWER: usize = 17;

fn socket(host: &mut Host, buf: usize) -> SocketHandle {
    let s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buf]),
        tcp::SocketBuffer::new(vec![0; buf]),
    );
    host.sockets.add(s)
}

fn hash(port: u16) -> u64 {
    u64::from(port).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
}

/// How big flows are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sizes {
    /// Uniform 20–50 KB.
    Uniform,
    /// Pareto, shape 1.2, mean 35 KB (the kernel bench's short flows), capped at 10 MB.
    Pareto,
}

/// The size of the flow from client port `port`.
fn flow_len(sizes: Sizes, port: u16) -> usize {
    if sizes == Sizes::Pareto {
        let u = ((hash(port) % 1_000_000) as f64 + 0.5) / 1_000_000.0;
        let xm = 35_000.0 * 0.2 / 1.2;
        ((xm / u.powf(1.0 / 1.2)) as usize).clamp(1, 10_000_000)
    } else {
        20_000 + (hash(port) % 30_001) as usize
    }
}

struct Client {
    handle: SocketHandle,
    port: u16,
    start: Duration,
    sent: usize,
    closed: bool,
    received: usize,
    done: Option<Duration>,
}

struct Server {
    handle: SocketHandle,
    len: Option<usize>,
    sent: usize,
    closed: bool,
}

struct Outcome {
    /// Flows either bridge ended with a reset.
    resets: u64,
    /// MEF connections the egress bridge accepted.
    connections: u64,
    /// Most connections either splitter held at once (live and lingering in TIME-WAIT).
    max_split: usize,
    completed: usize,
    total: usize,
    mean_fct: Duration,
    max_fct: Duration,
    report: String,
}

/// Runs `n` connections arriving every `gap`, each a 200-byte request and a 20–50 KB response.
/// One workload.
struct Workload {
    /// Connections.
    n: usize,
    /// Time between two connection arrivals.
    gap: Duration,
    rtt: Duration,
    /// WAN rate limit (bit/s).
    rate: Option<u64>,
    /// Virtual time limit.
    limit: Duration,
    /// Downloads: the client half-closes right after its request (else after the response).
    client_closes_first: bool,
    /// Uploads (the kernel bench's short flows) instead of downloads.
    upload: bool,
    sizes: Sizes,
}

fn run(wl: Workload) -> Outcome {
    let Workload {
        n,
        gap,
        rtt,
        rate,
        limit,
        client_closes_first,
        upload,
        sizes,
    } = wl;
    let keys = World::real_keys();
    let mut w = World::new(rtt, 0, rate, keys.b, keys.a, |_| {});
    let mut clients: Vec<Client> = Vec::new();
    let mut servers: Vec<Server> = Vec::new();
    let mut listeners: Vec<SocketHandle> = Vec::new();
    // Enough listening sockets that every arriving SYN finds one.
    const SPARE: usize = 64;
    for _ in 0..SPARE {
        let h = socket(&mut w.b.host, 64 * 1024);
        w.b.host.tcp(h).listen(PORT).expect("listen");
        listeners.push(h);
    }
    let mut started = 0usize;
    let mut next_at = Duration::ZERO;
    let mut body = vec![0u8; 64 * 1024];
    for (i, b) in body.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut max_split = (0usize, 0usize);
    let wall = std::time::Instant::now();
    let done = w.run_until(limit, |w| {
        let t = w.t;
        max_split = (
            max_split.0.max(w.a.bridge.splitter().connection_count()),
            max_split.1.max(w.b.bridge.splitter().connection_count()),
        );
        while started < n && t >= next_at {
            let h = socket(&mut w.a.host, 64 * 1024);
            let port = 10_000 + (started % 50_000) as u16;
            w.a.host
                .connect(h, SocketAddrV4::new(SERVER_IP, PORT), port);
            clients.push(Client {
                handle: h,
                port,
                start: t,
                sent: 0,
                closed: false,
                received: 0,
                done: None,
            });
            started += 1;
            next_at += gap;
        }
        // Listeners that got a connection become servers; keep SPARE listening.
        let mut i = 0;
        while i < listeners.len() {
            let h = listeners[i];
            if w.b.host.tcp(h).state() != State::Listen {
                listeners.swap_remove(i);
                servers.push(Server {
                    handle: h,
                    len: None,
                    sent: 0,
                    closed: false,
                });
            } else {
                i += 1;
            }
        }
        while listeners.len() < SPARE {
            let h = socket(&mut w.b.host, 64 * 1024);
            w.b.host.tcp(h).listen(PORT).expect("listen");
            listeners.push(h);
        }
        for s in &mut servers {
            let sock = w.b.host.tcp(s.handle);
            let mut buf = [0u8; 4096];
            while sock.can_recv() {
                if sock.recv_slice(&mut buf).is_err() {
                    break;
                }
            }
            if s.len.is_none()
                && let Some(ep) = sock.remote_endpoint()
            {
                if !upload {
                    s.len = Some(flow_len(sizes, ep.port));
                } else if !sock.may_recv() && sock.state() == State::CloseWait {
                    s.len = Some(ANSWER);
                }
            }
            if let Some(len) = s.len {
                while sock.can_send() && s.sent < len {
                    let k = (len - s.sent).min(body.len());
                    match sock.send_slice(&body[..k]) {
                        Ok(0) | Err(_) => break,
                        Ok(m) => s.sent += m,
                    }
                }
                if s.sent == len && !s.closed && sock.may_send() {
                    sock.close();
                    s.closed = true;
                }
            }
        }
        // Closed server sockets go away (TIME_WAIT is the client's).
        servers.retain(|s| {
            let closed = w.b.host.tcp(s.handle).state() == State::Closed;
            if closed && s.closed {
                w.b.host.sockets.remove(s.handle);
                false
            } else {
                true
            }
        });
        let mut all = started == n;
        for c in &mut clients {
            if c.done.is_some() {
                continue;
            }
            let sock = w.a.host.tcp(c.handle);
            let (out_len, in_len) = if upload {
                (flow_len(sizes, c.port), ANSWER)
            } else {
                (REQUEST, flow_len(sizes, c.port))
            };
            while sock.can_send() && c.sent < out_len {
                let k = (out_len - c.sent).min(body.len());
                match sock.send_slice(&body[..k]) {
                    Ok(0) | Err(_) => break,
                    Ok(m) => c.sent += m,
                }
            }
            let response_in = c.received == in_len;
            if c.sent == out_len
                && !c.closed
                && sock.may_send()
                && (client_closes_first || upload || response_in)
            {
                sock.close();
                c.closed = true;
            }
            let mut buf = [0u8; 16384];
            while sock.can_recv() {
                match sock.recv_slice(&mut buf) {
                    Ok(m) => c.received += m,
                    Err(_) => break,
                }
            }
            let st = sock.state();
            let finished = if upload {
                c.received == ANSWER
            } else {
                c.closed
                    && c.received == flow_len(sizes, c.port)
                    && matches!(st, State::TimeWait | State::Closed)
            };
            if finished {
                c.done = Some(t - c.start);
                w.a.host.sockets.remove(c.handle);
            } else {
                all = false;
            }
        }
        all
    });
    let fcts: Vec<Duration> = clients.iter().filter_map(|c| c.done).collect();
    let completed = fcts.len();
    let mean_fct = if completed > 0 {
        fcts.iter().sum::<Duration>() / completed as u32
    } else {
        Duration::ZERO
    };
    let max_fct = fcts.iter().copied().max().unwrap_or_default();
    let stuck: Vec<String> = clients
        .iter()
        .filter(|c| c.done.is_none())
        .take(8)
        .map(|c| {
            // Unfinished clients keep their sockets.
            let st = w.a.host.tcp(c.handle).state();
            format!(
                "port {} start {:?} got {}/{} state {}",
                c.port,
                c.start,
                c.received,
                flow_len(sizes, c.port),
                st
            )
        })
        .collect();
    let tally = |ev: &[mef_router::bridge::BridgeEvent]| {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for e in ev {
            let k = match e {
                mef_router::bridge::BridgeEvent::FlowReset { reason, .. } => {
                    format!("reset {reason:?}")
                }
                mef_router::bridge::BridgeEvent::FlowRefused { reason, .. } => {
                    format!("refused {reason:?}")
                }
                mef_router::bridge::BridgeEvent::PeerDisconnected { reason, .. } => {
                    format!("disconnected {reason:?}")
                }
                mef_router::bridge::BridgeEvent::PeerConnected { .. } => "connected".into(),
                _ => continue,
            };
            *m.entry(k).or_default() += 1;
        }
        m
    };
    let report = format!(
        "wall {:?} max splitter sockets A {} B {}\n\
         done={done} t={:?} completed {completed}/{n} mean FCT {mean_fct:?} max {max_fct:?}\n\
         events A {:?}\nevents B {:?}\n\
         stuck: {stuck:#?}\nA {:#?}\nB {:#?}",
        wall.elapsed(),
        max_split.0,
        max_split.1,
        w.t,
        tally(&w.a.events),
        tally(&w.b.events),
        w.a.bridge.stats(),
        w.b.bridge.stats()
    );
    Outcome {
        resets: w.a.bridge.stats().flows_reset + w.b.bridge.stats().flows_reset,
        connections: w.b.bridge.stats().endpoint.accepted,
        max_split: max_split.0.max(max_split.1),
        completed,
        total: n,
        mean_fct,
        max_fct,
        report,
    }
}

/// Kernel-bench-like uploads (client sends a Pareto-sized body, half-closes, the server answers
/// 17 bytes and closes) at 300 new connections per second, 200 ms RTT, 100 Mbit/s WAN: every
/// flow completes quickly, no flow is reset, and TIME-WAIT sockets do not pile up to the
/// splitters' connection limit.
#[test]
fn short_uploads_all_complete() {
    let o = run(Workload {
        n: 1500,
        gap: Duration::from_micros(3333),
        rtt: 200 * MS,
        rate: Some(100_000_000),
        limit: Duration::from_secs(30),
        client_closes_first: false,
        upload: true,
        sizes: Sizes::Pareto,
    });
    println!("{}", o.report);
    assert_eq!(o.completed, o.total, "{}", o.report);
    assert_eq!(o.resets, 0, "{}", o.report);
    assert!(o.mean_fct < Duration::from_secs(1), "{}", o.report);
    assert!(o.max_fct < Duration::from_secs(3), "{}", o.report);
    // 300/s × the 2 s TIME-WAIT plus the live ones; smoltcp's 10 s held all 1024.
    assert!(o.max_split < 900, "{}", o.report);
}

/// Downloads of 20–50 KB where the server closes first, 1,500 of them: more than one MEF
/// connection's 1,024 stream ids, so the ingress bridge moves new flows to a fresh connection
/// and retires the old one; no flow of the retired connection may be reset by its close.
#[test]
fn short_downloads_across_connection_retirement() {
    let o = run(Workload {
        n: 1500,
        gap: Duration::from_micros(3333),
        rtt: 200 * MS,
        rate: Some(100_000_000),
        limit: Duration::from_secs(30),
        client_closes_first: false,
        upload: false,
        sizes: Sizes::Uniform,
    });
    println!("{}", o.report);
    assert_eq!(o.completed, o.total, "{}", o.report);
    assert!(o.connections >= 2, "{}", o.report);
    assert_eq!(o.resets, 0, "{}", o.report);
    assert!(o.mean_fct < Duration::from_secs(1), "{}", o.report);
    assert!(o.max_fct < Duration::from_secs(3), "{}", o.report);
}
