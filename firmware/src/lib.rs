//! Firmware distribution (issue 7; seed 004: the manufacturer records the hash of the latest
//! firmware on chain, devices fetch the image from a content-addressed peer-to-peer file system
//! and check it against the hash). "IPFS-style" means IPFS-compatible: an image imported here
//! has the CID `ipfs add --cid-version=1` gives it, and moves in the CAR files IPFS tools use.

pub mod blockstore;
pub mod car;
pub mod exchange;
pub mod manifest;
#[cfg(feature = "sim")]
pub mod sim;
pub mod unixfs;
pub mod update;
