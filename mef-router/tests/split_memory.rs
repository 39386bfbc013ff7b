//! In-memory tests of the TCP splitter (`mef_router::split`): a smoltcp LAN client, an ingress
//! splitter, an in-memory "MEF stream" pipe, an egress splitter and a smoltcp LAN server, all on
//! a virtual clock (quinn-proto's `Pair`/`drive` style), plus limits, bad packets and framing.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mef_router::split::{
    ByteStream, ConnId, FrameError, Relay, RelayConfig, RelayStatus, SplitConfig, SplitError,
    SplitEvent, SplitHeader, StreamRead, TcpSplitter, WhenFull,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, Ipv4Address};

// ---------------------------------------------------------------------------------------------
// A smoltcp host (LAN client or LAN server) on an in-memory IP device.

#[path = "common/smol_host.rs"]
mod smol_host;
use smol_host::{App, Host};

// ---------------------------------------------------------------------------------------------
// An in-memory bounded duplex byte pipe standing in for a MEF transport stream.

#[derive(Default)]
struct Half {
    data: VecDeque<u8>,
    finished: bool,
    reset: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("pipe reset by peer")]
struct PipeReset;

struct PipeEnd {
    tx: Rc<RefCell<Half>>,
    rx: Rc<RefCell<Half>>,
    cap: usize,
}

fn pipe(cap: usize) -> (PipeEnd, PipeEnd) {
    let a = Rc::new(RefCell::new(Half::default()));
    let b = Rc::new(RefCell::new(Half::default()));
    (
        PipeEnd {
            tx: a.clone(),
            rx: b.clone(),
            cap,
        },
        PipeEnd { tx: b, rx: a, cap },
    )
}

impl ByteStream for PipeEnd {
    type Error = PipeReset;
    fn read(&mut self, buf: &mut [u8]) -> Result<StreamRead, PipeReset> {
        let mut rx = self.rx.borrow_mut();
        if rx.reset {
            return Err(PipeReset);
        }
        if rx.data.is_empty() {
            return Ok(if rx.finished {
                StreamRead::Finished
            } else {
                StreamRead::Blocked
            });
        }
        let n = buf.len().min(rx.data.len());
        for (dst, src) in buf.iter_mut().zip(rx.data.drain(..n)) {
            *dst = src;
        }
        Ok(StreamRead::Data(n))
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, PipeReset> {
        let mut tx = self.tx.borrow_mut();
        if tx.reset {
            return Err(PipeReset);
        }
        let n = buf.len().min(self.cap.saturating_sub(tx.data.len()));
        tx.data.extend(&buf[..n]);
        Ok(n)
    }
    fn finish(&mut self) -> Result<(), PipeReset> {
        self.tx.borrow_mut().finished = true;
        Ok(())
    }
    fn reset(&mut self) {
        self.tx.borrow_mut().reset = true;
        self.rx.borrow_mut().reset = true;
    }
}

// ---------------------------------------------------------------------------------------------

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const CLIENT: &str = "10.0.1.2:40000";
const SERVER: &str = "192.0.2.7:443";

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().expect("socket address")
}

fn ep(a: SocketAddrV4) -> (IpAddress, u16) {
    (IpAddress::Ipv4(*a.ip()), a.port())
}

/// Everything of the end-to-end scenario.
struct World {
    t0: Instant,
    t: Duration,
    client: Host,
    server: Host,
    ingress: TcpSplitter,
    egress: TcpSplitter,
    relay_in: Option<Relay>,
    relay_out: Option<Relay>,
    pipe_in: PipeEnd,
    pipe_out: PipeEnd,
    egress_hdr: Vec<u8>,
    ingress_events: Vec<SplitEvent>,
    egress_events: Vec<SplitEvent>,
    accepted: Option<(ConnId, SocketAddrV4, SocketAddrV4)>,
    /// Drop every n-th packet on each LAN hop (0: lossless), to exercise retransmission.
    drop_every: usize,
    sent_packets: usize,
}

impl World {
    fn new() -> Self {
        let t0 = Instant::now();
        let (pipe_in, pipe_out) = pipe(96 * 1024);
        let cfg = |seed| SplitConfig {
            random_seed: seed,
            ..SplitConfig::default()
        };
        Self {
            t0,
            t: Duration::ZERO,
            client: Host::new(Ipv4Address::new(10, 0, 1, 2), Ipv4Address::new(10, 0, 1, 1)),
            server: Host::new(
                Ipv4Address::new(192, 0, 2, 7),
                Ipv4Address::new(192, 0, 2, 1),
            ),
            ingress: TcpSplitter::new(cfg(1), t0).expect("ingress"),
            egress: TcpSplitter::new(cfg(2), t0).expect("egress"),
            relay_in: None,
            relay_out: None,
            pipe_in,
            pipe_out,
            egress_hdr: Vec::new(),
            ingress_events: Vec::new(),
            egress_events: Vec::new(),
            accepted: None,
            drop_every: 0,
            sent_packets: 0,
        }
    }

    /// Whether the next LAN packet is lost.
    fn lose(&mut self) -> bool {
        self.sent_packets += 1;
        // Only during the bulk phase: a lost FIN can stall smoltcp 0.14 until the user timeout
        // (seen here: a socket in CLOSING with no retransmission timer); kept out of this test
        // and reported as an open finding.
        self.drop_every != 0
            && self.sent_packets < 1500
            && self.sent_packets.is_multiple_of(self.drop_every)
    }

    fn now(&self) -> Instant {
        self.t0 + self.t
    }

    /// One millisecond of virtual time: every party runs once.
    fn step(&mut self) {
        self.t += Duration::from_millis(1);
        let now = self.now();
        // LAN client -> ingress splitter.
        self.client.poll(self.t);
        while let Some(p) = self.client.dev.tx.pop_front() {
            self.ingress
                .handle_ip_packet(now, &p)
                .expect("valid packet");
        }
        if self.ingress.poll_timeout().is_some_and(|d| d <= now) {
            self.ingress.handle_timeout(now);
        }
        while let Some(p) = self.ingress.poll_ip_packet() {
            if !self.lose() {
                self.client.dev.rx.push_back(p);
            }
        }
        while let Some(ev) = self.ingress.poll_event() {
            if let SplitEvent::Accepted { id, client, server } = ev {
                self.accepted = Some((id, client, server));
                let hdr = SplitHeader { client, server };
                self.relay_in =
                    Some(Relay::ingress(id, hdr, RelayConfig::default()).expect("header"));
            }
            self.ingress_events.push(ev);
        }
        if let Some(r) = &mut self.relay_in {
            r.pump(&mut self.ingress, &mut self.pipe_in)
                .expect("ingress relay");
        }
        // Egress: read the header off the stream, then connect.
        if self.relay_out.is_none() {
            let mut buf = [0u8; 64];
            if let StreamRead::Data(n) = self.pipe_out.read(&mut buf).expect("pipe") {
                self.egress_hdr.extend_from_slice(&buf[..n]);
            }
            match SplitHeader::parse(&self.egress_hdr) {
                Ok((hdr, used)) => {
                    let id = self
                        .egress
                        .connect(now, hdr.client, hdr.server)
                        .expect("connect");
                    self.relay_out = Some(Relay::egress(
                        id,
                        &self.egress_hdr[used..],
                        RelayConfig::default(),
                    ));
                }
                Err(FrameError::Truncated { .. }) => {}
                Err(e) => panic!("bad header: {e}"),
            }
        }
        if self.egress.poll_timeout().is_some_and(|d| d <= now) {
            self.egress.handle_timeout(now);
        }
        while let Some(ev) = self.egress.poll_event() {
            self.egress_events.push(ev);
        }
        if let Some(r) = &mut self.relay_out {
            r.pump(&mut self.egress, &mut self.pipe_out)
                .unwrap_or_else(|e| {
                    panic!(
                        "egress relay: {e} t={:?} {:?} {:?}",
                        self.t,
                        self.egress.stats(),
                        self.egress_events.iter().rev().take(4).collect::<Vec<_>>()
                    )
                });
        }
        if self.egress.poll_timeout().is_some_and(|d| d <= now) {
            self.egress.handle_timeout(now);
        }
        while let Some(p) = self.egress.poll_ip_packet() {
            if !self.lose() {
                self.server.dev.rx.push_back(p);
            }
        }
        // LAN server -> egress splitter.
        self.server.poll(self.t);
        while let Some(p) = self.server.dev.tx.pop_front() {
            if !self.lose() {
                self.egress.handle_ip_packet(now, &p).expect("valid packet");
            }
        }
        while let Some(p) = self.egress.poll_ip_packet() {
            if !self.lose() {
                self.server.dev.rx.push_back(p);
            }
        }
        while let Some(ev) = self.egress.poll_event() {
            self.egress_events.push(ev);
        }
        if self.ingress.poll_timeout().is_some_and(|d| d <= now) {
            self.ingress.handle_timeout(now);
        }
        while let Some(p) = self.ingress.poll_ip_packet() {
            if !self.lose() {
                self.client.dev.rx.push_back(p);
            }
        }
    }
}

#[test]
fn split_relays_one_megabyte_each_way_and_closes_cleanly() {
    transfer(0);
}

#[test]
fn split_survives_lan_loss() {
    // One packet in 97 lost (first 1500 LAN packets) on every LAN hop: smoltcp retransmits on both split halves. (Each
    // timeout costs smoltcp's 1 s minimum RTO, RFC 6298 §2.4, and it has no SACK, so heavier
    // loss makes this slow in virtual time rather than wrong.)
    transfer(97);
    // ...and heavier loss.
    transfer(29);
}

fn transfer(drop_every: usize) {
    const LEN: usize = 1 << 20;
    let mut w = World::new();
    w.drop_every = drop_every;
    let client_data = payload(7, LEN);
    let server_data = payload(11, LEN);

    let mut srv = w.server.socket(128 * 1024);
    srv.listen(addr(SERVER).port()).expect("listen");
    let srv = w.server.sockets.add(srv);
    let mut cli = w.client.socket(128 * 1024);
    cli.connect(
        w.client.iface.context(),
        ep(addr(SERVER)),
        addr(CLIENT).port(),
    )
    .expect("connect");
    let cli = w.client.sockets.add(cli);

    let mut client_app = App::new(cli, client_data.clone());
    let mut server_app = App::new(srv, server_data.clone());
    let mut server_peer = None;
    for _ in 0..120_000 {
        w.step();
        client_app.run(&mut w.client, w.t);
        server_app.run(&mut w.server, w.t);
        if server_peer.is_none() {
            server_peer = w.server.tcp(srv).remote_endpoint();
        }
        let done = |s: &tcp::Socket| matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
        if done(w.client.tcp(cli))
            && done(w.server.tcp(srv))
            && w.ingress_events
                .iter()
                .any(|e| matches!(e, SplitEvent::Closed { .. }))
            && w.egress_events
                .iter()
                .any(|e| matches!(e, SplitEvent::Closed { .. }))
        {
            break;
        }
    }

    // The ingress splitter saw the original addresses, the server saw the real client.
    let (_, client, server) = w.accepted.expect("accepted");
    assert_eq!((client, server), (addr(CLIENT), addr(SERVER)));
    let peer = server_peer.expect("server got a connection");
    assert_eq!(peer.addr, IpAddress::Ipv4(*addr(CLIENT).ip()));
    assert_eq!(peer.port, addr(CLIENT).port());

    assert_eq!(client_app.received, LEN, "client received everything");
    assert_eq!(server_app.received, LEN, "server received everything");
    assert_eq!(client_app.digest(), Sha256::digest(&server_data).to_vec());
    assert_eq!(server_app.digest(), Sha256::digest(&client_data).to_vec());
    for (name, events, splitter) in [
        ("ingress", &w.ingress_events, &w.ingress),
        ("egress", &w.egress_events, &w.egress),
    ] {
        assert!(
            events
                .iter()
                .any(|e| matches!(e, SplitEvent::PeerClosed { .. })),
            "{name}: {events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, SplitEvent::Closed { .. })),
            "{name}: {events:?}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, SplitEvent::Reset { .. })),
            "{name}: {events:?}"
        );
        let stats = splitter.stats();
        assert_eq!(
            (stats.closed, stats.reset, stats.malformed),
            (1, 0, 0),
            "{name}"
        );
    }
    assert!(
        w.egress_events
            .iter()
            .any(|e| matches!(e, SplitEvent::Connected { .. }))
    );
    // Both relays have nothing left.
    for r in [&w.relay_in, &w.relay_out] {
        assert_eq!(r.as_ref().map(Relay::buffered), Some((0, 0)));
    }
}

/// Drive only a client host against one splitter (no relay).
fn drive_client(
    host: &mut Host,
    s: &mut TcpSplitter,
    t0: Instant,
    t: &mut Duration,
) -> Vec<Result<(), SplitError>> {
    let mut results = Vec::new();
    for _ in 0..5 {
        *t += Duration::from_millis(1);
        let now = t0 + *t;
        host.poll(*t);
        while let Some(p) = host.dev.tx.pop_front() {
            results.push(s.handle_ip_packet(now, &p));
        }
        if s.poll_timeout().is_some_and(|d| d <= now) {
            s.handle_timeout(now);
        }
        while let Some(p) = s.poll_ip_packet() {
            host.dev.rx.push_back(p);
        }
    }
    results
}

#[test]
fn connection_limit_is_enforced() {
    for policy in [WhenFull::Reset, WhenFull::Drop] {
        let t0 = Instant::now();
        let mut t = Duration::ZERO;
        let config = SplitConfig {
            max_connections: 2,
            when_full: policy,
            rx_buffer: 4096,
            tx_buffer: 4096,
            ..SplitConfig::default()
        };
        let mut s = TcpSplitter::new(config, t0).expect("splitter");
        let mut host = Host::new(Ipv4Address::new(10, 0, 1, 2), Ipv4Address::new(10, 0, 1, 1));
        let mut handles = Vec::new();
        for i in 0..3u16 {
            let mut sock = host.socket(128 * 1024);
            let dst = SocketAddrV4::new(std::net::Ipv4Addr::new(198, 51, 100, 1 + i as u8), 80);
            sock.connect(host.iface.context(), ep(dst), 50_000 + i)
                .expect("connect");
            handles.push(host.sockets.add(sock));
        }
        let results = drive_client(&mut host, &mut s, t0, &mut t);
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(SplitError::TooManyConnections { limit: 2 }))),
            "{results:?}"
        );
        let mut accepted = 0;
        while let Some(ev) = s.poll_event() {
            if matches!(ev, SplitEvent::Accepted { .. }) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 2);
        assert_eq!(s.connection_count(), 2);
        assert!(s.stats().rejected_full >= 1);
        let third = host.tcp(handles[2]).state();
        match policy {
            WhenFull::Reset => assert_eq!(third, tcp::State::Closed, "RST refuses the third"),
            WhenFull::Drop => assert_eq!(third, tcp::State::SynSent, "SYN silently dropped"),
        }
        // Closing one connection frees a slot for a new one.
        let first = host.tcp(handles[0]);
        first.abort();
        drive_client(&mut host, &mut s, t0, &mut t);
        assert_eq!(s.connection_count(), 1, "reset connection removed");
        assert!(matches!(s.poll_event(), Some(SplitEvent::Reset { .. })));
    }
}

#[test]
fn connect_refused_reports_reset_and_bad_calls_error() {
    let t0 = Instant::now();
    let mut s = TcpSplitter::new(SplitConfig::default(), t0).expect("splitter");
    let mut server = Host::new(
        Ipv4Address::new(192, 0, 2, 7),
        Ipv4Address::new(192, 0, 2, 1),
    );
    let id = s.connect(t0, addr(CLIENT), addr(SERVER)).expect("connect");
    assert!(matches!(
        s.connect(t0, addr(CLIENT), addr(SERVER)),
        Err(SplitError::AlreadyExists { .. })
    ));
    assert!(matches!(
        s.connect(t0, addr("0.0.0.0:1"), addr(SERVER)),
        Err(SplitError::Unaddressable { .. })
    ));
    // Nothing listens on the server: its stack answers the SYN with a RST.
    let mut t = Duration::ZERO;
    for _ in 0..5 {
        t += Duration::from_millis(1);
        while let Some(p) = s.poll_ip_packet() {
            server.dev.rx.push_back(p);
        }
        server.poll(t);
        while let Some(p) = server.dev.tx.pop_front() {
            s.handle_ip_packet(t0 + t, &p).expect("valid");
        }
    }
    assert_eq!(s.poll_event(), Some(SplitEvent::Reset { id }));
    assert!(matches!(
        s.write(id, b"x"),
        Err(SplitError::UnknownConnection(_))
    ));
    assert!(matches!(
        s.read(id, &mut [0; 4]),
        Err(SplitError::UnknownConnection(_))
    ));
    assert_eq!(s.connection_count(), 0);
    let bad = SplitConfig {
        max_connections: 0,
        ..SplitConfig::default()
    };
    assert!(matches!(
        TcpSplitter::new(bad, t0),
        Err(SplitError::InvalidConfig(_))
    ));
}

/// A valid SYN from a smoltcp client to an arbitrary address.
fn captured_syn() -> Vec<u8> {
    let mut host = Host::new(Ipv4Address::new(10, 0, 1, 2), Ipv4Address::new(10, 0, 1, 1));
    let mut sock = host.socket(128 * 1024);
    sock.connect(host.iface.context(), ep(addr(SERVER)), 40000)
        .expect("connect");
    host.sockets.add(sock);
    host.poll(Duration::from_millis(1));
    host.dev.tx.pop_front().expect("SYN")
}

#[test]
fn malformed_packets_are_counted_and_dropped() {
    let t0 = Instant::now();
    let mut s = TcpSplitter::new(SplitConfig::default(), t0).expect("splitter");
    let syn = captured_syn();
    // Truncated at every length.
    for len in 0..syn.len() {
        assert!(s.handle_ip_packet(t0, &syn[..len]).is_err(), "len {len}");
    }
    // Bad IPv4 header checksum.
    let mut bad = syn.clone();
    bad[10] ^= 0xff;
    assert!(matches!(
        s.handle_ip_packet(t0, &bad),
        Err(SplitError::Malformed(
            mef_router::split::MalformedReason::BadIpv4Checksum
        ))
    ));
    // Bad TCP checksum (payload byte of the TCP header changed).
    let mut bad = syn.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    assert!(matches!(
        s.handle_ip_packet(t0, &bad),
        Err(SplitError::Malformed(
            mef_router::split::MalformedReason::BadTcpChecksum
        ))
    ));
    // UDP (protocol 17) with a correct IPv4 header checksum.
    let mut udp = syn.clone();
    udp[9] = 17;
    udp[10] = 0;
    udp[11] = 0;
    let sum = ipv4_checksum(&udp[..20]);
    udp[10..12].copy_from_slice(&sum.to_be_bytes());
    assert!(matches!(
        s.handle_ip_packet(t0, &udp),
        Err(SplitError::NotTcp { protocol: 17 })
    ));
    assert!(s.handle_ip_packet(t0, &[0x60; 60]).is_err(), "IPv6 nibble");
    assert!(
        s.handle_ip_packet(t0, b"garbage garbage garbage garbage")
            .is_err()
    );
    let st = *s.stats();
    assert_eq!(st.non_tcp, 1);
    assert_eq!(st.malformed, syn.len() as u64 + 4);
    assert_eq!(s.connection_count(), 0);
    assert_eq!(s.poll_ip_packet(), None, "nothing answered");
    // The intact SYN still works afterwards.
    s.handle_ip_packet(t0, &syn).expect("valid SYN");
    assert!(s.poll_ip_packet().is_some(), "SYN-ACK");
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let t0 = Instant::now();
        let mut s = TcpSplitter::new(SplitConfig::default(), t0).expect("splitter");
        let _ = s.handle_ip_packet(t0, &bytes);
        let st = *s.stats();
        prop_assert_eq!(st.packets_in, 1);
        s.handle_timeout(t0 + Duration::from_secs(1));
        while s.poll_ip_packet().is_some() {}
    }

    #[test]
    fn mutated_syn_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                cut in any::<usize>()) {
        let t0 = Instant::now();
        let mut s = TcpSplitter::new(SplitConfig::default(), t0).expect("splitter");
        let mut p = captured_syn();
        for (i, b) in edits {
            let n = p.len();
            p[i % n] = b;
        }
        p.truncate(cut % (p.len() + 1));
        let _ = s.handle_ip_packet(t0, &p);
        while s.poll_ip_packet().is_some() {}
        while s.poll_event().is_some() {}
    }

    #[test]
    fn split_header_round_trips(ca in any::<[u8; 4]>(), cp in 1u16.., sa in any::<[u8; 4]>(), sp in 1u16..) {
        let h = SplitHeader {
            client: SocketAddrV4::new(ca.into(), cp),
            server: SocketAddrV4::new(sa.into(), sp),
        };
        match h.to_bytes() {
            Ok(bytes) => prop_assert_eq!(SplitHeader::parse(&bytes), Ok((h, SplitHeader::LEN))),
            Err(e) => prop_assert_eq!(e, FrameError::BadAddress),
        }
    }

    #[test]
    fn split_header_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok((_, used)) = SplitHeader::parse(&bytes) {
            prop_assert!(used >= SplitHeader::LEN && used <= bytes.len());
        }
    }
}

#[test]
fn relay_propagates_stream_reset_as_abort() {
    let mut w = World::new();
    let mut srv = w.server.socket(128 * 1024);
    srv.listen(addr(SERVER).port()).expect("listen");
    let srv = w.server.sockets.add(srv);
    let mut cli = w.client.socket(128 * 1024);
    cli.connect(
        w.client.iface.context(),
        ep(addr(SERVER)),
        addr(CLIENT).port(),
    )
    .expect("connect");
    let cli = w.client.sockets.add(cli);
    for _ in 0..50 {
        w.step();
    }
    assert_eq!(w.client.tcp(cli).state(), tcp::State::Established);
    assert_eq!(w.server.tcp(srv).state(), tcp::State::Established);
    // The WAN stream dies: the ingress relay aborts the client's connection with a RST.
    w.pipe_out.reset();
    let relay = w.relay_in.as_mut().expect("relay");
    assert!(relay.pump(&mut w.ingress, &mut w.pipe_in).is_err());
    w.ingress.handle_timeout(w.now());
    while let Some(p) = w.ingress.poll_ip_packet() {
        w.client.dev.rx.push_back(p);
    }
    w.client.poll(w.t + Duration::from_millis(1));
    assert_eq!(w.client.tcp(cli).state(), tcp::State::Closed);
    let _ = RelayStatus::Open;
}
