//! MEF transport: a sans-IO connection state machine with in-network rate control, plus a tokio
//! UDP adapter. See `docs/PROTOCOL.md` for the wire format.

pub mod wire;
