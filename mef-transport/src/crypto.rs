//! Cryptography: static keys, the Noise IK handshake, per-direction packet keys and the
//! anti-replay window.
//!
//! * Handshake: `Noise_IK_25519_ChaChaPoly_BLAKE2s` (Noise Protocol Framework rev. 34 §7.5,
//!   pattern IK). The client knows the server's static key in advance, as in WireGuard, so one
//!   round trip authenticates both sides and yields session keys.
//! * Transport: the Noise `Split()` (§5.2) output is taken raw and used as two
//!   ChaCha20-Poly1305 keys (RFC 8439), one per direction. The nonce is 4 zero bytes followed
//!   by the 64-bit packet number (big endian), exactly like Noise's own nonce encoding (§12.3)
//!   and WireGuard's transport messages; the associated data is the MEF header with the
//!   router-mutable fields zeroed ([`Packet::associated_data`]).
//! * Anti-replay: the sliding bitmap window of RFC 6479, as WireGuard uses it (paper §5.4.6).
//!
//! Secrets live in [`Zeroizing`] buffers or in types that zeroize on drop, and every `Debug`
//! implementation here prints `<redacted>` instead of key material.

use core::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver};
use zeroize::Zeroizing;

use crate::wire::Packet;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Bytes of the Poly1305 authentication tag appended to every encrypted payload.
pub const TAG_LEN: usize = 16;
/// Noise prologue prefix: binds the protocol version into the handshake hash (Noise §6).
const PROLOGUE_PREFIX: &[u8] = b"MEF transport v1 IK";

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The Noise library rejected a message (bad key, forged or corrupted handshake).
    #[error("noise handshake failed: {0}")]
    Noise(String),
    /// AEAD authentication failed: corrupted, forged or wrong-key packet.
    #[error("packet authentication failed")]
    Aead,
    /// A buffer too small for the operation (a caller bug).
    #[error("buffer too small for encryption")]
    BufferTooSmall,
}

impl From<snow::Error> for CryptoError {
    fn from(e: snow::Error) -> Self {
        Self::Noise(e.to_string())
    }
}

/// A static Curve25519 key pair identifying an endpoint (like a WireGuard interface key).
#[derive(Clone)]
pub struct StaticKeypair {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl StaticKeypair {
    /// Builds a key pair from a 32-byte secret (clamped by X25519 when used).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = Zeroizing::new(secret);
        let s = x25519_dalek::StaticSecret::from(*secret);
        let public = x25519_dalek::PublicKey::from(&s).to_bytes();
        Self { secret, public }
    }

    /// Generates a key pair from `rng` (pass a seeded RNG for reproducible simulations, an OS
    /// RNG otherwise).
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        Self::from_secret(*secret)
    }

    /// The public key to give to peers.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &Hex(&self.public))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Hex formatting for public values in logs.
pub(crate) struct Hex<'a>(pub &'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A Noise RNG seeded by the endpoint, so a simulation with a fixed seed produces the same
/// ephemeral keys (and therefore the same bytes on the wire) every run.
struct SeededRandom(ChaCha20Rng);

impl snow::types::Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

struct SeededResolver(Zeroizing<[u8; 32]>);

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(*self.0))))
    }
    fn resolve_dh(&self, _: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        None
    }
    fn resolve_hash(&self, _: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        None
    }
    fn resolve_cipher(
        &self,
        _: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        None
    }
}

/// One side of a Noise IK handshake in progress.
pub struct Handshake {
    state: Box<snow::HandshakeState>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handshake(<redacted>)")
    }
}

fn builder<'a>(
    seed: &Zeroizing<[u8; 32]>,
    prologue: &'a [u8],
    local: &'a StaticKeypair,
) -> Result<snow::Builder<'a>, CryptoError> {
    let params: snow::params::NoiseParams = NOISE_PARAMS
        .parse()
        .map_err(|e: snow::Error| CryptoError::Noise(e.to_string()))?;
    let resolver = FallbackResolver::new(
        Box::new(SeededResolver(seed.clone())),
        Box::new(DefaultResolver),
    );
    Ok(snow::Builder::with_resolver(params, Box::new(resolver))
        .prologue(prologue)?
        .local_private_key(local.secret())?)
}

/// The Noise prologue: a protocol label and the Initial packet's header (with the packet number
/// and the router-mutable fields zeroed), so both sides agree on the header the handshake
/// travelled under and a tampered Initial header breaks the handshake (Noise §6).
pub(crate) fn prologue(initial_ad: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_PREFIX.len() + initial_ad.len());
    p.extend_from_slice(PROLOGUE_PREFIX);
    p.extend_from_slice(initial_ad);
    p
}

impl Handshake {
    /// Starts the initiator (client) side. `seed` seeds the ephemeral key.
    pub fn initiator(
        local: &StaticKeypair,
        server_public: &[u8; 32],
        prologue: &[u8],
        seed: &Zeroizing<[u8; 32]>,
    ) -> Result<Self, CryptoError> {
        let state = builder(seed, prologue, local)?
            .remote_public_key(server_public)?
            .build_initiator()?;
        Ok(Self {
            state: Box::new(state),
        })
    }

    /// Starts the responder (server) side.
    pub fn responder(
        local: &StaticKeypair,
        prologue: &[u8],
        seed: &Zeroizing<[u8; 32]>,
    ) -> Result<Self, CryptoError> {
        let state = builder(seed, prologue, local)?.build_responder()?;
        Ok(Self {
            state: Box::new(state),
        })
    }

    /// Writes the next handshake message carrying `payload` into `out`; returns its length.
    pub fn write(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        Ok(self.state.write_message(payload, out)?)
    }

    /// Reads a handshake message, writing its decrypted payload into `payload`.
    pub fn read(&mut self, msg: &[u8], payload: &mut [u8]) -> Result<usize, CryptoError> {
        Ok(self.state.read_message(msg, payload)?)
    }

    /// The peer's static public key, once received.
    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.state
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
    }

    /// Finishes the handshake: Noise `Split()` (§5.2) into the two transport keys.
    /// Returns `(send, receive)` keys for this side.
    pub fn split(mut self) -> Result<(PacketKey, PacketKey), CryptoError> {
        if !self.state.is_handshake_finished() {
            return Err(CryptoError::Noise("handshake not finished".into()));
        }
        let initiator = self.state.is_initiator();
        let (k1, k2) = self.state.dangerously_get_raw_split();
        // k1 encrypts initiator → responder, k2 responder → initiator (Noise §5.2 Split()).
        let (k1, k2) = (Zeroizing::new(k1), Zeroizing::new(k2));
        let a = PacketKey::new(&k1);
        let b = PacketKey::new(&k2);
        Ok(if initiator { (a, b) } else { (b, a) })
    }
}

/// A ChaCha20-Poly1305 key for one direction. The cipher zeroizes its key on drop.
pub struct PacketKey {
    cipher: ChaCha20Poly1305,
}

impl fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PacketKey(<redacted>)")
    }
}

/// The 96-bit nonce: 4 zero bytes ‖ packet number big-endian (Noise §12.3 layout, WireGuard).
fn nonce(pn: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pn.to_be_bytes());
    Nonce::from(n)
}

impl PacketKey {
    fn new(key: &Zeroizing<[u8; 32]>) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key[..])),
        }
    }

    /// Encrypts a packet in place: `buf` holds the emitted header, then `payload_len` bytes of
    /// plaintext, then at least [`TAG_LEN`] spare bytes; the tag is written after the payload.
    /// Returns the total packet length.
    pub fn seal(&self, buf: &mut [u8], payload_len: usize) -> Result<usize, CryptoError> {
        use crate::wire::HEADER_LEN;
        let total = HEADER_LEN + payload_len + TAG_LEN;
        if buf.len() < total {
            return Err(CryptoError::BufferTooSmall);
        }
        let (ad, pn) = {
            let p = Packet::new_unchecked(&buf[..]);
            (p.associated_data(), p.packet_number())
        };
        let (body, tag_out) = buf[HEADER_LEN..total].split_at_mut(payload_len);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(pn), &ad, body)
            .map_err(|_| CryptoError::BufferTooSmall)?;
        tag_out.copy_from_slice(&tag);
        Ok(total)
    }

    /// Authenticates and decrypts a packet in place; returns the plaintext payload range
    /// (`HEADER_LEN..end`). Any bit flipped outside the router-mutable fields fails.
    pub fn open(&self, buf: &mut [u8]) -> Result<core::ops::Range<usize>, CryptoError> {
        use crate::wire::HEADER_LEN;
        if buf.len() < HEADER_LEN + TAG_LEN {
            return Err(CryptoError::Aead);
        }
        let (ad, pn) = {
            let p = Packet::new_unchecked(&buf[..]);
            (p.associated_data(), p.packet_number())
        };
        let end = buf.len() - TAG_LEN;
        let (body, tag) = buf[HEADER_LEN..].split_at_mut(end - HEADER_LEN);
        let tag = Tag::clone_from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(&nonce(pn), &ad, body, &tag)
            .map_err(|_| CryptoError::Aead)?;
        Ok(HEADER_LEN..end)
    }
}

/// Size of the MEF transport's anti-replay bitmap in packet numbers (2048 − 64 usable, as
/// WireGuard's reference implementation).
pub const REPLAY_WINDOW: u64 = 2048;

/// Sliding-window anti-replay filter (RFC 6479; WireGuard paper §5.4.6) over a ring of `WORDS`
/// 64-bit words. Advancing the window clears whole words instead of shifting bits; one word is
/// always being recycled, so `(WORDS − 1) · 64` counters behind the greatest are accepted. The
/// MEF transport uses the default 32 words ([`REPLAY_WINDOW`] bits); the router's tunnel uses
/// a larger ring.
///
/// Call [`ReplayWindow::check`] before the (costly) decryption and [`ReplayWindow::update`]
/// only after authentication succeeded, so forged packets cannot move the window.
#[derive(Debug, Clone)]
pub struct ReplayWindow<const WORDS: usize = 32> {
    bitmap: [u64; WORDS],
    greatest: Option<u64>,
}

impl<const WORDS: usize> Default for ReplayWindow<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> ReplayWindow<WORDS> {
    /// Bits in the ring.
    const BITS: u64 = WORDS as u64 * 64;

    /// Counters behind the greatest one that are still accepted: `(WORDS − 1) · 64`.
    pub const USABLE: u64 = Self::BITS - 64;

    /// An empty window.
    pub const fn new() -> Self {
        Self {
            bitmap: [0; WORDS],
            greatest: None,
        }
    }

    /// `true` if `pn` is new and inside the window (not a duplicate, not too old).
    pub fn check(&self, pn: u64) -> bool {
        let Some(g) = self.greatest else { return true };
        if pn > g {
            return true;
        }
        // RFC 6479 §2: the usable window is one word short of the bitmap.
        if g - pn >= Self::USABLE {
            return false;
        }
        let bit = pn % Self::BITS;
        self.bitmap[(bit / 64) as usize] & (1 << (bit % 64)) == 0
    }

    /// Records `pn` as received; returns `false` (and changes nothing) if it was a replay.
    pub fn update(&mut self, pn: u64) -> bool {
        if !self.check(pn) {
            return false;
        }
        match self.greatest {
            Some(g) if pn <= g => {}
            Some(g) => {
                // Clear the words that slid into the window.
                let old_word = g / 64;
                let new_word = pn / 64;
                let steps = (new_word - old_word).min(WORDS as u64);
                for i in 1..=steps {
                    self.bitmap[((old_word + i) % WORDS as u64) as usize] = 0;
                }
                self.greatest = Some(pn);
            }
            None => {
                self.greatest = Some(pn);
            }
        }
        let bit = pn % Self::BITS;
        self.bitmap[(bit / 64) as usize] |= 1 << (bit % 64);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{HEADER_LEN, Header, PacketType};

    fn seed(b: u8) -> Zeroizing<[u8; 32]> {
        Zeroizing::new([b; 32])
    }

    fn pair() -> ((PacketKey, PacketKey), (PacketKey, PacketKey)) {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let client = StaticKeypair::generate(&mut rng);
        let server = StaticKeypair::generate(&mut rng);
        let pro = prologue(b"x");
        let mut i = Handshake::initiator(&client, &server.public(), &pro, &seed(1)).expect("i");
        let mut r = Handshake::responder(&server, &pro, &seed(2)).expect("r");
        let mut m1 = [0u8; 256];
        let n1 = i.write(b"hello", &mut m1).expect("w1");
        let mut p = [0u8; 256];
        let pn = r.read(&m1[..n1], &mut p).expect("r1");
        assert_eq!(&p[..pn], b"hello");
        assert_eq!(r.remote_static(), Some(client.public()));
        let mut m2 = [0u8; 256];
        let n2 = r.write(b"world", &mut m2).expect("w2");
        let pn = i.read(&m2[..n2], &mut p).expect("r2");
        assert_eq!(&p[..pn], b"world");
        (i.split().expect("split i"), r.split().expect("split r"))
    }

    fn packet(pn: u64, body: &[u8]) -> Vec<u8> {
        let h = Header {
            packet_type: PacketType::Data,
            flags: 0,
            hops: 0,
            conn_id: 7,
            packet_number: pn,
            demand_kbps: 1000,
            current_rate_kbps: 0,
            stamp_kbps: 1000,
            rtt_us: 0,
        };
        let mut buf = vec![0u8; HEADER_LEN + body.len() + TAG_LEN];
        h.emit(&mut buf);
        buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
        buf
    }

    #[test]
    fn handshake_and_transport() {
        let ((c_send, c_recv), (s_send, s_recv)) = pair();
        let mut buf = packet(5, b"secret data");
        let n = c_send.seal(&mut buf, 11).expect("seal");
        assert_eq!(n, buf.len());
        assert!(!buf.windows(6).any(|w| w == b"secret"));
        // A router stamps the packet: still authentic.
        Packet::new_unchecked(&mut buf[..]).stamp(10);
        let mut copy = buf.clone();
        let r = s_recv.open(&mut copy).expect("open");
        assert_eq!(&copy[r], b"secret data");
        // Wrong direction key fails; a flipped demand byte fails; a flipped payload bit fails.
        assert_eq!(c_recv.open(&mut buf.clone()), Err(CryptoError::Aead));
        let mut bad = buf.clone();
        bad[21] ^= 1;
        assert_eq!(s_recv.open(&mut bad), Err(CryptoError::Aead));
        let mut bad = buf.clone();
        bad[HEADER_LEN + 2] ^= 0x80;
        assert_eq!(s_recv.open(&mut bad), Err(CryptoError::Aead));
        let mut back = packet(1, b"ok");
        s_send.seal(&mut back, 2).expect("seal");
        assert!(c_recv.open(&mut back).is_ok());
    }

    #[test]
    fn wrong_server_key_fails() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let client = StaticKeypair::generate(&mut rng);
        let server = StaticKeypair::generate(&mut rng);
        let other = StaticKeypair::generate(&mut rng);
        let pro = prologue(b"x");
        let mut i = Handshake::initiator(&client, &other.public(), &pro, &seed(1)).expect("i");
        let mut r = Handshake::responder(&server, &pro, &seed(2)).expect("r");
        let mut m1 = [0u8; 256];
        let n1 = i.write(b"", &mut m1).expect("w1");
        assert!(r.read(&m1[..n1], &mut [0u8; 256]).is_err());
    }

    #[test]
    fn debug_redacts() {
        let kp = StaticKeypair::from_secret([7; 32]);
        let s = format!("{kp:?}");
        assert!(s.contains("<redacted>"));
        assert!(!s.contains("0707070707"));
        let ((k, _), _) = pair();
        assert_eq!(format!("{k:?}"), "PacketKey(<redacted>)");
    }

    #[test]
    fn replay_window() {
        let mut w: ReplayWindow = ReplayWindow::new();
        assert!(w.update(0));
        assert!(!w.update(0));
        assert!(w.update(5));
        assert!(w.update(3));
        assert!(!w.update(3));
        assert!(w.update(3000));
        assert!(!w.check(5), "far below the window");
        assert!(w.update(3000 - 100));
        assert!(!w.update(3000 - 100));
        assert!(w.update(1_000_000));
        assert!(!w.check(3000));
        // Every packet number in a long run is accepted once, even out of order.
        let mut w: ReplayWindow = ReplayWindow::new();
        for base in (0..100_000u64).step_by(100) {
            for k in (0..100).rev() {
                assert!(w.update(base + k));
            }
            for k in 0..100 {
                assert!(!w.update(base + k));
            }
        }
    }
}
