//! Tunnel throughput on one core: 1400-byte packets encapsulated and decapsulated in a loop
//! (target: ≥ 1 Gbit/s per core), with the time split by stage.
//!
//! The data message is WireGuard's (§5.4.6, as `mef_router::tunnel::wire` lays it out): a
//! 16-byte header (type 4, 3 reserved bytes, receiver index u32 LE, counter u64 LE) and the
//! packet sealed with ChaCha20-Poly1305 under the nonce `0u32 ‖ counter LE`, tag appended.
//! Each stage is timed on its own over the same packets:
//! - `copy`: the packet copied from the application buffer behind the header (the one copy an
//!   in-place encapsulation needs);
//! - `frame`: writing the header and parsing it back (type, reserved, index, counter);
//! - `seal` / `open`: the AEAD alone, in place;
//! - `round`: all of it, encapsulate then decapsulate, per packet, which is what one core of a
//!   router pair does for one packet; its payload rate is the headline figure.
//!
//! `encapsulate`, `decapsulate` and `round` run the router's own sans-IO
//! [`mef_router::tunnel::Tunnel`] (after a real Noise IK handshake, anti-replay window and
//! padding included); `copy`, `frame`, `seal` and `open` compose the same AEAD crate and
//! framing by hand to show where that time goes. The share column divides each of them by the
//! round's time; what the parts do not cover is the tunnel's bookkeeping (replay window,
//! padding, key state, counters).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::bail;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use serde::{Deserialize, Serialize};

/// Packet size of the benchmark (bytes of inner IP packet).
pub const PACKET: usize = 1400;
const HEADER: usize = 16;
const TAG: usize = 16;

/// One timed stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// `copy`, `frame`, `seal`, `open` (composed parts) or `encapsulate`, `decapsulate`,
    /// `round` (the router's tunnel).
    pub name: String,
    /// Nanoseconds per packet.
    pub ns_per_packet: f64,
    /// Inner-packet payload rate this stage alone would sustain on one core, Gbit/s.
    pub gbps: f64,
}

/// The tunnel benchmark's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelReport {
    /// Inner packet size in bytes.
    pub packet_bytes: usize,
    /// Packets per timed stage.
    pub packets: u64,
    /// What was measured (the router's session type, or the composed stages).
    pub implementation: String,
    /// Every stage, `round` last.
    pub stages: Vec<Stage>,
    /// Encapsulate + decapsulate payload rate on one core, Gbit/s (the `round` stage).
    pub round_gbps: f64,
    /// Whether `round_gbps` ≥ 1 Gbit/s.
    pub meets_target: bool,
}

impl TunnelReport {
    /// Text table of the stages, with each stage's share of the round's time.
    pub fn table(&self) -> String {
        let mut out = format!(
            "tunnel ({}, {} B packets, one core, {} packets per stage)\n",
            self.implementation, self.packet_bytes, self.packets
        );
        let round = self
            .stages
            .iter()
            .find(|s| s.name == "round")
            .map_or(0.0, |s| s.ns_per_packet);
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>10} {:>8}",
            "stage", "ns/pkt", "Gbit/s", "share"
        );
        for s in &self.stages {
            let share = if round > 0.0
                && !matches!(s.name.as_str(), "round" | "encapsulate" | "decapsulate")
            {
                format!("{:.0}%", 100.0 * s.ns_per_packet / round)
            } else {
                "-".to_string()
            };
            let _ = writeln!(
                out,
                "{:<12} {:>10.1} {:>10.2} {:>8}",
                s.name, s.ns_per_packet, s.gbps, share
            );
        }
        let _ = writeln!(
            out,
            "encapsulate+decapsulate: {:.2} Gbit/s per core (target >= 1: {})",
            self.round_gbps,
            if self.meets_target { "met" } else { "NOT met" }
        );
        out
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

fn write_header(out: &mut [u8], receiver: u32, counter: u64) {
    out[0] = 4;
    out[1..4].fill(0);
    out[4..8].copy_from_slice(&receiver.to_le_bytes());
    out[8..16].copy_from_slice(&counter.to_le_bytes());
}

fn parse_header(b: &[u8]) -> anyhow::Result<(u32, u64)> {
    if b.len() < HEADER + TAG || b[0] != 4 || b[1..4] != [0, 0, 0] {
        bail!("not a data message");
    }
    let mut r = [0u8; 4];
    r.copy_from_slice(&b[4..8]);
    let mut c = [0u8; 8];
    c.copy_from_slice(&b[8..16]);
    Ok((u32::from_le_bytes(r), u64::from_le_bytes(c)))
}

struct Bench {
    aead: ChaCha20Poly1305,
    packet: Vec<u8>,
    wire: Vec<u8>,
}

impl Bench {
    fn encapsulate(&mut self, counter: u64) -> anyhow::Result<Tag> {
        write_header(&mut self.wire, 7, counter);
        self.wire[HEADER..HEADER + PACKET].copy_from_slice(&self.packet);
        let tag = self
            .aead
            .encrypt_in_place_detached(
                &nonce(counter),
                &[],
                &mut self.wire[HEADER..HEADER + PACKET],
            )
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
        self.wire[HEADER + PACKET..].copy_from_slice(&tag);
        Ok(tag)
    }

    fn decapsulate(&mut self) -> anyhow::Result<()> {
        let (_, counter) = parse_header(&self.wire)?;
        let (body, tag) = self.wire[HEADER..].split_at_mut(PACKET);
        let tag = Tag::from_slice(tag);
        self.aead
            .decrypt_in_place_detached(&nonce(counter), &[], body, tag)
            .map_err(|_| anyhow::anyhow!("open failed: packet does not authenticate"))
    }
}

fn timed(n: u64, mut f: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    for i in 0..n {
        f(i)?;
    }
    Ok(t.elapsed())
}

/// Runs every stage over `packets` packets (quick: 100 000, else 1 000 000) on the calling
/// thread, checking that each decapsulated packet equals the original.
pub fn run(quick: bool) -> anyhow::Result<TunnelReport> {
    let packets: u64 = if quick { 100_000 } else { 1_000_000 };
    run_n(packets)
}

/// [`run`] with an explicit packet count.
pub fn run_n(packets: u64) -> anyhow::Result<TunnelReport> {
    let key = Key::from([0x42u8; 32]);
    let original: Vec<u8> = (0..PACKET).map(|i| (i * 7 + 3) as u8).collect();
    let mut b = Bench {
        aead: ChaCha20Poly1305::new(&key),
        packet: original.clone(),
        wire: vec![0u8; HEADER + PACKET + TAG],
    };
    // Correctness first: one round trip restores the packet; a flipped bit is rejected.
    b.encapsulate(0)?;
    b.wire[HEADER + 5] ^= 1;
    if b.decapsulate().is_ok() {
        bail!("a tampered packet authenticated");
    }
    b.encapsulate(1)?;
    b.decapsulate()?;
    if b.wire[HEADER..HEADER + PACKET] != original[..] {
        bail!("decapsulation did not restore the packet");
    }
    let mut stages = Vec::new();
    let mut push = |name: &str, d: Duration| {
        let ns = d.as_nanos() as f64 / packets as f64;
        stages.push(Stage {
            name: name.to_string(),
            ns_per_packet: ns,
            gbps: if ns > 0.0 {
                PACKET as f64 * 8.0 / ns
            } else {
                0.0
            },
        });
    };
    let copy = timed(packets, |_| {
        b.wire[HEADER..HEADER + PACKET].copy_from_slice(black_box(&b.packet));
        black_box(&b.wire);
        Ok(())
    })?;
    push("copy", copy);
    let frame = timed(packets, |i| {
        write_header(&mut b.wire, 7, i);
        let (r, c) = parse_header(black_box(&b.wire))?;
        black_box((r, c));
        Ok(())
    })?;
    push("frame", frame);
    let mut tags = Vec::with_capacity(1);
    let seal = timed(packets, |i| {
        let t = b
            .aead
            .encrypt_in_place_detached(&nonce(i), &[], &mut b.wire[HEADER..HEADER + PACKET])
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
        tags.clear();
        tags.push(t);
        Ok(())
    })?;
    push("seal", seal);
    // Open needs valid ciphertexts: decrypt what encapsulate produced, restoring it each time
    // from a sealed copy (the restore copy is timed separately and subtracted).
    b.encapsulate(9)?;
    let sealed = b.wire.clone();
    let restore = timed(packets, |_| {
        b.wire.copy_from_slice(black_box(&sealed));
        Ok(())
    })?;
    let open = timed(packets, |_| {
        b.wire.copy_from_slice(&sealed);
        b.decapsulate()
    })?;
    push("open", open.saturating_sub(restore));
    let (encap, decap, round) = router_tunnel(packets)?;
    push("encapsulate", encap);
    push("decapsulate", decap);
    push("round", round);
    let round_gbps = stages.last().map_or(0.0, |s| s.gbps);
    Ok(TunnelReport {
        packet_bytes: PACKET,
        packets,
        implementation: "mef_router::tunnel::Tunnel pair (encapsulate/decapsulate/round); \
                         copy/frame/seal/open composed from chacha20poly1305 + the same framing"
            .to_string(),
        stages,
        round_gbps,
        meets_target: round_gbps >= 1.0,
    })
}

/// A 1400-byte IPv4/UDP packet (the tunnel reads the IP total length to strip its padding).
fn ip_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 77, 1, 2]);
    p[16..20].copy_from_slice(&[10, 77, 3, 2]);
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = (i * 13 + 1) as u8;
    }
    p
}

/// Times the router's own [`mef_router::tunnel::Tunnel`]: a handshake between two tunnels, then
/// `packets` encapsulations alone, decapsulations alone (of packets sealed in batches
/// beforehand) and full rounds (encapsulate at A, decapsulate at B), checking every delivered
/// packet. Returns (encapsulate, decapsulate, round) totals.
fn router_tunnel(packets: u64) -> anyhow::Result<(Duration, Duration, Duration)> {
    use mef_router::tunnel::{PrivateKey, Tai64N, TunnResult, Tunnel, TunnelConfig};
    let now = Instant::now();
    let wall = Tai64N::now();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let cfg = TunnelConfig::default();
    let mut a = Tunnel::new(ka.clone(), kb.public_key(), cfg.clone(), now, wall);
    let mut b = Tunnel::new(kb, ka.public_key(), cfg, now, wall);
    let p = ip_packet(PACKET);
    let (mut o1, mut o2) = (vec![0u8; 2048], vec![0u8; 2048]);
    // Handshake: initiation (packet queued), response, queued packet flushed, delivered.
    let TunnResult::WriteToNetwork(init) = a.encapsulate(now, &p, &mut o1) else {
        bail!("tunnel: no initiation");
    };
    let TunnResult::WriteToNetwork(resp) = b.decapsulate(now, init, &mut o2) else {
        bail!("tunnel: no response");
    };
    let TunnResult::WriteToNetwork(data) = a.decapsulate(now, resp, &mut o1) else {
        bail!("tunnel: queued packet not sent after the handshake");
    };
    let TunnResult::WriteToTunnel(got) = b.decapsulate(now, data, &mut o2) else {
        bail!("tunnel: first packet not delivered");
    };
    if *got != p[..] {
        bail!("tunnel: first packet altered");
    }
    let encap = timed(packets, |_| {
        match a.encapsulate(now, black_box(&p), &mut o1) {
            TunnResult::WriteToNetwork(w) => {
                black_box(w);
                Ok(())
            }
            other => bail!("tunnel encapsulate: {other:?}"),
        }
    })?;
    // Decapsulation alone, over batches sealed beforehand (not timed).
    const BATCH: u64 = 4096;
    let mut sealed: Vec<Vec<u8>> = Vec::with_capacity(BATCH as usize);
    let mut decap = Duration::ZERO;
    let mut done = 0;
    while done < packets {
        let n = BATCH.min(packets - done);
        sealed.clear();
        for _ in 0..n {
            match a.encapsulate(now, &p, &mut o1) {
                TunnResult::WriteToNetwork(w) => sealed.push(w.to_vec()),
                other => bail!("tunnel encapsulate: {other:?}"),
            }
        }
        let t = Instant::now();
        for d in &sealed {
            match b.decapsulate(now, d, &mut o2) {
                TunnResult::WriteToTunnel(got) => {
                    black_box(got);
                }
                other => bail!("tunnel decapsulate: {other:?}"),
            }
        }
        decap += t.elapsed();
        done += n;
    }
    let round = timed(packets, |_| {
        let TunnResult::WriteToNetwork(w) = a.encapsulate(now, black_box(&p), &mut o1) else {
            bail!("tunnel encapsulate failed");
        };
        match b.decapsulate(now, w, &mut o2) {
            TunnResult::WriteToTunnel(got) if got.len() == PACKET => Ok(()),
            other => bail!("tunnel round: {other:?}"),
        }
    })?;
    if let TunnResult::WriteToNetwork(w) = a.encapsulate(now, &p, &mut o1) {
        match b.decapsulate(now, w, &mut o2) {
            TunnResult::WriteToTunnel(got) if *got == p[..] => {}
            other => bail!("tunnel: packet altered after the timed rounds: {other:?}"),
        }
    }
    Ok((encap, decap, round))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_reports_every_stage() {
        let r = run_n(2000).expect("runs");
        let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "copy",
                "frame",
                "seal",
                "open",
                "encapsulate",
                "decapsulate",
                "round"
            ]
        );
        assert!(r.round_gbps > 0.0);
        assert!(r.table().contains("round"));
    }
}
