//! Wire formats of the MEF transport (`docs/PROTOCOL.md`).
//!
//! Every parser here returns a typed error and never panics on input; emit functions return an
//! error (or, for [`Header::emit`], document a panic) when the caller's buffer is too small.

pub mod frame;
pub mod handshake;
pub mod header;
pub mod varint;

pub use frame::{Ack, Frame, FrameError, Frames, StreamFrame};
pub use header::{HEADER_LEN, Header, HeaderError, Packet, PacketType};
