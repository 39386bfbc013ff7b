//! The MEF packet header: a typed view over bytes in the smoltcp style.
//!
//! Layout (network byte order, 36 bytes, see `docs/PROTOCOL.md` §2):
//!
//! ```text
//!  0       1       2       3
//! +-------+-------+-------+-------+
//! | magic |ver|typ| flags | hops  |   magic 0x4D ('M'), version 1, packet type
//! +-------+-------+-------+-------+
//! |   destination connection id   |   u64
//! |                               |
//! +-------------------------------+
//! |         packet number         |   u64, also the AEAD nonce
//! |                               |
//! +-------------------------------+
//! |        demand (kbit/s)        |   u32, sender's desired rate; u32::MAX = unlimited
//! +-------------------------------+
//! |     current rate (kbit/s)     |   u32, the rate the sender paces at now (0 = not yet)
//! +-------------------------------+
//! |     stamped rate (kbit/s)     |   u32, MUTABLE: each router lowers it to its fair rate
//! +-------------------------------+
//! |        sender RTT (µs)        |   u32, 0 = unknown
//! +-------------------------------+
//! |  payload (AEAD ciphertext)... |
//! ```
//!
//! Every field except `stamped rate` and `hops` is covered by the AEAD as associated data
//! (routers may rewrite those two and nothing else). A receiver never believes a stamp above the
//! authenticated `demand`, so an on-path attacker can lower a flow's rate but never raise it.
//! This mirrors RCP's rate field (Dukkipati & McKeown) and the ABR "explicit rate" of ATM, where
//! packets also carry the sender's current rate so routers can compute max-min shares (Charny).

use core::fmt;

/// First byte of every MEF packet; lets routers recognise MEF traffic with one comparison.
pub const MAGIC: u8 = 0x4D;
/// Protocol version carried in the high nibble of byte 1.
pub const VERSION: u8 = 1;
/// Length of the header in bytes.
pub const HEADER_LEN: usize = 36;
/// The stamp value meaning "no limit".
pub const UNLIMITED_KBPS: u32 = u32::MAX;

mod field {
    use core::ops::Range;
    pub const MAGIC: usize = 0;
    pub const VER_TYPE: usize = 1;
    pub const FLAGS: usize = 2;
    pub const HOPS: usize = 3;
    pub const CONN_ID: Range<usize> = 4..12;
    pub const PN: Range<usize> = 12..20;
    pub const DEMAND: Range<usize> = 20..24;
    pub const CUR_RATE: Range<usize> = 24..28;
    pub const STAMP: Range<usize> = 28..32;
    pub const RTT: Range<usize> = 32..36;
}

/// Why a buffer is not a MEF header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The buffer is shorter than [`HEADER_LEN`].
    #[error("packet too short for a MEF header: {0} bytes, need {HEADER_LEN}")]
    Truncated(usize),
    /// The first byte is not [`MAGIC`].
    #[error("not a MEF packet (magic byte {0:#04x})")]
    BadMagic(u8),
    /// Unsupported protocol version.
    #[error("unsupported MEF version {0}")]
    BadVersion(u8),
    /// Unknown packet type.
    #[error("unknown MEF packet type {0}")]
    BadType(u8),
}

/// MEF packet types (low nibble of byte 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Client's first flight: Noise IK message 1. Routers register the flow and stamp it.
    Initial = 0,
    /// Server's reply: Noise IK message 2, echoing the rate stamped on the Initial.
    Handshake = 1,
    /// Encrypted frames (stream data, acknowledgements, control).
    Data = 2,
    /// Stateless reset-like notice that the connection is unknown (not encrypted).
    Reset = 3,
}

impl PacketType {
    fn from_nibble(n: u8) -> Result<Self, HeaderError> {
        Ok(match n {
            0 => Self::Initial,
            1 => Self::Handshake,
            2 => Self::Data,
            3 => Self::Reset,
            other => return Err(HeaderError::BadType(other)),
        })
    }
}

/// Header flag bits (byte 2).
pub mod flags {
    /// The sender is closing: routers release the flow's share at once.
    pub const CLOSING: u8 = 0x01;
    /// At least one MEF router on the path has stamped this packet.
    pub const STAMPED: u8 = 0x02;
    /// The sender is application-limited (its demand is a measured need, not a cap).
    pub const APP_LIMITED: u8 = 0x04;
}

/// A read/write view of a MEF header at the start of a buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking length, magic, version and type so no accessor can fail later.
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Validates the buffer.
    pub fn check(&self) -> Result<(), HeaderError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(HeaderError::Truncated(b.len()));
        }
        if b[field::MAGIC] != MAGIC {
            return Err(HeaderError::BadMagic(b[field::MAGIC]));
        }
        let v = b[field::VER_TYPE] >> 4;
        if v != VERSION {
            return Err(HeaderError::BadVersion(v));
        }
        PacketType::from_nibble(b[field::VER_TYPE] & 0x0f)?;
        Ok(())
    }

    /// Returns the inner buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u32_at(&self, r: core::ops::Range<usize>) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.buffer.as_ref()[r]);
        u32::from_be_bytes(a)
    }

    fn u64_at(&self, r: core::ops::Range<usize>) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.buffer.as_ref()[r]);
        u64::from_be_bytes(a)
    }

    /// Packet type.
    pub fn packet_type(&self) -> PacketType {
        PacketType::from_nibble(self.buffer.as_ref()[field::VER_TYPE] & 0x0f)
            .unwrap_or(PacketType::Reset)
    }
    /// Flag bits, see [`flags`].
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// Number of MEF routers that processed the packet.
    pub fn hops(&self) -> u8 {
        self.buffer.as_ref()[field::HOPS]
    }
    /// Destination connection id.
    pub fn conn_id(&self) -> u64 {
        self.u64_at(field::CONN_ID)
    }
    /// Packet number.
    pub fn packet_number(&self) -> u64 {
        self.u64_at(field::PN)
    }
    /// Sender's demand in kbit/s.
    pub fn demand_kbps(&self) -> u32 {
        self.u32_at(field::DEMAND)
    }
    /// Sender's current pacing rate in kbit/s.
    pub fn current_rate_kbps(&self) -> u32 {
        self.u32_at(field::CUR_RATE)
    }
    /// Rate stamped by routers so far, kbit/s.
    pub fn stamp_kbps(&self) -> u32 {
        self.u32_at(field::STAMP)
    }
    /// Sender's smoothed RTT in µs (0 = unknown).
    pub fn rtt_us(&self) -> u32 {
        self.u32_at(field::RTT)
    }
    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// The header bytes as associated data for the AEAD: the mutable fields zeroed.
    pub fn associated_data(&self) -> [u8; HEADER_LEN] {
        let mut ad = [0u8; HEADER_LEN];
        ad.copy_from_slice(&self.buffer.as_ref()[..HEADER_LEN]);
        ad[field::HOPS] = 0;
        ad[field::FLAGS] &= !flags::STAMPED;
        ad[field::STAMP].fill(0);
        ad
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Lowers the stamped rate to `kbps` if that is lower, marks the packet stamped and counts
    /// the hop. This is the only write a router makes (seed 003 "MEF 原理"; RCP's rate field).
    pub fn stamp(&mut self, kbps: u32) {
        let cur = self.stamp_kbps();
        let b = self.buffer.as_mut();
        if kbps < cur {
            b[field::STAMP].copy_from_slice(&kbps.to_be_bytes());
        }
        b[field::FLAGS] |= flags::STAMPED;
        b[field::HOPS] = b[field::HOPS].saturating_add(1);
    }
    /// Mutable payload.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A parsed MEF header as a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub packet_type: PacketType,
    /// Flag bits, see [`flags`].
    pub flags: u8,
    /// Routers that processed the packet.
    pub hops: u8,
    /// Destination connection id.
    pub conn_id: u64,
    /// Packet number (AEAD nonce).
    pub packet_number: u64,
    /// Sender's demand, kbit/s.
    pub demand_kbps: u32,
    /// Sender's current pacing rate, kbit/s.
    pub current_rate_kbps: u32,
    /// Rate stamped so far, kbit/s.
    pub stamp_kbps: u32,
    /// Sender's RTT estimate, µs.
    pub rtt_us: u32,
}

impl Header {
    /// Parses a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Self {
        Self {
            packet_type: p.packet_type(),
            flags: p.flags(),
            hops: p.hops(),
            conn_id: p.conn_id(),
            packet_number: p.packet_number(),
            demand_kbps: p.demand_kbps(),
            current_rate_kbps: p.current_rate_kbps(),
            stamp_kbps: p.stamp_kbps(),
            rtt_us: p.rtt_us(),
        }
    }

    /// Parses the header at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        Packet::new_checked(bytes).map(|p| Self::parse(&p))
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`HEADER_LEN`] (a caller bug, never input-dependent).
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..HEADER_LEN];
        b[field::MAGIC] = MAGIC;
        b[field::VER_TYPE] = (VERSION << 4) | (self.packet_type as u8);
        b[field::FLAGS] = self.flags;
        b[field::HOPS] = self.hops;
        b[field::CONN_ID].copy_from_slice(&self.conn_id.to_be_bytes());
        b[field::PN].copy_from_slice(&self.packet_number.to_be_bytes());
        b[field::DEMAND].copy_from_slice(&self.demand_kbps.to_be_bytes());
        b[field::CUR_RATE].copy_from_slice(&self.current_rate_kbps.to_be_bytes());
        b[field::STAMP].copy_from_slice(&self.stamp_kbps.to_be_bytes());
        b[field::RTT].copy_from_slice(&self.rtt_us.to_be_bytes());
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} cid={:016x} pn={} demand={}k cur={}k stamp={}k rtt={}us",
            self.packet_type,
            self.conn_id,
            self.packet_number,
            self.demand_kbps,
            self.current_rate_kbps,
            self.stamp_kbps,
            self.rtt_us
        )
    }
}

/// Converts bits per second to the wire's kbit/s, saturating (`u64::MAX` → unlimited).
pub fn bps_to_kbps(bps: u64) -> u32 {
    u32::try_from(bps / 1000).unwrap_or(UNLIMITED_KBPS)
}

/// Converts the wire's kbit/s to bits per second.
pub fn kbps_to_bps(kbps: u32) -> u64 {
    u64::from(kbps) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            packet_type: PacketType::Data,
            flags: 0,
            hops: 0,
            conn_id: 0x0102_0304_0506_0708,
            packet_number: 42,
            demand_kbps: 100_000,
            current_rate_kbps: 50_000,
            stamp_kbps: 100_000,
            rtt_us: 200_000,
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let mut buf = [0u8; HEADER_LEN + 4];
        h.emit(&mut buf);
        assert_eq!(Header::decode(&buf), Ok(h));
    }

    #[test]
    fn stamp_only_lowers_and_is_outside_ad() {
        let mut buf = [0u8; HEADER_LEN];
        sample().emit(&mut buf);
        let ad_before = Packet::new_checked(&buf[..]).map(|p| p.associated_data());
        let mut p = Packet::new_checked(&mut buf[..]).expect("valid");
        p.stamp(200_000);
        assert_eq!(p.stamp_kbps(), 100_000);
        p.stamp(30_000);
        assert_eq!(p.stamp_kbps(), 30_000);
        assert_eq!(p.hops(), 2);
        assert_ne!(p.flags() & flags::STAMPED, 0);
        assert_eq!(Ok(p.associated_data()), ad_before);
    }

    proptest::proptest! {
        #[test]
        fn header_round_trip(ty in 0u8..4, flags: u8, hops: u8, conn_id: u64, pn: u64, demand: u32,
                             cur: u32, stamp: u32, rtt: u32, new_stamp: u32) {
            let packet_type = PacketType::from_nibble(ty).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let h = Header { packet_type, flags, hops, conn_id, packet_number: pn, demand_kbps: demand,
                             current_rate_kbps: cur, stamp_kbps: stamp, rtt_us: rtt };
            let mut buf = [0u8; HEADER_LEN];
            h.emit(&mut buf);
            proptest::prop_assert_eq!(Header::decode(&buf), Ok(h));
            let mut p = Packet::new_unchecked(&mut buf[..]);
            let ad = p.associated_data();
            p.stamp(new_stamp);
            proptest::prop_assert_eq!(p.stamp_kbps(), stamp.min(new_stamp));
            proptest::prop_assert_eq!(p.associated_data(), ad);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = Header::decode(&bytes);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Header::decode(&[0u8; 3]), Err(HeaderError::Truncated(3)));
        let mut buf = [0u8; HEADER_LEN];
        sample().emit(&mut buf);
        buf[0] = 0;
        assert_eq!(Header::decode(&buf), Err(HeaderError::BadMagic(0)));
        buf[0] = MAGIC;
        buf[1] = 0x2f;
        assert_eq!(Header::decode(&buf), Err(HeaderError::BadVersion(2)));
        buf[1] = 0x1f;
        assert_eq!(Header::decode(&buf), Err(HeaderError::BadType(15)));
    }
}
