//! TAI64N timestamps (WireGuard paper §5.1, §5.4.2; D. J. Bernstein's TAI64N format).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of a TAI64N timestamp on the wire.
pub const TAI64N_LEN: usize = 12;

/// A TAI64N timestamp (WireGuard §5.1, "Replay attack"; D. J. Bernstein's TAI64N format): 8
/// bytes big-endian `2^62 + seconds`, 4 bytes big-endian nanoseconds. Carried encrypted in every
/// initiation; a responder rejects an initiation whose timestamp is not newer than the greatest
/// it has seen from that peer, so a captured initiation cannot be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Tai64N {
    /// Seconds since 1970 (TAI offset ignored, as WireGuard does).
    pub secs: u64,
    /// Nanoseconds.
    pub nanos: u32,
}

impl Tai64N {
    /// The wall clock now. Only drivers call this; sans-IO cores get it passed in.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a system time (times before 1970 map to 0).
    pub fn from_system_time(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    /// This timestamp plus a duration (saturating at the largest representable time).
    pub fn plus(self, d: Duration) -> Self {
        let total = u64::from(self.nanos) + u64::from(d.subsec_nanos());
        Self {
            secs: self
                .secs
                .saturating_add(d.as_secs())
                .saturating_add(total / 1_000_000_000),
            nanos: (total % 1_000_000_000) as u32,
        }
    }

    /// The 12 wire bytes.
    pub fn to_bytes(self) -> [u8; TAI64N_LEN] {
        let mut b = [0u8; TAI64N_LEN];
        b[..8].copy_from_slice(&(self.secs.wrapping_add(1 << 62)).to_be_bytes());
        b[8..].copy_from_slice(&self.nanos.to_be_bytes());
        b
    }

    /// Parses 12 wire bytes.
    pub fn from_bytes(b: &[u8; TAI64N_LEN]) -> Self {
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[..8]);
        let mut n = [0u8; 4];
        n.copy_from_slice(&b[8..]);
        Self {
            secs: u64::from_be_bytes(s).wrapping_sub(1 << 62),
            nanos: u32::from_be_bytes(n),
        }
    }

    /// Parses a slice that must be exactly 12 bytes (an initiation's decrypted payload).
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <&[u8; TAI64N_LEN]>::try_from(b).ok().map(Self::from_bytes)
    }
}

/// A wall clock for a sans-IO core: the driver supplies `(instant, wall)` once; the timestamp at
/// a later instant `t` is `wall + (t - instant)`, never going backwards and strictly increasing
/// between calls to [`next`](Self::next) (so two initiations made at the same instant still
/// carry increasing timestamps, WireGuard §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    anchor: std::time::Instant,
    wall: Tai64N,
    last: Option<Tai64N>,
}

impl WallClock {
    /// A clock reading `wall` at `anchor`.
    pub fn new(anchor: std::time::Instant, wall: Tai64N) -> Self {
        Self {
            anchor,
            wall,
            last: None,
        }
    }

    /// The timestamp for an initiation sent at `now`: greater than every earlier one.
    pub fn next(&mut self, now: std::time::Instant) -> Tai64N {
        let mut ts = self.wall.plus(now.saturating_duration_since(self.anchor));
        if let Some(last) = self.last
            && ts <= last
        {
            ts = last.plus(Duration::from_nanos(1));
        }
        self.last = Some(ts);
        ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tai64n_orders_and_round_trips() {
        let a = Tai64N {
            secs: 1_700_000_000,
            nanos: 999_999_999,
        };
        let b = a.plus(Duration::from_nanos(2));
        assert!(b > a);
        assert_eq!(b.nanos, 1);
        assert_eq!(Tai64N::from_bytes(&a.to_bytes()), a);
        assert!(a.to_bytes() < b.to_bytes(), "wire bytes compare like time");
        assert_eq!(Tai64N::from_slice(&a.to_bytes()), Some(a));
        assert_eq!(Tai64N::from_slice(&[0; 11]), None);
    }

    #[test]
    fn wall_clock_strictly_increases() {
        let t0 = std::time::Instant::now();
        let w = Tai64N {
            secs: 1_700_000_000,
            nanos: 0,
        };
        let mut c = WallClock::new(t0, w);
        let a = c.next(t0);
        let b = c.next(t0);
        assert_eq!(a, w);
        assert!(b > a, "same instant, later timestamp");
        let later = c.next(t0 + Duration::from_secs(3));
        assert_eq!(later, w.plus(Duration::from_secs(3)));
    }
}
