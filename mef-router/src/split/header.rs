//! [`SplitHeader`]: the few bytes at the start of every MEF transport stream that carries a split
//! TCP connection, telling the egress router whom to connect to (RFC 3135 §2.3, "connection
//! splitting": the egress half needs the original end points).
//!
//! Wire format, version 1 (network byte order):
//!
//! ```text
//!  0        1        2                 6        8                12       14
//! +--------+--------+-----------------+--------+-----------------+--------+----------------+
//! |version | hdr len| client IPv4     | c.port | server IPv4     | s.port | extensions ... |
//! |  = 1   |  >= 14 |                 |        |                 |        | (hdr len - 14) |
//! +--------+--------+-----------------+--------+-----------------+--------+----------------+
//! ```
//!
//! `hdr len` counts the whole header, so a later version can append fields that a version-1
//! reader skips. The stream's TCP payload bytes follow the header directly.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::error::FrameError;

mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const HDR_LEN: usize = 1;
    pub const CLIENT_IP: Range<usize> = 2..6;
    pub const CLIENT_PORT: Range<usize> = 6..8;
    pub const SERVER_IP: Range<usize> = 8..12;
    pub const SERVER_PORT: Range<usize> = 12..14;
}

/// The original end points of a split TCP connection, sent first on its MEF stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SplitHeader {
    /// The LAN client that opened the connection (source of its SYN).
    pub client: SocketAddrV4,
    /// The server it asked for (destination of its SYN).
    pub server: SocketAddrV4,
}

impl SplitHeader {
    /// The version this implementation emits and parses.
    pub const VERSION: u8 = 1;
    /// Length of the version-1 header in bytes.
    pub const LEN: usize = 14;

    /// Parse a header at the start of `buf`; returns it and the number of bytes it occupies
    /// (including skipped extension bytes). [`FrameError::Truncated`] means "read more bytes".
    pub fn parse(buf: &[u8]) -> Result<(Self, usize), FrameError> {
        let version = *buf.get(field::VERSION).ok_or(FrameError::Truncated {
            needed: Self::LEN,
            got: buf.len(),
        })?;
        if version != Self::VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let hdr_len = *buf.get(field::HDR_LEN).ok_or(FrameError::Truncated {
            needed: Self::LEN,
            got: buf.len(),
        })?;
        if usize::from(hdr_len) < Self::LEN {
            return Err(FrameError::BadLength(hdr_len));
        }
        let total = usize::from(hdr_len);
        if buf.len() < total {
            return Err(FrameError::Truncated {
                needed: total,
                got: buf.len(),
            });
        }
        let ip = |r: std::ops::Range<usize>| {
            let b = &buf[r];
            Ipv4Addr::new(b[0], b[1], b[2], b[3])
        };
        let port = |r: std::ops::Range<usize>| {
            let b = &buf[r];
            u16::from_be_bytes([b[0], b[1]])
        };
        let header = SplitHeader {
            client: SocketAddrV4::new(ip(field::CLIENT_IP), port(field::CLIENT_PORT)),
            server: SocketAddrV4::new(ip(field::SERVER_IP), port(field::SERVER_PORT)),
        };
        if !usable(header.client) || !usable(header.server) {
            return Err(FrameError::BadAddress);
        }
        Ok((header, total))
    }

    /// Write the header into the front of `buf`; returns the bytes written ([`Self::LEN`]).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, FrameError> {
        if !usable(self.client) || !usable(self.server) {
            return Err(FrameError::BadAddress);
        }
        let got = buf.len();
        let out = buf.get_mut(..Self::LEN).ok_or(FrameError::BufferTooSmall {
            needed: Self::LEN,
            got,
        })?;
        out[field::VERSION] = Self::VERSION;
        out[field::HDR_LEN] = Self::LEN as u8;
        out[field::CLIENT_IP].copy_from_slice(&self.client.ip().octets());
        out[field::CLIENT_PORT].copy_from_slice(&self.client.port().to_be_bytes());
        out[field::SERVER_IP].copy_from_slice(&self.server.ip().octets());
        out[field::SERVER_PORT].copy_from_slice(&self.server.port().to_be_bytes());
        Ok(Self::LEN)
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> Result<[u8; Self::LEN], FrameError> {
        let mut out = [0u8; Self::LEN];
        self.emit(&mut out)?;
        Ok(out)
    }
}

/// A TCP end point a split connection can use: unicast address, non-zero port.
pub(crate) fn usable(addr: SocketAddrV4) -> bool {
    let ip = *addr.ip();
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_extensions() {
        let h = SplitHeader {
            client: "10.0.0.2:40000".parse().expect("addr"),
            server: "192.0.2.7:443".parse().expect("addr"),
        };
        let bytes = h.to_bytes().expect("emit");
        assert_eq!(SplitHeader::parse(&bytes), Ok((h, SplitHeader::LEN)));
        // A longer (future) header: extension bytes are skipped.
        let mut long = bytes.to_vec();
        long[1] = 20;
        long.extend_from_slice(&[9; 6]);
        long.extend_from_slice(b"payload");
        assert_eq!(SplitHeader::parse(&long), Ok((h, 20)));
        assert_eq!(
            SplitHeader::parse(&bytes[..5]),
            Err(FrameError::Truncated { needed: 14, got: 5 })
        );
        assert_eq!(
            SplitHeader::parse(&[2]),
            Err(FrameError::UnsupportedVersion(2))
        );
        assert_eq!(SplitHeader::parse(&[1, 13]), Err(FrameError::BadLength(13)));
    }
}
