//! The human-readable status (`mef-gateway status`, and `GET /status` of the running daemon).

use std::fmt::Write as _;

use crate::firmware_net::NodeStatus;
use crate::store::QueueStats;

use super::ingest::IngestCounters;
use super::metrics::UplinkCounters;

/// Renders the status. `live` carries the running daemon's counters (absent when the store was
/// opened directly because no daemon answered); `firmware` the firmware node's, when it runs;
/// `now_ms` for the devices' ages.
pub fn render(
    q: &QueueStats,
    live: Option<(&IngestCounters, &UplinkCounters)>,
    firmware: Option<&NodeStatus>,
    now_ms: u64,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "queue depth: {} readings", q.queued + q.in_flight);
    let _ = writeln!(o, "queued: {}", q.queued);
    let _ = writeln!(o, "in flight: {}", q.in_flight);
    let _ = writeln!(o, "bytes: {} (max {})", q.bytes, q.max_bytes);
    let _ = writeln!(o, "max readings: {}", q.max_readings);
    let disk_full = live.is_some_and(|(i, _)| i.disk_full);
    let full = q.full || live.is_some_and(|(i, _)| i.queue_full);
    let _ = writeln!(o, "full: {full}");
    let _ = writeln!(o, "disk full: {disk_full}");
    if let Some(age) = q.oldest_age_ms {
        let _ = writeln!(o, "oldest reading age: {age} ms");
    }
    let _ = writeln!(
        o,
        "appended total: {}, duplicates: {}, confirmed total: {}, full rejections: {}",
        q.appended_total, q.duplicates, q.confirmed_total, q.full_rejections
    );
    for s in &q.per_source {
        let _ = writeln!(
            o,
            "source {:?}: stored {}, appended total {}",
            s.source, s.stored, s.appended_total
        );
    }
    if let Some((i, u)) = live {
        for (name, c) in [("Ble", &i.ble), ("Lora", &i.lora)] {
            let _ = writeln!(
                o,
                "ingest {name}: frames {}, readings {}, rejected {}, parse errors {}",
                c.frames, c.readings, c.rejected, c.parse_errors
            );
        }
        let _ = writeln!(
            o,
            "lora: {} forwarders, {} PUSH_ACK sent, {} withheld",
            i.forwarders, i.push_acks_sent, i.push_acks_withheld
        );
        let _ = writeln!(
            o,
            "uplink: {} batches, {} readings, {} failures{}",
            u.batches,
            u.readings,
            u.failures,
            if u.down { " (down)" } else { "" }
        );
    } else {
        let _ = writeln!(o, "daemon: not answering (store opened directly)");
    }
    if let Some(f) = firmware {
        let running = f.current.map_or("-".to_string(), |v| v.to_string());
        let _ = write!(
            o,
            "firmware: running {running}, {} staged, {} peers, served {} blocks ({} bytes)",
            f.staged, f.connected, f.stats.served.blocks, f.stats.served.block_bytes
        );
        if let Some((v, p)) = f.fetching {
            let _ = write!(
                o,
                "; fetching {v}: {} blocks from swarm peers, {} from providers, {} held",
                p.blocks_from_swarm, p.blocks_from_providers, p.blocks_held
            );
        }
        let _ = writeln!(o);
    }
    if !q.devices.is_empty() {
        let _ = writeln!(o, "last seen devices:");
        for d in &q.devices {
            let _ = writeln!(
                o,
                "  {:?} {} last {} ms ago (seq {}, {} readings)",
                d.source,
                d.device,
                now_ms.saturating_sub(d.last_ms),
                d.last_seq,
                d.readings
            );
        }
    }
    o
}
