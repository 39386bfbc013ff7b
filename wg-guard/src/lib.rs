//! Handshake guards from the WireGuard paper ("WireGuard: Next Generation Kernel Network
//! Tunnel", J. A. Donenfeld, NDSS 2017; section numbers below refer to it), shared by the
//! router tunnel (`mef-router::tunnel`) and the mesh links (`mesh::link`):
//!
//! * [`Tai64N`]: the TAI64N timestamp carried encrypted in every initiation so a responder can
//!   reject replayed initiations (§5.1 "Replay attack", §5.4.2), and [`WallClock`], the sans-IO
//!   clock that produces them;
//! * [`cookie`]: MAC1/MAC2 on handshake messages and cookie replies under load (§5.3, §5.4.4,
//!   §5.4.7), so a responder drops random bytes before any Diffie-Hellman and, under load, only
//!   does Diffie-Hellman for senders that proved they receive at their source address.
//!
//! Everything here is sans-IO: no clock is read except by [`Tai64N::now`], which only drivers
//! call; cores get timestamps passed in.

pub mod cookie;
mod tai64n;

pub use tai64n::{TAI64N_LEN, Tai64N, WallClock};
