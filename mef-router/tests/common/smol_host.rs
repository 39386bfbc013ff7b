//! A smoltcp host on an in-memory packet-queue device, shared by the split and bridge tests
//! (and the `bridge_throughput` example): the test moves IP packets between `dev.tx` and the
//! other side's `dev.rx` itself, on a virtual clock.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::Duration;

use sha2::{Digest, Sha256};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};

#[derive(Default)]
pub(crate) struct Queues {
    pub(crate) rx: VecDeque<Vec<u8>>,
    pub(crate) tx: VecDeque<Vec<u8>>,
}

pub(crate) struct Rx(Vec<u8>);
pub(crate) struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = 1500;
        caps
    }
    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
}

pub(crate) struct Host {
    pub(crate) iface: Interface,
    pub(crate) dev: Queues,
    pub(crate) sockets: SocketSet<'static>,
}

impl Host {
    pub(crate) fn new(addr: Ipv4Address, gateway: Ipv4Address) -> Self {
        let mut dev = Queues::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = u64::from(addr.to_bits());
        let mut iface = Interface::new(config, &mut dev, smoltcp::time::Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(addr), 24))
                .expect("address");
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(gateway)
            .expect("route");
        Self {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
        }
    }

    /// A TCP socket with `buffer` bytes each way, not yet added.
    pub(crate) fn socket(&self, buffer: usize) -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffer]),
            tcp::SocketBuffer::new(vec![0; buffer]),
        )
    }

    /// Adds a TCP socket with 256 KiB buffers.
    pub(crate) fn add_socket(&mut self) -> SocketHandle {
        let s = self.socket(256 * 1024);
        self.sockets.add(s)
    }

    pub(crate) fn connect(&mut self, h: SocketHandle, remote: SocketAddrV4, local_port: u16) {
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(
                cx,
                (IpAddress::Ipv4(*remote.ip()), remote.port()),
                local_port,
            )
            .expect("connect");
    }

    pub(crate) fn listen(&mut self, port: u16) -> SocketHandle {
        let h = self.add_socket();
        self.tcp(h).listen(port).expect("listen");
        h
    }

    pub(crate) fn poll(&mut self, t: Duration) {
        let ts = smoltcp::time::Instant::from_micros(t.as_micros() as i64);
        self.iface.poll(ts, &mut self.dev, &mut self.sockets);
    }

    pub(crate) fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }
}

/// A bulk application on one socket: sends `out`, closes, hashes what it receives, and notes
/// when the first and last bytes arrived.
pub struct App {
    pub handle: SocketHandle,
    pub out: Vec<u8>,
    pub sent: usize,
    pub closed: bool,
    pub hasher: Sha256,
    pub received: usize,
    pub first_byte: Option<Duration>,
    pub last_byte: Option<Duration>,
}

impl App {
    /// An application that will send `out` on `handle`.
    pub fn new(handle: SocketHandle, out: Vec<u8>) -> Self {
        Self {
            handle,
            out,
            sent: 0,
            closed: false,
            hasher: Sha256::new(),
            received: 0,
            first_byte: None,
            last_byte: None,
        }
    }

    /// Sends what the socket takes, closes once all is sent, reads what arrived (at `t`).
    pub fn run(&mut self, host: &mut Host, t: Duration) {
        let s = host.tcp(self.handle);
        if s.can_send() && self.sent < self.out.len() {
            self.sent += s.send_slice(&self.out[self.sent..]).expect("send");
        }
        if self.sent == self.out.len() && !self.closed && s.may_send() {
            s.close();
            self.closed = true;
        }
        while s.can_recv() {
            let mut buf = [0u8; 16384];
            let n = s.recv_slice(&mut buf).expect("recv");
            self.hasher.update(&buf[..n]);
            self.received += n;
            if n > 0 {
                self.first_byte.get_or_insert(t);
                self.last_byte = Some(t);
            }
        }
    }

    /// SHA-256 of everything received.
    pub fn digest(&self) -> Vec<u8> {
        self.hasher.clone().finalize().to_vec()
    }
}
