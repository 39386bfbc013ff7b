//! The link wire format: typed views with `parse`/`emit` (smoltcp style).
//!
//! Modelled on WireGuard's messages (WireGuard paper §5.4): every packet starts with a one-byte
//! type; handshake packets carry the sender's session index so the receiver can route the
//! reply cheaply, transport packets carry the *receiver's* index and the 64-bit counter used as
//! the AEAD nonce (Noise rev 34 §5.1 `EncryptWithAd` with an explicit `n`; §11.4 "out-of-order
//! transport messages"). All integers are little-endian, as in WireGuard.
//!
//! ```text
//! Handshake (types 1 = Init, 2 = Response, 3 = Final), 12-byte header:
//!  0      1        2          4                8                 12
//!  +------+--------+----------+----------------+-----------------+----------------....
//!  | type | pattern| reserved |  sender u32 LE | receiver u32 LE | Noise handshake message
//!  +------+--------+----------+----------------+-----------------+----------------....
//!  pattern: 1 = Noise_IK, 2 = Noise_XX. receiver = 0 in an Init (or, in a rekey Init, the
//!  receiver's current index as a routing hint). reserved must be zero.
//!  An Init ends with two 16-byte MACs after the Noise message (WireGuard paper §5.4.4):
//!  ... | Noise handshake message | mac1 [16] | mac2 [16]
//!  mac1 = MAC(HASH("mac1----" || responder key), everything before mac1); mac2 = MAC(cookie,
//!  everything before mac2) or zeros without a cookie (see `link::cookie`).
//!
//! Cookie reply (type 5), 64 bytes exactly (WireGuard paper §5.4.7):
//!  0      1           4                  8                    32                      64
//!  +------+-----------+------------------+--------------------+-----------------------+
//!  |  5   | reserved  | receiver u32 LE  |   nonce [24]       | encrypted cookie [32] |
//!  +------+-----------+------------------+--------------------+-----------------------+
//!  receiver = the initiator's sender index from the Init being answered.
//!
//! Transport (type 4), 16-byte header:
//!  0      1           4                  8                       16
//!  +------+-----------+------------------+-----------------------+-----------------....
//!  |  4   | reserved  | receiver u32 LE  |   counter u64 LE      | ChaChaPoly ciphertext
//!  +------+-----------+------------------+-----------------------+-----------------....
//!  The ciphertext is at least the 16-byte tag (an empty payload is a keepalive).
//! ```
//!
//! Parsing never panics: every malformed input maps to a [`PacketError`].

/// Length of a handshake packet header.
pub const HANDSHAKE_HEADER_LEN: usize = 12;
/// Length of the MAC1 + MAC2 trailer of an Init (WireGuard paper §5.4.4).
pub const MACS_LEN: usize = 2 * MAC_LEN;
/// Length of one MAC (16-byte keyed BLAKE2s, WireGuard paper §5.4.4).
pub const MAC_LEN: usize = 16;
/// Length of a cookie reply (WireGuard paper §5.4.7 layout).
pub const COOKIE_REPLY_LEN: usize = 64;
/// Length of a transport packet header.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// ChaChaPoly tag length (Noise rev 34 §5.1: ciphertexts are plaintext + 16 bytes).
pub const TAG_LEN: usize = 16;
/// Largest packet we emit or accept (a Noise message is at most 65535 bytes, §3).
pub const MAX_PACKET_LEN: usize = 65535 + TRANSPORT_HEADER_LEN;

/// Wire type bytes.
const T_INIT: u8 = 1;
const T_RESPONSE: u8 = 2;
const T_FINAL: u8 = 3;
const T_TRANSPORT: u8 = 4;
const T_COOKIE: u8 = 5;

/// Why bytes are not a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The input is empty.
    #[error("empty packet")]
    Empty,
    /// Unknown type byte.
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    /// Shorter than its header (plus tag, for transport).
    #[error("truncated packet: {len} bytes, need at least {need}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Unknown Noise pattern byte in a handshake header.
    #[error("unknown handshake pattern {0}")]
    UnknownPattern(u8),
    /// Reserved bytes not zero.
    #[error("reserved bytes not zero")]
    Reserved,
    /// Longer than [`MAX_PACKET_LEN`].
    #[error("packet too long: {0} bytes")]
    TooLong(usize),
    /// The output buffer is too small for `emit`.
    #[error("output buffer too small: need {0} bytes")]
    BufferTooSmall(usize),
    /// A cookie reply that is not exactly [`COOKIE_REPLY_LEN`] bytes long.
    #[error("cookie reply of {0} bytes, expected 64")]
    CookieLength(usize),
}

/// Which Noise handshake pattern a handshake packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `Noise_IK_25519_ChaChaPoly_BLAKE2s` (initiator knows the responder's static key).
    IK,
    /// `Noise_XX_25519_ChaChaPoly_BLAKE2s` (mutual static keys learned in the handshake).
    XX,
}

impl Pattern {
    fn to_byte(self) -> u8 {
        match self {
            Pattern::IK => 1,
            Pattern::XX => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Self, PacketError> {
        match b {
            1 => Ok(Pattern::IK),
            2 => Ok(Pattern::XX),
            other => Err(PacketError::UnknownPattern(other)),
        }
    }

    /// The full Noise protocol name (Noise rev 34 §8).
    pub fn noise_name(self) -> &'static str {
        match self {
            Pattern::IK => "Noise_IK_25519_ChaChaPoly_BLAKE2s",
            Pattern::XX => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
        }
    }
}

/// Which message of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeKind {
    /// First message, initiator → responder.
    Init,
    /// Second message, responder → initiator.
    Response,
    /// Third message (XX only), initiator → responder.
    Final,
}

/// A handshake packet view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake<'a> {
    /// Which message.
    pub kind: HandshakeKind,
    /// Which Noise pattern.
    pub pattern: Pattern,
    /// The sender's session index.
    pub sender: u32,
    /// The receiver's session index (0 or a routing hint in an `Init`).
    pub receiver: u32,
    /// The Noise handshake message bytes.
    pub noise: &'a [u8],
    /// MAC1 and MAC2: present in (and only in) an `Init`. Emitting an `Init` with `None`
    /// writes zero MACs (to be filled by `link::cookie::seal_macs`).
    pub macs: Option<Macs>,
}

/// The MAC1/MAC2 trailer of an `Init` (WireGuard paper §5.4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Macs {
    /// Keyed by the responder's static key (or the XX label, see `link::cookie`).
    pub mac1: [u8; MAC_LEN],
    /// Keyed by a cookie from a cookie reply, or zeros.
    pub mac2: [u8; MAC_LEN],
}

/// A cookie reply view (WireGuard paper §5.4.7): the responder is under load and wants MAC2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReply {
    /// The initiator's session index (the `sender` of the Init answered).
    pub receiver: u32,
    /// XChaCha20-Poly1305 nonce.
    pub nonce: [u8; 24],
    /// The cookie, encrypted, with its tag.
    pub encrypted_cookie: [u8; 32],
}

/// A transport packet view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport<'a> {
    /// The receiver's session index.
    pub receiver: u32,
    /// The nonce counter.
    pub counter: u64,
    /// AEAD ciphertext including the tag.
    pub ciphertext: &'a [u8],
}

/// Any link packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A Noise handshake message.
    Handshake(Handshake<'a>),
    /// An encrypted transport message.
    Transport(Transport<'a>),
    /// A cookie reply to an Init.
    CookieReply(CookieReply),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = b.get(at..at + N) {
        a.copy_from_slice(s);
    }
    a
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl<'a> Packet<'a> {
    /// Parses a packet, borrowing from `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        let &ty = bytes.first().ok_or(PacketError::Empty)?;
        if bytes.len() > MAX_PACKET_LEN {
            return Err(PacketError::TooLong(bytes.len()));
        }
        let kind = match ty {
            T_INIT => HandshakeKind::Init,
            T_RESPONSE => HandshakeKind::Response,
            T_FINAL => HandshakeKind::Final,
            T_TRANSPORT => {
                let need = TRANSPORT_HEADER_LEN + TAG_LEN;
                if bytes.len() < need {
                    return Err(PacketError::Truncated {
                        len: bytes.len(),
                        need,
                    });
                }
                if bytes[1..4] != [0, 0, 0] {
                    return Err(PacketError::Reserved);
                }
                return Ok(Packet::Transport(Transport {
                    receiver: u32_at(bytes, 4),
                    counter: u64_at(bytes, 8),
                    ciphertext: &bytes[TRANSPORT_HEADER_LEN..],
                }));
            }
            T_COOKIE => {
                if bytes.len() < COOKIE_REPLY_LEN {
                    return Err(PacketError::Truncated {
                        len: bytes.len(),
                        need: COOKIE_REPLY_LEN,
                    });
                }
                if bytes.len() != COOKIE_REPLY_LEN {
                    return Err(PacketError::CookieLength(bytes.len()));
                }
                if bytes[1..4] != [0, 0, 0] {
                    return Err(PacketError::Reserved);
                }
                return Ok(Packet::CookieReply(CookieReply {
                    receiver: u32_at(bytes, 4),
                    nonce: array_at(bytes, 8),
                    encrypted_cookie: array_at(bytes, 32),
                }));
            }
            other => return Err(PacketError::UnknownType(other)),
        };
        let trailer = if kind == HandshakeKind::Init {
            MACS_LEN
        } else {
            0
        };
        let need = HANDSHAKE_HEADER_LEN + trailer;
        if bytes.len() < need {
            return Err(PacketError::Truncated {
                len: bytes.len(),
                need,
            });
        }
        let pattern = Pattern::from_byte(bytes[1])?;
        if bytes[2..4] != [0, 0] {
            return Err(PacketError::Reserved);
        }
        let end = bytes.len() - trailer;
        let macs = (kind == HandshakeKind::Init).then(|| Macs {
            mac1: array_at(bytes, end),
            mac2: array_at(bytes, end + MAC_LEN),
        });
        Ok(Packet::Handshake(Handshake {
            kind,
            pattern,
            sender: u32_at(bytes, 4),
            receiver: u32_at(bytes, 8),
            noise: &bytes[HANDSHAKE_HEADER_LEN..end],
            macs,
        }))
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn len(&self) -> usize {
        match self {
            Packet::Handshake(h) if h.kind == HandshakeKind::Init => {
                HANDSHAKE_HEADER_LEN + h.noise.len() + MACS_LEN
            }
            Packet::Handshake(h) => HANDSHAKE_HEADER_LEN + h.noise.len(),
            Packet::Transport(t) => TRANSPORT_HEADER_LEN + t.ciphertext.len(),
            Packet::CookieReply(_) => COOKIE_REPLY_LEN,
        }
    }

    /// Never true: every packet has a header. (Present for clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the packet into `out`, returning the bytes written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, PacketError> {
        let n = self.len();
        if n > MAX_PACKET_LEN {
            return Err(PacketError::TooLong(n));
        }
        let out = out.get_mut(..n).ok_or(PacketError::BufferTooSmall(n))?;
        match self {
            Packet::Handshake(h) => {
                out[0] = match h.kind {
                    HandshakeKind::Init => T_INIT,
                    HandshakeKind::Response => T_RESPONSE,
                    HandshakeKind::Final => T_FINAL,
                };
                out[1] = h.pattern.to_byte();
                out[2..4].fill(0);
                out[4..8].copy_from_slice(&h.sender.to_le_bytes());
                out[8..12].copy_from_slice(&h.receiver.to_le_bytes());
                let end = HANDSHAKE_HEADER_LEN + h.noise.len();
                out[HANDSHAKE_HEADER_LEN..end].copy_from_slice(h.noise);
                if h.kind == HandshakeKind::Init {
                    let m = h.macs.unwrap_or_default();
                    out[end..end + MAC_LEN].copy_from_slice(&m.mac1);
                    out[end + MAC_LEN..end + MACS_LEN].copy_from_slice(&m.mac2);
                }
            }
            Packet::CookieReply(c) => {
                out[0] = T_COOKIE;
                out[1..4].fill(0);
                out[4..8].copy_from_slice(&c.receiver.to_le_bytes());
                out[8..32].copy_from_slice(&c.nonce);
                out[32..64].copy_from_slice(&c.encrypted_cookie);
            }
            Packet::Transport(t) => {
                out[0] = T_TRANSPORT;
                out[1..4].fill(0);
                out[4..8].copy_from_slice(&t.receiver.to_le_bytes());
                out[8..16].copy_from_slice(&t.counter.to_le_bytes());
                out[TRANSPORT_HEADER_LEN..].copy_from_slice(t.ciphertext);
            }
        }
        Ok(n)
    }

    /// Emits into a fresh vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, PacketError> {
        let mut v = vec![0u8; self.len()];
        self.emit(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn transport_layout() {
        let ct = [9u8; 16];
        let p = Packet::Transport(Transport {
            receiver: 0x0403_0201,
            counter: 5,
            ciphertext: &ct,
        });
        let v = p.to_vec().expect("emit");
        assert_eq!(&v[..8], &[4, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(&v[8..16], &[5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Packet::parse(&v), Ok(p));
        assert_eq!(
            Packet::parse(&v[..31]),
            Err(PacketError::Truncated { len: 31, need: 32 })
        );
    }

    #[test]
    fn handshake_errors() {
        assert_eq!(Packet::parse(&[]), Err(PacketError::Empty));
        assert_eq!(Packet::parse(&[9; 20]), Err(PacketError::UnknownType(9)));
        // An Init is at least 12 + 32 bytes (its MAC trailer), so these are padded to 44.
        let init = |head: &[u8]| {
            let mut v = head.to_vec();
            v.resize(HANDSHAKE_HEADER_LEN + MACS_LEN, 0);
            v
        };
        assert_eq!(
            Packet::parse(&init(&[1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(PacketError::UnknownPattern(3))
        );
        assert_eq!(
            Packet::parse(&init(&[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(PacketError::Reserved)
        );
        assert_eq!(
            Packet::parse(&[2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(PacketError::UnknownPattern(3))
        );
        assert_eq!(
            Packet::parse(&[1, 1, 0]),
            Err(PacketError::Truncated { len: 3, need: 44 })
        );
        assert_eq!(
            Packet::parse(&[2, 1, 0]),
            Err(PacketError::Truncated { len: 3, need: 12 })
        );
        assert_eq!(
            Packet::parse(&[1; 43]),
            Err(PacketError::Truncated { len: 43, need: 44 })
        );
    }

    #[test]
    fn init_macs_and_cookie_layout() {
        let mut v = vec![1u8, 1, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(&[7; 5]);
        v.extend_from_slice(&[0xa; 16]);
        v.extend_from_slice(&[0xb; 16]);
        let Ok(Packet::Handshake(h)) = Packet::parse(&v) else {
            panic!("not a handshake")
        };
        assert_eq!(h.noise, &[7; 5]);
        assert_eq!(
            h.macs,
            Some(Macs {
                mac1: [0xa; 16],
                mac2: [0xb; 16]
            })
        );
        let c = Packet::CookieReply(CookieReply {
            receiver: 0x0403_0201,
            nonce: [3; 24],
            encrypted_cookie: [4; 32],
        });
        let b = c.to_vec().expect("emit");
        assert_eq!(b.len(), COOKIE_REPLY_LEN);
        assert_eq!(&b[..8], &[5, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(Packet::parse(&b), Ok(c));
        assert_eq!(
            Packet::parse(&b[..63]),
            Err(PacketError::Truncated { len: 63, need: 64 })
        );
        let mut long = b.clone();
        long.push(0);
        assert_eq!(Packet::parse(&long), Err(PacketError::CookieLength(65)));
        long.truncate(64);
        long[2] = 1;
        assert_eq!(Packet::parse(&long), Err(PacketError::Reserved));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::parse(&bytes) {
                // Whatever parses re-emits to the same bytes.
                prop_assert_eq!(p.to_vec().expect("emit"), bytes);
            }
        }

        #[test]
        fn parse_never_panics_on_typed_headers(ty in 0u8..7, rest in proptest::collection::vec(any::<u8>(), 0..120)) {
            // Bytes behind a valid type byte reach the per-type parsers (cookie, Init MACs).
            let mut bytes = vec![ty];
            bytes.extend_from_slice(&rest);
            if let Ok(p) = Packet::parse(&bytes) {
                prop_assert_eq!(p.to_vec().expect("emit"), bytes);
            }
        }

        #[test]
        fn handshake_round_trip(kind in 0u8..3, xx: bool, sender: u32, receiver: u32,
                                noise in proptest::collection::vec(any::<u8>(), 0..100),
                                mac1: [u8; 16], mac2: [u8; 16]) {
            let kind = [HandshakeKind::Init, HandshakeKind::Response, HandshakeKind::Final][kind as usize];
            let pattern = if xx { Pattern::XX } else { Pattern::IK };
            let macs = (kind == HandshakeKind::Init).then_some(Macs { mac1, mac2 });
            let p = Packet::Handshake(Handshake { kind, pattern, sender, receiver, noise: &noise, macs });
            let v = p.to_vec().expect("emit");
            prop_assert_eq!(Packet::parse(&v), Ok(p));
        }

        #[test]
        fn cookie_reply_round_trip(receiver: u32, nonce: [u8; 24], a: [u8; 16], b: [u8; 16]) {
            let mut encrypted_cookie = [0u8; 32];
            encrypted_cookie[..16].copy_from_slice(&a);
            encrypted_cookie[16..].copy_from_slice(&b);
            let p = Packet::CookieReply(CookieReply { receiver, nonce, encrypted_cookie });
            let v = p.to_vec().expect("emit");
            prop_assert_eq!(v.len(), COOKIE_REPLY_LEN);
            prop_assert_eq!(Packet::parse(&v), Ok(p));
        }

        #[test]
        fn transport_round_trip(receiver: u32, counter: u64,
                                ct in proptest::collection::vec(any::<u8>(), 16..100)) {
            let p = Packet::Transport(Transport { receiver, counter, ciphertext: &ct });
            let v = p.to_vec().expect("emit");
            prop_assert_eq!(Packet::parse(&v), Ok(p));
        }
    }
}
