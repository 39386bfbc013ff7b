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
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
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
            other => return Err(PacketError::UnknownType(other)),
        };
        if bytes.len() < HANDSHAKE_HEADER_LEN {
            return Err(PacketError::Truncated {
                len: bytes.len(),
                need: HANDSHAKE_HEADER_LEN,
            });
        }
        let pattern = Pattern::from_byte(bytes[1])?;
        if bytes[2..4] != [0, 0] {
            return Err(PacketError::Reserved);
        }
        Ok(Packet::Handshake(Handshake {
            kind,
            pattern,
            sender: u32_at(bytes, 4),
            receiver: u32_at(bytes, 8),
            noise: &bytes[HANDSHAKE_HEADER_LEN..],
        }))
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn len(&self) -> usize {
        match self {
            Packet::Handshake(h) => HANDSHAKE_HEADER_LEN + h.noise.len(),
            Packet::Transport(t) => TRANSPORT_HEADER_LEN + t.ciphertext.len(),
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
                out[HANDSHAKE_HEADER_LEN..].copy_from_slice(h.noise);
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
        assert_eq!(
            Packet::parse(&[1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(PacketError::UnknownPattern(3))
        );
        assert_eq!(
            Packet::parse(&[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(PacketError::Reserved)
        );
        assert_eq!(
            Packet::parse(&[1, 1, 0]),
            Err(PacketError::Truncated { len: 3, need: 12 })
        );
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
        fn handshake_round_trip(kind in 0u8..3, xx: bool, sender: u32, receiver: u32,
                                noise in proptest::collection::vec(any::<u8>(), 0..100)) {
            let kind = [HandshakeKind::Init, HandshakeKind::Response, HandshakeKind::Final][kind as usize];
            let pattern = if xx { Pattern::XX } else { Pattern::IK };
            let p = Packet::Handshake(Handshake { kind, pattern, sender, receiver, noise: &noise });
            let v = p.to_vec().expect("emit");
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
