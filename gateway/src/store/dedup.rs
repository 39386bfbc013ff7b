//! De-duplication of frames heard more than once.
//!
//! The same radio frame often reaches the gateway several times: a BLE sensor repeats each
//! advertisement (BTHome keeps the packet id until the data changes), several LoRa packet
//! forwarders hear the same uplink, a LoRa device retransmits with the same FCnt. Every copy
//! decodes to the same readings.
//!
//! A reading is a **duplicate** when a reading with the same key (source, device, frame id,
//! quantity, value) was accepted with a `time_ms` within [`super::Limits::dedup_window_ms`]
//! of its own. The first copy wins (its radio metadata is the one kept); later copies are
//! dropped and counted ([`super::QueueStats::duplicates`]).
//!
//! The value (its exact bits) is part of the key because copies of one frame decode to
//! identical values: a reused frame id carrying a different value (an 8-bit BTHome packet id
//! that wrapped, a LoRa FCnt reset by a rejoin, two objects of the same type in one BTHome
//! packet) is a different reading and is never dropped. Decoders should still give repeated
//! objects of one packet distinct quantity names where they can; two such objects with equal
//! values would otherwise count as one.
//!
//! - Readings **without a frame id are never de-duplicated**: without one, two equal values
//!   may well be two measurements.
//! - The window is short on purpose (60 s by default): BTHome packet ids are 8 bits and LoRa
//!   FCnts restart at 0 when a device rejoins, so an old id seen again after the window is a
//!   new frame.
//! - The window is persisted (table `dedup`) in the same transaction as the readings, so it
//!   survives restarts, and it is bounded: rows older than the window (relative to the newest
//!   time in the appending call) are pruned on append, and beyond [`super::Limits::dedup_max_entries`] rows the
//!   oldest are dropped.

use rusqlite::{OptionalExtension, Transaction, params};

use super::batch::source_code;
use super::error::{StoreError, sql};
use crate::reading::Reading;

/// Whether `r` is a duplicate within `window_ms`; when it is not (and it has a frame id),
/// records it in the window. Returns `(duplicate, new_row)`.
///
/// The value is keyed by its bits (`f64::to_bits`), so NaN matches NaN and -0.0 differs
/// from 0.0: the same bits are what a second copy of the frame decodes to.
pub(crate) fn check_and_record(
    tx: &Transaction<'_>,
    r: &Reading,
    time: i64,
    window_ms: u64,
) -> Result<(bool, bool), StoreError> {
    const OP: &str = "append: dedup";
    let Some(frame_id) = r.frame_id else {
        return Ok((false, false));
    };
    let source = source_code(r.source);
    let bits = r.value.to_bits() as i64;
    let seen: Option<i64> = tx
        .prepare_cached(
            "SELECT seen_ms FROM dedup WHERE source = ?1 AND device = ?2 AND frame_id = ?3
                 AND quantity = ?4 AND value_bits = ?5",
        )
        .and_then(|mut st| {
            st.query_row(
                params![source, &r.device.0[..], frame_id, r.quantity, bits],
                |row| row.get(0),
            )
            .optional()
        })
        .map_err(sql(OP))?;
    if let Some(seen) = seen
        && seen.abs_diff(time) <= window_ms
    {
        return Ok((true, false));
    }
    tx.prepare_cached(
        "INSERT INTO dedup (source, device, frame_id, quantity, value_bits, seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (source, device, frame_id, quantity, value_bits)
             DO UPDATE SET seen_ms = excluded.seen_ms",
    )
    .and_then(|mut st| {
        st.execute(params![
            source,
            &r.device.0[..],
            frame_id,
            r.quantity,
            bits,
            time
        ])
    })
    .map_err(sql(OP))?;
    Ok((false, seen.is_none()))
}

/// Drops rows older than `newest - window_ms`, then the oldest rows beyond `max_entries`.
/// Returns the number of rows left, given `entries` rows before.
pub(crate) fn prune(
    tx: &Transaction<'_>,
    newest: i64,
    window_ms: u64,
    max_entries: u64,
    entries: u64,
) -> Result<u64, StoreError> {
    const OP: &str = "append: prune dedup";
    let cutoff = newest.saturating_sub(i64::try_from(window_ms).unwrap_or(i64::MAX));
    let removed = tx
        .prepare_cached("DELETE FROM dedup WHERE seen_ms < ?1")
        .and_then(|mut st| st.execute([cutoff]))
        .map_err(sql(OP))? as u64;
    let mut left = entries.saturating_sub(removed);
    if left > max_entries {
        let excess = left - max_entries;
        let removed = tx
            .prepare_cached(
                "DELETE FROM dedup WHERE (source, device, frame_id, quantity, value_bits) IN
                 (SELECT source, device, frame_id, quantity, value_bits FROM dedup
                  ORDER BY seen_ms LIMIT ?1)",
            )
            .and_then(|mut st| st.execute([i64::try_from(excess).unwrap_or(i64::MAX)]))
            .map_err(sql(OP))? as u64;
        left = left.saturating_sub(removed);
    }
    Ok(left)
}
