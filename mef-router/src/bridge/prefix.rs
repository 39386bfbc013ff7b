//! [`Ipv4Prefix`]: an IPv4 network (address and length) for routing split connections to peers.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::error::PrefixError;

/// An IPv4 prefix such as `10.1.0.0/16` (RFC 4632 CIDR notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Prefix {
    /// A prefix; host bits beyond `len` are cleared, `len` is capped at 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        Self {
            addr: Ipv4Addr::from_bits(addr.to_bits() & Self::mask(len)),
            len,
        }
    }

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is the default route `0.0.0.0/0` (matches everything).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.to_bits() & Self::mask(self.len) == self.addr.to_bits()
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::MissingLength(s.to_owned()))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| PrefixError::BadAddress(s.to_owned()))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| PrefixError::BadLength(s.to_owned()))?;
        let p = Self::new(addr, len);
        if p.addr != addr {
            return Err(PrefixError::HostBits(s.to_owned()));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let p: Ipv4Prefix = "10.1.0.0/16".parse().expect("prefix");
        assert!(p.contains(Ipv4Addr::new(10, 1, 200, 3)));
        assert!(!p.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert_eq!(p.to_string(), "10.1.0.0/16");
        let all: Ipv4Prefix = "0.0.0.0/0".parse().expect("default");
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert!(matches!(
            "10.0.0.1/8".parse::<Ipv4Prefix>(),
            Err(PrefixError::HostBits(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Ipv4Prefix>(),
            Err(PrefixError::BadLength(_))
        ));
        assert!(matches!(
            "10.0.0.0".parse::<Ipv4Prefix>(),
            Err(PrefixError::MissingLength(_))
        ));
        assert!(matches!(
            "10.0.x.0/8".parse::<Ipv4Prefix>(),
            Err(PrefixError::BadAddress(_))
        ));
    }
}
