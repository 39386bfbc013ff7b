//! Rows of the `readings` table: writing a [`Reading`], reading it back, and the per-device
//! last-seen table.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row, Transaction, params};

use super::batch::{QueuedReading, source_code};
use super::error::{StoreError, sql};
use crate::reading::{DeviceId, RadioMeta, Reading, Source};

/// The columns [`read_row`] expects, in order.
pub(crate) const COLUMNS: &str = "seq, source, device, time_ms, quantity, value_bits, unit, \
     frame_id, rssi_dbm, snr_bits, freq_hz, data_rate, gw_eui";

/// Inserts one reading (already validated: times and frequency fit `i64`); returns its seq.
pub(crate) fn insert(
    tx: &Transaction<'_>,
    r: &Reading,
    time: i64,
    bytes: usize,
) -> Result<u64, StoreError> {
    const OP: &str = "append: insert reading";
    let m = &r.radio;
    let freq = m.frequency_hz.map(|f| f as i64);
    tx.prepare_cached(
        "INSERT INTO readings (source, device, time_ms, quantity, value_bits, unit, frame_id,
             rssi_dbm, snr_bits, freq_hz, data_rate, gw_eui, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut st| {
        st.execute(params![
            source_code(r.source),
            &r.device.0[..],
            time,
            r.quantity,
            r.value.to_bits() as i64,
            r.unit,
            r.frame_id,
            m.rssi_dbm,
            m.snr_db.map(f32::to_bits),
            freq,
            m.data_rate,
            m.gateway_eui.as_ref().map(|e| &e[..]),
            bytes as i64,
        ])
    })
    .map_err(sql(OP))?;
    let seq = tx.last_insert_rowid();
    u64::try_from(seq).map_err(|_| StoreError::corrupt(OP, format!("seq {seq}")))
}

/// Reads readings with `seq` in `from..=to`, in order, at most `limit`.
pub(crate) fn read_range(
    conn: &Connection,
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Vec<QueuedReading>, StoreError> {
    const OP: &str = "read readings";
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM readings WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq LIMIT ?3"
        ))
        .map_err(sql(OP))?;
    let mut rows = st
        .query(params![
            to_sql(from),
            to_sql(to),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])
        .map_err(sql(OP))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql(OP))? {
        out.push(read_row(row, OP)?);
    }
    Ok(out)
}

/// Clamps a sequence number to SQLite's integer range.
pub(crate) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Decodes a row selected with [`COLUMNS`].
pub(crate) fn read_row(r: &Row<'_>, op: &'static str) -> Result<QueuedReading, StoreError> {
    let seq = u64_col(r, 0, op)?;
    let source = match int_col(r, 1, op)? {
        0 => Source::Ble,
        1 => Source::Lora,
        v => return Err(StoreError::corrupt(op, format!("source {v}"))),
    };
    let device = DeviceId(blob8(r, 2, op)?.ok_or_else(|| StoreError::corrupt(op, "no device"))?);
    let time_ms = u64_col(r, 3, op)?;
    let quantity: String = r.get(4).map_err(sql(op))?;
    let value = f64::from_bits(int_col(r, 5, op)? as u64);
    let unit: String = r.get(6).map_err(sql(op))?;
    let frame_id: Option<u32> = r.get(7).map_err(sql(op))?;
    let rssi_dbm: Option<i16> = r.get(8).map_err(sql(op))?;
    let snr_db = r
        .get::<_, Option<u32>>(9)
        .map_err(sql(op))?
        .map(f32::from_bits);
    let frequency_hz = match r.get::<_, Option<i64>>(10).map_err(sql(op))? {
        None => None,
        Some(f) => {
            Some(u64::try_from(f).map_err(|_| StoreError::corrupt(op, format!("frequency {f}")))?)
        }
    };
    let data_rate: Option<String> = r.get(11).map_err(sql(op))?;
    let gateway_eui = blob8(r, 12, op)?;
    Ok(QueuedReading {
        seq,
        reading: Reading {
            source,
            device,
            time_ms,
            quantity,
            value,
            unit,
            frame_id,
            radio: RadioMeta {
                rssi_dbm,
                snr_db,
                frequency_hz,
                data_rate,
                gateway_eui,
            },
        },
    })
}

/// Records that `device` was last heard at `last_ms` with reading `last_seq`, `n` readings
/// in this call.
pub(crate) fn touch_device(
    tx: &Transaction<'_>,
    source: u8,
    device: &[u8; 8],
    last_ms: i64,
    last_seq: u64,
    n: u64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO devices (source, device, last_ms, last_seq, readings)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (source, device) DO UPDATE SET
             last_ms = max(last_ms, excluded.last_ms),
             last_seq = excluded.last_seq,
             readings = readings + excluded.readings",
    )
    .and_then(|mut st| {
        st.execute(params![
            source,
            &device[..],
            last_ms,
            to_sql(last_seq),
            to_sql(n)
        ])
    })
    .map_err(sql("append: devices"))?;
    Ok(())
}

/// Keeps the `max` most recently heard devices.
pub(crate) fn prune_devices(tx: &Transaction<'_>, max: u64) -> Result<(), StoreError> {
    const OP: &str = "append: prune devices";
    let n: i64 = tx
        .prepare_cached("SELECT count(*) FROM devices")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(sql(OP))?;
    let excess = (n as u64).saturating_sub(max);
    if excess > 0 {
        tx.prepare_cached(
            "DELETE FROM devices WHERE (source, device) IN
                 (SELECT source, device FROM devices ORDER BY last_ms, last_seq LIMIT ?1)",
        )
        .and_then(|mut st| st.execute([to_sql(excess)]))
        .map_err(sql(OP))?;
    }
    Ok(())
}

/// Reads an integer column; anything else is corruption.
pub(crate) fn int_col(r: &Row<'_>, i: usize, op: &'static str) -> Result<i64, StoreError> {
    match r.get_ref(i).map_err(sql(op))? {
        ValueRef::Integer(v) => Ok(v),
        other => Err(StoreError::corrupt(
            op,
            format!("integer column of type {}", other.data_type()),
        )),
    }
}

/// Reads a non-negative integer column.
pub(crate) fn u64_col(r: &Row<'_>, i: usize, op: &'static str) -> Result<u64, StoreError> {
    let v = int_col(r, i, op)?;
    u64::try_from(v).map_err(|_| StoreError::corrupt(op, format!("negative value {v}")))
}

/// Reads a nullable 8-byte blob column.
pub(crate) fn blob8(
    r: &Row<'_>,
    i: usize,
    op: &'static str,
) -> Result<Option<[u8; 8]>, StoreError> {
    match r.get_ref(i).map_err(sql(op))? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) => <[u8; 8]>::try_from(b)
            .map(Some)
            .map_err(|_| StoreError::corrupt(op, format!("8-byte id of {} bytes", b.len()))),
        other => Err(StoreError::corrupt(
            op,
            format!("id of type {}", other.data_type()),
        )),
    }
}
