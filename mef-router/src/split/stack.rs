//! [`Stack`]: one split connection's own smoltcp interface and socket.
//!
//! smoltcp finds the socket for an incoming segment, and the sockets with something to send, by
//! walking its whole [`SocketSet`]; `poll_at` walks it too. With one interface for every
//! connection, each LAN packet cost time proportional to the number of connections held
//! (thousands under a short-flow load), and the router's single loop fell behind. So the
//! [`TcpSplitter`](super::TcpSplitter) gives every connection a [`Stack`] of its own — an
//! [`Interface`] (a few hundred bytes: no neighbour cache on an IP medium) with a one-socket set
//! — dispatches packets to it by their address pair, and keeps the stacks' deadlines in a timer
//! set: a packet or a timer costs O(log n), whatever the number of connections.

use std::net::Ipv4Addr;

use smoltcp::iface::{Config, Context, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::device::QueueDevice;
use super::error::SplitError;

/// An interface answering for every address (see the [`splitter`](super::splitter) docs):
/// `local_addr` as a /32, a default route through it, and `any_ip`.
pub(crate) fn interface(
    local_addr: Ipv4Addr,
    random_seed: u64,
    device: &mut QueueDevice,
    now: SmolInstant,
) -> Result<Interface, SplitError> {
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = random_seed;
    let mut iface = Interface::new(config, device, now);
    let mut pushed = Ok(());
    iface.update_ip_addrs(|addrs| {
        pushed = addrs.push(IpCidr::new(IpAddress::Ipv4(local_addr), 32));
    });
    pushed.map_err(|_| SplitError::InvalidConfig("interface address table full"))?;
    iface
        .routes_mut()
        .add_default_ipv4_route(local_addr)
        .map_err(|_| SplitError::InvalidConfig("interface route table full"))?;
    iface.set_any_ip(true);
    Ok(iface)
}

/// One connection's interface and its single TCP socket.
pub(crate) struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
}

impl Stack {
    /// A stack around `socket` (not yet listening or connecting).
    pub(crate) fn new(
        local_addr: Ipv4Addr,
        random_seed: u64,
        device: &mut QueueDevice,
        now: SmolInstant,
        socket: tcp::Socket<'static>,
    ) -> Result<Self, SplitError> {
        let iface = interface(local_addr, random_seed, device, now)?;
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let handle = sockets.add(socket);
        Ok(Self {
            iface,
            sockets,
            handle,
        })
    }

    /// The socket.
    pub(crate) fn socket(&self) -> &tcp::Socket<'static> {
        self.sockets.get::<tcp::Socket>(self.handle)
    }

    /// The socket, mutably.
    pub(crate) fn socket_mut(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }

    /// The socket and the interface context `connect` needs.
    pub(crate) fn socket_and_context(&mut self) -> (&mut tcp::Socket<'static>, &mut Context) {
        (
            self.sockets.get_mut::<tcp::Socket>(self.handle),
            self.iface.context(),
        )
    }

    /// Processes what `device` received and lets the socket transmit into it.
    pub(crate) fn poll(&mut self, now: SmolInstant, device: &mut QueueDevice) {
        self.iface.poll(now, device, &mut self.sockets);
    }

    /// When the socket next needs [`poll`](Self::poll) (retransmission, delayed ACK, TIME-WAIT,
    /// keep-alive), if ever.
    pub(crate) fn poll_at(&mut self, now: SmolInstant) -> Option<SmolInstant> {
        self.iface.poll_at(now, &self.sockets)
    }
}

/// A 64-bit mix (splitmix64's finaliser) deriving each stack's seed from the splitter's secret
/// seed and the connection id, so that initial sequence numbers stay unpredictable per connection
/// (RFC 6528) without one shared random stream.
pub(crate) fn stack_seed(secret: u64, id: u64) -> u64 {
    let mut z = secret ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
