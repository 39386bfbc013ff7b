//! The two-flow RTT-fairness case (`fairness`, scenario `fairness-rtt`): two long flows share
//! the cell's 100 Mbit/s bottleneck, one from the client with the cell's RTT and one from the
//! second client, whose access link adds one more cell RTT (its RTT is **twice** the cell's;
//! see [`super::bed::access_config`]). Both start together and send for the bulk duration
//! with the same application and transport (kernel TCP with `cc` through the built-in
//! generator, TCP through the MEF routers, or MEF-native), each flow's goodput is measured at
//! the receiver (content checked), and the records carry both goodputs and Jain's index of
//! them (both flows' max-min fair share is half the bottleneck, so Jain's index of the goodputs
//! is that of their shares).
//!
//! Records: one aggregate (`goodput_mbps` the sum, `jain`, `flows` = 2), then one per flow
//! (`flow` = `rtt<N>ms` with that flow's base RTT, `share` = goodput / fair share,
//! `fair_share_mbps`); all carry the cell's RTT in `rtt_ms`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::Context;

use super::bed::Bed;
use super::tcp::{self, Cc};
use super::{CAPACITY_MBPS, CellSpec, GEN_PORT, KernelRecord, Tool, base, native, netns};

/// One flow of the fairness case.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowResult {
    /// The flow's base RTT in ms (propagation only).
    pub rtt_ms: u64,
    /// Goodput at the receiver, Mbit/s.
    pub goodput_mbps: f64,
    /// Retransmitted segments (TCP: the sender socket's `TCP_INFO` `tcpi_total_retrans`; MEF:
    /// packets that carried retransmitted data).
    pub retransmits: u64,
    /// The sender's smoothed RTT in ms (TCP: `TCP_INFO` `tcpi_rtt`; MEF: its own estimate).
    pub srtt_ms: Option<f64>,
    /// The receiver's first-byte-to-EOF time in seconds.
    pub seconds: f64,
    /// MEF only: the sender's rate mode at the end.
    pub mef_rate_mode: Option<String>,
}

/// The two flows' results, the short-RTT flow first.
#[derive(Debug, Clone, PartialEq)]
pub struct FairnessResult {
    /// The flows.
    pub flows: [FlowResult; 2],
}

impl FairnessResult {
    /// Jain's index of the two goodputs (`None` when both are zero).
    pub fn jain(&self) -> Option<f64> {
        crate::metrics::jain(&[self.flows[0].goodput_mbps, self.flows[1].goodput_mbps])
    }

    /// The records of this result: the aggregate, then one per flow (see the module docs).
    /// `path` and `cc` are the records' `path` and `cc` fields.
    pub fn records(
        &self,
        spec: &CellSpec,
        protocol: &str,
        path: &str,
        cc: &str,
        seed: u64,
    ) -> Vec<KernelRecord> {
        let fair = CAPACITY_MBPS * (1.0 - spec.loss) / 2.0;
        let total: f64 = self.flows.iter().map(|f| f.goodput_mbps).sum();
        let mut agg = base(spec, "fairness-rtt", protocol, seed);
        agg.goodput_mbps = total;
        agg.utilization = total / (2.0 * fair);
        agg.retransmits = self.flows.iter().map(|f| f.retransmits).sum();
        agg.jain = self.jain();
        agg.flows = Some(2);
        agg.fair_share_mbps = Some(fair);
        let seconds = self.flows.iter().map(|f| f.seconds).fold(0.0, f64::max);
        let mut out = vec![KernelRecord::new(agg, Tool::Fairness, path, cc, seconds)];
        for f in &self.flows {
            let mut r = base(spec, "fairness-rtt", protocol, seed);
            r.goodput_mbps = f.goodput_mbps;
            r.utilization = f.goodput_mbps / fair / 2.0;
            r.retransmits = f.retransmits;
            r.flow = Some(flow_label(f.rtt_ms));
            r.share = Some(f.goodput_mbps / fair);
            r.fair_share_mbps = Some(fair);
            let mut k = KernelRecord::new(r, Tool::Fairness, path, cc, f.seconds);
            k.srtt_ms = f.srtt_ms;
            k.mef_rate_mode = f.mef_rate_mode.clone();
            out.push(k);
        }
        out
    }
}

/// The label of a flow with base RTT `rtt_ms`: `rtt<N>ms`.
pub fn flow_label(rtt_ms: u64) -> String {
    format!("rtt{rtt_ms}ms")
}

/// The base RTTs of the two flows in a cell: the cell's, and the cell's plus the second
/// client's access link.
pub fn flow_rtts(spec: &CellSpec) -> [u64; 2] {
    let extra = super::bed::second_client_extra_rtt(spec).as_millis();
    [
        spec.rtt_ms,
        spec.rtt_ms + u64::try_from(extra).unwrap_or(u64::MAX - spec.rtt_ms),
    ]
}

/// The two senders' namespaces (client, second client); an error when the testbed was built
/// without a second client.
fn sender_namespaces(bed: &Bed) -> anyhow::Result<[std::path::PathBuf; 2]> {
    let c2 = bed
        .client2_ns()
        .context("the testbed has no second client (built without the fairness case)")?;
    Ok([netns::ns_path(bed.client_ns()), netns::ns_path(c2)])
}

/// Runs the two flows as kernel TCP with `cc` through the built-in generator (directly or
/// through the routers, as the testbed is built) for `dur`.
pub fn run_tcp(
    bed: &Bed,
    spec: &CellSpec,
    cc: Cc,
    dur: Duration,
) -> anyhow::Result<FairnessResult> {
    let addr = SocketAddr::V4(SocketAddrV4::new(bed.server_ip(), GEN_PORT));
    let listen = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, GEN_PORT));
    let _server = tcp::GenServer::start(Some(netns::ns_path(bed.server_ns())), listen)?;
    let rtts = flow_rtts(spec);
    let [p0, p1] = sender_namespaces(bed)?;
    let h0 = netns::spawn_in(p0, "fair-0", move || tcp::bulk(addr, cc, dur))?;
    let h1 = netns::spawn_in(p1, "fair-1", move || tcp::bulk(addr, cc, dur));
    // Join the first flow even when the second thread could not start.
    let r0 = netns::join(h0);
    let r1 = h1.and_then(netns::join);
    let flow = |rtt_ms: u64, b: tcp::BulkResult| FlowResult {
        rtt_ms,
        goodput_mbps: b.goodput_mbps,
        retransmits: b.retransmits,
        srtt_ms: b.srtt_ms,
        seconds: b.report.elapsed.as_secs_f64(),
        mef_rate_mode: None,
    };
    Ok(FairnessResult {
        flows: [
            flow(rtts[0], r0.context("flow with the cell's RTT")?),
            flow(rtts[1], r1.context("flow with twice the cell's RTT")?),
        ],
    })
}

/// Runs the two flows as MEF-native connections (one per client) through the routers for
/// `dur`.
pub fn run_native(bed: &Bed, spec: &CellSpec, dur: Duration) -> anyhow::Result<FairnessResult> {
    let listen = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, native::MEF_PORT));
    let server = native::NativeServer::start(Some(netns::ns_path(bed.server_ns())), listen)?;
    let addr = SocketAddr::V4(SocketAddrV4::new(bed.server_ip(), native::MEF_PORT));
    let key = server.public_key;
    let rtts = flow_rtts(spec);
    let [p0, p1] = sender_namespaces(bed)?;
    let h0 = netns::spawn_in(p0, "fair-mef-0", move || native::bulk(addr, key, dur))?;
    let h1 = netns::spawn_in(p1, "fair-mef-1", move || native::bulk(addr, key, dur));
    let r0 = netns::join(h0);
    let r1 = h1.and_then(netns::join);
    let flow = |rtt_ms: u64, b: native::NativeBulk| FlowResult {
        rtt_ms,
        goodput_mbps: b.goodput_mbps,
        retransmits: b.conn.retransmits,
        srtt_ms: Some(b.conn.srtt_ms),
        seconds: b.report.elapsed.as_secs_f64(),
        mef_rate_mode: Some(b.conn.mode),
    };
    Ok(FairnessResult {
        flows: [
            flow(rtts[0], r0.context("MEF flow with the cell's RTT")?),
            flow(rtts[1], r1.context("MEF flow with twice the cell's RTT")?),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(rtt_ms: u64, goodput_mbps: f64) -> FlowResult {
        FlowResult {
            rtt_ms,
            goodput_mbps,
            retransmits: 3,
            srtt_ms: None,
            seconds: 10.0,
            mef_rate_mode: None,
        }
    }

    #[test]
    fn second_flow_has_twice_the_rtt() {
        let spec = CellSpec {
            rtt_ms: 200,
            loss: 0.0,
        };
        assert_eq!(flow_rtts(&spec), [200, 400]);
        assert_eq!(flow_label(400), "rtt400ms");
    }

    #[test]
    fn records_carry_both_flows_and_jain() {
        let spec = CellSpec {
            rtt_ms: 50,
            loss: 0.01,
        };
        let r = FairnessResult {
            flows: [flow(50, 60.0), flow(100, 20.0)],
        };
        // (80)² / (2 · (3600 + 400)) = 0.8
        assert!((r.jain().expect("jain") - 0.8).abs() < 1e-12);
        let recs = r.records(&spec, "kernel-cubic", "direct", "cubic", 1);
        assert_eq!(recs.len(), 3);
        let agg = &recs[0].record;
        assert_eq!(agg.scenario, "fairness-rtt");
        assert_eq!(agg.flow, None);
        assert_eq!(agg.flows, Some(2));
        assert!((agg.goodput_mbps - 80.0).abs() < 1e-12);
        assert_eq!(agg.retransmits, 6);
        assert!((agg.utilization - 80.0 / 99.0).abs() < 1e-12);
        assert_eq!(recs[1].record.flow.as_deref(), Some("rtt50ms"));
        assert_eq!(recs[2].record.flow.as_deref(), Some("rtt100ms"));
        // Fair share 49.5 Mbit/s each.
        assert!((recs[1].record.share.expect("share") - 60.0 / 49.5).abs() < 1e-12);
        assert!(
            recs.iter()
                .all(|k| k.tool == "fairness" && k.record.rtt_ms == 50.0)
        );
        let zero = FairnessResult {
            flows: [flow(50, 0.0), flow(100, 0.0)],
        };
        assert_eq!(zero.jain(), None);
    }
}
