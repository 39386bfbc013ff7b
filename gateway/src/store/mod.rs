//! The gateway's durable store-and-forward queue: SQLite (bundled), write-ahead log,
//! `synchronous = FULL`.
//!
//! # Acknowledgement and durability
//!
//! - [`Store::append`] writes all readings of one call in **one** SQLite transaction and
//!   returns after the commit is on disk (WAL + `synchronous = FULL`: fsynced). That return is
//!   the moment the readings are **acknowledged**: after a crash (process killed, power cut)
//!   they are present, each exactly once; a call cut by a crash is entirely absent.
//! - The caller batches: what arrived together (one radio burst, a few milliseconds of
//!   frames) goes in one call. One call costs one commit (fsync of the WAL), so throughput is
//!   roughly `call size / commit time`. Measured on the development machine (a shared
//!   2-core VM, `tests/store_basic.rs` prints the figures): 1 reading per call ≈ 160/s,
//!   50 ≈ 7,500/s, 500 ≈ 49,000/s, 2,000 ≈ 98,000/s. The ≥ 20,000 readings/s target
//!   therefore needs calls of **about 200–500 readings**: the daemon should collect for a
//!   short interval (≈ 10–25 ms) or up to ~500 readings, whichever comes first, and append
//!   once (the readings are acknowledged to nobody before that commit).
//! - The queue is **bounded** ([`Limits::max_readings`], [`Limits::max_bytes`], over queued
//!   and in-flight readings): a call that does not fit is refused whole with
//!   [`StoreError::QueueFull`], counted, and reported in [`QueueStats`]; nothing is ever
//!   dropped silently. A full disk gives [`StoreError::DiskFull`].
//! - Sequence numbers (`seq`) increase in append order and are never reused.
//! - Duplicate frames are dropped and counted (see [`dedup`]).
//!
//! # Forwarding: exactly once to a well-behaved uplink, at least once across crashes
//!
//! [`Store::next_batch`] takes the oldest unsent readings (in `seq` order), records the batch
//! durably (id and `seq` range) and returns it signed (see [`Batch`] for the signed bytes).
//! The readings stay stored, **in flight**, until [`Store::confirm`] deletes them in one
//! transaction. [`Store::requeue_in_flight`] (after an uplink failure; implicitly on every
//! open) makes every unconfirmed batch due again: `next_batch` then returns those first,
//! oldest first, with the **same id, range and signature**, before any new batch, so order is
//! kept and nothing is lost.
//!
//! The boundary: a crash (or a lost acknowledgement) after the uplink accepted a batch but
//! before `confirm` committed re-sends that batch. Delivery is therefore exactly once to an
//! uplink that acknowledges reliably and at least once otherwise; **the receiver de-duplicates
//! by (gateway key, `first_seq`)** (or batch id), which identifies a batch for ever.
//!
//! # One writer
//!
//! A `Store` is one SQLite connection (`Send`, not `Sync`) and keeps counters in memory; one
//! process should own the file. Readers (tools) may open it too.

pub mod batch;
pub mod dedup;
mod error;
mod queue;
mod schema;
mod stats;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

pub use batch::{BATCH_DOMAIN, Batch, BatchError, QueuedReading, encode_reading, encoded_len};
pub use error::StoreError;
pub use stats::{DeviceSeen, QueueStats, SourceStats};

use crate::reading::{DeviceId, Reading, Source};
use error::sql;
use queue::{to_sql, u64_col};

/// With [`Limits::max_file_bytes`], forwarding (`next_batch`, `confirm`) may grow the file
/// this much past the cap, so a queue that filled the capped file can always be drained.
const CAP_HEADROOM: u64 = 1 << 20;

/// Bounds of the queue and the de-duplication window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most readings stored (queued + in flight). Default 1,000,000.
    pub max_readings: u64,
    /// Most encoded bytes stored ([`encoded_len`] per reading). Default 256 MiB.
    pub max_bytes: u64,
    /// De-duplication window, ms (see [`dedup`]). Default 60,000.
    pub dedup_window_ms: u64,
    /// Most rows in the de-duplication window. Default 100,000.
    pub dedup_max_entries: u64,
    /// Most devices in the last-seen table. Default 4,096.
    pub max_devices: u64,
    /// Cap on the database file's size (`PRAGMA max_page_count`), e.g. to leave room on a
    /// small SD card: an append that would grow the file past it fails with
    /// [`StoreError::DiskFull`] exactly as a full disk does. Forwarding may use 1 MiB more,
    /// so a capped-full queue can still be drained. Default `None` (SQLite's own limit).
    pub max_file_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_readings: 1_000_000,
            max_bytes: 256 << 20,
            dedup_window_ms: 60_000,
            dedup_max_entries: 100_000,
            max_devices: 4_096,
            max_file_bytes: None,
        }
    }
}

/// What [`Store::append`] did (all of it durable when returned).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// Readings stored (acknowledged).
    pub accepted: usize,
    /// Readings dropped as duplicates.
    pub duplicates: usize,
    /// Sequence numbers of the accepted readings (contiguous, in the call's order); `None`
    /// when none was accepted.
    pub seqs: Option<RangeInclusive<u64>>,
}

/// Counter names in the `counters` table.
mod counter {
    pub const APPENDED: &str = "appended";
    pub const DUPLICATES: &str = "duplicates";
    pub const CONFIRMED: &str = "confirmed";
    pub const FULL_REJECTIONS: &str = "full_rejections";
    pub const FULL_REJECTED_CALLS: &str = "full_rejected_calls";
    pub const APPENDED_BLE: &str = "appended.ble";
    pub const APPENDED_LORA: &str = "appended.lora";
}

/// Totals kept in memory and persisted in `counters`.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    appended: u64,
    duplicates: u64,
    confirmed: u64,
    full_rejections: u64,
    full_rejected_calls: u64,
    appended_ble: u64,
    appended_lora: u64,
}

/// The durable queue (see the [module docs](self)).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    limits: Limits,
    key: SigningKey,
    /// Readings and bytes stored (queued + in flight).
    stored: u64,
    stored_bytes: u64,
    /// Readings and bytes in batches.
    batched: u64,
    batched_bytes: u64,
    /// Highest `last_seq` of any batch made (readings above it are unsent).
    batched_upto: u64,
    /// Batches with `id <= handed_upto` were handed out since the last open or requeue.
    handed_upto: u64,
    dedup_entries: u64,
    /// `(pages, headroom pages)` from [`Limits::max_file_bytes`].
    page_cap: Option<(u64, u64)>,
    counters: Counters,
    /// Refused readings and calls not yet written to `counters`.
    pending_refusals: (u64, u64),
    last_refused: bool,
}

impl Store {
    /// Opens (or creates) the store at `path`: WAL, `synchronous = FULL`, schema migrations,
    /// and the in-memory totals. `key` is the gateway's identity key that signs batches.
    /// Every batch left unconfirmed by a previous run is due again (as after
    /// [`Store::requeue_in_flight`]).
    ///
    /// Errors: [`StoreError::Config`] for a zero limit, [`StoreError::Corrupt`] for a damaged
    /// file, [`StoreError::NotAStore`] for another application's file,
    /// [`StoreError::UnsupportedVersion`], [`StoreError::NoWal`], [`StoreError::Sqlite`].
    pub fn open(
        path: impl AsRef<Path>,
        limits: Limits,
        key: SigningKey,
    ) -> Result<Store, StoreError> {
        if limits.max_readings == 0 || limits.max_bytes == 0 || limits.dedup_max_entries == 0 {
            return Err(StoreError::Config {
                reason: format!("limits must be positive: {limits:?}"),
            });
        }
        let path = path.as_ref().to_owned();
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open"))?;
        sqlite_durable::configure(&conn, false)?;
        schema::migrate(&mut conn)?;
        let page_cap = match limits.max_file_bytes {
            None => None,
            Some(max) => {
                let page: i64 = conn
                    .pragma_query_value(None, "page_size", |r| r.get(0))
                    .map_err(sql("open: page_size"))?;
                let page = page.max(512) as u64;
                Some(((max / page).max(1), CAP_HEADROOM / page))
            }
        };
        let store = Store {
            conn,
            path,
            limits,
            key,
            stored: 0,
            stored_bytes: 0,
            batched: 0,
            batched_bytes: 0,
            batched_upto: 0,
            handed_upto: 0,
            dedup_entries: 0,
            page_cap,
            counters: Counters::default(),
            pending_refusals: (0, 0),
            last_refused: false,
        };
        let mut store = store;
        store.load_totals()?;
        store.set_page_cap(true)?;
        Ok(store)
    }

    /// The path the store was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The limits the store was opened with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The gateway's public key (the one batches are signed with).
    pub fn gateway_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema::version(&self.conn)
    }

    /// Appends `readings` (what arrived together) in one transaction, durable when this
    /// returns `Ok`: that is the acknowledgement. Duplicates (see [`dedup`]) are
    /// dropped and counted; the others get consecutive sequence numbers in the call's order.
    ///
    /// Errors (nothing of the call is written): [`StoreError::QueueFull`] when the accepted
    /// readings do not fit the limits (the call is refused whole and counted);
    /// [`StoreError::InvalidReading`] when a string exceeds 65535 bytes or a time or frequency
    /// exceeds `i64::MAX`; [`StoreError::DiskFull`] / [`StoreError::Sqlite`] on I/O errors.
    pub fn append(&mut self, readings: &[Reading]) -> Result<AppendOutcome, StoreError> {
        if readings.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let mut times = Vec::with_capacity(readings.len());
        for (index, r) in readings.iter().enumerate() {
            times.push(validate(index, r)?);
        }
        let limits = self.limits;
        self.set_page_cap(false)?;
        let result = self.append_capped(readings, &times, limits);
        self.set_page_cap(true)?;
        result
    }

    /// [`Store::append`] after validation, with the file capped for appends.
    fn append_capped(
        &mut self,
        readings: &[Reading],
        times: &[i64],
        limits: Limits,
    ) -> Result<AppendOutcome, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("append: begin"))?;

        // De-duplicate (recording new keys in the window) and size the call.
        let mut keep = Vec::with_capacity(readings.len());
        let (mut new_dedup, mut bytes) = (0u64, 0u64);
        for (i, r) in readings.iter().enumerate() {
            let (dup, new_row) = dedup::check_and_record(&tx, r, times[i], limits.dedup_window_ms)?;
            new_dedup += u64::from(new_row);
            if !dup {
                let len = encoded_len(r);
                bytes += len as u64;
                keep.push((i, len));
            }
        }
        let accepted = keep.len() as u64;
        let duplicates = readings.len() - keep.len();
        if self.stored + accepted > limits.max_readings
            || self.stored_bytes + bytes > limits.max_bytes
        {
            drop(tx); // rolls back the window rows too
            return Err(self.refuse(accepted, bytes));
        }

        let mut seqs: Option<RangeInclusive<u64>> = None;
        let mut devices: std::collections::BTreeMap<(u8, [u8; 8]), (i64, u64, u64)> =
            std::collections::BTreeMap::new();
        let (mut ble, mut lora) = (0u64, 0u64);
        for &(i, len) in &keep {
            let r = &readings[i];
            let seq = queue::insert(&tx, r, times[i], len)?;
            seqs = Some(match seqs {
                None => seq..=seq,
                Some(s) => *s.start()..=seq,
            });
            let d = devices
                .entry((batch::source_code(r.source), r.device.0))
                .or_insert((times[i], seq, 0));
            *d = (d.0.max(times[i]), seq, d.2 + 1);
            match r.source {
                Source::Ble => ble += 1,
                Source::Lora => lora += 1,
            }
        }
        for ((source, device), (last_ms, last_seq, n)) in &devices {
            queue::touch_device(&tx, *source, device, *last_ms, *last_seq, *n)?;
        }
        if !devices.is_empty() {
            queue::prune_devices(&tx, limits.max_devices)?;
        }
        // Prune relative to this call's newest time (not the newest ever seen: one reading
        // from a clock that jumped ahead must not disable de-duplication afterwards).
        let newest = times.iter().copied().max().unwrap_or(0);
        let dedup_entries = dedup::prune(
            &tx,
            newest,
            limits.dedup_window_ms,
            limits.dedup_max_entries,
            self.dedup_entries + new_dedup,
        )?;
        add_counters(
            &tx,
            &[
                (counter::APPENDED, accepted),
                (counter::DUPLICATES, duplicates as u64),
                (counter::APPENDED_BLE, ble),
                (counter::APPENDED_LORA, lora),
                (counter::FULL_REJECTIONS, self.pending_refusals.0),
                (counter::FULL_REJECTED_CALLS, self.pending_refusals.1),
            ],
        )?;
        tx.commit().map_err(sql("append: commit"))?;
        self.pending_refusals = (0, 0);

        self.stored += accepted;
        self.stored_bytes += bytes;
        self.dedup_entries = dedup_entries;
        self.counters.appended += accepted;
        self.counters.duplicates += duplicates as u64;
        self.counters.appended_ble += ble;
        self.counters.appended_lora += lora;
        self.last_refused = false;
        Ok(AppendOutcome {
            accepted: keep.len(),
            duplicates,
            seqs,
        })
    }

    /// Applies [`Limits::max_file_bytes`]: the cap itself for appends, the cap plus
    /// [`CAP_HEADROOM`] for forwarding.
    fn set_page_cap(&self, headroom: bool) -> Result<(), StoreError> {
        if let Some((pages, extra)) = self.page_cap {
            let pages = if headroom { pages + extra } else { pages };
            self.conn
                .pragma_update(None, "max_page_count", to_sql(pages))
                .map_err(sql("max_page_count"))?;
        }
        Ok(())
    }

    /// Counts a refused call and builds the error. The refusal counters are persisted with
    /// the next committed append or confirm (no fsync of its own: a full queue under a stream
    /// of arrivals must not cost a disk flush per refused call), so a crash may lose the
    /// refusals counted since the last commit.
    fn refuse(&mut self, incoming: u64, incoming_bytes: u64) -> StoreError {
        self.counters.full_rejections += incoming;
        self.counters.full_rejected_calls += 1;
        self.pending_refusals.0 += incoming;
        self.pending_refusals.1 += 1;
        self.last_refused = true;
        StoreError::QueueFull {
            queued: self.stored,
            bytes: self.stored_bytes,
            incoming,
            incoming_bytes,
            max_readings: self.limits.max_readings,
            max_bytes: self.limits.max_bytes,
        }
    }

    /// The next batch to send, signed: first any unconfirmed batch that is due again (after a
    /// requeue or a reopen; same id, range and signature as before), oldest first; otherwise a
    /// new batch of the oldest unsent readings, at most `max`, recorded durably before it is
    /// returned. `None` when there is nothing to send (everything is confirmed or in flight).
    ///
    /// Errors: [`StoreError::Config`] for `max == 0`; SQLite errors.
    pub fn next_batch(&mut self, max: usize) -> Result<Option<Batch>, StoreError> {
        const OP: &str = "next_batch";
        if max == 0 {
            return Err(StoreError::Config {
                reason: "batch size 0".into(),
            });
        }
        // The signed encoding counts readings in a u32.
        let max = max.min(u32::MAX as usize);
        // A batch due again?
        let due = self
            .conn
            .prepare_cached(
                "SELECT id, first_seq, last_seq, readings FROM batches
                 WHERE id > ?1 ORDER BY id LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([to_sql(self.handed_upto)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(sql(OP))?;
        if let Some((id, first, last, n)) = due {
            let (id, first, last) = (nonneg(id, OP)?, nonneg(first, OP)?, nonneg(last, OP)?);
            let readings = queue::read_range(&self.conn, first, last, usize::MAX)?;
            if readings.len() as u64 != nonneg(n, OP)? {
                return Err(StoreError::corrupt(
                    OP,
                    format!("batch {id} holds {} readings, recorded {n}", readings.len()),
                ));
            }
            self.handed_upto = id;
            return self.sign(id, first, last, readings).map(Some);
        }

        // A new batch of the oldest unsent readings.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("next_batch: begin"))?;
        let readings = queue::read_range(&tx, self.batched_upto.saturating_add(1), u64::MAX, max)?;
        let (Some(first), Some(last)) = (readings.first(), readings.last()) else {
            return Ok(None);
        };
        let (first, last) = (first.seq, last.seq);
        let bytes: u64 = readings
            .iter()
            .map(|q| encoded_len(&q.reading) as u64)
            .sum();
        tx.prepare_cached(
            "INSERT INTO batches (first_seq, last_seq, readings, bytes) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| {
            st.execute(params![
                to_sql(first),
                to_sql(last),
                readings.len() as i64,
                to_sql(bytes)
            ])
        })
        .map_err(sql("next_batch: insert batch"))?;
        let id = nonneg(tx.last_insert_rowid(), OP)?;
        tx.commit().map_err(sql("next_batch: commit"))?;
        self.batched += readings.len() as u64;
        self.batched_bytes += bytes;
        self.batched_upto = last;
        self.handed_upto = id;
        self.sign(id, first, last, readings).map(Some)
    }

    fn sign(
        &self,
        id: u64,
        first: u64,
        last: u64,
        readings: Vec<QueuedReading>,
    ) -> Result<Batch, StoreError> {
        Batch::sign(&self.key, id, first, last, readings)
            .map_err(|e| StoreError::corrupt("next_batch: sign", e.to_string()))
    }

    /// The uplink accepted batch `batch_id`: deletes its readings and the batch in one
    /// durable transaction. Returns the number of readings confirmed.
    ///
    /// Errors: [`StoreError::UnknownBatch`] when no such batch is stored (already confirmed
    /// or never made); SQLite errors.
    pub fn confirm(&mut self, batch_id: u64) -> Result<u64, StoreError> {
        const OP: &str = "confirm";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("confirm: begin"))?;
        let row = tx
            .prepare_cached(
                "SELECT first_seq, last_seq, readings, bytes FROM batches WHERE id = ?1",
            )
            .and_then(|mut st| {
                st.query_row([to_sql(batch_id)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(sql(OP))?;
        let Some((first, last, n, bytes)) = row else {
            return Err(StoreError::UnknownBatch { batch_id });
        };
        let deleted = tx
            .prepare_cached("DELETE FROM readings WHERE seq BETWEEN ?1 AND ?2")
            .and_then(|mut st| st.execute([first, last]))
            .map_err(sql("confirm: delete readings"))? as u64;
        let n = nonneg(n, OP)?;
        if deleted != n {
            return Err(StoreError::corrupt(
                OP,
                format!("batch {batch_id} held {deleted} readings, recorded {n}"),
            ));
        }
        tx.prepare_cached("DELETE FROM batches WHERE id = ?1")
            .and_then(|mut st| st.execute([to_sql(batch_id)]))
            .map_err(sql("confirm: delete batch"))?;
        add_counters(
            &tx,
            &[
                (counter::CONFIRMED, n),
                (counter::FULL_REJECTIONS, self.pending_refusals.0),
                (counter::FULL_REJECTED_CALLS, self.pending_refusals.1),
            ],
        )?;
        tx.commit().map_err(sql("confirm: commit"))?;
        self.pending_refusals = (0, 0);
        let bytes = nonneg(bytes, OP)?;
        self.stored = self.stored.saturating_sub(n);
        self.stored_bytes = self.stored_bytes.saturating_sub(bytes);
        self.batched = self.batched.saturating_sub(n);
        self.batched_bytes = self.batched_bytes.saturating_sub(bytes);
        self.counters.confirmed += n;
        Ok(n)
    }

    /// Makes every unconfirmed batch due again (after an uplink failure; a reopen does the
    /// same): the next [`Store::next_batch`] calls return them, oldest first, unchanged.
    /// Returns how many batches are unconfirmed. Writes nothing.
    pub fn requeue_in_flight(&mut self) -> Result<u64, StoreError> {
        self.handed_upto = 0;
        self.conn
            .query_row("SELECT count(*) FROM batches", [], |r| r.get::<_, i64>(0))
            .map_err(sql("requeue_in_flight"))
            .and_then(|n| nonneg(n, "requeue_in_flight"))
    }

    /// Stored readings (queued or in flight) with `seq > after`, in order, at most `max`: for
    /// tools and tests.
    pub fn readings_after(&self, after: u64, max: usize) -> Result<Vec<QueuedReading>, StoreError> {
        queue::read_range(&self.conn, after.saturating_add(1), u64::MAX, max)
    }

    /// A snapshot of the queue; `now_ms` (ms since the Unix epoch) for the oldest reading's
    /// age; at most `max_devices` devices, newest first.
    pub fn stats(&self, now_ms: u64, max_devices: usize) -> Result<QueueStats, StoreError> {
        const OP: &str = "stats";
        let oldest: Option<i64> = self
            .conn
            .query_row(
                "SELECT time_ms FROM readings ORDER BY seq LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(OP))?;
        let mut per_source = vec![
            SourceStats {
                source: Source::Ble,
                stored: 0,
                appended_total: self.counters.appended_ble,
            },
            SourceStats {
                source: Source::Lora,
                stored: 0,
                appended_total: self.counters.appended_lora,
            },
        ];
        {
            let mut st = self
                .conn
                .prepare_cached("SELECT source, count(*) FROM readings GROUP BY source")
                .map_err(sql(OP))?;
            let mut rows = st.query([]).map_err(sql(OP))?;
            while let Some(r) = rows.next().map_err(sql(OP))? {
                let source = queue::int_col(r, 0, OP)?;
                let n = u64_col(r, 1, OP)?;
                let slot = per_source
                    .get_mut(usize::try_from(source).unwrap_or(usize::MAX))
                    .ok_or_else(|| StoreError::corrupt(OP, format!("source {source}")))?;
                slot.stored = n;
            }
        }
        let mut devices = Vec::new();
        {
            let mut st = self
                .conn
                .prepare_cached(
                    "SELECT source, device, last_ms, last_seq, readings FROM devices
                     ORDER BY last_ms DESC, last_seq DESC LIMIT ?1",
                )
                .map_err(sql(OP))?;
            let mut rows = st
                .query([i64::try_from(max_devices).unwrap_or(i64::MAX)])
                .map_err(sql(OP))?;
            while let Some(r) = rows.next().map_err(sql(OP))? {
                let source = match queue::int_col(r, 0, OP)? {
                    0 => Source::Ble,
                    1 => Source::Lora,
                    v => return Err(StoreError::corrupt(OP, format!("source {v}"))),
                };
                let device = queue::blob8(r, 1, OP)?
                    .ok_or_else(|| StoreError::corrupt(OP, "device without id"))?;
                devices.push(DeviceSeen {
                    source,
                    device: DeviceId(device),
                    last_ms: u64_col(r, 2, OP)?,
                    last_seq: u64_col(r, 3, OP)?,
                    readings: u64_col(r, 4, OP)?,
                });
            }
        }
        let c = self.counters;
        Ok(QueueStats {
            queued: self.stored - self.batched.min(self.stored),
            in_flight: self.batched,
            bytes: self.stored_bytes,
            max_readings: self.limits.max_readings,
            max_bytes: self.limits.max_bytes,
            full: self.last_refused,
            oldest_age_ms: oldest.map(|t| now_ms.saturating_sub(t.max(0) as u64)),
            appended_total: c.appended,
            duplicates: c.duplicates,
            confirmed_total: c.confirmed,
            full_rejections: c.full_rejections,
            full_rejected_calls: c.full_rejected_calls,
            dedup_entries: self.dedup_entries,
            per_source,
            devices,
        })
    }

    /// Scans the whole file (`PRAGMA integrity_check`) and the queue's invariants (each batch
    /// holds exactly its recorded readings, batches do not overlap, the in-memory totals match
    /// the file): `Ok` when sound, else [`StoreError::Corrupt`]. For start-up and tests.
    pub fn check(&self) -> Result<(), StoreError> {
        const OP: &str = "check";
        sqlite_durable::integrity_check(&self.conn)?;
        let bad: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM batches b WHERE b.readings !=
                     (SELECT count(*) FROM readings r WHERE r.seq BETWEEN b.first_seq AND b.last_seq)
                  OR EXISTS (SELECT 1 FROM batches o WHERE o.id != b.id
                     AND o.first_seq <= b.last_seq AND b.first_seq <= o.last_seq)",
                [],
                |r| r.get(0),
            )
            .map_err(sql(OP))?;
        if bad != 0 {
            return Err(StoreError::corrupt(
                OP,
                format!("{bad} inconsistent batch(es)"),
            ));
        }
        let (n, bytes): (i64, i64) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(bytes), 0) FROM readings",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql(OP))?;
        if (n, bytes) != (to_sql(self.stored), to_sql(self.stored_bytes)) {
            return Err(StoreError::corrupt(
                OP,
                format!(
                    "file holds {n} readings / {bytes} bytes, totals say {} / {}",
                    self.stored, self.stored_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Loads the in-memory totals from the file (on open).
    fn load_totals(&mut self) -> Result<(), StoreError> {
        const OP: &str = "open: totals";
        let q = |sql_text: &str| -> Result<i64, StoreError> {
            self.conn
                .query_row(sql_text, [], |r| r.get::<_, i64>(0))
                .map_err(sql(OP))
        };
        self.stored = nonneg(q("SELECT count(*) FROM readings")?, OP)?;
        self.stored_bytes = nonneg(q("SELECT coalesce(sum(bytes), 0) FROM readings")?, OP)?;
        self.batched = nonneg(q("SELECT coalesce(sum(readings), 0) FROM batches")?, OP)?;
        self.batched_bytes = nonneg(q("SELECT coalesce(sum(bytes), 0) FROM batches")?, OP)?;
        self.batched_upto = nonneg(q("SELECT coalesce(max(last_seq), 0) FROM batches")?, OP)?;
        self.dedup_entries = nonneg(q("SELECT count(*) FROM dedup")?, OP)?;
        let mut st = self
            .conn
            .prepare("SELECT name, value FROM counters")
            .map_err(sql(OP))?;
        let mut rows = st.query([]).map_err(sql(OP))?;
        let c = &mut self.counters;
        while let Some(r) = rows.next().map_err(sql(OP))? {
            let name: String = r.get(0).map_err(sql(OP))?;
            let v = u64_col(r, 1, OP)?;
            match name.as_str() {
                counter::APPENDED => c.appended = v,
                counter::DUPLICATES => c.duplicates = v,
                counter::CONFIRMED => c.confirmed = v,
                counter::FULL_REJECTIONS => c.full_rejections = v,
                counter::FULL_REJECTED_CALLS => c.full_rejected_calls = v,
                counter::APPENDED_BLE => c.appended_ble = v,
                counter::APPENDED_LORA => c.appended_lora = v,
                _ => {} // a later version's counter
            }
        }
        Ok(())
    }
}

/// Adds to counters inside a transaction.
fn add_counters(tx: &rusqlite::Transaction<'_>, adds: &[(&str, u64)]) -> Result<(), StoreError> {
    let mut st = tx
        .prepare_cached(
            "INSERT INTO counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        )
        .map_err(sql("counters"))?;
    for &(name, v) in adds {
        if v > 0 {
            st.execute(params![name, to_sql(v)])
                .map_err(sql("counters"))?;
        }
    }
    Ok(())
}

/// Checks what SQLite cannot store: strings over 65535 bytes, times or a frequency over
/// `i64::MAX`. Returns `time_ms` as an SQLite integer.
fn validate(index: usize, r: &Reading) -> Result<i64, StoreError> {
    let invalid = |reason: String| StoreError::InvalidReading { index, reason };
    batch::check_lengths(r).map_err(|e| invalid(e.to_string()))?;
    if let Some(f) = r.radio.frequency_hz
        && i64::try_from(f).is_err()
    {
        return Err(invalid(format!("frequency {f} Hz")));
    }
    i64::try_from(r.time_ms).map_err(|_| invalid(format!("time {} ms", r.time_ms)))
}

/// A non-negative integer from the file.
fn nonneg(v: i64, op: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(op, format!("negative value {v}")))
}
