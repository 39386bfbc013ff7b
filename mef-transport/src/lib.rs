//! MEF transport: a sans-IO connection state machine with in-network rate control, plus a tokio
//! UDP adapter.
//!
//! * [`wire`]: the 36-byte MEF header routers read and stamp, and the encrypted frames.
//! * [`crypto`]: Noise IK handshake, ChaCha20-Poly1305 packet protection, anti-replay.
//! * [`rate`] and [`cubic`]: pace at the rate routers stamp (RCP-style), or CUBIC when none does.
//! * [`recovery`] and [`streams`]: RFC 9002 loss recovery, ordered reliable streams.
//! * [`Endpoint`] / [`Connection`]: the sans-IO API (quinn-proto's shape).
//! * `tokio_io` (feature `runtime`): `MefEndpoint`, `Connection`, `MefStream`.
//!
//! See `docs/PROTOCOL.md` for the wire format and the reasoning.

pub mod config;
pub mod connection;
pub mod crypto;
pub mod cubic;
pub mod endpoint;
pub mod rangeset;
pub mod rate;
pub mod recovery;
pub mod streams;
pub mod wire;

pub use config::Config;
pub use connection::{
    CloseReason, ConnectError, Connection, ConnectionHandle, ConnectionStats, Event,
};
pub use crypto::StaticKeypair;
pub use endpoint::{Endpoint, EndpointStats, Transmit, TransportTotals};
pub use rate::RateMode;
pub use streams::{ReadError, Side, StreamId, WriteError};
#[cfg(feature = "runtime")]
pub mod tokio_io;
