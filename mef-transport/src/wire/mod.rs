//! Wire formats of the MEF transport (`docs/PROTOCOL.md`).
//!
//! Every parser here returns a typed error and never panics on input; emit functions may panic
//! only when the caller passes a buffer too small for what it asked to write.

pub mod header;

pub use header::{Header, HeaderError, Packet, PacketType, HEADER_LEN};
