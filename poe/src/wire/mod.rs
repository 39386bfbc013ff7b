//! The wire format of POE messages (docs/POE.md): plain data types in [`types`]; encoding and
//! decoding with typed errors in `codec` (to be written).

pub mod types;

pub use types::*;
