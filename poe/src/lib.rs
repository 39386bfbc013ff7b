//! POE consensus (seed 002 §2, "POE 共识算法"), made sound — see `docs/POE.md`.
//!
//! The core (hashing, RFC 6962 Merkle trees, RSA-FDH-VRF of RFC 9381 §4, ed25519 signatures,
//! the lottery, the wire format) is `no_std` + `alloc`, so the `light-client` crate shares it.
//! [`verify`] checks what a header claims (ticket, clerk signature, seal, certificate, link)
//! with the same code in nodes and in the light client. The `std` feature (default) adds the
//! SQLite store and the gossip core and the consensus [`node`].
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod genesis;
pub mod hash;
pub mod lottery;
pub mod members;
pub mod merkle;
mod montgomery;
pub mod sig;
pub mod verify;
pub mod vrf;
pub mod wire;

#[cfg(feature = "std")]
pub mod devnet;
#[cfg(feature = "std")]
pub mod gossip;
#[cfg(feature = "std")]
pub mod node;
#[cfg(feature = "std")]
pub mod store;
