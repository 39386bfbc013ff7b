//! Prometheus text exposition (format 0.0.4) of the daemon's counters and the queue, served on
//! `[metrics] listen` at `GET /metrics` by [`super::run()`].

use std::fmt::Write as _;

use crate::firmware_net::NodeStatus;
use crate::reading::Source;
use crate::store::QueueStats;

use super::ingest::IngestCounters;

/// The forwarding thread's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkCounters {
    /// Batches confirmed.
    pub batches: u64,
    /// Readings confirmed.
    pub readings: u64,
    /// Batches the uplink already had (re-sends after a crash).
    pub duplicate_acks: u64,
    /// Uplink failures.
    pub failures: u64,
    /// Store errors of the forwarding step.
    pub store_errors: u64,
    /// The uplink is down (backing off).
    pub down: bool,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP mef_gateway_{name} {help}");
    let _ = writeln!(out, "# TYPE mef_gateway_{name} {kind}");
}

fn label(s: Source) -> &'static str {
    match s {
        Source::Ble => "ble",
        Source::Lora => "lora",
    }
}

/// Renders every metric; the `mef_gateway_firmware_*` family when the firmware node runs.
pub fn render(
    q: &QueueStats,
    ingest: &IngestCounters,
    uplink: &UplinkCounters,
    input_dropped: u64,
    firmware: Option<&NodeStatus>,
) -> String {
    let mut o = String::new();
    let per = [(Source::Ble, &ingest.ble), (Source::Lora, &ingest.lora)];
    let counter = |o: &mut String,
                   name: &str,
                   help: &str,
                   f: &dyn Fn(&super::ingest::SourceCounters) -> u64| {
        metric(o, name, "counter", help);
        for (s, c) in per {
            let _ = writeln!(o, "mef_gateway_{name}{{source=\"{}\"}} {}", label(s), f(c));
        }
    };
    counter(&mut o, "frames_total", "Radio frames received.", &|c| {
        c.frames
    });
    counter(
        &mut o,
        "readings_decoded_total",
        "Readings decoded and queued for an append.",
        &|c| c.readings,
    );
    counter(
        &mut o,
        "readings_rejected_total",
        "Readings refused by the store (queue full, disk full, I/O): never acknowledged.",
        &|c| c.rejected,
    );
    counter(
        &mut o,
        "parse_errors_total",
        "Frames that could not be (entirely) decoded.",
        &|c| c.parse_errors,
    );
    metric(
        &mut o,
        "readings_appended_total",
        "counter",
        "Readings stored, per source (store lifetime).",
    );
    for s in &q.per_source {
        let _ = writeln!(
            o,
            "mef_gateway_readings_appended_total{{source=\"{}\"}} {}",
            label(s.source),
            s.appended_total
        );
    }
    let scalar = |o: &mut String, name: &str, kind: &str, help: &str, v: u64| {
        metric(o, name, kind, help);
        let _ = writeln!(o, "mef_gateway_{name} {v}");
    };
    scalar(
        &mut o,
        "readings_duplicate_total",
        "counter",
        "Readings dropped as duplicates (store lifetime, all sources).",
        q.duplicates,
    );
    scalar(
        &mut o,
        "appends_total",
        "counter",
        "Store appends (one fsync each) by this process.",
        ingest.flushes,
    );
    scalar(
        &mut o,
        "appends_failed_total",
        "counter",
        "Store appends that failed.",
        ingest.failed_flushes,
    );
    scalar(
        &mut o,
        "push_acks_sent_total",
        "counter",
        "PUSH_ACKs sent after their readings were durable.",
        ingest.push_acks_sent,
    );
    scalar(
        &mut o,
        "push_acks_withheld_total",
        "counter",
        "PUSH_ACKs withheld because the append failed.",
        ingest.push_acks_withheld,
    );
    scalar(
        &mut o,
        "input_dropped_total",
        "counter",
        "Frames dropped at a full input queue (never acknowledged).",
        input_dropped,
    );
    scalar(
        &mut o,
        "semtech_datagrams_total",
        "counter",
        "Semtech UDP datagrams handled.",
        ingest.datagrams,
    );
    scalar(
        &mut o,
        "forwarders",
        "gauge",
        "LoRa packet forwarders seen.",
        ingest.forwarders,
    );
    scalar(
        &mut o,
        "queue_readings",
        "gauge",
        "Readings queued, not yet in a batch.",
        q.queued,
    );
    scalar(
        &mut o,
        "queue_in_flight_readings",
        "gauge",
        "Readings in batches sent but not confirmed.",
        q.in_flight,
    );
    scalar(
        &mut o,
        "queue_bytes",
        "gauge",
        "Encoded bytes stored.",
        q.bytes,
    );
    scalar(
        &mut o,
        "queue_max_readings",
        "gauge",
        "Queue bound, readings.",
        q.max_readings,
    );
    scalar(
        &mut o,
        "queue_full",
        "gauge",
        "1 when the queue is at its bound.",
        u64::from(q.full || ingest.queue_full),
    );
    scalar(
        &mut o,
        "disk_full",
        "gauge",
        "1 when the last append hit a full disk or the file cap.",
        u64::from(ingest.disk_full),
    );
    scalar(
        &mut o,
        "queue_full_rejections_total",
        "counter",
        "Readings refused because the queue was full (store lifetime).",
        q.full_rejections,
    );
    scalar(
        &mut o,
        "oldest_age_ms",
        "gauge",
        "Age of the oldest stored reading, ms (0 when empty).",
        q.oldest_age_ms.unwrap_or(0),
    );
    scalar(
        &mut o,
        "uplink_batches_total",
        "counter",
        "Batches the uplink confirmed.",
        uplink.batches,
    );
    scalar(
        &mut o,
        "uplink_readings_total",
        "counter",
        "Readings the uplink confirmed.",
        uplink.readings,
    );
    scalar(
        &mut o,
        "uplink_duplicate_acks_total",
        "counter",
        "Batches the uplink already had (re-sends).",
        uplink.duplicate_acks,
    );
    scalar(
        &mut o,
        "uplink_failures_total",
        "counter",
        "Uplink submission failures.",
        uplink.failures,
    );
    scalar(
        &mut o,
        "uplink_down",
        "gauge",
        "1 while the uplink is backing off after a failure.",
        u64::from(uplink.down),
    );
    if let Some(f) = firmware {
        render_firmware(&mut o, f);
    }
    o
}

/// The firmware node's metrics (`[firmware]`).
fn render_firmware(o: &mut String, f: &NodeStatus) {
    let scalar = |o: &mut String, name: &str, kind: &str, help: &str, v: u64| {
        metric(o, name, kind, help);
        let _ = writeln!(o, "mef_gateway_{name} {v}");
    };
    let served = &f.stats.served;
    scalar(
        o,
        "firmware_served_blocks_total",
        "counter",
        "Firmware blocks this gateway served to peers.",
        served.blocks,
    );
    scalar(
        o,
        "firmware_served_bytes_total",
        "counter",
        "Firmware block bytes this gateway served to peers.",
        served.block_bytes,
    );
    scalar(
        o,
        "firmware_peers",
        "gauge",
        "Peers with an exchange channel open.",
        f.connected as u64,
    );
    scalar(
        o,
        "firmware_bad_peers_total",
        "counter",
        "Peers disconnected for garbage or corrupt blocks.",
        f.stats.garbage_peers + f.stats.faulty_peers,
    );
    scalar(
        o,
        "firmware_staged_total",
        "counter",
        "Verified images staged by this process.",
        f.staged,
    );
    scalar(
        o,
        "firmware_refused_manifests_total",
        "counter",
        "Manifest files refused (untrusted, other model, downgrade, malformed).",
        f.refused,
    );
    scalar(
        o,
        "firmware_failed_updates_total",
        "counter",
        "Fetches or stagings that failed (each retried).",
        f.failed,
    );
    let (fetching, blocks) = f
        .fetching
        .map_or((0, 0), |(_, p)| (1, p.blocks_fetched + p.blocks_held));
    scalar(
        o,
        "firmware_fetching",
        "gauge",
        "1 while an update is being fetched.",
        fetching,
    );
    scalar(
        o,
        "firmware_fetch_blocks",
        "gauge",
        "Blocks of the update being fetched that are in the store.",
        blocks,
    );
    if let Some(v) = f.current {
        metric(
            o,
            "firmware_version_info",
            "gauge",
            "The running firmware version (staged last, or configured).",
        );
        let _ = writeln!(o, "mef_gateway_firmware_version_info{{version=\"{v}\"}} 1");
    }
}
