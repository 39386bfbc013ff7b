//! Prometheus text exposition (format 0.0.4) and the `status` text, rendered from a [`Router`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use crate::FlowKey;
use crate::tunnel::PeerId;

use super::config::Prefix;
use super::router::Router;

/// A per-peer counter: name, help, getter.
type PeerMetric = (
    &'static str,
    &'static str,
    fn(&crate::tunnel::TunnelStats) -> u64,
);

/// At most this many flows are exported (the busiest first).
const MAX_FLOWS: usize = 200;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn busiest(rates: &BTreeMap<FlowKey, f64>) -> Vec<(&FlowKey, f64)> {
    let mut v: Vec<_> = rates.iter().map(|(k, r)| (k, *r)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(MAX_FLOWS);
    v
}

/// Renders all metrics.
pub fn render(r: &Router, rates: &BTreeMap<FlowKey, f64>, capacity: u64) -> String {
    let mut o = String::new();
    let q = r.egress().qdisc();
    let st = q.stats();
    metric(
        &mut o,
        "mef_router_link_capacity_bps",
        "gauge",
        "Configured WAN capacity, bits/s.",
    );
    let _ = writeln!(o, "mef_router_link_capacity_bps{{link=\"wan\"}} {capacity}");
    metric(
        &mut o,
        "mef_router_link_fair_rate_bps",
        "gauge",
        "Fair rate (allocation) mu per MEF flow on the WAN link, bits/s.",
    );
    let _ = writeln!(
        o,
        "mef_router_link_fair_rate_bps{{link=\"wan\"}} {:.0}",
        q.fair_rate_bps()
    );
    metric(
        &mut o,
        "mef_router_link_backlog_bytes",
        "gauge",
        "Bytes queued at the WAN egress.",
    );
    let _ = writeln!(
        o,
        "mef_router_link_backlog_bytes{{link=\"wan\"}} {}",
        q.fair_queue().backlog_bytes()
    );
    let fc = q.controller().flow_counts();
    metric(
        &mut o,
        "mef_router_link_flows",
        "gauge",
        "Flows tracked by the rate controller.",
    );
    let _ = writeln!(
        o,
        "mef_router_link_flows{{link=\"wan\"}} {}",
        fc.mef + fc.other
    );
    metric(
        &mut o,
        "mef_router_flow_rate_bps",
        "gauge",
        "Measured egress rate per flow, bits/s.",
    );
    for (k, rate) in busiest(rates) {
        let _ = writeln!(
            o,
            "mef_router_flow_rate_bps{{flow=\"{}\"}} {rate:.0}",
            esc(&k.to_string())
        );
    }
    metric(
        &mut o,
        "mef_router_flow_allocation_bps",
        "gauge",
        "Rate allocated to each MEF flow, bits/s.",
    );
    for (k, _) in busiest(rates) {
        if let Some(a) = q.controller().allocation_bps(k) {
            let _ = writeln!(
                o,
                "mef_router_flow_allocation_bps{{flow=\"{}\"}} {a:.0}",
                esc(&k.to_string())
            );
        }
    }
    metric(
        &mut o,
        "mef_router_drops_total",
        "counter",
        "Packets dropped, by reason.",
    );
    let c = r.counters();
    let ts = r.tunnels().stats();
    for (reason, n) in [
        ("overflow", st.overflow_drops),
        ("policed", st.policed_drops),
        ("tun_malformed", c.tun_malformed),
        ("tun_not_ipv4", c.tun_not_ipv4),
        ("no_route", c.no_route),
        ("no_endpoint", c.no_endpoint),
        ("udp_rejected", c.udp_rejected),
        ("not_allowed", c.not_allowed),
        ("udp_malformed", ts.malformed),
        ("bad_mac1", ts.bad_mac1),
        ("unknown_peer", ts.unknown_peers),
    ] {
        let _ = writeln!(o, "mef_router_drops_total{{reason=\"{reason}\"}} {n}");
    }
    metric(
        &mut o,
        "mef_router_cookie_replies_total",
        "counter",
        "Cookie replies sent under load.",
    );
    let _ = writeln!(
        o,
        "mef_router_cookie_replies_total {}",
        ts.cookie_replies_sent
    );
    metric(
        &mut o,
        "mef_router_mef_packets_total",
        "counter",
        "MEF packets seen (stamped) and other packets.",
    );
    let _ = writeln!(
        o,
        "mef_router_mef_packets_total{{kind=\"stamped\"}} {}",
        st.stamped
    );
    let _ = writeln!(
        o,
        "mef_router_mef_packets_total{{kind=\"other\"}} {}",
        st.other_packets
    );
    let per_peer: [PeerMetric; 8] = [
        (
            "mef_router_tunnel_handshakes_total",
            "Handshakes completed.",
            |s| s.handshakes_completed,
        ),
        (
            "mef_router_tunnel_initiations_total",
            "Initiations sent.",
            |s| s.initiations_sent,
        ),
        (
            "mef_router_tunnel_tx_bytes_total",
            "Plaintext bytes sent.",
            |s| s.tx_bytes,
        ),
        (
            "mef_router_tunnel_rx_bytes_total",
            "Plaintext bytes received.",
            |s| s.rx_bytes,
        ),
        (
            "mef_router_tunnel_replays_total",
            "Replayed data packets rejected.",
            |s| s.replays,
        ),
        (
            "mef_router_tunnel_decrypt_failures_total",
            "Data packets failing authentication.",
            |s| s.decrypt_failures,
        ),
        (
            "mef_router_tunnel_handshake_rejected_total",
            "Handshake messages rejected.",
            |s| s.handshake_rejected,
        ),
        (
            "mef_router_tunnel_queue_drops_total",
            "Packets dropped waiting for a handshake.",
            |s| s.queue_drops,
        ),
    ];
    for (name, help, f) in per_peer {
        metric(&mut o, name, "counter", help);
        for (i, t) in r.tunnels().peers().iter().enumerate() {
            let _ = writeln!(
                o,
                "{name}{{peer=\"{}\"}} {}",
                esc(r.peer_name(PeerId(i))),
                f(t.stats())
            );
        }
    }
    if let Some(b) = r.split() {
        let bs = b.stats();
        metric(
            &mut o,
            "mef_router_split_flows_total",
            "counter",
            "TCP connections split (RFC 3135), by side.",
        );
        let _ = writeln!(
            o,
            "mef_router_split_flows_total{{side=\"ingress\"}} {}",
            bs.flows_ingress
        );
        let _ = writeln!(
            o,
            "mef_router_split_flows_total{{side=\"egress\"}} {}",
            bs.flows_egress
        );
        metric(
            &mut o,
            "mef_router_split_flows_active",
            "gauge",
            "Split TCP connections relaying now.",
        );
        let _ = writeln!(o, "mef_router_split_flows_active {}", bs.flows_active);
        metric(
            &mut o,
            "mef_router_split_flows_ended_total",
            "counter",
            "Split connections ended, by how.",
        );
        let _ = writeln!(
            o,
            "mef_router_split_flows_ended_total{{how=\"closed\"}} {}",
            bs.flows_closed
        );
        let _ = writeln!(
            o,
            "mef_router_split_flows_ended_total{{how=\"reset\"}} {}",
            bs.flows_reset
        );
        metric(
            &mut o,
            "mef_router_split_connections",
            "gauge",
            "Live MEF transport connections to peers.",
        );
        let _ = writeln!(o, "mef_router_split_connections {}", bs.connections);
        let t = &bs.transport;
        metric(
            &mut o,
            "mef_router_split_transport_packets_total",
            "counter",
            "MEF transport packets to peers: sent, and declared lost (RFC 9002 §6.1).",
        );
        for (kind, n) in [("sent", t.packets_sent), ("lost", t.packets_lost)] {
            let _ = writeln!(
                o,
                "mef_router_split_transport_packets_total{{kind=\"{kind}\"}} {n}"
            );
        }
        metric(
            &mut o,
            "mef_router_split_transport_bytes_total",
            "counter",
            "MEF transport bytes to peers: UDP payload sent, stream data sent once, stream data \
             sent again.",
        );
        for (kind, n) in [
            ("udp_payload", t.bytes_sent),
            ("stream_first", t.stream_bytes_sent),
            ("stream_retransmitted", t.bytes_retransmitted),
        ] {
            let _ = writeln!(
                o,
                "mef_router_split_transport_bytes_total{{kind=\"{kind}\"}} {n}"
            );
        }
        metric(
            &mut o,
            "mef_router_split_lan_events_total",
            "counter",
            "LAN-side TCP events of the splitter that lose or refuse a connection, by kind.",
        );
        let ss = &bs.split;
        for (kind, n) in [
            ("rejected_full", ss.rejected_full),
            ("handshake_failed", ss.handshake_failed),
            ("malformed", ss.malformed),
            ("time_wait_expired", ss.time_wait_expired),
        ] {
            let _ = writeln!(
                o,
                "mef_router_split_lan_events_total{{kind=\"{kind}\"}} {n}"
            );
        }
    }
    metric(
        &mut o,
        "mef_router_tunnel_state",
        "gauge",
        "1 for the tunnel's current state.",
    );
    for (i, t) in r.tunnels().peers().iter().enumerate() {
        let _ = writeln!(
            o,
            "mef_router_tunnel_state{{peer=\"{}\",state=\"{}\"}} 1",
            esc(r.peer_name(PeerId(i))),
            t.state()
        );
    }
    o
}

/// Renders the human-readable status.
pub fn status(
    r: &Router,
    rates: &BTreeMap<FlowKey, f64>,
    capacity: u64,
    lan: &[Prefix],
    now: Instant,
) -> String {
    let mut o = String::new();
    let q = r.egress().qdisc();
    let lan: Vec<String> = lan.iter().map(ToString::to_string).collect();
    let _ = writeln!(o, "public key: {}", r.tunnels().public_key());
    let _ = writeln!(o, "lan: {}", lan.join(", "));
    let _ = writeln!(
        o,
        "wan: capacity {:.1} Mbit/s, fair rate mu {:.1} Mbit/s, backlog {} B",
        capacity as f64 / 1e6,
        q.fair_rate_bps() / 1e6,
        q.fair_queue().backlog_bytes()
    );
    let _ = writeln!(o, "\ntunnels:");
    for (i, t) in r.tunnels().peers().iter().enumerate() {
        let id = PeerId(i);
        let s = t.stats();
        let age = t.session_started().map_or("-".into(), |c| {
            format!("{}s", now.saturating_duration_since(c).as_secs())
        });
        let _ = writeln!(
            o,
            "  {} ({}) endpoint {} state {} keys-age {} handshakes {} tx {} B rx {} B replays {} decrypt-failures {}",
            r.peer_name(id),
            t.peer_public(),
            r.peer_endpoint(id).map_or("-".into(), |e| e.to_string()),
            t.state(),
            age,
            s.handshakes_completed,
            s.tx_bytes,
            s.rx_bytes,
            s.replays,
            s.decrypt_failures,
        );
    }
    if let Some(b) = r.split() {
        let bs = b.stats();
        let _ = writeln!(
            o,
            "\nTCP split: {} active, {} ingress, {} egress, {} closed, {} reset, {} MEF connections",
            bs.flows_active,
            bs.flows_ingress,
            bs.flows_egress,
            bs.flows_closed,
            bs.flows_reset,
            bs.connections
        );
    }
    let _ = writeln!(o, "\nflows (busiest first):");
    for (k, rate) in busiest(rates).into_iter().take(20) {
        let alloc = q
            .controller()
            .allocation_bps(k)
            .map_or("-".into(), |a| format!("{:.2} Mbit/s", a / 1e6));
        let _ = writeln!(o, "  {k}: {:.2} Mbit/s (allocation {alloc})", rate / 1e6);
    }
    let st = q.stats();
    let c = r.counters();
    let _ = writeln!(
        o,
        "\ndrops: overflow {} policed {} tun-malformed {} no-route {} udp-rejected {} not-allowed {}",
        st.overflow_drops,
        st.policed_drops,
        c.tun_malformed,
        c.no_route,
        c.udp_rejected,
        c.not_allowed
    );
    o
}
