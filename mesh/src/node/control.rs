//! The mesh control message wire format (byte layout in the [module docs of `node`](super)).
//!
//! Control messages travel inside a link's plaintext, after the [`super::KIND_CONTROL`] byte.
//! They are telehash v3's "peer" and "connect" channel requests made binary
//! (<https://telehash.github.io/v3/channels/peer/>, <https://telehash.github.io/v3/channels/connect/>):
//! `PEER` asks a router to pass a link packet to a hashname it is linked with, `CONNECT` is the
//! router handing that packet over together with the address it sees the sender at (telehash's
//! "paths" hint). Parsing never panics: malformed input maps to a [`ControlError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::hashname::Hashname;

const T_PEER: u8 = 1;
const T_CONNECT: u8 = 2;
const T_KEY_REQUEST: u8 = 3;
const T_KEY_REPLY: u8 = 4;
const T_REFUSED: u8 = 5;

const AF_NONE: u8 = 0;
const AF_V4: u8 = 4;
const AF_V6: u8 = 6;

/// Why a router refused to relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// The router has no link to the target.
    NoRoute,
    /// The router's relay table is full.
    Full,
    /// The router does not relay at all.
    Disabled,
}

impl RefuseReason {
    fn code(self) -> u8 {
        match self {
            RefuseReason::NoRoute => 1,
            RefuseReason::Full => 2,
            RefuseReason::Disabled => 3,
        }
    }

    fn from_code(c: u8) -> Result<Self, ControlError> {
        match c {
            1 => Ok(RefuseReason::NoRoute),
            2 => Ok(RefuseReason::Full),
            3 => Ok(RefuseReason::Disabled),
            other => Err(ControlError::BadReason(other)),
        }
    }
}

/// A control message view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control<'a> {
    /// Sender → router: pass `packet` (an opaque link packet) to `to`.
    Peer {
        /// The target hashname.
        to: Hashname,
        /// The link packet (handshake or transport), never decrypted by the router.
        packet: &'a [u8],
    },
    /// Router → target: `packet` from `from`, seen by the router at `observed`.
    Connect {
        /// The authenticated hashname of the router's link the packet came in on.
        from: Hashname,
        /// The address the router sees `from` at, if its link to `from` is direct.
        observed: Option<SocketAddr>,
        /// The link packet.
        packet: &'a [u8],
    },
    /// Ask a router for the static key of a hashname.
    KeyRequest {
        /// The hashname asked about.
        hashname: Hashname,
    },
    /// A router's answer to [`Control::KeyRequest`]; the asker must check the key hashes to
    /// the hashname.
    KeyReply {
        /// The hashname asked about.
        hashname: Hashname,
        /// Its static key, if the router knows it.
        key: Option<[u8; 32]>,
    },
    /// A router refused to relay to `to`.
    Refused {
        /// The target it refused.
        to: Hashname,
        /// Why.
        reason: RefuseReason,
    },
}

/// Why bytes are not a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Empty input.
    #[error("empty control message")]
    Empty,
    /// Unknown type byte.
    #[error("unknown control type {0}")]
    UnknownType(u8),
    /// Shorter than the fixed part.
    #[error("truncated control message")]
    Truncated,
    /// Bytes after a fixed-size message.
    #[error("trailing bytes in control message")]
    Trailing,
    /// Unknown address family byte.
    #[error("unknown address family {0}")]
    BadFamily(u8),
    /// Unknown refusal reason.
    #[error("unknown refusal reason {0}")]
    BadReason(u8),
    /// A flag byte other than 0 or 1.
    #[error("bad flag byte {0}")]
    BadFlag(u8),
    /// A `PEER` or `CONNECT` without a packet.
    #[error("missing packet")]
    NoPacket,
}

/// A little cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ControlError> {
        if self.buf.len() < n {
            return Err(ControlError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ControlError> {
        Ok(self.take(1)?[0])
    }

    fn arr32(&mut self) -> Result<[u8; 32], ControlError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }

    fn hashname(&mut self) -> Result<Hashname, ControlError> {
        Ok(Hashname(self.arr32()?))
    }

    fn port(&mut self) -> Result<u16, ControlError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn addr(&mut self) -> Result<Option<SocketAddr>, ControlError> {
        match self.u8()? {
            AF_NONE => Ok(None),
            AF_V4 => {
                let b = self.take(4)?;
                let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                Ok(Some(SocketAddr::new(IpAddr::V4(ip), self.port()?)))
            }
            AF_V6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                Ok(Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(a)),
                    self.port()?,
                )))
            }
            other => Err(ControlError::BadFamily(other)),
        }
    }

    fn packet(&mut self) -> Result<&'a [u8], ControlError> {
        if self.buf.is_empty() {
            return Err(ControlError::NoPacket);
        }
        Ok(std::mem::take(&mut self.buf))
    }

    fn end(&self) -> Result<(), ControlError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ControlError::Trailing)
        }
    }
}

fn put_addr(out: &mut Vec<u8>, addr: Option<SocketAddr>) {
    match addr {
        None => out.push(AF_NONE),
        Some(SocketAddr::V4(a)) => {
            out.push(AF_V4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            out.push(AF_V6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
    }
}

impl<'a> Control<'a> {
    /// Parses one control message (the whole input).
    pub fn parse(buf: &'a [u8]) -> Result<Control<'a>, ControlError> {
        let mut r = Reader { buf };
        let t = r.u8().map_err(|_| ControlError::Empty)?;
        let c = match t {
            T_PEER => {
                let to = r.hashname()?;
                Control::Peer {
                    to,
                    packet: r.packet()?,
                }
            }
            T_CONNECT => {
                let from = r.hashname()?;
                let observed = r.addr()?;
                Control::Connect {
                    from,
                    observed,
                    packet: r.packet()?,
                }
            }
            T_KEY_REQUEST => Control::KeyRequest {
                hashname: r.hashname()?,
            },
            T_KEY_REPLY => {
                let hashname = r.hashname()?;
                let key = match r.u8()? {
                    0 => None,
                    1 => Some(r.arr32()?),
                    other => return Err(ControlError::BadFlag(other)),
                };
                Control::KeyReply { hashname, key }
            }
            T_REFUSED => {
                let to = r.hashname()?;
                let reason = RefuseReason::from_code(r.u8()?)?;
                Control::Refused { to, reason }
            }
            other => return Err(ControlError::UnknownType(other)),
        };
        r.end()?;
        Ok(c)
    }

    /// Appends the encoding to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match *self {
            Control::Peer { to, packet } => {
                out.push(T_PEER);
                out.extend_from_slice(to.as_bytes());
                out.extend_from_slice(packet);
            }
            Control::Connect {
                from,
                observed,
                packet,
            } => {
                out.push(T_CONNECT);
                out.extend_from_slice(from.as_bytes());
                put_addr(out, observed);
                out.extend_from_slice(packet);
            }
            Control::KeyRequest { hashname } => {
                out.push(T_KEY_REQUEST);
                out.extend_from_slice(hashname.as_bytes());
            }
            Control::KeyReply { hashname, key } => {
                out.push(T_KEY_REPLY);
                out.extend_from_slice(hashname.as_bytes());
                match key {
                    None => out.push(0),
                    Some(k) => {
                        out.push(1);
                        out.extend_from_slice(&k);
                    }
                }
            }
            Control::Refused { to, reason } => {
                out.push(T_REFUSED);
                out.extend_from_slice(to.as_bytes());
                out.push(reason.code());
            }
        }
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v);
        v
    }
}
