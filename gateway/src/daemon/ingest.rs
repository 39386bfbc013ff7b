//! The ingest pipeline: radio frames in, batched durable appends out, and the LoRa PUSH_ACKs
//! released **only after** the append holding their readings has committed.
//!
//! Synchronous and clock-free (every call takes `now_ms`), so the daemon's ingest thread and a
//! benchmark drive it the same way:
//!
//! ```no_run
//! # use std::sync::{Arc, Mutex};
//! # use gateway::daemon::ingest::{Ingest, IngestConfig};
//! # fn demo(store: Arc<Mutex<gateway::store::Store>>, advert: &[u8], now_ms: u64) {
//! let mut ingest = Ingest::new(store, IngestConfig::default());
//! ingest.push_ble([0xa4, 0xc1, 0x38, 0, 0, 1], Some(-60), advert, now_ms);
//! if ingest.should_flush(now_ms) {
//!     let flushed = ingest.flush(now_ms);
//!     for (to, ack) in flushed.acks { /* send `ack` to `to` */ }
//! }
//! # }
//! ```
//!
//! - **Batching**: readings collect in memory until [`IngestConfig::batch_readings`] are
//!   pending or the oldest has waited [`IngestConfig::batch_interval_ms`]; then
//!   [`Ingest::flush`] appends them in one [`Store::append`] (one fsync). The store reaches its
//!   throughput only with calls of a few hundred readings (see [`crate::store`]).
//! - **Acknowledge after durable**: [`Ingest::push_semtech`] runs the sans-IO
//!   [`SemtechServer`]; a PULL_ACK is returned at once (it acknowledges nothing stored), but a
//!   PUSH_ACK is *held* with the pending batch and returned by the `flush` whose append
//!   committed that datagram's readings. If the append fails (queue full, disk full, I/O), the
//!   readings are dropped, the held PUSH_ACKs are **not** sent (the forwarder sees a missing
//!   acknowledgement) and the failure is counted per source. BLE has no acknowledgements.
//! - **Parse errors** never stop anything: they are counted per source and logged with the
//!   reason (debug for each, warn at the 1st, 2nd, 4th, 8th, ... of a source).
//! - **BTHome encryption**: one [`Decryptor`] per configured device (bind key). Its replay
//!   counter is kept **in memory only**: after a restart the first advert of each device is
//!   accepted whatever its counter (replays of frames already stored within the store's
//!   de-duplication window are still dropped as duplicates there). A device with a bind key
//!   that sends a plain advert is rejected (no downgrade).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::bthome::{self, Decryptor};
use crate::lora::semtech::Identifier;
use crate::lora::server::{Event, SemtechServer, ServerConfig};
use crate::lpp::{self, LoraDevices};
use crate::reading::{Reading, Source};
use crate::store::{Store, StoreError};

/// Locks the shared store, recovering from a poisoned lock (a panicking holder cannot leave a
/// SQLite transaction half-committed: the connection rolls it back).
pub fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the pipeline batches and what it can decode.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Append when this many readings are pending. Default 500.
    pub batch_readings: usize,
    /// Append when the oldest pending reading or held ack is this old, ms. Default 20.
    pub batch_interval_ms: u64,
    /// BTHome bind keys by MAC (as printed).
    pub ble_keys: Vec<([u8; 6], [u8; 16])>,
    /// LoRa devices whose payloads can be read.
    pub lora: LoraDevices,
    /// Semtech server limits.
    pub server: ServerConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_readings: 500,
            batch_interval_ms: 20,
            ble_keys: Vec::new(),
            lora: LoraDevices::new(),
            server: ServerConfig::default(),
        }
    }
}

/// Per-source counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Frames received (BLE adverts, LoRa uplinks).
    pub frames: u64,
    /// Readings decoded and queued for an append.
    pub readings: u64,
    /// Readings refused by the store (queue full, disk full, I/O error): not acknowledged.
    pub rejected: u64,
    /// Frames that could not be (entirely) decoded.
    pub parse_errors: u64,
}

/// The pipeline's counters (a snapshot is published for metrics and status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestCounters {
    /// BLE.
    pub ble: SourceCounters,
    /// LoRa.
    pub lora: SourceCounters,
    /// Readings stored by this process (all sources).
    pub appended: u64,
    /// Readings dropped by the store as duplicates (all sources).
    pub duplicates: u64,
    /// Appends done.
    pub flushes: u64,
    /// Appends that failed.
    pub failed_flushes: u64,
    /// PUSH_ACKs sent (after their readings committed).
    pub push_acks_sent: u64,
    /// PUSH_ACKs withheld because the append failed.
    pub push_acks_withheld: u64,
    /// The last append failed with a full queue.
    pub queue_full: bool,
    /// The last append failed with a full disk (or the file cap).
    pub disk_full: bool,
    /// Semtech datagrams handled.
    pub datagrams: u64,
    /// Packet forwarders known.
    pub forwarders: u64,
}

/// What a [`Ingest::flush`] did.
#[derive(Debug, Default)]
pub struct Flushed {
    /// PUSH_ACKs to send now (destination, bytes): their readings are durable.
    pub acks: Vec<(SocketAddr, Vec<u8>)>,
    /// Readings stored.
    pub appended: usize,
    /// Readings dropped as duplicates.
    pub duplicates: usize,
    /// The append's error, if it failed (the readings were dropped, the acks withheld).
    pub error: Option<StoreError>,
}

/// The ingest pipeline (see the [module docs](self)).
#[derive(Debug)]
pub struct Ingest {
    store: Arc<Mutex<Store>>,
    cfg: IngestConfig,
    decryptors: HashMap<[u8; 6], Decryptor>,
    server: SemtechServer,
    pending: Vec<Reading>,
    pending_per_source: [u64; 2],
    held_acks: Vec<(SocketAddr, Vec<u8>)>,
    /// When the oldest pending reading or held ack arrived.
    oldest_ms: Option<u64>,
    counters: IngestCounters,
}

fn idx(s: Source) -> usize {
    match s {
        Source::Ble => 0,
        Source::Lora => 1,
    }
}

impl Ingest {
    /// A pipeline appending to `store`.
    pub fn new(store: Arc<Mutex<Store>>, cfg: IngestConfig) -> Ingest {
        let decryptors = cfg
            .ble_keys
            .iter()
            .map(|(mac, key)| (*mac, Decryptor::new(*mac, key)))
            .collect();
        let server = SemtechServer::new(cfg.server.clone());
        Ingest {
            store,
            cfg: IngestConfig {
                batch_readings: cfg.batch_readings.max(1),
                ..cfg
            },
            decryptors,
            server,
            pending: Vec::new(),
            pending_per_source: [0; 2],
            held_acks: Vec::new(),
            oldest_ms: None,
            counters: IngestCounters::default(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> &IngestCounters {
        &self.counters
    }

    /// The sans-IO Semtech server (forwarder table, its counters).
    pub fn semtech(&self) -> &SemtechServer {
        &self.server
    }

    /// Readings waiting for the next append.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// PUSH_ACKs waiting for the next append.
    pub fn held_acks(&self) -> usize {
        self.held_acks.len()
    }

    fn source(&mut self, s: Source) -> &mut SourceCounters {
        match s {
            Source::Ble => &mut self.counters.ble,
            Source::Lora => &mut self.counters.lora,
        }
    }

    fn parse_error(&mut self, s: Source, what: std::fmt::Arguments<'_>) {
        let c = self.source(s);
        c.parse_errors += 1;
        let n = c.parse_errors;
        if n.is_power_of_two() {
            tracing::warn!("{s:?} parse error ({n} so far): {what}");
        } else {
            tracing::debug!("{s:?} parse error: {what}");
        }
    }

    fn queue(&mut self, readings: Vec<Reading>, now_ms: u64) -> usize {
        let n = readings.len();
        for r in &readings {
            self.pending_per_source[idx(r.source)] += 1;
        }
        if n > 0 && self.oldest_ms.is_none() {
            self.oldest_ms = Some(now_ms);
        }
        self.pending.extend(readings);
        n
    }

    /// One BTHome service data value (UUID 0xFCD2, without the UUID) from `mac` (as printed),
    /// received at `now_ms`. Returns the readings queued (0 after a parse error, which is
    /// counted and logged).
    pub fn push_ble(&mut self, mac: [u8; 6], rssi: Option<i16>, data: &[u8], now_ms: u64) -> usize {
        self.counters.ble.frames += 1;
        let parsed = match self.decryptors.get_mut(&mac) {
            Some(d) => d.decrypt(data),
            None => bthome::parse(data),
        };
        let adv = match parsed {
            Ok(a) => a,
            Err(e) => {
                let m = super::config::format_mac(mac);
                self.parse_error(Source::Ble, format_args!("{m}: {e}"));
                return 0;
            }
        };
        let readings = bthome::to_readings(&adv, mac, now_ms, rssi);
        self.counters.ble.readings += readings.len() as u64;
        self.queue(readings, now_ms)
    }

    /// One event of the Semtech server (an uplink is decoded into readings; a stat or TX_ACK is
    /// only logged). No acknowledgement is involved: [`Ingest::push_semtech`] handles those.
    /// Returns the readings queued.
    pub fn push_lora(&mut self, event: &Event, now_ms: u64) -> usize {
        match event {
            Event::Uplink {
                gateway_eui,
                rxpk,
                payload,
            } => {
                self.counters.lora.frames += 1;
                let decoded = lpp::to_readings(payload, rxpk, *gateway_eui, now_ms, &self.cfg.lora);
                if let Some(raw) = &decoded.raw {
                    let dev = raw.device.map(|d| d.to_string()).unwrap_or_default();
                    self.parse_error(
                        Source::Lora,
                        format_args!("uplink {dev} fcnt {:?}: {:?}", raw.frame_id, raw.reason),
                    );
                }
                self.counters.lora.readings += decoded.readings.len() as u64;
                self.queue(decoded.readings, now_ms)
            }
            Event::Stat { gateway_eui, stat } => {
                tracing::debug!("forwarder {gateway_eui:02x?} stat: {stat:?}");
                0
            }
            Event::TxAck {
                gateway_eui,
                token,
                error,
            } => {
                tracing::debug!("forwarder {gateway_eui:02x?} TX_ACK {token}: {error:?}");
                0
            }
        }
    }

    /// One Semtech UDP datagram from `from`. Returns a reply to send **now** (PULL_ACK); a
    /// PUSH_ACK is held until the flush that makes the datagram's readings durable.
    pub fn push_semtech(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        self.counters.datagrams += 1;
        let handled = self.server.handle_datagram(now_ms, from, datagram);
        if let Some(e) = &handled.dropped {
            self.parse_error(Source::Lora, format_args!("datagram from {from}: {e}"));
        }
        for event in &handled.events {
            self.push_lora(event, now_ms);
        }
        self.counters.forwarders = self.server.forwarders().count() as u64;
        let reply = handled.reply?;
        if reply.get(3).copied().and_then(Identifier::from_byte) == Some(Identifier::PushAck) {
            if self.oldest_ms.is_none() {
                self.oldest_ms = Some(now_ms);
            }
            self.held_acks.push((from, reply));
            None
        } else {
            Some(reply)
        }
    }

    /// Whether [`Ingest::flush`] is due: enough readings pending, or the oldest pending reading
    /// or held ack has waited the batch interval.
    pub fn should_flush(&self, now_ms: u64) -> bool {
        self.pending.len() >= self.cfg.batch_readings
            || self.deadline_ms().is_some_and(|d| now_ms >= d)
    }

    /// When the next flush is due by time (`None` when nothing is pending).
    pub fn deadline_ms(&self) -> Option<u64> {
        self.oldest_ms
            .map(|t| t.saturating_add(self.cfg.batch_interval_ms))
    }

    /// Appends everything pending in one durable [`Store::append`], then releases the held
    /// PUSH_ACKs — or, if the append failed, drops the readings and withholds the acks (counted,
    /// logged, and returned in [`Flushed::error`]; never fatal).
    pub fn flush(&mut self, _now_ms: u64) -> Flushed {
        let readings = std::mem::take(&mut self.pending);
        let per_source = std::mem::take(&mut self.pending_per_source);
        let acks = std::mem::take(&mut self.held_acks);
        self.oldest_ms = None;
        let mut out = Flushed::default();
        if readings.is_empty() {
            self.counters.push_acks_sent += acks.len() as u64;
            out.acks = acks;
            return out;
        }
        let result = lock(&self.store).append(&readings);
        self.counters.flushes += 1;
        match result {
            Ok(o) => {
                self.counters.appended += o.accepted as u64;
                self.counters.duplicates += o.duplicates as u64;
                self.counters.queue_full = false;
                self.counters.disk_full = false;
                self.counters.push_acks_sent += acks.len() as u64;
                out.appended = o.accepted;
                out.duplicates = o.duplicates;
                out.acks = acks;
            }
            Err(e) => {
                self.counters.failed_flushes += 1;
                self.counters.ble.rejected += per_source[0];
                self.counters.lora.rejected += per_source[1];
                self.counters.push_acks_withheld += acks.len() as u64;
                self.counters.queue_full = e.is_queue_full();
                self.counters.disk_full = matches!(e, StoreError::DiskFull { .. });
                tracing::warn!(
                    "append of {} readings failed, dropped ({} BLE, {} LoRa; {} PUSH_ACKs \
                     withheld): {e}",
                    readings.len(),
                    per_source[0],
                    per_source[1],
                    acks.len()
                );
                out.error = Some(e);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Limits;

    fn store(name: &str, limits: Limits) -> (Arc<Mutex<Store>>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("gw-ingest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let s = Store::open(dir.join("q.db"), limits, key).expect("open");
        (Arc::new(Mutex::new(s)), dir)
    }

    fn push_data(token: u16, dev_addr: u32, fcnt: u16, temp: f64) -> Vec<u8> {
        let lpp = {
            let mut e = lpp::Encoder::new();
            e.add_temperature(1, temp).expect("lpp");
            e.finish()
        };
        let phy = super::super::simulate::lorawan_uplink(dev_addr, fcnt, 1, &lpp);
        super::super::simulate::push_data(
            token,
            [1; 8],
            vec![super::super::simulate::rxpk(&phy, 1000)],
        )
    }

    #[test]
    fn push_ack_is_held_until_the_append_commits() {
        let (st, dir) = store("held", Limits::default());
        let cfg = IngestConfig {
            lora: LoraDevices::new().with_plaintext(0x2601_1bda),
            ..IngestConfig::default()
        };
        let mut ingest = Ingest::new(st.clone(), cfg);
        let from: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert_eq!(
            ingest.push_semtech(from, &push_data(7, 0x2601_1bda, 1, 21.5), 100),
            None
        );
        assert_eq!(ingest.pending(), 1);
        assert_eq!(ingest.held_acks(), 1);
        assert!(!ingest.should_flush(110));
        assert_eq!(lock(&st).stats(0, 4).expect("stats").queued, 0);
        assert!(ingest.should_flush(120));
        let f = ingest.flush(120);
        assert_eq!(f.appended, 1);
        assert_eq!(f.acks.len(), 1);
        assert_eq!(f.acks[0].1[1..3], 7u16.to_be_bytes());
        assert_eq!(lock(&st).stats(0, 4).expect("stats").queued, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_queue_withholds_the_ack() {
        let limits = Limits {
            max_readings: 1,
            ..Limits::default()
        };
        let (st, dir) = store("full", limits);
        let cfg = IngestConfig {
            lora: LoraDevices::new().with_plaintext(0x2601_1bda),
            ..IngestConfig::default()
        };
        let mut ingest = Ingest::new(st, cfg);
        let from: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        ingest.push_semtech(from, &push_data(1, 0x2601_1bda, 1, 20.0), 0);
        assert_eq!(ingest.flush(0).acks.len(), 1);
        ingest.push_semtech(from, &push_data(2, 0x2601_1bda, 2, 20.1), 1);
        let f = ingest.flush(1);
        assert!(f.acks.is_empty());
        assert!(f.error.is_some_and(|e| e.is_queue_full()));
        let c = ingest.counters();
        assert!(c.queue_full);
        assert_eq!(c.lora.rejected, 1);
        assert_eq!(c.push_acks_withheld, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ble_parse_errors_are_counted_and_encrypted_adverts_decrypted() {
        let (st, dir) = store("ble", Limits::default());
        let mac = [0xa4, 0xc1, 0x38, 0, 0, 1];
        let key = [9u8; 16];
        let mut ingest = Ingest::new(
            st,
            IngestConfig {
                ble_keys: vec![(mac, key)],
                ..IngestConfig::default()
            },
        );
        assert_eq!(ingest.push_ble([1; 6], None, &[0xff], 0), 0);
        let mut plain = bthome::encode_value(0x02, 21.3).expect("enc");
        plain.extend(bthome::encode_value(0x03, 40.0).expect("enc"));
        let adv = bthome::encrypt(&key, mac, false, 5, &plain).expect("encrypt");
        assert_eq!(ingest.push_ble(mac, Some(-50), &adv, 1), 2);
        // Replay.
        assert_eq!(ingest.push_ble(mac, Some(-50), &adv, 2), 0);
        assert_eq!(ingest.counters().ble.parse_errors, 2);
        assert_eq!(ingest.flush(3).appended, 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
