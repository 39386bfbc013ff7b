//! The queue's status, for `mef-gateway status` and metrics.

use crate::reading::{DeviceId, Source};

/// A snapshot of the queue ([`super::Store::stats`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Readings stored and not yet in a batch.
    pub queued: u64,
    /// Readings in batches handed to the uplink (or to be re-sent) and not yet confirmed.
    pub in_flight: u64,
    /// Encoded bytes of all stored readings (queued and in flight), the quantity
    /// [`super::Limits::max_bytes`] bounds.
    pub bytes: u64,
    /// The reading limit ([`super::Limits::max_readings`], which bounds `queued + in_flight`).
    pub max_readings: u64,
    /// The byte limit.
    pub max_bytes: u64,
    /// Whether the most recent `append` call was refused with
    /// [`super::StoreError::QueueFull`] (cleared by the next accepted append).
    pub full: bool,
    /// Age of the oldest stored reading (now minus its `time_ms`), ms; `None` when empty.
    pub oldest_age_ms: Option<u64>,
    /// Readings ever accepted (persisted, survives restarts).
    pub appended_total: u64,
    /// Readings ever dropped as duplicates.
    pub duplicates: u64,
    /// Readings ever confirmed by the uplink (and deleted).
    pub confirmed_total: u64,
    /// Readings ever refused because the queue was full (persisted with the next commit: a
    /// crash may lose the refusals counted since).
    pub full_rejections: u64,
    /// `append` calls ever refused because the queue was full.
    pub full_rejected_calls: u64,
    /// Rows in the de-duplication window.
    pub dedup_entries: u64,
    /// Per radio: readings stored and readings ever accepted.
    pub per_source: Vec<SourceStats>,
    /// The most recently heard devices, newest first (at most the `max_devices` asked for).
    pub devices: Vec<DeviceSeen>,
}

/// Per-radio counts in [`QueueStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceStats {
    /// The radio.
    pub source: Source,
    /// Readings from it stored now (queued or in flight).
    pub stored: u64,
    /// Readings from it ever accepted.
    pub appended_total: u64,
}

/// When a device was last heard, in [`QueueStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSeen {
    /// The radio.
    pub source: Source,
    /// The device.
    pub device: DeviceId,
    /// `time_ms` of its latest accepted reading.
    pub last_ms: u64,
    /// Sequence number of its latest accepted reading.
    pub last_seq: u64,
    /// Readings accepted from it since it entered the (bounded) device table.
    pub readings: u64,
}
