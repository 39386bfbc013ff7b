//! A telehash-style encrypted peer mesh for gateways (issue 5; seed 004: gateways talk to each
//! other "distributedly and securely" through a protocol like telehash, as Filament did).
//!
//! Sans-IO throughout (like `quinn-proto` and boringtun's `Tunn`): every state machine takes
//! bytes and `now` and returns bytes, events and its next deadline; the tokio driver and the
//! `sim-netem` tests are thin loops around the same cores.

pub mod bucket;
pub mod channel;
pub mod discovery;
pub mod driver;
pub mod hashname;
pub mod link;
pub mod node;
pub mod packet;

pub use hashname::{Hashname, HashnameError, Identity};
