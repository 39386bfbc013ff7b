//! The forwarding loop's step: batches from the store to an uplink, with back-off.

use super::{Uplink, UplinkError};
use crate::store::{Store, StoreError};

/// How the [`Forwarder`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwarderConfig {
    /// Readings per batch (at most). Default 500.
    pub batch_size: usize,
    /// Batches per [`Forwarder::pump`] call (at most), so one call stays short. Default 16.
    pub max_batches_per_pump: usize,
    /// First back-off after a failure, ms. Default 1,000.
    pub backoff_min_ms: u64,
    /// Longest back-off, ms (it doubles per consecutive failure). Default 60,000.
    pub backoff_max_ms: u64,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            batch_size: 500,
            max_batches_per_pump: 16,
            backoff_min_ms: 1_000,
            backoff_max_ms: 60_000,
        }
    }
}

/// Where the forwarder stands after a [`Forwarder::pump`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpState {
    /// Everything stored has been confirmed.
    Idle,
    /// The per-call budget ran out with readings still to send: pump again soon.
    More,
    /// The uplink failed in this call; the batch is requeued; next try at `retry_at_ms`.
    Down {
        /// When to try again (ms, the caller's clock).
        retry_at_ms: u64,
    },
    /// Still backing off from an earlier failure; nothing was sent.
    BackingOff {
        /// When to try again.
        retry_at_ms: u64,
    },
}

/// What one [`Forwarder::pump`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PumpOutcome {
    /// Batches confirmed.
    pub batches: u64,
    /// Readings confirmed.
    pub readings: u64,
    /// Of the confirmed batches, those the uplink already had (re-sends).
    pub duplicate_acks: u64,
    /// The state after the call.
    pub state: PumpState,
}

/// Moves batches from a [`Store`] to an [`Uplink`] in order: take the next batch, submit,
/// confirm; on an uplink failure requeue everything in flight and back off exponentially
/// (`backoff_min_ms` doubling to `backoff_max_ms`). The first pump after creation requeues
/// whatever a previous run left in flight.
#[derive(Debug)]
pub struct Forwarder {
    cfg: ForwarderConfig,
    started: bool,
    retry_at_ms: Option<u64>,
    backoff_ms: u64,
    failures: u64,
}

impl Forwarder {
    /// A forwarder with `cfg` (a zero batch size or budget is taken as 1).
    pub fn new(cfg: ForwarderConfig) -> Self {
        let cfg = ForwarderConfig {
            batch_size: cfg.batch_size.max(1),
            max_batches_per_pump: cfg.max_batches_per_pump.max(1),
            backoff_min_ms: cfg.backoff_min_ms,
            backoff_max_ms: cfg.backoff_max_ms.max(cfg.backoff_min_ms),
        };
        Forwarder {
            cfg,
            started: false,
            retry_at_ms: None,
            backoff_ms: cfg.backoff_min_ms,
            failures: 0,
        }
    }

    /// Uplink failures so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// One step at time `now_ms`: sends up to `max_batches_per_pump` batches while the
    /// uplink accepts them. Uplink errors are not errors of the step (they set
    /// [`PumpState::Down`]); store errors are.
    pub fn pump(
        &mut self,
        store: &mut Store,
        uplink: &mut dyn Uplink,
        now_ms: u64,
    ) -> Result<PumpOutcome, StoreError> {
        let mut out = PumpOutcome {
            batches: 0,
            readings: 0,
            duplicate_acks: 0,
            state: PumpState::Idle,
        };
        if let Some(at) = self.retry_at_ms
            && now_ms < at
        {
            out.state = PumpState::BackingOff { retry_at_ms: at };
            return Ok(out);
        }
        if !self.started {
            store.requeue_in_flight()?;
            self.started = true;
        }
        for _ in 0..self.cfg.max_batches_per_pump {
            let Some(batch) = store.next_batch(self.cfg.batch_size)? else {
                self.retry_at_ms = None;
                out.state = PumpState::Idle;
                return Ok(out);
            };
            match uplink.submit(&batch) {
                Ok(ack) => {
                    out.readings += store.confirm(batch.id)?;
                    out.batches += 1;
                    out.duplicate_acks += u64::from(ack.duplicate);
                    self.backoff_ms = self.cfg.backoff_min_ms;
                    self.retry_at_ms = None;
                }
                Err(e) => {
                    self.fail(&e);
                    store.requeue_in_flight()?;
                    let at = now_ms.saturating_add(self.backoff_ms);
                    self.backoff_ms = self
                        .backoff_ms
                        .saturating_mul(2)
                        .min(self.cfg.backoff_max_ms);
                    self.retry_at_ms = Some(at);
                    out.state = PumpState::Down { retry_at_ms: at };
                    return Ok(out);
                }
            }
        }
        out.state = PumpState::More;
        Ok(out)
    }

    fn fail(&mut self, e: &UplinkError) {
        self.failures += 1;
        tracing::debug!("uplink failure {}: {e}", self.failures);
    }
}
