//! [`QueueDevice`]: the smoltcp [`Device`] behind the splitter. It owns no hardware: incoming
//! packets are pushed by [`TcpSplitter::handle_ip_packet`](super::TcpSplitter::handle_ip_packet),
//! outgoing ones are popped by [`TcpSplitter::poll_ip_packet`](super::TcpSplitter::poll_ip_packet).
//! This is what keeps the splitter sans-IO (smoltcp's own `phy::Loopback` is the model).

use std::collections::VecDeque;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// An in-memory IP-medium device with a bounded transmit queue.
#[derive(Debug)]
pub(crate) struct QueueDevice {
    pub(crate) rx: VecDeque<Vec<u8>>,
    pub(crate) tx: VecDeque<Vec<u8>>,
    mtu: usize,
    max_tx: usize,
    /// Set when smoltcp wanted to transmit while the queue was full, so the splitter must poll
    /// again once the caller drained packets.
    pub(crate) tx_blocked: bool,
}

impl QueueDevice {
    pub(crate) fn new(mtu: usize, max_tx: usize) -> Self {
        Self {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
            max_tx,
            tx_blocked: false,
        }
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Checksums are computed and verified in software (the default): TUN devices hand us
        // packets with real checksums and expect the same back.
        caps
    }

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let buffer = self.rx.pop_front()?;
        Some((
            RxToken { buffer },
            TxToken {
                queue: &mut self.tx,
                max: self.max_tx,
                blocked: &mut self.tx_blocked,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if self.tx.len() >= self.max_tx {
            self.tx_blocked = true;
            return None;
        }
        Some(TxToken {
            queue: &mut self.tx,
            max: self.max_tx,
            blocked: &mut self.tx_blocked,
        })
    }
}

/// A received packet.
pub(crate) struct RxToken {
    buffer: Vec<u8>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.buffer)
    }
}

/// Room for one outgoing packet.
pub(crate) struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
    max: usize,
    blocked: &'a mut bool,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buffer = vec![0; len];
        let result = f(&mut buffer);
        // A reply to a received packet may exceed the soft bound by one; never lose it silently.
        if self.queue.len() >= self.max {
            *self.blocked = true;
        }
        self.queue.push_back(buffer);
        result
    }
}
