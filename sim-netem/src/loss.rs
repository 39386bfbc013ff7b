//! Random loss models applied after a packet has been serialised onto a link, and the small
//! deterministic random helpers every link uses.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;

use crate::link::ConfigError;

/// How a link loses packets at random (independently of its queue).
///
/// A random loss happens *after* serialisation: the lost packet consumed link capacity, and it
/// is counted in [`LinkStats::random_losses`](crate::LinkStats::random_losses), never in
/// `queue_drops`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LossModel {
    /// No random loss.
    #[default]
    None,
    /// Every packet is lost independently with this probability.
    Bernoulli(f64),
    /// A two-state Markov chain (good/bad). Before each packet the chain makes one transition,
    /// then the packet is lost with the current state's loss probability.
    GilbertElliott {
        /// Probability of moving from the good to the bad state at a packet.
        p_good_to_bad: f64,
        /// Probability of moving from the bad to the good state at a packet.
        p_bad_to_good: f64,
        /// Loss probability while in the good state.
        loss_in_good: f64,
        /// Loss probability while in the bad state.
        loss_in_bad: f64,
    },
}

impl LossModel {
    /// Independent loss with probability `p` (checked to lie in `[0, 1]`).
    pub fn bernoulli(p: f64) -> Result<Self, ConfigError> {
        let m = LossModel::Bernoulli(p);
        m.validate()?;
        Ok(m)
    }

    /// The Gilbert model (lose every packet in the bad state, none in the good one) with the
    /// given stationary loss rate and mean loss-burst length in packets.
    ///
    /// The bad state lasts a geometric number of packets with mean `mean_burst`, so
    /// `p_bad_to_good = 1 / mean_burst`, and `p_good_to_bad = p·p_bg / (1 − p)` makes the
    /// stationary probability of the bad state equal to `mean_loss`.
    pub fn gilbert_elliott(mean_loss: f64, mean_burst: f64) -> Result<Self, ConfigError> {
        if !(0.0..1.0).contains(&mean_loss) {
            return Err(ConfigError::Probability {
                what: "mean loss",
                value: mean_loss,
            });
        }
        if !(mean_burst >= 1.0 && mean_burst.is_finite()) {
            return Err(ConfigError::BurstLength(mean_burst));
        }
        let p_bad_to_good = 1.0 / mean_burst;
        let p_good_to_bad = mean_loss * p_bad_to_good / (1.0 - mean_loss);
        let m = LossModel::GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        };
        m.validate().map_err(|_| ConfigError::Unreachable {
            mean_loss,
            mean_burst,
        })?;
        Ok(m)
    }

    /// The long-run fraction of packets this model loses.
    pub fn mean_loss(&self) -> f64 {
        match *self {
            LossModel::None => 0.0,
            LossModel::Bernoulli(p) => p,
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                let total = p_good_to_bad + p_bad_to_good;
                if total <= 0.0 {
                    // The chain never leaves the initial (good) state.
                    return loss_in_good;
                }
                let bad = p_good_to_bad / total;
                bad * loss_in_bad + (1.0 - bad) * loss_in_good
            }
        }
    }

    /// Checks every probability lies in `[0, 1]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            LossModel::None => Ok(()),
            LossModel::Bernoulli(p) => check_probability("Bernoulli loss", p),
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                check_probability("p_good_to_bad", p_good_to_bad)?;
                check_probability("p_bad_to_good", p_bad_to_good)?;
                check_probability("loss_in_good", loss_in_good)?;
                check_probability("loss_in_bad", loss_in_bad)
            }
        }
    }
}

/// Checks `p` is a probability.
pub(crate) fn check_probability(what: &'static str, p: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(ConfigError::Probability { what, value: p })
    }
}

/// Per-link state of a loss model (the Gilbert-Elliott chain's current state).
#[derive(Debug, Clone, Default)]
pub(crate) struct LossState {
    bad: bool,
}

impl LossState {
    /// Decides whether the next packet is lost, advancing the chain.
    pub(crate) fn lose(&mut self, model: &LossModel, rng: &mut ChaCha8Rng) -> bool {
        match *model {
            LossModel::None => false,
            LossModel::Bernoulli(p) => chance(rng, p),
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                let flip = if self.bad {
                    p_bad_to_good
                } else {
                    p_good_to_bad
                };
                if chance(rng, flip) {
                    self.bad = !self.bad;
                }
                chance(rng, if self.bad { loss_in_bad } else { loss_in_good })
            }
        }
    }
}

/// A uniform `f64` in `[0, 1)` with 53 random bits.
pub(crate) fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// True with probability `p`. Draws nothing when `p <= 0` or `p >= 1`, so a feature that is
/// switched off leaves the random stream of the others untouched.
pub(crate) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    if p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        unit(rng) < p
    }
}

/// A uniform integer in `[0, n)` (`0` when `n == 0`), by 128-bit multiply-shift.
pub(crate) fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}
