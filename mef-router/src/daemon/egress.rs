//! The WAN egress, sans-IO: IPv4 packets from the LAN go through [`MefQdisc`] (rate controller,
//! policer, DRR fair queue) and leave at the configured WAN capacity (a token bucket).
//!
//! **How a tunnelled MEF packet is recognised.** The router sees plaintext IPv4 packets on its
//! TUN device *before* encrypting them. A packet is MEF-native when it is IPv4, not a fragment
//! (offset 0, MF clear), protocol UDP (17), and its UDP payload parses as a MEF header
//! ([`mef_transport::wire::Packet::new_checked`]: magic, version, type) that is also plausible
//! ([`crate::is_plausible_mef`]: no undefined flags, stamp ≤ demand). Such packets are stamped by
//! the qdisc (the stamp only ever lowers the rate field) and their UDP checksum is recomputed;
//! every other packet is forwarded unchanged and scheduled fairly per socket pair.
//!
//! To reuse [`MefQdisc`] (built for the simulator's `(src, dst, UDP payload)` datagrams) each IP
//! packet is split: the IP header plus the first 8 bytes of the transport header (for UDP, its
//! whole header) are kept aside, keyed by packet id; the rest is the qdisc's payload. The
//! qdisc's `wire_len` (payload + 28) is then the IP packet's length for a 20-byte IP header.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mef_transport::wire::Packet as MefPacket;
use sim_netem::{Datagram, Enqueue, Qdisc};

use crate::error::ConfigError;
use crate::qdisc::{MefQdisc, MefQdiscConfig};
use crate::tunnel::PeerId;

/// Bytes the tunnel adds on the wire to an inner packet besides padding: IPv4 + UDP headers
/// (28) and the data header + tag (32).
pub const WIRE_OVERHEAD: usize = 60;

/// A validated view of an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Header length in bytes.
    pub ihl: usize,
    /// Total length from the header.
    pub total: usize,
    /// Protocol number.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Whether this is a fragment (offset ≠ 0 or MF set).
    pub fragment: bool,
}

/// Why a packet from the TUN device was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Not IPv4 (IPv6 is not routed by this version).
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// Header or length fields inconsistent with the buffer.
    #[error("malformed IPv4 header")]
    Malformed,
}

/// Parses and checks an IPv4 header (RFC 791 §3.1): version, IHL ≥ 5, total length within the
/// buffer. Never panics.
pub fn parse_ipv4(p: &[u8]) -> Result<Ipv4Info, PacketError> {
    let first = *p.first().ok_or(PacketError::Malformed)?;
    if first >> 4 != 4 {
        return Err(PacketError::NotIpv4);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return Err(PacketError::Malformed);
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if total < ihl || total > p.len() {
        return Err(PacketError::Malformed);
    }
    let frag = u16::from_be_bytes([p[6], p[7]]);
    Ok(Ipv4Info {
        ihl,
        total,
        protocol: p[9],
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        fragment: frag & 0x3fff != 0,
    })
}

/// Recomputes the UDP checksum of an IPv4/UDP packet in place (RFC 768, pseudo-header).
pub fn fix_udp_checksum(p: &mut [u8], info: &Ipv4Info) {
    let (ihl, total) = (info.ihl, info.total);
    if total < ihl + 8 || p.len() < total {
        return;
    }
    p[ihl + 6] = 0;
    p[ihl + 7] = 0;
    let udp_len = total - ihl;
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            sum += u32::from(w);
        }
    };
    add(&p[12..20]);
    add(&[0, 17]);
    add(&(udp_len as u16).to_be_bytes());
    add(&p[ihl..total]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if c == 0 {
        c = 0xffff;
    }
    p[ihl + 6..ihl + 8].copy_from_slice(&c.to_be_bytes());
}

/// Where a queued packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// An IP packet for a peer's tunnel.
    Tunnel(PeerId, Ipv4Info),
    /// A UDP payload (MEF transport of the TCP splitter) for this address.
    Datagram(SocketAddr),
}

struct Meta {
    dest: Dest,
    head: Vec<u8>,
}

/// A packet released by [`Egress::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Encrypt this IP packet for the peer and send it through the tunnel.
    Tunnel(PeerId, Vec<u8>),
    /// Send this UDP payload from the split socket to the address.
    Datagram(SocketAddr, Vec<u8>),
}

/// Counters of the egress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressStats {
    /// Packets accepted into the queue.
    pub enqueued: u64,
    /// Packets dropped by the qdisc (overflow or policer).
    pub dropped: u64,
    /// Packets released to the tunnel.
    pub sent: u64,
    /// Inner bytes released.
    pub sent_bytes: u64,
}

/// How often the encapsulation overhead is measured.
const OVERHEAD_WINDOW: Duration = Duration::from_millis(100);

/// Measures the bit rate the tunnel's encapsulation adds on the wire. The qdisc counts inner
/// packets (IP packet, or split UDP payload + 28); a tunnelled packet costs 60 bytes more plus
/// padding (far more than 4 % for small packets), a split MEF datagram nothing. So the
/// controller is given `C − overhead` as measured, not a fixed fraction of C.
#[derive(Debug, Default)]
struct OverheadMeter {
    since: Option<Instant>,
    bytes: u64,
    rate_bps: Option<f64>,
}

impl OverheadMeter {
    fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// Closes the window if it is over; returns the smoothed overhead (bits/s) then.
    fn tick(&mut self, now: Instant) -> Option<f64> {
        let since = *self.since.get_or_insert(now);
        let dt = now.saturating_duration_since(since);
        if dt < OVERHEAD_WINDOW {
            return None;
        }
        let sample = self.bytes as f64 * 8.0 / dt.as_secs_f64();
        let rate = self.rate_bps.map_or(sample, |r| 0.75 * r + 0.25 * sample);
        self.rate_bps = Some(rate);
        self.bytes = 0;
        self.since = Some(now);
        Some(rate)
    }
}

/// The shaped WAN egress.
pub struct Egress {
    qdisc: MefQdisc,
    capacity_bps: u64,
    overhead: OverheadMeter,
    meta: HashMap<u64, Meta>,
    next_id: u64,
    rate_bytes_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
    stats: EgressStats,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("rate_bytes_per_s", &self.rate_bytes_per_s)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// An egress for a WAN of `capacity_bps` with `buffer_bytes` of queue. The rate controller
    /// allocates the capacity left after the tunnel's per-packet overhead, measured every
    /// 100 ms (see `OverheadMeter`; split MEF datagrams pay none); the token bucket shapes wire
    /// bytes to the full capacity, with a burst of 5 ms or two MTUs.
    pub fn new(capacity_bps: u64, buffer_bytes: usize) -> Result<Self, ConfigError> {
        let qdisc = MefQdisc::new(MefQdiscConfig::new(capacity_bps, buffer_bytes))?;
        let rate = capacity_bps as f64 / 8.0;
        let burst = (rate * 0.005).max(3000.0);
        Ok(Self {
            qdisc,
            capacity_bps,
            overhead: OverheadMeter::default(),
            meta: HashMap::new(),
            next_id: 0,
            rate_bytes_per_s: rate,
            burst,
            tokens: burst,
            last: None,
            stats: EgressStats::default(),
        })
    }

    /// The qdisc (μ, flows, drops).
    pub fn qdisc(&self) -> &MefQdisc {
        &self.qdisc
    }

    /// Counters.
    pub fn stats(&self) -> &EgressStats {
        &self.stats
    }

    /// Queues an IPv4 packet (already validated by [`parse_ipv4`]) for `peer`. Returns false
    /// if the packet (or, with fair queueing, a packet of a longer flow) was dropped.
    pub fn enqueue(
        &mut self,
        now: Instant,
        peer: PeerId,
        mut packet: Vec<u8>,
        info: Ipv4Info,
    ) -> bool {
        packet.truncate(info.total);
        let transport = !info.fragment && matches!(info.protocol, 6 | 17);
        let cut = if transport {
            (info.ihl + 8).min(info.total)
        } else {
            info.ihl
        };
        let port = |at: usize| {
            packet
                .get(at..at + 2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
        };
        let (sport, dport) = if transport && info.total >= info.ihl + 4 {
            (port(info.ihl), port(info.ihl + 2))
        } else {
            (0, 0)
        };
        let payload = packet.split_off(cut);
        let id = self.next_id;
        self.next_id += 1;
        self.meta.insert(
            id,
            Meta {
                dest: Dest::Tunnel(peer, info),
                head: packet,
            },
        );
        let dgram = Datagram {
            src: SocketAddr::V4(SocketAddrV4::new(info.src, sport)),
            dst: SocketAddr::V4(SocketAddrV4::new(info.dst, dport)),
            payload,
        };
        self.offer(now, id, dgram)
    }

    /// Queues a UDP payload sent by this router itself from `src` to `dst` (the TCP splitter's
    /// MEF transport): it is a MEF-native flow, so the qdisc stamps it like any other.
    pub fn enqueue_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    ) -> bool {
        let id = self.next_id;
        self.next_id += 1;
        self.meta.insert(
            id,
            Meta {
                dest: Dest::Datagram(dst),
                head: Vec::new(),
            },
        );
        self.offer(now, id, Datagram { src, dst, payload })
    }

    fn offer(&mut self, now: Instant, id: u64, dgram: Datagram) -> bool {
        let pkt = sim_netem::Packet {
            dgram,
            id,
            enqueued_at: now,
        };
        match self.qdisc.enqueue(now, pkt) {
            Enqueue::Queued => {
                self.stats.enqueued += 1;
                true
            }
            Enqueue::Dropped(p) => {
                self.meta.remove(&p.id);
                self.stats.dropped += 1;
                p.id != id
            }
            Enqueue::QueuedWithDrops(victims) => {
                self.stats.enqueued += 1;
                for v in victims {
                    self.meta.remove(&v.id);
                    self.stats.dropped += 1;
                }
                true
            }
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate_bytes_per_s).min(self.burst);
        }
        self.last = Some(now);
    }

    /// The next packet allowed out at `now`, reassembled (MEF packets stamped and their UDP
    /// checksum fixed), with the peer it goes to.
    pub fn poll(&mut self, now: Instant) -> Option<Release> {
        self.refill(now);
        if let Some(overhead) = self.overhead.tick(now) {
            let c = self.capacity_bps as f64;
            self.qdisc
                .set_capacity_bps((c - overhead).max(c / 2.0) as u64);
        }
        self.qdisc.handle_timeout(now);
        if self.tokens <= 0.0 {
            return None;
        }
        loop {
            let pkt = self.qdisc.dequeue(now)?;
            let Some(meta) = self.meta.remove(&pkt.id) else {
                continue;
            };
            let (peer, info) = match meta.dest {
                Dest::Datagram(dst) => {
                    let len = pkt.dgram.payload.len();
                    self.tokens -= (len + 28) as f64;
                    self.stats.sent += 1;
                    self.stats.sent_bytes += len as u64;
                    return Some(Release::Datagram(dst, pkt.dgram.payload));
                }
                Dest::Tunnel(peer, info) => (peer, info),
            };
            let mut out = meta.head;
            let stamped = info.protocol == 17
                && !info.fragment
                && MefPacket::new_checked(&pkt.dgram.payload[..])
                    .is_ok_and(|p| crate::is_plausible_mef(&p));
            out.extend_from_slice(&pkt.dgram.payload);
            if stamped && out.len() >= info.ihl + 8 {
                let had_checksum = out[info.ihl + 6] != 0 || out[info.ihl + 7] != 0;
                if had_checksum {
                    fix_udp_checksum(&mut out, &info);
                }
            }
            let wire = out.len().div_ceil(16) * 16 + WIRE_OVERHEAD;
            self.tokens -= wire as f64;
            self.overhead.add(wire - out.len());
            self.stats.sent += 1;
            self.stats.sent_bytes += out.len() as u64;
            return Some(Release::Tunnel(peer, out));
        }
    }

    /// When [`poll`](Self::poll) can next return a packet, if anything is queued.
    pub fn next_release(&self, now: Instant) -> Option<Instant> {
        if self.qdisc.backlog_packets() == 0 {
            return self.qdisc.controller().poll_timeout();
        }
        if self.tokens > 0.0 {
            return Some(now);
        }
        let wait = (-self.tokens + 1.0) / self.rate_bytes_per_s;
        Some(self.last.unwrap_or(now) + Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mef_transport::wire::{HEADER_LEN, Header, PacketType};

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        let info = parse_ipv4(&p).expect("valid");
        fix_udp_checksum(&mut p, &info);
        p
    }

    #[test]
    fn shapes_to_capacity_and_forwards_unchanged() {
        let mut e = Egress::new(10_000_000, 1_000_000).expect("egress");
        let t0 = Instant::now();
        let pkt = udp([10, 1, 0, 2], [10, 2, 0, 2], 5000, 6000, &[7u8; 1372]);
        for _ in 0..500 {
            let info = parse_ipv4(&pkt).expect("ok");
            assert!(e.enqueue(t0, PeerId(0), pkt.clone(), info));
        }
        let mut sent = 0usize;
        let mut t = t0;
        while t < t0 + Duration::from_millis(200) {
            while let Some(Release::Tunnel(peer, p)) = e.poll(t) {
                assert_eq!(peer, PeerId(0));
                assert_eq!(p, pkt, "non-MEF bytes untouched");
                sent += p.len().div_ceil(16) * 16 + WIRE_OVERHEAD;
            }
            t += Duration::from_millis(1);
        }
        let rate = sent as f64 * 8.0 / 0.2;
        assert!((rate - 10e6).abs() < 0.05 * 10e6, "rate {rate}");
    }

    /// Runs a saturated egress for one second, keeping `backlog` packets of `len` bytes queued
    /// (tunnelled IP packets, or split datagrams), and returns the capacity the controller
    /// was left with.
    fn controller_capacity_after_load(split: bool, len: usize) -> u64 {
        let mut e = Egress::new(10_000_000, 1_000_000).expect("egress");
        let t0 = Instant::now();
        let pkt = udp(
            [10, 1, 0, 2],
            [10, 2, 0, 2],
            5000,
            6000,
            &vec![7u8; len - 28],
        );
        let dst: SocketAddr = "10.2.0.2:6000".parse().expect("addr");
        let src: SocketAddr = "10.1.0.2:5000".parse().expect("addr");
        let mut t = t0;
        while t < t0 + Duration::from_secs(1) {
            for _ in 0..10 {
                if split {
                    e.enqueue_datagram(t, src, dst, pkt[28..].to_vec());
                } else {
                    let info = parse_ipv4(&pkt).expect("ok");
                    e.enqueue(t, PeerId(0), pkt.clone(), info);
                }
            }
            while e.poll(t).is_some() {}
            t += Duration::from_millis(1);
        }
        e.qdisc().controller().config().capacity_bps
    }

    #[test]
    fn controller_gets_the_capacity_left_after_measured_tunnel_overhead() {
        // 200-byte packets: 208 padded + 60 on the wire, so 68 of every 268 wire bytes are
        // overhead. A fixed 4 % would overcommit the link by a fifth.
        let tunnel = controller_capacity_after_load(false, 200) as f64;
        let expected = 10e6 * 200.0 / 268.0;
        assert!(
            (tunnel - expected).abs() < 0.05 * expected,
            "capacity {tunnel} vs {expected}"
        );
        // Split MEF datagrams pay no encapsulation: the whole link is shared out.
        let split = controller_capacity_after_load(true, 1400);
        assert_eq!(split, 10_000_000);
    }

    #[test]
    fn mef_packets_are_stamped_and_checksummed() {
        let mut e = Egress::new(10_000_000, 1_000_000).expect("egress");
        let t0 = Instant::now();
        let hdr = Header {
            packet_type: PacketType::Data,
            flags: 0,
            hops: 0,
            conn_id: 42,
            packet_number: 1,
            demand_kbps: 1_000_000,
            current_rate_kbps: 0,
            stamp_kbps: 1_000_000,
            rtt_us: 0,
        };
        let mut payload = vec![0u8; HEADER_LEN + 100];
        hdr.emit(&mut payload);
        let pkt = udp([10, 1, 0, 2], [10, 2, 0, 2], 5000, 6000, &payload);
        let info = parse_ipv4(&pkt).expect("ok");
        assert!(e.enqueue(t0, PeerId(1), pkt.clone(), info));
        let Some(Release::Tunnel(_, out)) = e.poll(t0) else {
            panic!("released")
        };
        let got = MefPacket::new_checked(&out[28..]).expect("mef");
        assert!(
            got.stamp_kbps() < 1_000_000,
            "stamped below the 10 Mbit/s link"
        );
        let mut check = out.clone();
        fix_udp_checksum(&mut check, &info);
        assert_eq!(check, out, "checksum recomputed");
        assert_eq!(e.qdisc().stats().stamped, 1);
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert_eq!(parse_ipv4(&[]), Err(PacketError::Malformed));
        assert_eq!(parse_ipv4(&[0x60; 40]), Err(PacketError::NotIpv4));
        assert_eq!(
            parse_ipv4(&[
                0x45, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]),
            Err(PacketError::Malformed)
        );
        assert_eq!(parse_ipv4(&[0x43; 20]), Err(PacketError::Malformed));
    }
}
