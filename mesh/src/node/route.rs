//! Introduction and relaying bookkeeping on the router side: the bounded relay table with a
//! token bucket per relayed pair (telehash v3 "peer"/"connect" routers, which the spec leaves
//! unbounded; we bound them so a node cannot be used as a free relay at unbounded rate).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::bucket::TokenBucket;
use crate::hashname::Hashname;

use super::peers::Peer;
use super::{Control, Mesh, MeshEvent, Path, RefuseReason};

/// Limits on relaying through this node.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Relay for other nodes at all.
    pub enabled: bool,
    /// Most relayed pairs at once; new pairs beyond are refused with `REFUSED(full)`.
    pub max_sessions: usize,
    /// Packets per second allowed per relayed pair (both directions together).
    pub packets_per_sec: u32,
    /// Packet burst per pair.
    pub packet_burst: u32,
    /// Bytes per second allowed per relayed pair.
    pub bytes_per_sec: u64,
    /// Byte burst per pair.
    pub byte_burst: u64,
    /// A pair idle this long is forgotten.
    pub idle_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            enabled: true,
            max_sessions: 256,
            packets_per_sec: 1000,
            packet_burst: 200,
            bytes_per_sec: 1_000_000,
            byte_burst: 256 * 1024,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// One relayed pair.
#[derive(Debug)]
struct RelaySession {
    packets: TokenBucket,
    bytes: TokenBucket,
    last_used: Instant,
}

/// What the relay table decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RelayVerdict {
    /// Forward it.
    Forward,
    /// Over the pair's rate: drop silently.
    RateLimited,
    /// New pair and the table is full: refuse.
    Full,
}

/// The bounded table of relayed pairs, keyed by the unordered pair of hashnames.
#[derive(Debug, Default)]
pub(super) struct RelayTable {
    sessions: BTreeMap<(Hashname, Hashname), RelaySession>,
}

fn pair(a: Hashname, b: Hashname) -> (Hashname, Hashname) {
    if a <= b { (a, b) } else { (b, a) }
}

impl RelayTable {
    /// Relayed pairs held.
    pub(super) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Forgets pairs idle for longer than the limit.
    pub(super) fn expire(&mut self, now: Instant, limits: &RelayLimits) {
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.last_used) < limits.idle_timeout);
    }

    /// Accounts one packet of `len` bytes from `from` to `to`.
    pub(super) fn admit(
        &mut self,
        now: Instant,
        from: Hashname,
        to: Hashname,
        len: usize,
        limits: &RelayLimits,
    ) -> RelayVerdict {
        let key = pair(from, to);
        if !self.sessions.contains_key(&key) {
            if self.sessions.len() >= limits.max_sessions {
                self.expire(now, limits);
            }
            if self.sessions.len() >= limits.max_sessions {
                return RelayVerdict::Full;
            }
            self.sessions.insert(
                key,
                RelaySession {
                    packets: TokenBucket::full(now, u64::from(limits.packet_burst)),
                    bytes: TokenBucket::full(now, limits.byte_burst),
                    last_used: now,
                },
            );
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return RelayVerdict::Full;
        };
        s.last_used = now;
        let len = len as u64;
        let pkt_ok = s.packets.has(
            now,
            1,
            u64::from(limits.packets_per_sec),
            u64::from(limits.packet_burst),
        );
        let byte_ok = s
            .bytes
            .has(now, len, limits.bytes_per_sec, limits.byte_burst);
        if pkt_ok && byte_ok {
            s.packets.take(1);
            s.bytes.take(len);
            RelayVerdict::Forward
        } else {
            RelayVerdict::RateLimited
        }
    }
}

/// Router selection, the router side of `PEER`, and rerouting (telehash v3 "peer"/"connect").
impl Mesh {
    /// A router for reaching `hn`: a hinted one with a direct, up link first, then any.
    pub(super) fn choose_relay(&self, hn: Hashname) -> Option<Hashname> {
        let p = self.peers.get(&hn)?;
        let ok = |r: &Hashname| {
            *r != hn
                && !p.refused_by.contains(r)
                && self.peers.get(r).is_some_and(Peer::is_direct_up)
        };
        if let Some(r) = p.routers.iter().find(|r| ok(r)) {
            return Some(*r);
        }
        self.peers.keys().find(|r| ok(r)).copied()
    }

    /// Connects to hinted routers that have addresses (one level deep).
    pub(super) fn connect_routers(&mut self, now: Instant, routers: &[Hashname], depth: u8) {
        if depth > 0 {
            return;
        }
        for r in routers {
            if let Some(q) = self.peers.get_mut(r)
                && q.link.is_none()
                && q.key.is_some()
                && !q.addrs.is_empty()
            {
                q.want = Some(now);
                self.try_start(now, *r, depth + 1);
            }
        }
    }

    /// Router side of `PEER{to, packet}` from `from`.
    pub(super) fn relay(&mut self, now: Instant, from: Hashname, to: Hashname, packet: &[u8]) {
        if to == from || to == self.hashname {
            self.stats.control_errors += 1;
            return;
        }
        if !self.cfg.relay.enabled {
            self.stats.relay_refused += 1;
            self.refuse(now, from, to, RefuseReason::Disabled);
            return;
        }
        if !self.peers.get(&to).is_some_and(Peer::is_direct_up) {
            self.stats.relay_no_route += 1;
            self.refuse(now, from, to, RefuseReason::NoRoute);
            return;
        }
        match self
            .relays
            .admit(now, from, to, packet.len(), &self.cfg.relay)
        {
            RelayVerdict::Forward => {
                let observed = self.peers.get(&from).and_then(Peer::direct_addr);
                let msg = Control::Connect {
                    from,
                    observed,
                    packet,
                };
                if self.send_control(now, to, &msg) {
                    self.stats.relayed_packets += 1;
                    self.stats.relayed_bytes += packet.len() as u64;
                }
            }
            RelayVerdict::RateLimited => self.stats.relay_rate_dropped += 1,
            RelayVerdict::Full => {
                self.stats.relay_refused += 1;
                self.refuse(now, from, to, RefuseReason::Full);
            }
        }
    }

    pub(super) fn refuse(
        &mut self,
        now: Instant,
        from: Hashname,
        to: Hashname,
        reason: RefuseReason,
    ) {
        self.send_control(now, from, &Control::Refused { to, reason });
    }

    /// Router `dead` went down: move links relayed through it to another router. Their link
    /// packets are opaque to routers, so the end-to-end link survives the change.
    pub(super) fn reroute(&mut self, dead: Hashname) {
        let relayed: Vec<Hashname> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(&p.link, Some(s) if s.path == Path::Relayed(dead)))
            .map(|(h, _)| *h)
            .collect();
        for hn in relayed {
            let Some(router) = self.choose_relay(hn) else {
                continue;
            };
            if let Some(s) = self.peers.get_mut(&hn).and_then(|p| p.link.as_mut()) {
                s.path = Path::Relayed(router);
                self.stats.reroutes += 1;
                self.dirty.insert(hn);
                if s.up {
                    self.events.push_back(MeshEvent::PathChanged {
                        peer: hn,
                        path: s.path,
                    });
                }
            }
        }
    }
}
