//! Firmware distribution (issue 7; seed 004: the manufacturer records the hash of the latest
//! firmware on chain, devices fetch the image from a content-addressed peer-to-peer file system
//! and check it against the hash). "IPFS-style" means IPFS-compatible: an image imported here
//! has the CID `ipfs add --cid-version=1` gives it, and moves in the CAR files IPFS tools use.
//!
//! * [`unixfs`]: the importer (kubo's CIDs), the verifying reader, the dag-pb codec.
//! * [`car`]: CAR v1. [`blockstore`]: the crash-safe on-disk block store, pins and GC.
//! * [`manifest`]: the manufacturer's signed manifest. [`update`]: the update decision and the
//!   verified, atomic staging of an image.
//! * [`exchange`]: the Bitswap-1.2-style block exchange (sans-IO session, server, per-device
//!   engine).
//! * `sim` (feature `sim`): the roll-out of an image to many gateways over the mesh on
//!   `sim-netem`.
//!
//! The map and the design are in `docs/FIRMWARE.md`.

pub mod blockstore;
pub mod car;
pub mod exchange;
pub mod manifest;
#[cfg(feature = "sim")]
pub mod sim;
pub mod unixfs;
pub mod update;
