//! Typed tunnel messages, smoltcp-style: `parse` validates lengths once and returns a plain value,
//! `emit` writes it back. Layouts follow the WireGuard paper §5.4 (all integers little-endian):
//!
//! ```text
//! initiation (148): type=1 | 3×0 | sender u32 | noise (e 32, s 32+16, timestamp 12+16) | mac1 16 | mac2 16
//! response    (92): type=2 | 3×0 | sender u32 | receiver u32 | noise (e 32, empty 0+16) | mac1 16 | mac2 16
//! cookie      (64): type=3 | 3×0 | receiver u32 | nonce 24 | encrypted cookie 16+16
//! data     (32+n): type=4 | 3×0 | receiver u32 | counter u64 | ChaCha20-Poly1305(packet) n+16
//! ```
//!
//! The `noise` fields are exactly the Noise IKpsk2 handshake messages (Noise spec §7.5 "IK",
//! §9 "psk modifier") as `snow` writes them, so their sizes equal WireGuard's.

use thiserror::Error;

/// Message type of a handshake initiation (WireGuard §5.4.2).
pub const TYPE_INITIATION: u8 = 1;
/// Message type of a handshake response (WireGuard §5.4.3).
pub const TYPE_RESPONSE: u8 = 2;
/// Message type of a cookie reply (WireGuard §5.4.7).
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Message type of transport data (WireGuard §5.4.6).
pub const TYPE_DATA: u8 = 4;

/// Length of the Noise part of an initiation: e (32) + encrypted s (48) + encrypted timestamp (28).
pub const INITIATION_NOISE_LEN: usize = 32 + 48 + 28;
/// Length of the Noise part of a response: e (32) + encrypted empty payload (16).
pub const RESPONSE_NOISE_LEN: usize = 32 + 16;
/// Length of a MAC1 or MAC2 field (keyed BLAKE2s-128, WireGuard §5.4.4).
pub const MAC_LEN: usize = wg_guard::cookie::MAC_LEN;
/// Length of an initiation message.
pub const INITIATION_LEN: usize = 8 + INITIATION_NOISE_LEN + 2 * MAC_LEN;
/// Length of a response message.
pub const RESPONSE_LEN: usize = 12 + RESPONSE_NOISE_LEN + 2 * MAC_LEN;
/// Length of a cookie reply message.
pub const COOKIE_REPLY_LEN: usize = 8 + 24 + 32;
/// Length of the transport data header (type, reserved, receiver, counter).
pub const DATA_HEADER_LEN: usize = 16;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Smallest transport data message (a keepalive: empty payload plus tag).
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;

/// Why bytes are not a tunnel message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// The datagram is empty.
    #[error("empty datagram")]
    Empty,
    /// The first byte is not a known message type.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The three reserved bytes after the type are not zero.
    #[error("reserved bytes are not zero")]
    Reserved,
    /// The length does not fit the message type.
    #[error("{kind} message of {got} bytes, expected {expected}")]
    BadLength {
        /// The message type's name.
        kind: &'static str,
        /// The expected length (the minimum for data).
        expected: usize,
        /// The datagram's length.
        got: usize,
    },
    /// The output buffer is too small to emit the message.
    #[error("output buffer of {have} bytes, need {need}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// A handshake initiation (WireGuard §5.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiation {
    /// The initiator's session index.
    pub sender: u32,
    /// The Noise IK first message.
    pub noise: [u8; INITIATION_NOISE_LEN],
    /// MAC1 over everything before it.
    pub mac1: [u8; MAC_LEN],
    /// MAC2 over everything before it (zero without a cookie).
    pub mac2: [u8; MAC_LEN],
}

/// A handshake response (WireGuard §5.4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The responder's session index.
    pub sender: u32,
    /// The initiator's session index (from the initiation).
    pub receiver: u32,
    /// The Noise IK second message.
    pub noise: [u8; RESPONSE_NOISE_LEN],
    /// MAC1 over everything before it.
    pub mac1: [u8; MAC_LEN],
    /// MAC2 over everything before it.
    pub mac2: [u8; MAC_LEN],
}

/// A cookie reply (WireGuard §5.4.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieReply {
    /// The session index of the message this replies to.
    pub receiver: u32,
    /// Random XChaCha20-Poly1305 nonce.
    pub nonce: [u8; 24],
    /// The cookie, encrypted and authenticated with the replied-to message's MAC1 as AAD.
    pub encrypted_cookie: [u8; 32],
}

/// A transport data message (WireGuard §5.4.6), borrowing the ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    /// The receiver's session index.
    pub receiver: u32,
    /// The 64-bit nonce counter.
    pub counter: u64,
    /// Ciphertext plus 16-byte tag.
    pub encrypted: &'a [u8],
}

/// Any tunnel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// Type 1.
    Initiation(Initiation),
    /// Type 2.
    Response(Response),
    /// Type 3.
    CookieReply(CookieReply),
    /// Type 4.
    Data(Data<'a>),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

fn check_len(kind: &'static str, b: &[u8], expected: usize) -> Result<(), WireError> {
    if b.len() != expected {
        return Err(WireError::BadLength {
            kind,
            expected,
            got: b.len(),
        });
    }
    Ok(())
}

fn check_out(out: &[u8], need: usize) -> Result<(), WireError> {
    if out.len() < need {
        return Err(WireError::BufferTooSmall {
            need,
            have: out.len(),
        });
    }
    Ok(())
}

fn put_header(out: &mut [u8], ty: u8, index: u32) {
    out[0] = ty;
    out[1..4].fill(0);
    out[4..8].copy_from_slice(&index.to_le_bytes());
}

impl<'a> Message<'a> {
    /// Parses a datagram. Never panics: every length is checked before a field is read.
    pub fn parse(b: &'a [u8]) -> Result<Self, WireError> {
        let ty = *b.first().ok_or(WireError::Empty)?;
        if !(TYPE_INITIATION..=TYPE_DATA).contains(&ty) {
            return Err(WireError::UnknownType(ty));
        }
        if b.len() >= 4 && b[1..4] != [0, 0, 0] {
            return Err(WireError::Reserved);
        }
        Ok(match ty {
            TYPE_INITIATION => {
                check_len("initiation", b, INITIATION_LEN)?;
                Message::Initiation(Initiation {
                    sender: u32_at(b, 4),
                    noise: arr(b, 8),
                    mac1: arr(b, 8 + INITIATION_NOISE_LEN),
                    mac2: arr(b, 8 + INITIATION_NOISE_LEN + MAC_LEN),
                })
            }
            TYPE_RESPONSE => {
                check_len("response", b, RESPONSE_LEN)?;
                Message::Response(Response {
                    sender: u32_at(b, 4),
                    receiver: u32_at(b, 8),
                    noise: arr(b, 12),
                    mac1: arr(b, 12 + RESPONSE_NOISE_LEN),
                    mac2: arr(b, 12 + RESPONSE_NOISE_LEN + MAC_LEN),
                })
            }
            TYPE_COOKIE_REPLY => {
                check_len("cookie reply", b, COOKIE_REPLY_LEN)?;
                Message::CookieReply(CookieReply {
                    receiver: u32_at(b, 4),
                    nonce: arr(b, 8),
                    encrypted_cookie: arr(b, 32),
                })
            }
            _ => {
                if b.len() < DATA_MIN_LEN {
                    return Err(WireError::BadLength {
                        kind: "data",
                        expected: DATA_MIN_LEN,
                        got: b.len(),
                    });
                }
                Message::Data(Data {
                    receiver: u32_at(b, 4),
                    counter: u64::from_le_bytes(arr(b, 8)),
                    encrypted: &b[DATA_HEADER_LEN..],
                })
            }
        })
    }

    /// Writes the message into `out`, returning its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        match self {
            Message::Initiation(m) => m.emit(out),
            Message::Response(m) => m.emit(out),
            Message::CookieReply(m) => m.emit(out),
            Message::Data(m) => m.emit(out),
        }
    }
}

impl Initiation {
    /// Writes the message into `out`, returning [`INITIATION_LEN`].
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        check_out(out, INITIATION_LEN)?;
        put_header(out, TYPE_INITIATION, self.sender);
        let n = 8 + INITIATION_NOISE_LEN;
        out[8..n].copy_from_slice(&self.noise);
        out[n..n + MAC_LEN].copy_from_slice(&self.mac1);
        out[n + MAC_LEN..INITIATION_LEN].copy_from_slice(&self.mac2);
        Ok(INITIATION_LEN)
    }
}

impl Response {
    /// Writes the message into `out`, returning [`RESPONSE_LEN`].
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        check_out(out, RESPONSE_LEN)?;
        put_header(out, TYPE_RESPONSE, self.sender);
        out[8..12].copy_from_slice(&self.receiver.to_le_bytes());
        let n = 12 + RESPONSE_NOISE_LEN;
        out[12..n].copy_from_slice(&self.noise);
        out[n..n + MAC_LEN].copy_from_slice(&self.mac1);
        out[n + MAC_LEN..RESPONSE_LEN].copy_from_slice(&self.mac2);
        Ok(RESPONSE_LEN)
    }
}

impl CookieReply {
    /// Writes the message into `out`, returning [`COOKIE_REPLY_LEN`].
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        check_out(out, COOKIE_REPLY_LEN)?;
        put_header(out, TYPE_COOKIE_REPLY, self.receiver);
        out[8..32].copy_from_slice(&self.nonce);
        out[32..COOKIE_REPLY_LEN].copy_from_slice(&self.encrypted_cookie);
        Ok(COOKIE_REPLY_LEN)
    }
}

impl Data<'_> {
    /// Writes the message into `out`, returning its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = DATA_HEADER_LEN + self.encrypted.len();
        check_out(out, len)?;
        write_data_header(out, self.receiver, self.counter)?;
        out[DATA_HEADER_LEN..len].copy_from_slice(self.encrypted);
        Ok(len)
    }
}

/// Writes only the 16-byte transport data header (the ciphertext is produced in place after it).
pub fn write_data_header(out: &mut [u8], receiver: u32, counter: u64) -> Result<(), WireError> {
    check_out(out, DATA_HEADER_LEN)?;
    put_header(out, TYPE_DATA, receiver);
    out[8..16].copy_from_slice(&counter.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(m: &Message<'_>) {
        let mut buf = vec![0u8; 4096];
        let n = m.emit(&mut buf).expect("emit");
        let back = Message::parse(&buf[..n]).expect("parse");
        assert_eq!(&back, m);
    }

    proptest! {
        #[test]
        fn initiation_round_trips(sender: u32, noise in prop::collection::vec(any::<u8>(), INITIATION_NOISE_LEN), mac1: [u8; 16], mac2: [u8; 16]) {
            let mut n = [0u8; INITIATION_NOISE_LEN];
            n.copy_from_slice(&noise);
            round_trip(&Message::Initiation(Initiation { sender, noise: n, mac1, mac2 }));
        }

        #[test]
        fn response_round_trips(sender: u32, receiver: u32, noise in prop::collection::vec(any::<u8>(), RESPONSE_NOISE_LEN), mac1: [u8; 16], mac2: [u8; 16]) {
            let mut n = [0u8; RESPONSE_NOISE_LEN];
            n.copy_from_slice(&noise);
            round_trip(&Message::Response(Response { sender, receiver, noise: n, mac1, mac2 }));
        }

        #[test]
        fn cookie_round_trips(receiver: u32, nonce: [u8; 24], c1: [u8; 16], c2: [u8; 16]) {
            let mut encrypted_cookie = [0u8; 32];
            encrypted_cookie[..16].copy_from_slice(&c1);
            encrypted_cookie[16..].copy_from_slice(&c2);
            round_trip(&Message::CookieReply(CookieReply { receiver, nonce, encrypted_cookie }));
        }

        #[test]
        fn data_round_trips(receiver: u32, counter: u64, encrypted in prop::collection::vec(any::<u8>(), TAG_LEN..2000)) {
            round_trip(&Message::Data(Data { receiver, counter, encrypted: &encrypted }));
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::parse(&bytes);
        }
    }

    #[test]
    fn errors_have_reasons() {
        assert_eq!(Message::parse(&[]), Err(WireError::Empty));
        assert_eq!(Message::parse(&[9]), Err(WireError::UnknownType(9)));
        assert_eq!(Message::parse(&[1, 1, 0, 0]), Err(WireError::Reserved));
        let e = Message::parse(&[1, 0, 0, 0]).expect_err("short");
        assert_eq!(e.to_string(), "initiation message of 4 bytes, expected 148");
    }
}
