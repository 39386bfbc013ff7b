//! What plugs into the simulator: datagrams and sans-IO endpoints.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes of IPv4 + UDP header counted on the wire for every datagram.
pub const IP_UDP_OVERHEAD: usize = 28;

/// A UDP datagram travelling through the simulated network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address (the sending endpoint's bound address).
    pub src: SocketAddr,
    /// Destination address; routers forward on its IP.
    pub dst: SocketAddr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

impl Datagram {
    /// Size on the wire: payload plus IPv4 and UDP headers.
    pub fn wire_len(&self) -> usize {
        self.payload.len() + IP_UDP_OVERHEAD
    }
}

/// A sans-IO protocol endpoint bound to one address of a simulated host.
///
/// The simulator follows quinn-proto's polling discipline: after every input
/// (`handle_datagram`, `handle_timeout`) it drains `poll_transmit` until `None`, then asks
/// `poll_timeout` for the next deadline. Endpoints never read a clock: `now` is passed in.
/// Pacing endpoints simply return `None` from `poll_transmit` until their next send time and
/// report that time from `poll_timeout`.
pub trait Endpoint: Any {
    /// A datagram addressed to this endpoint arrived.
    fn handle_datagram(&mut self, now: Instant, dgram: Datagram);
    /// The deadline returned by `poll_timeout` has passed.
    fn handle_timeout(&mut self, now: Instant);
    /// The next datagram to send now, if any. `src` is filled in by the endpoint.
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram>;
    /// The earliest time this endpoint wants `handle_timeout` (or to be polled again).
    fn poll_timeout(&self) -> Option<Instant>;
}
