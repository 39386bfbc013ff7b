//! The per-link fair-rate controller: which flows cross the link, what each can use, and the
//! single fair rate μ stamped on every MEF packet.
//!
//! # How μ is computed
//!
//! * **Water-filling** ([`water_fill`]): μ solves `Σ min(d_i, μ) = C_eff`. A flow's `d_i` is
//!   the most it can use: its declared demand; the stamp already lowered by upstream MEF routers
//!   (`hops > 0`); its current pacing rate (plus a small headroom so it can grow) when that rate
//!   is clearly below every μ this router stamped during the flow's feedback delay, i.e. it is
//!   bottlenecked elsewhere (Charny's ABR test: Charny, Clark & Jain, ICC 1995); its measured rate
//!   when it declares itself application-limited; the floor while it has stopped sending
//!   ([`Constraint::Paused`]); and for non-MEF flows the measured arrival rate plus headroom, or
//!   unlimited while the flow keeps a standing queue in the fair scheduler (it wants more than it
//!   gets: greedy Cubic/BBR). Each router stamps μ (never more than γC) and the sender paces at
//!   the minimum over its path, so max-min fairness emerges across a parking lot.
//! * **New flows at once** (seed 003 "MEF 原理": "在最开始就公平分配好各个连接的带宽"): the first
//!   packet of a flow (its `Initial`, or any packet of an unknown flow) registers it and μ is
//!   recomputed *before* that packet is stamped, so the sender's first rate is its fair share.
//!   RCP (Dukkipati & McKeown) also stamps the header-only SYN, but its rate only reflects the
//!   new flow after the next control interval. (Only a burst of arrivals within one RTT, whose
//!   earlier members were promised more than their share, lowers a newcomer's first stamp: see
//!   [`RateController::stamp_kbps`].)
//! * **RCP correction**: `C_eff = γ·C·k·l`. Every control interval `T = min(d̄, 10 ms)` (clamped
//!   below by `min_interval`) the calibration `k` follows the RCP law
//!   `k ← k·[1 + (T/d̄)·(α(γC − y) − β·q/d̄)/(γC)]` (Dukkipati & McKeown, "Processor sharing flows
//!   in the Internet", IWQoS 2005, and the ns-2 implementation). `d̄` is the mean RTT the MEF
//!   senders report. `y` is the load the *current* allocation will carry once every sender has
//!   heard it: `y = ρ·Σ_MEF min(cap_i, μ)/l + Σ app-limited or policed MEF measured + Σ_non-MEF
//!   min(measured_j, a_j)` (a greedy non-MEF flow counts at `a_j`). The usage ratio
//!   `ρ = Σ sent / Σ expected` compares what MEF senders past their handshake actually sent with
//!   what they should have sent given the stamps they had heard (their Initial stamp during their
//!   first RTT of data, then the μ stamped one RTT before), averaged over `rate_window`. So `y`
//!   is blind to the transients of joins and leaves (old flows still at the old rate for one RTT)
//!   but sees real calibration errors (senders pacing other bytes than the link counts, upstream
//!   losses). `q` is the persistent MEF backlog (minimum over the interval, as XCP's persistent
//!   queue) the allocation is responsible for: over-allocation makes *every* flow held at μ
//!   queue, while a queue in one flow only is that flow's own excess (a cheater, a burst, a
//!   sender late to hear a lower μ) which DRR keeps off the others, so `q` leaves out flows the
//!   policer is dropping and is capped at `n ×` the lower median backlog of the `n` flows held at
//!   μ. `k` stays in `[correction_min, correction_max]`.
//! * **Lending**: when flows come and go all the time (short transfers), the senders pace at a μ
//!   one RTT old that still reserved the shares of flows which have finished since, so the link
//!   runs below γC however exact the allocation. The lending factor `l ∈ [1, lending_max]`
//!   follows the same law, slowly (`lend_alpha`, over `lend_window` mean RTTs), on the input
//!   actually measured (RCP's own `y`), and gives those shares out in advance, as RCP's
//!   spare-capacity term does. It starts only after a busy period has lasted two averaging
//!   windows, is taken back multiplicatively as soon as the measured input exceeds γC, and is
//!   bounded (1.5) so that even if every flow expected to finish keeps sending the overload is at
//!   most half a bandwidth-delay product for one RTT.
//! * `k` and `l` only rise while some flow is held at μ here and μ is below γC (no wind-up when
//!   nobody could use more), and both return to 1 when no MEF flow is left.
//!
//! # Why γ = 0.99
//!
//! The benchmark wants ≥ 0.98 link utilisation with a near-zero queue and no drops. MEF senders
//! pace exactly at μ, so in steady state the input rate is `Σ allocations = γ·C·k` with `k → 1`:
//! utilisation is γ. The remaining 1 % absorbs what pacing cannot: phase collisions of many
//! paced flows (a momentary queue of at most one packet per flow) and jitter; the β term drains
//! whatever builds anyway. A larger γ (1.0, as in some RCP runs) leaves no drain rate at all, so
//! any queue would persist; a smaller one (0.95) throws away goodput for nothing with paced
//! senders. The calibration also absorbs accounting differences between the sender's pacing and
//! wire bytes (IP/UDP headers), in both directions.
//!
//! # Releasing shares
//!
//! * A packet with the `CLOSING` flag removes its flow at once (μ is recomputed before that packet
//!   is stamped) and leaves a tombstone so late packets of the connection do not re-register it.
//! * A flow that stops sending (nothing for `pause_gaps` = 4 packet gaps at its pacing rate, at
//!   least `pause_min` = 5 ms) is *paused*: counted at the floor until its next packet, so a
//!   finished transfer waiting for its last acknowledgements, or an idle application, gives its
//!   share to the others within milliseconds. Its next packet restores it.
//! * Idle flows expire after `max(idle_rtts·rtt, min_idle, 3 packet gaps at the flow's pacing
//!   rate)`, capped at `max_idle`: with the defaults `max(3·rtt, 20 ms)` for any flow pacing at
//!   least a 1500-byte packet every few milliseconds (an `Initial` without an RTT sample uses
//!   `default_rtt` = 100 ms). Three RTTs covers a sender that waits one RTT for its handshake; the
//!   state is then forgotten even if the `CLOSING` packet was lost. Non-MEF flows (no RTT known)
//!   expire after `other_idle`.
//! * MEF addresses packets to the connection id the *receiver* chose, so a client's Initial (to
//!   its own id) and its data (to the server's id) have different keys (docs/PROTOCOL.md §5).
//!   The first data packet of an unknown key continues the handshake-only flow of the same socket
//!   pair whose age best matches the packet's RTT sample, instead of counting the connection
//!   twice.
//!
//! The controller is sans-IO: it never reads a clock, every input takes `now`. Drive it with
//! [`on_mef_packet`](RateController::on_mef_packet) / [`on_other_packet`](RateController::on_other_packet)
//! per arriving packet, [`record_admitted`](RateController::record_admitted) /
//! [`record_dropped`](RateController::record_dropped) / [`record_policed`](RateController::record_policed) /
//! [`observe_mef_backlog`](RateController::observe_mef_backlog) from the scheduler, and
//! [`handle_timeout`](RateController::handle_timeout) whenever [`poll_timeout`](RateController::poll_timeout)
//! has passed. Stamp each MEF packet with [`stamp_kbps`](RateController::stamp_kbps) and police
//! it at [`policing_rate_bps`](RateController::policing_rate_bps).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mef_transport::wire::header::{UNLIMITED_KBPS, flags};
use mef_transport::wire::{Header, PacketType};

use crate::error::{ConfigError, check_range};
use crate::flow::FlowKey;
use crate::history::RateHistory;
use crate::waterfill::water_fill;

/// Bytes of a full-size packet, used to turn rates into packet gaps.
const MTU_BYTES: f64 = 1500.0;

/// Parameters of a [`RateController`]. Every field has a documented default.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// Link capacity C in bits per second of wire bytes (UDP payload + 28 bytes IPv4/UDP, as
    /// `sim_netem::LinkConfig::rate_bps`). Default 100 Mbit/s.
    pub capacity_bps: u64,
    /// Target utilisation γ: the allocation is `γ·C·k`. Default 0.99 (see the module docs).
    pub gamma: f64,
    /// RCP's α: weight of spare capacity `γC − y` in the correction. Default 0.4 (the RCP ns-2
    /// patch; the paper uses 0.1 for an uncorrected R, here the water-filling does the bulk).
    pub alpha: f64,
    /// RCP's β: weight of the persistent queue. Default 0.4 (RCP ns-2).
    pub beta: f64,
    /// Upper bound of the control interval T = min(d̄, this). Default 10 ms (RCP).
    pub max_interval: Duration,
    /// Lower bound of the control interval (so sub-millisecond RTTs do not make the rate
    /// measurement a one-packet sample). Default 1 ms.
    pub min_interval: Duration,
    /// Lower bound of the correction `k`. Default 0.25.
    pub correction_min: f64,
    /// Upper bound of the correction `k`. Default 1.2 (room for the headroom reserved for
    /// flows constrained elsewhere and for senders that under-use their rate).
    pub correction_max: f64,
    /// A flow counts as constrained elsewhere when its current rate is below
    /// `(1 − margin)·min μ` over its feedback window. Default 0.05.
    pub constrained_margin: f64,
    /// Headroom added to the current rate of a flow constrained elsewhere (and to the measured
    /// rate of an application-limited one) so it can grow. Default 0.05.
    pub constrained_headroom: f64,
    /// Headroom added to the measured rate of a non-MEF flow without a standing queue.
    /// Default 0.10.
    pub other_headroom: f64,
    /// A non-MEF flow with at least this many bytes queued at a control tick is greedy (it
    /// wants more than it gets) and is counted at μ for `rate_window`. Default 3000 (2 MTU).
    pub greedy_backlog_bytes: usize,
    /// Time constant of the per-flow rate estimators (exponential average over control
    /// intervals, as CSFQ's estimator: Stoica, Shenker & Zhang, SIGCOMM 1998). Default 40 ms.
    pub rate_window: Duration,
    /// RTT assumed for flows that do not report one (and for d̄ without MEF flows).
    /// Default 100 ms.
    pub default_rtt: Duration,
    /// Largest RTT believed from a header (bounds every RTT-derived window). Default 1 s.
    pub max_rtt: Duration,
    /// Added to the feedback window `2·rtt` (the time between stamping μ and seeing the
    /// sender's packets at that rate: one RTT for the echo plus the sender-to-router leg) for
    /// pacing and timer slop. Default 10 ms.
    pub feedback_margin: Duration,
    /// Idle MEF flows expire after this many RTTs (see the module docs). Default 3.
    pub idle_rtts: f64,
    /// Smallest idle timeout. Default 20 ms.
    pub min_idle: Duration,
    /// Largest idle timeout of a MEF flow. Default 2 s.
    pub max_idle: Duration,
    /// Idle timeout of non-MEF flows. Default 500 ms.
    pub other_idle: Duration,
    /// Floor of μ and of every demand estimate, bits/s. Default 8 kbit/s.
    pub min_rate_bps: u64,
    /// Gain of the per-flow drain: a flow with its own standing queue `b` (beyond
    /// `drain_threshold_bytes`) is stamped `μ − drain_gain·b/rtt` so it empties its own queue in
    /// about two RTTs (XCP's per-flow feedback, Katabi et al. 2002, applied to one flow's
    /// excess). Default 0.5.
    pub drain_gain: f64,
    /// Largest per-flow drain as a fraction of μ. Default 0.5.
    pub drain_max: f64,
    /// A flow's own backlog up to this many bytes is pacing jitter, not excess. Default 3000.
    pub drain_threshold_bytes: usize,
    /// Queue (as time at link rate) that the arrival of new flows may build before their first
    /// stamp is lowered. See [`RateController::stamp_kbps`]. Default 5 ms.
    pub join_budget: Duration,
    /// A new flow's first stamp is never below this fraction of μ. Default 0.1.
    pub join_floor: f64,
    /// A MEF flow silent for this many packet gaps at its pacing rate is paused (see
    /// [`Constraint::Paused`]). Default 4.
    pub pause_gaps: f64,
    /// A flow is never paused after less silence than this. Default 5 ms.
    pub pause_min: Duration,
    /// Weight of measured spare capacity in the slow lending loop (see the module docs).
    /// Default 0.1.
    pub lend_alpha: f64,
    /// Time constant of the measured input rate for the lending loop, in mean RTTs.
    /// Default 4.
    pub lend_window: f64,
    /// Upper bound of the lending factor. Default 1.5 (bounds the overload if every flow that
    /// was expected to finish keeps sending: at most half a bandwidth-delay product of queue
    /// for one RTT, which the 1-BDP buffer absorbs).
    pub lending_max: f64,
    /// Most μ change points remembered (the history also forgets changes older than
    /// `2·max_rtt + feedback_margin`). Default 16384.
    pub history_points: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            capacity_bps: 100_000_000,
            gamma: 0.99,
            alpha: 0.4,
            beta: 0.4,
            max_interval: Duration::from_millis(10),
            min_interval: Duration::from_millis(1),
            correction_min: 0.25,
            correction_max: 1.2,
            constrained_margin: 0.05,
            constrained_headroom: 0.05,
            other_headroom: 0.10,
            greedy_backlog_bytes: 3000,
            rate_window: Duration::from_millis(40),
            default_rtt: Duration::from_millis(100),
            max_rtt: Duration::from_secs(1),
            feedback_margin: Duration::from_millis(10),
            idle_rtts: 3.0,
            min_idle: Duration::from_millis(20),
            max_idle: Duration::from_secs(2),
            other_idle: Duration::from_millis(500),
            min_rate_bps: 8_000,
            history_points: 16_384,
            drain_gain: 0.5,
            drain_max: 0.5,
            drain_threshold_bytes: 3000,
            join_budget: Duration::from_millis(5),
            join_floor: 0.1,
            pause_gaps: 4.0,
            lend_alpha: 0.1,
            lend_window: 4.0,
            lending_max: 1.5,
            pause_min: Duration::from_millis(5),
        }
    }
}

impl ControllerConfig {
    /// The defaults for a link of `capacity_bps`.
    pub fn with_capacity(capacity_bps: u64) -> Self {
        Self {
            capacity_bps,
            ..Self::default()
        }
    }

    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.capacity_bps == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        check_range("gamma", self.gamma, 0.01, 1.0, "must be in [0.01, 1]")?;
        check_range("alpha", self.alpha, 0.0, 2.0, "must be in [0, 2]")?;
        check_range("beta", self.beta, 0.0, 2.0, "must be in [0, 2]")?;
        check_range(
            "correction_min",
            self.correction_min,
            0.01,
            1.0,
            "must be in [0.01, 1]",
        )?;
        check_range(
            "correction_max",
            self.correction_max,
            1.0,
            4.0,
            "must be in [1, 4]",
        )?;
        check_range(
            "constrained_margin",
            self.constrained_margin,
            0.0,
            0.5,
            "must be in [0, 0.5]",
        )?;
        check_range(
            "constrained_headroom",
            self.constrained_headroom,
            0.0,
            1.0,
            "must be in [0, 1]",
        )?;
        check_range(
            "other_headroom",
            self.other_headroom,
            0.0,
            1.0,
            "must be in [0, 1]",
        )?;
        check_range(
            "idle_rtts",
            self.idle_rtts,
            1.0,
            100.0,
            "must be in [1, 100]",
        )?;
        check_range("drain_gain", self.drain_gain, 0.0, 2.0, "must be in [0, 2]")?;
        check_range("drain_max", self.drain_max, 0.0, 1.0, "must be in [0, 1]")?;
        check_range("join_floor", self.join_floor, 0.0, 1.0, "must be in [0, 1]")?;
        check_range(
            "pause_gaps",
            self.pause_gaps,
            1.0,
            1000.0,
            "must be in [1, 1000]",
        )?;
        check_range("lend_alpha", self.lend_alpha, 0.0, 2.0, "must be in [0, 2]")?;
        check_range(
            "lend_window",
            self.lend_window,
            1.0,
            1000.0,
            "must be in [1, 1000]",
        )?;
        check_range(
            "lending_max",
            self.lending_max,
            1.0,
            10.0,
            "must be in [1, 10]",
        )?;
        for (name, d) in [
            ("max_interval", self.max_interval),
            ("min_interval", self.min_interval),
            ("rate_window", self.rate_window),
            ("default_rtt", self.default_rtt),
            ("max_rtt", self.max_rtt),
            ("min_idle", self.min_idle),
            ("max_idle", self.max_idle),
            ("other_idle", self.other_idle),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.min_interval > self.max_interval {
            return Err(ConfigError::OutOfRange {
                name: "min_interval",
                value: self.min_interval.as_secs_f64(),
                reason: "must not exceed max_interval",
            });
        }
        Ok(())
    }
}

/// Why a flow's demand `d_i` in the water-filling is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    /// Nothing limits it but this link: it gets μ.
    Unlimited,
    /// Its declared demand.
    Demand,
    /// The stamp lowered by MEF routers upstream.
    Upstream,
    /// Its current rate (plus headroom): bottlenecked somewhere downstream.
    Elsewhere,
    /// It declared itself application-limited: its measured rate (plus headroom).
    AppLimited,
    /// A non-MEF flow without a standing queue: its measured rate (plus headroom).
    Measured,
    /// A non-MEF flow with a standing queue: unlimited, it gets μ like everyone else.
    Greedy,
    /// A MEF flow that stopped sending (nothing for `pause_gaps` packet gaps at its pacing
    /// rate): counted at the floor until its next packet, so the share it does not use
    /// (a finished transfer waiting for its last acknowledgements, an idle application) goes
    /// to the others at once instead of after the idle timeout.
    Paused,
}

/// What [`RateController::on_mef_packet`] did with a packet's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent {
    /// The flow was new: registered and μ recomputed before this packet is stamped.
    Registered,
    /// A known flow: its parameters were refreshed. This includes the first packet under the
    /// connection id the server chose, which continues the flow its client's `Initial` (sent to
    /// the client-chosen id) registered.
    Updated,
    /// The packet carried `CLOSING`: the flow was removed and μ recomputed.
    Closed,
    /// The packet belongs to no live flow and does not start one (a `Reset`, a `CLOSING` packet
    /// of an unknown flow, or a late packet of a flow closed moments ago).
    Ignored,
}

/// A read-only view of one flow.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowInfo {
    /// The flow.
    pub key: FlowKey,
    /// Its allocation `min(d_i, μ)` in bits/s at the last computation.
    pub allocation_bps: f64,
    /// `d_i` used by the water-filling (infinite when unlimited).
    pub demand_bps: f64,
    /// Why `d_i` is what it is.
    pub constraint: Constraint,
    /// Measured arrival rate of admitted wire bytes (exponential average), bits/s.
    pub measured_bps: f64,
    /// MEF only: the demand declared in the header (infinite for unlimited).
    pub declared_demand_bps: Option<f64>,
    /// MEF only: the sender's current pacing rate from the header (0 = not yet known).
    pub current_bps: Option<f64>,
    /// MEF only: the RTT the sender reported.
    pub rtt: Option<Duration>,
    /// When the flow was registered.
    pub first_seen: Instant,
    /// When its last packet arrived.
    pub last_seen: Instant,
    /// Packets seen.
    pub packets: u64,
    /// Admitted wire bytes.
    pub bytes: u64,
}

/// How many flows the controller tracks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// MEF flows.
    pub mef: usize,
    /// Non-MEF flows.
    pub other: usize,
    /// Flows held at μ (bottlenecked on this link) at the last computation.
    pub bottlenecked: usize,
}

#[derive(Debug, Clone)]
struct MefState {
    declared_demand_bps: f64,
    current_bps: f64,
    upstream_bps: f64,
    rtt: Option<Duration>,
    app_limited: bool,
}

#[derive(Debug, Clone)]
struct Flow {
    first_seen: Instant,
    last_seen: Instant,
    measured_bps: f64,
    tick_bytes: u64,
    packets: u64,
    bytes: u64,
    demand_bps: f64,
    /// What the flow will actually send when not held here: `demand_bps` without headroom.
    cap_bps: f64,
    constraint: Constraint,
    last_backlogged: Option<Instant>,
    last_policed: Option<Instant>,
    /// When a packet of the flow was last stamped below μ to drain its own queue.
    last_drained: Option<Instant>,
    /// Registered by its `Initial`: the sender starts pacing one RTT after `first_seen`.
    by_initial: bool,
    /// Whether anything but `Initial` packets was seen.
    data_seen: bool,
    /// The rate stamped on its `Initial` (what it paces at during its first RTT of data).
    initial_stamp_bps: Option<f64>,
    mef: Option<MefState>,
}

impl Flow {
    fn new(now: Instant, mef: Option<MefState>) -> Self {
        Self {
            first_seen: now,
            last_seen: now,
            measured_bps: 0.0,
            tick_bytes: 0,
            packets: 0,
            bytes: 0,
            demand_bps: f64::INFINITY,
            cap_bps: f64::INFINITY,
            constraint: Constraint::Unlimited,
            last_backlogged: None,
            last_policed: None,
            last_drained: None,
            by_initial: false,
            data_seen: false,
            initial_stamp_bps: None,
            mef,
        }
    }
}

fn kbps_to_bps(kbps: u32) -> f64 {
    if kbps == UNLIMITED_KBPS {
        f64::INFINITY
    } else {
        f64::from(kbps) * 1000.0
    }
}

/// The fair-rate controller of one egress link (see the module docs).
#[derive(Debug, Clone)]
pub struct RateController {
    cfg: ControllerConfig,
    flows: BTreeMap<FlowKey, Flow>,
    /// Recently closed flows and until when their late packets are ignored.
    tombstones: BTreeMap<FlowKey, Instant>,
    /// μ over time; `current()` is μ now.
    history: RateHistory,
    correction: f64,
    mean_rtt: Duration,
    bottlenecked: usize,
    last_tick: Option<Instant>,
    /// Minimum MEF backlog (bytes) seen since the last tick, and the latest value.
    q_min: usize,
    q_now: usize,
    recomputations: u64,
    /// Exponential averages of Σ sent and Σ expected by MEF senders (bits/s), and their ratio.
    sent_avg: f64,
    expected_avg: f64,
    usage_ratio: f64,
    queue_estimate: usize,
    /// Exponential average of the measured input rate (bits/s) over two mean RTTs.
    input_avg: f64,
    /// The lending factor (see the module docs).
    lending: f64,
    /// Start of the current busy period (MEF flows present).
    busy_since: Option<Instant>,
}

impl RateController {
    /// A controller for one link. Fails if the configuration is out of range.
    pub fn new(cfg: ControllerConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let gc = cfg.gamma * cfg.capacity_bps as f64;
        let horizon = cfg.max_rtt * 3 + cfg.feedback_margin;
        let history = RateHistory::new(gc, horizon, cfg.history_points);
        let mean_rtt = cfg.default_rtt;
        Ok(Self {
            cfg,
            flows: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            history,
            correction: 1.0,
            mean_rtt,
            bottlenecked: 0,
            last_tick: None,
            q_min: 0,
            q_now: 0,
            recomputations: 0,
            sent_avg: 0.0,
            expected_avg: 0.0,
            usage_ratio: 1.0,
            queue_estimate: 0,
            input_avg: f64::NAN,
            lending: 1.0,
            busy_since: None,
        })
    }

    // ----- getters -----

    /// Changes the link capacity C (bits/s of wire bytes as this controller counts them), for
    /// a link whose usable capacity moves, e.g. when part of it goes to encapsulation overhead
    /// the controller does not see. At least 1 bit/s.
    pub fn set_capacity_bps(&mut self, capacity_bps: u64) {
        self.cfg.capacity_bps = capacity_bps.max(1);
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// The fair rate μ in bits/s: the water level stamped on every MEF packet.
    pub fn fair_rate_bps(&self) -> f64 {
        self.history.current()
    }

    /// μ in the header's unit (kbit/s, rounded down, at least 1, never the "unlimited" value).
    pub fn fair_rate_kbps(&self) -> u32 {
        Self::to_kbps(self.fair_rate_bps())
    }

    /// The rate to stamp on a packet of flow `key` (after [`on_mef_packet`](Self::on_mef_packet)
    /// has seen it), in the header's unit. Normally μ. Two refinements, both only ever lower:
    ///
    /// * **Joins.** A new flow paces at the stamp on its `Initial` from one RTT on. Flows already
    ///   here may still be sending at a higher, older μ by then: flows with a longer RTT hear the
    ///   new μ later, and flows that registered moments before (a burst of arrivals) are committed
    ///   to their own `Initial` stamp for their first RTT. If that committed excess over the new
    ///   allocations exceeds what `join_budget` of queue can absorb, the newcomer's `Initial` is
    ///   stamped lower by the difference (never below `join_floor·μ`); its data packets carry μ,
    ///   so it is at its fair share one RTT later. A newcomer joining established flows of no
    ///   longer RTT gets exactly μ (seed 003: the fair share from the start).
    /// * **Own queue.** A flow with its own standing queue in the fair scheduler (it sent above
    ///   its share: it heard μ late, or is bursting) is stamped
    ///   `μ − drain_gain·(backlog − drain_threshold)/rtt`, at most `drain_max·μ` less, so it
    ///   drains its own queue without lowering anyone else's rate.
    pub fn stamp_kbps(
        &mut self,
        now: Instant,
        key: &FlowKey,
        packet_type: PacketType,
        own_backlog_bytes: usize,
    ) -> u32 {
        let mu = self.fair_rate_bps();
        let mut rate = mu;
        let (threshold, gain, max) = (
            self.cfg.drain_threshold_bytes,
            self.cfg.drain_gain,
            self.cfg.drain_max,
        );
        let (default_rtt, lo, hi) = (
            self.cfg.default_rtt,
            self.cfg.min_interval,
            self.cfg.max_rtt,
        );
        if let Some(f) = self.flows.get_mut(key) {
            if packet_type == PacketType::Initial
                && let Some(s) = f.initial_stamp_bps
            {
                rate = rate.min(s);
            }
            let excess = own_backlog_bytes.saturating_sub(threshold);
            if excess > 0 {
                let rtt = f.mef.as_ref().and_then(|m| m.rtt).unwrap_or(default_rtt);
                let rtt = rtt.clamp(lo, hi).as_secs_f64();
                let drain = gain * excess as f64 * 8.0 / rtt;
                rate -= drain.min(max * mu);
                f.last_drained = Some(now);
            }
        }
        Self::to_kbps(rate.max(self.cfg.min_rate_bps as f64))
    }

    fn to_kbps(bps: f64) -> u32 {
        let k = (bps / 1000.0).floor();
        if k >= f64::from(UNLIMITED_KBPS - 1) {
            UNLIMITED_KBPS - 1
        } else {
            (k as u32).max(1)
        }
    }

    /// The first stamp of a flow registering now (see [`stamp_kbps`](Self::stamp_kbps)).
    fn join_stamp_bps(&self, now: Instant, key: &FlowKey, rtt: Option<Duration>) -> f64 {
        let mu = self.fair_rate_bps();
        // An Initial carries no RTT sample yet: the link's mean RTT is the best guess.
        let guess = self.mean_rtt;
        let rtt_k = rtt.unwrap_or(guess).min(self.cfg.max_rtt);
        // The newcomer paces at its Initial stamp over [start, end).
        let start = now + rtt_k;
        let end = start + rtt_k;
        let mut excess = 0.0;
        for (k, f) in &self.flows {
            let Some(m) = &f.mef else { continue };
            if k == key || f.constraint == Constraint::AppLimited {
                continue;
            }
            let rtt_j = m.rtt.unwrap_or(guess).min(self.cfg.max_rtt);
            // An established sender paces at the μ stamped one RTT earlier; the part of that
            // window still in the future will carry the new μ.
            let mut committed = mu;
            // (Stamps from `now` on carry the new μ: this registration comes first.)
            if let Some(since) = start.checked_sub(rtt_j)
                && since < now
            {
                committed = committed.max(self.history.max_since(since));
            }
            // A flow that registered moments ago paces at its Initial stamp for one RTT.
            if let Some(s) = f.initial_stamp_bps {
                let (a, b) = (f.first_seen + rtt_j, f.first_seen + rtt_j * 2);
                if a < end && b > start {
                    committed = committed.max(s);
                }
            }
            let alloc = f.demand_bps.min(mu);
            excess += (f.cap_bps.min(committed) - alloc).max(0.0);
        }
        let budget = self.cfg.capacity_bps as f64 * self.cfg.join_budget.as_secs_f64()
            / rtt_k.max(self.cfg.min_interval).as_secs_f64();
        let floor = (self.cfg.join_floor * mu).max(self.cfg.min_rate_bps as f64);
        (mu - (excess - budget).max(0.0)).clamp(floor.min(mu), mu)
    }

    /// The capacity shared out, `γ·C·k`, bits/s.
    pub fn effective_capacity_bps(&self) -> f64 {
        self.cfg.gamma * self.cfg.capacity_bps as f64 * self.correction * self.lending
    }

    /// The lending factor `l ≥ 1`: shares reserved for flows that have finished are lent out in
    /// advance when flows come and go all the time (see the module docs).
    pub fn lending(&self) -> f64 {
        self.lending
    }

    /// The RCP correction factor `k`.
    pub fn correction(&self) -> f64 {
        self.correction
    }

    /// The usage ratio ρ: what MEF senders sent over what they were expected to send given the
    /// μ they had heard (1 = exact; see the module docs).
    pub fn usage_ratio(&self) -> f64 {
        self.usage_ratio
    }

    /// The queue `q` (bytes) used by the last correction step (see the module docs).
    pub fn queue_estimate(&self) -> usize {
        self.queue_estimate
    }

    /// d̄: mean RTT reported by the MEF flows (the default RTT if none reports one).
    pub fn mean_rtt(&self) -> Duration {
        self.mean_rtt
    }

    /// The control interval `T = clamp(d̄, min_interval, max_interval)`.
    pub fn control_interval(&self) -> Duration {
        self.mean_rtt
            .clamp(self.cfg.min_interval, self.cfg.max_interval)
    }

    /// Flow counts.
    pub fn flow_counts(&self) -> FlowCounts {
        let mef = self.flows.values().filter(|f| f.mef.is_some()).count();
        FlowCounts {
            mef,
            other: self.flows.len() - mef,
            bottlenecked: self.bottlenecked,
        }
    }

    /// How many times μ was recomputed (on flow arrivals, departures and control ticks).
    pub fn recomputations(&self) -> u64 {
        self.recomputations
    }

    /// A flow's allocation `min(d_i, μ)` in bits/s, if the flow is tracked.
    pub fn allocation_bps(&self, key: &FlowKey) -> Option<f64> {
        self.flows
            .get(key)
            .map(|f| f.demand_bps.min(self.fair_rate_bps()))
    }

    /// One flow's state.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowInfo> {
        self.flows.get(key).map(|f| self.info(key, f))
    }

    /// All tracked flows, in key order.
    pub fn flows(&self) -> impl Iterator<Item = FlowInfo> + '_ {
        self.flows.iter().map(|(k, f)| self.info(k, f))
    }

    fn info(&self, key: &FlowKey, f: &Flow) -> FlowInfo {
        FlowInfo {
            key: *key,
            allocation_bps: f.demand_bps.min(self.fair_rate_bps()),
            demand_bps: f.demand_bps,
            constraint: f.constraint,
            measured_bps: f.measured_bps,
            declared_demand_bps: f.mef.as_ref().map(|m| m.declared_demand_bps),
            current_bps: f.mef.as_ref().map(|m| m.current_bps),
            rtt: f.mef.as_ref().and_then(|m| m.rtt),
            first_seen: f.first_seen,
            last_seen: f.last_seen,
            packets: f.packets,
            bytes: f.bytes,
        }
    }

    /// The feedback window of a flow with this RTT: `2·rtt + feedback_margin`.
    pub fn feedback_window(&self, rtt: Option<Duration>) -> Duration {
        let rtt = rtt.unwrap_or(self.cfg.default_rtt).min(self.cfg.max_rtt);
        rtt * 2 + self.cfg.feedback_margin
    }

    /// The most an honest sender of flow `key` (with this RTT) can be pacing at now: the
    /// highest μ stamped during its feedback window `2·rtt + feedback_margin` (it hears a change
    /// one RTT after the stamp and its packets take up to another RTT to come back). For a flow
    /// that registered with an `Initial`, the window starts no earlier than its registration: it
    /// was never told a rate from before it existed (this keeps a cheater joining a busy link
    /// from using the μ of the moment before it arrived). The policer enforces this plus slack.
    pub fn policing_rate_bps(&self, now: Instant, key: &FlowKey, rtt: Option<Duration>) -> f64 {
        let mut since = now.checked_sub(self.feedback_window(rtt)).unwrap_or(now);
        if let Some(f) = self.flows.get(key)
            && f.by_initial
        {
            since = since.max(f.first_seen);
        }
        self.history.max_since(since)
    }

    /// The lowest μ stamped during the feedback window of a flow with this RTT.
    pub fn min_recent_rate_bps(&self, now: Instant, rtt: Option<Duration>) -> f64 {
        let since = now.checked_sub(self.feedback_window(rtt)).unwrap_or(now);
        self.history.min_since(since)
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next (`None` before the first
    /// packet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.last_tick.map(|t| t + self.control_interval())
    }

    // ----- inputs -----

    fn start_clock(&mut self, now: Instant) {
        if self.last_tick.is_none() {
            self.last_tick = Some(now);
            self.history.set(now, self.history.current());
        }
    }

    fn rtt_of(rtt_us: u32, max: Duration) -> Option<Duration> {
        (rtt_us > 0).then(|| Duration::from_micros(u64::from(rtt_us)).min(max))
    }

    /// A MEF packet from `src` to `dst` with header `hdr` arrived at `now`. Registers, refreshes
    /// or removes its flow; on registration and removal μ is recomputed before returning, so
    /// [`fair_rate_kbps`](Self::fair_rate_kbps) is the value to stamp on this very packet.
    /// Bytes are counted separately with [`record_admitted`](Self::record_admitted) once the
    /// packet has passed the policer.
    pub fn on_mef_packet(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
        hdr: &Header,
    ) -> FlowEvent {
        self.start_clock(now);
        let key = FlowKey::Mef {
            src,
            dst,
            conn_id: hdr.conn_id,
        };
        let closing = hdr.flags & flags::CLOSING != 0;
        if closing {
            if let Some(f) = self.flows.remove(&key) {
                let until = now + self.idle_timeout(&f);
                self.tombstones.insert(key, until);
                tracing::debug!(flow = %key, "MEF flow closing: share released");
                self.recompute(now);
                return FlowEvent::Closed;
            }
            return FlowEvent::Ignored;
        }
        if hdr.packet_type == PacketType::Reset {
            return FlowEvent::Ignored;
        }
        let upstream_bps = if hdr.hops > 0 || hdr.flags & flags::STAMPED != 0 {
            kbps_to_bps(hdr.stamp_kbps)
        } else {
            f64::INFINITY
        };
        let state = MefState {
            declared_demand_bps: kbps_to_bps(hdr.demand_kbps),
            current_bps: f64::from(hdr.current_rate_kbps) * 1000.0,
            upstream_bps,
            rtt: Self::rtt_of(hdr.rtt_us, self.cfg.max_rtt),
            app_limited: hdr.flags & flags::APP_LIMITED != 0,
        };
        if let Some(f) = self.flows.get_mut(&key) {
            f.last_seen = now;
            f.packets += 1;
            f.data_seen |= hdr.packet_type != PacketType::Initial;
            let resumed = f.constraint == Constraint::Paused;
            let changed = resumed
                || match &f.mef {
                    Some(old) => {
                        old.declared_demand_bps != state.declared_demand_bps
                            || old.app_limited != state.app_limited
                            || old.upstream_bps != state.upstream_bps
                    }
                    None => true,
                };
            f.mef = Some(state);
            if changed {
                self.recompute(now);
            }
            return FlowEvent::Updated;
        }
        if let Some(&until) = self.tombstones.get(&key) {
            if hdr.packet_type != PacketType::Initial && now < until {
                return FlowEvent::Ignored;
            }
            self.tombstones.remove(&key);
        }
        if hdr.packet_type != PacketType::Initial
            && let Some(old) = self.handshake_only_flow(now, src, dst, state.rtt)
            && let Some(mut f) = self.flows.remove(&old)
        {
            // The connection id changed after the handshake (MEF, like QUIC, addresses packets
            // to the id the receiver chose, which the client learns from the server's reply;
            // docs/PROTOCOL.md §5): the flow registered by the Initial continues under the
            // new key, keeping its age and first stamp instead of counting twice.
            f.last_seen = now;
            f.packets += 1;
            f.data_seen = true;
            f.mef = Some(state);
            self.flows.insert(key, f);
            self.recompute(now);
            tracing::debug!(from = %old, to = %key, "MEF flow continues under a new connection id");
            return FlowEvent::Updated;
        }
        let mut f = Flow::new(now, Some(state));
        f.packets = 1;
        f.by_initial = hdr.packet_type == PacketType::Initial;
        let rtt = f.mef.as_ref().and_then(|m| m.rtt);
        let by_initial = f.by_initial;
        self.flows.insert(key, f);
        self.recompute(now);
        if by_initial {
            let s = self.join_stamp_bps(now, &key, rtt);
            if let Some(f) = self.flows.get_mut(&key) {
                f.initial_stamp_bps = Some(s);
            }
        }
        tracing::debug!(flow = %key, mu_bps = self.fair_rate_bps(), "MEF flow registered");
        FlowEvent::Registered
    }

    /// The flow from `src` to `dst` that has sent nothing but `Initial` packets and whose
    /// `Initial` most plausibly belongs to a connection now sending its first packet with RTT
    /// sample `rtt`: the client's first RTT sample is the time from its Initial to the server's
    /// reply, so its Initial arrived here about `rtt` ago. Several connections may share one
    /// socket pair; entries older than `2·rtt + feedback_margin` are not taken (a connection that
    /// merely went idle and came back is a new registration, not a handshake completing).
    fn handshake_only_flow(
        &self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
        rtt: Option<Duration>,
    ) -> Option<FlowKey> {
        let lo = FlowKey::Mef {
            src,
            dst,
            conn_id: 0,
        };
        let hi = FlowKey::Mef {
            src,
            dst,
            conn_id: u64::MAX,
        };
        let candidates = self
            .flows
            .range(lo..=hi)
            .filter(|(_, f)| f.by_initial && !f.data_seen)
            .map(|(k, f)| (*k, now.saturating_duration_since(f.first_seen)));
        match rtt {
            Some(rtt) => {
                let limit = rtt * 2 + self.cfg.feedback_margin;
                candidates
                    .filter(|(_, age)| *age <= limit)
                    .min_by_key(|(_, age)| age.abs_diff(rtt))
                    .map(|(k, _)| k)
            }
            // No RTT sample to match with: the oldest handshake.
            None => candidates.max_by_key(|(_, age)| *age).map(|(k, _)| k),
        }
    }

    /// A non-MEF packet from `src` to `dst` arrived; returns its flow key.
    pub fn on_other_packet(&mut self, now: Instant, src: SocketAddr, dst: SocketAddr) -> FlowKey {
        self.start_clock(now);
        let key = FlowKey::Other { src, dst };
        let f = self
            .flows
            .entry(key)
            .or_insert_with(|| Flow::new(now, None));
        f.last_seen = now;
        f.packets += 1;
        key
    }

    /// `wire_bytes` of flow `key` were admitted to the queue (counted in the input rate y and
    /// the flow's measured rate).
    pub fn record_admitted(&mut self, key: &FlowKey, wire_bytes: usize) {
        if let Some(f) = self.flows.get_mut(key) {
            f.tick_bytes += wire_bytes as u64;
            f.bytes += wire_bytes as u64;
        }
    }

    /// `wire_bytes` of flow `key` admitted earlier were dropped by the scheduler (queue
    /// overflow): they will never use the link, so they leave the input rate.
    pub fn record_dropped(&mut self, key: &FlowKey, wire_bytes: usize) {
        if let Some(f) = self.flows.get_mut(key) {
            f.tick_bytes = f.tick_bytes.saturating_sub(wire_bytes as u64);
        }
    }

    /// The policer dropped a packet of flow `key` at `now`. For `rate_window` afterwards the
    /// flow is treated as misbehaving: its backlog leaves the persistent queue `q` and its rate
    /// leaves the usage ratio, so a cheater's own queue cannot pull μ down for everyone.
    pub fn record_policed(&mut self, now: Instant, key: &FlowKey) {
        if let Some(f) = self.flows.get_mut(key) {
            f.last_policed = Some(now);
        }
    }

    /// The bytes queued by MEF flows in the scheduler after an enqueue or dequeue; the
    /// minimum over each control interval is the persistent queue `q`.
    pub fn observe_mef_backlog(&mut self, bytes: usize) {
        self.q_now = bytes;
        self.q_min = self.q_min.min(bytes);
    }

    /// Removes a flow (for a daemon that learns of a departure another way).
    pub fn remove_flow(&mut self, now: Instant, key: &FlowKey) -> bool {
        let removed = self.flows.remove(key).is_some();
        if removed {
            self.recompute(now);
        }
        removed
    }

    /// Runs the control step if [`poll_timeout`](Self::poll_timeout) has passed: measures the
    /// input rate over the interval, applies the RCP correction, expires idle flows and
    /// recomputes μ. `backlog` gives a flow's bytes queued in the scheduler (greedy test for
    /// non-MEF flows). Returns whether a step ran.
    pub fn handle_timeout(&mut self, now: Instant, backlog: &dyn Fn(&FlowKey) -> usize) -> bool {
        let Some(last) = self.last_tick else {
            self.start_clock(now);
            return false;
        };
        let interval = self.control_interval();
        let elapsed = now.saturating_duration_since(last);
        if elapsed < interval {
            return false;
        }
        self.expire_idle(now);
        self.measure_and_correct(now, elapsed, interval, backlog);
        self.last_tick = Some(now);
        self.q_min = self.q_now;
        self.recompute(now);
        true
    }

    fn idle_timeout(&self, f: &Flow) -> Duration {
        match &f.mef {
            Some(m) => {
                let rtt = m.rtt.unwrap_or(self.cfg.default_rtt);
                let by_rtt = rtt.mul_f64(self.cfg.idle_rtts);
                let rate = m.current_bps.max(f.measured_bps);
                let by_gap = if rate > 0.0 {
                    Duration::from_secs_f64((3.0 * MTU_BYTES * 8.0 / rate).min(3600.0))
                } else {
                    Duration::ZERO
                };
                by_rtt
                    .max(by_gap)
                    .min(self.cfg.max_idle)
                    .max(self.cfg.min_idle)
            }
            None => self.cfg.other_idle,
        }
    }

    fn expire_idle(&mut self, now: Instant) {
        let expired: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.last_seen) > self.idle_timeout(f))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.flows.remove(&k);
            tracing::debug!(flow = %k, "flow expired (idle)");
        }
        self.tombstones.retain(|_, until| *until > now);
    }

    /// Measures each flow's rate over the interval just ended and applies the RCP law to `k`.
    fn measure_and_correct(
        &mut self,
        now: Instant,
        elapsed: Duration,
        interval: Duration,
        backlog: &dyn Fn(&FlowKey) -> usize,
    ) {
        let dt = elapsed.as_secs_f64();
        let w = 1.0 - (-dt / self.cfg.rate_window.as_secs_f64()).exp();
        let mu = self.fair_rate_bps();
        let t0 = now.checked_sub(elapsed).unwrap_or(now);
        // Σ of what MEF senders sent, and of what they should have sent given the μ they had
        // heard (one RTT earlier) — their ratio is the usage ratio ρ.
        let (mut sent, mut expected) = (0.0, 0.0);
        // Load the current allocations will cause once every sender has heard them.
        let (mut future_paced, mut future_other) = (0.0, 0.0);
        let mut mef = 0usize;
        let mut rtt_sum = 0.0;
        let mut rtt_n = 0usize;
        let mut q_excluded = 0usize;
        // The input rate actually measured (RCP's y), non-MEF bytes up to their allocation.
        let mut input = 0.0;
        // Backlogs of the MEF flows held at μ here (for the robust queue estimate).
        let mut held_backlogs: Vec<usize> = Vec::new();
        let young = self.cfg.rate_window;
        for (key, f) in self.flows.iter_mut() {
            let inst = f.tick_bytes as f64 * 8.0 / dt;
            f.tick_bytes = 0;
            f.measured_bps += w * (inst - f.measured_bps);
            let age = now.saturating_duration_since(f.first_seen);
            match &f.mef {
                Some(m) => {
                    mef += 1;
                    input += inst;
                    if let Some(r) = m.rtt {
                        rtt_sum += r.as_secs_f64();
                        rtt_n += 1;
                    }
                    let policed = f
                        .last_policed
                        .is_some_and(|t| now.saturating_duration_since(t) <= young);
                    if policed {
                        // Sending above its rate: the policer, not μ, sets what it sends, and
                        // its queue is its own doing (DRR keeps it off the others).
                        q_excluded += backlog(key);
                    }
                    if f.constraint == Constraint::AppLimited || policed {
                        future_other += inst;
                        continue;
                    }
                    if f.demand_bps >= mu {
                        held_backlogs.push(backlog(key));
                    }
                    future_paced += f.cap_bps.min(mu);
                    let rtt = m.rtt.unwrap_or(self.cfg.default_rtt).min(self.cfg.max_rtt);
                    // What the sender should be sending now, given what it has heard: nothing
                    // before its handshake completes (it starts one RTT after its Initial), its
                    // Initial stamp during its first RTT of data, then the μ stamped one RTT
                    // before (seed 003: the rate reaches the sender within one round trip).
                    // Flows past their handshake all count, so flows that hold a share without
                    // using it (short flows waiting for their last ACKs, say) show up as ρ < 1
                    // and their share is lent to the others through k.
                    let margin = self.cfg.feedback_margin;
                    let (data_from, first_rtt_end) = if f.by_initial {
                        (f.first_seen + rtt + margin, f.first_seen + rtt * 2)
                    } else {
                        (f.first_seen, f.first_seen)
                    };
                    // A flow told less than μ to drain its own queue is not pacing at μ either
                    // until one RTT after the last such stamp.
                    let draining = f.last_drained.is_some_and(|t| t + rtt * 2 + margin > t0);
                    // Before its first data packet (or any RTT sample) we cannot tell when
                    // its data starts.
                    let started = !f.by_initial || (f.data_seen && m.rtt.is_some());
                    if started && t0 >= data_from && !draining {
                        let heard = match f.initial_stamp_bps {
                            Some(s) if t0 < first_rtt_end => s,
                            _ => {
                                let from = t0.checked_sub(rtt).unwrap_or(t0);
                                let to = now.checked_sub(rtt).unwrap_or(now);
                                self.history.mean_between(from, to)
                            }
                        };
                        sent += inst;
                        expected += f.cap_bps.min(heard);
                    }
                }
                None => {
                    if age < young {
                        // A young flow's average since its first packet beats a cold estimator.
                        let since_start = f.bytes as f64 * 8.0 / age.as_secs_f64().max(dt);
                        f.measured_bps = f.measured_bps.max(since_start);
                    }
                    if backlog(key) >= self.cfg.greedy_backlog_bytes {
                        f.last_backlogged = Some(now);
                    }
                    // Non-MEF bytes count up to the flow's allocation; a greedy flow (standing
                    // queue) counts at its allocation: it would take all of it, so its share is
                    // never spare even when DRR gives it less for a moment.
                    let alloc = f.demand_bps.min(mu);
                    let used = if f.constraint == Constraint::Greedy {
                        alloc
                    } else {
                        inst.min(alloc)
                    };
                    future_other += used;
                    input += used;
                }
            }
        }
        self.sent_avg += w * (sent - self.sent_avg);
        self.expected_avg += w * (expected - self.expected_avg);
        self.mean_rtt = if rtt_n > 0 {
            Duration::from_secs_f64(rtt_sum / rtt_n as f64)
        } else {
            self.cfg.default_rtt
        };
        let dbar = self.mean_rtt.as_secs_f64().max(1e-6);
        if mef == 0 {
            // Nothing to calibrate for: start the next busy period from the neutral values.
            self.correction = 1.0;
            self.lending = 1.0;
            self.input_avg = f64::NAN;
            return;
        }
        let gc = self.cfg.gamma * self.cfg.capacity_bps as f64;
        let rho = if self.expected_avg > 0.01 * gc {
            (self.sent_avg / self.expected_avg).clamp(0.5, 2.0)
        } else {
            1.0
        };
        // (1) The calibration k, fast: the load the current allocation will carry once every
        // sender has heard it, leaving out the lending factor (blind to join/leave transients,
        // sees calibration errors such as senders pacing other bytes than the link counts).
        let y = rho * future_paced / self.lending + future_other;
        // A late tick (idle link) counts as one interval: the law's gain is T/d̄ per interval.
        let gain = (dt.min(interval.as_secs_f64()) / dbar).min(1.0);
        // The queue the allocation is responsible for. Over-allocation makes *every* flow held
        // at μ queue (each sends more than its DRR share); one flow's queue alone is that flow's
        // own excess (a burst, a cheater, a sender late to hear a lower μ) and DRR keeps it off
        // the others. So the persistent MEF backlog (minus flows being policed) is capped at
        // n × the lower median of the backlogs of the flows held at μ.
        held_backlogs.sort_unstable();
        let median = held_backlogs
            .get(held_backlogs.len().saturating_sub(1) / 2)
            .copied();
        let q_shared = median.unwrap_or(0) * held_backlogs.len();
        let q = self.q_min.saturating_sub(q_excluded).min(q_shared);
        self.queue_estimate = q;
        let q_bits = q as f64 * 8.0;
        // No flow could use more (every flow is limited below μ, or μ is already the whole
        // link): do not wind up.
        let can_grow = self.bottlenecked > 0 && mu < gc;
        let mut factor =
            1.0 + gain * (self.cfg.alpha * (gc - y) - self.cfg.beta * q_bits / dbar) / gc;
        if factor > 1.0 && !can_grow {
            factor = 1.0;
        }
        let factor = factor.clamp(0.5, 1.5);
        self.correction =
            (self.correction * factor).clamp(self.cfg.correction_min, self.cfg.correction_max);
        // (2) The lending factor, slow: the input actually measured (RCP's y, averaged over
        // `lend_window` mean RTTs). When flows come and go all the time (short transfers), the
        // others always pace at a μ one RTT old that still reserved the shares of flows which
        // have finished since: the link runs below γC however exact the allocation. Lending
        // that share out in advance is what RCP's spare-capacity term does; doing it slowly
        // keeps a single departure (whose share the water-filling hands out anyway) from
        // causing an overshoot.
        if self.input_avg.is_nan() {
            self.input_avg = y; // a new busy period starts from the neutral view
            self.busy_since = Some(now);
        }
        let tau = self.cfg.lend_window * dbar;
        self.input_avg += (1.0 - (-dt / tau.max(1e-6)).exp()) * (input - self.input_avg);
        // Lend only once the busy period has outlasted two averaging windows: the start of a
        // busy period is one big transient (flows in their handshake or first RTT).
        let warm = self
            .busy_since
            .is_some_and(|t| now.saturating_duration_since(t).as_secs_f64() >= 2.0 * tau);
        let mut lend = 1.0
            + gain * (self.cfg.lend_alpha * (gc - self.input_avg) - self.cfg.beta * q_bits / dbar)
                / gc;
        if lend > 1.0 && (!can_grow || !warm) {
            lend = 1.0;
        }
        let mut lending = self.lending * lend.clamp(0.5, 1.5);
        if input > gc {
            // The senders use more than the link right now: the shares lent out are being
            // used. Take the loan back at once (multiplicatively), not at the slow pace.
            lending *= gc / input;
        }
        self.lending = lending.clamp(1.0, self.cfg.lending_max);
        self.usage_ratio = rho;
        tracing::trace!(
            y_bps = y,
            input_bps = self.input_avg,
            rho,
            q_bytes = q,
            k = self.correction,
            lending = self.lending,
            "RCP correction"
        );
    }

    /// Whether a MEF flow that has started sending data has gone quiet for longer than
    /// `max(pause_gaps × its packet gap at its pacing rate, pause_min)`.
    fn is_paused(&self, now: Instant, f: &Flow) -> bool {
        if f.mef.is_none() || (f.by_initial && !f.data_seen) {
            return false; // a new flow is silent during its handshake: it will send at μ
        }
        // The sender's own pacing rate (not its allocation, which is the floor while paused).
        let pace = match &f.mef {
            Some(m) if m.current_bps > 0.0 => m.current_bps,
            _ => self.fair_rate_bps(),
        };
        let gap = (MTU_BYTES * 8.0 / pace.max(1.0)).min(3600.0);
        let after = Duration::from_secs_f64(self.cfg.pause_gaps * gap).max(self.cfg.pause_min);
        now.saturating_duration_since(f.last_seen) > after
    }

    /// A flow's `d_i` for the water-filling and the reason.
    /// Also returns the flow's cap: what it will send when not held here (`d_i` without the
    /// headroom).
    fn flow_demand(&self, now: Instant, f: &Flow) -> (f64, f64, Constraint) {
        let floor = self.cfg.min_rate_bps as f64;
        match &f.mef {
            None => {
                let greedy = f
                    .last_backlogged
                    .is_some_and(|t| now.saturating_duration_since(t) <= self.cfg.rate_window);
                if greedy {
                    (f64::INFINITY, f64::INFINITY, Constraint::Greedy)
                } else {
                    let d = f.measured_bps * (1.0 + self.cfg.other_headroom) + floor;
                    (d, f.measured_bps, Constraint::Measured)
                }
            }
            Some(m) => {
                if self.is_paused(now, f) {
                    return (floor, floor, Constraint::Paused);
                }
                let (mut d, mut why) = if m.declared_demand_bps.is_finite() {
                    (m.declared_demand_bps, Constraint::Demand)
                } else {
                    (f64::INFINITY, Constraint::Unlimited)
                };
                if m.upstream_bps < d {
                    (d, why) = (m.upstream_bps, Constraint::Upstream);
                }
                let mut cap = d;
                // Judge the flow's own rate only once it can reflect what we stamped: after
                // its handshake (if it started with an Initial) plus a feedback window, and not
                // while we are stamping it below μ to drain its own queue.
                let window = self.feedback_window(m.rtt);
                let rtt = m.rtt.unwrap_or(self.cfg.default_rtt).min(self.cfg.max_rtt);
                let handshake = if f.by_initial { rtt } else { Duration::ZERO };
                let old_enough = now.saturating_duration_since(f.first_seen) >= handshake + window;
                let drained = f
                    .last_drained
                    .is_some_and(|t| now.saturating_duration_since(t) < window);
                if old_enough && !drained {
                    let h = 1.0 + self.cfg.constrained_headroom;
                    if m.app_limited {
                        let a = f.measured_bps * h + floor;
                        if a < d {
                            (d, cap, why) = (a, f.measured_bps, Constraint::AppLimited);
                        }
                    }
                    if m.current_bps > 0.0 {
                        let lo = self.min_recent_rate_bps(now, m.rtt);
                        if m.current_bps < lo * (1.0 - self.cfg.constrained_margin) {
                            let c = m.current_bps * h;
                            if c < d {
                                (d, cap, why) = (c, m.current_bps, Constraint::Elsewhere);
                            }
                        }
                    }
                }
                (d.max(floor), cap, why)
            }
        }
    }

    /// Recomputes every `d_i` and the water level μ.
    fn recompute(&mut self, now: Instant) {
        let computed: Vec<(f64, f64, Constraint)> = self
            .flows
            .values()
            .map(|f| self.flow_demand(now, f))
            .collect();
        let mut demands = Vec::with_capacity(computed.len());
        for (f, &(d, cap, why)) in self.flows.values_mut().zip(&computed) {
            f.demand_bps = d;
            f.cap_bps = cap;
            f.constraint = why;
            demands.push(d);
        }
        let w = water_fill(self.effective_capacity_bps(), &mut demands);
        self.bottlenecked = w.bottlenecked;
        // With k > 1 the link is over-booked on purpose, but no single flow can use more than
        // the link.
        let gc = self.cfg.gamma * self.cfg.capacity_bps as f64;
        let mu = w.level.min(gc).max(self.cfg.min_rate_bps as f64);
        self.history.set(now, mu);
        self.recomputations += 1;
    }
}

#[cfg(test)]
mod tests;
