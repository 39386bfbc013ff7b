//! LoRa ingest (issue 6): Semtech UDP packet forwarders ([`semtech`] wire format, [`server`]
//! sans-IO core, [`udp`] tokio adapter) and the LoRaWAN MAC header ([`lorawan`]). The payload
//! decoder (Cayenne LPP) is [`crate::lpp`].

pub mod lorawan;
pub mod semtech;
pub mod server;
pub mod udp;

pub use semtech::{Eui, Packet, RxPk, Stat, TxError, TxPk};
pub use server::{Event, SemtechServer, ServerConfig};
pub use udp::{SemtechUdp, UdpConfig};
