//! Errors of the router core. Only configuration can fail: packet handling never does (a
//! datagram that is not a valid MEF header is simply treated as non-MEF traffic).

use thiserror::Error;

/// An invalid router configuration.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    /// The link capacity is zero.
    #[error("link capacity must be positive")]
    ZeroCapacity,
    /// A parameter lies outside its allowed range (or is NaN).
    #[error("{name} = {value} is out of range: {reason}")]
    OutOfRange {
        /// The configuration field.
        name: &'static str,
        /// The offending value.
        value: f64,
        /// What the field must satisfy.
        reason: &'static str,
    },
    /// A duration that must be positive is zero.
    #[error("{0} must be a positive duration")]
    ZeroDuration(&'static str),
    /// A byte or packet size that must be positive is zero.
    #[error("{0} must be positive")]
    ZeroSize(&'static str),
}

/// Checks `lo <= value <= hi` (rejecting NaN).
pub(crate) fn check_range(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    reason: &'static str,
) -> Result<(), ConfigError> {
    if value.is_nan() || value < lo || value > hi {
        return Err(ConfigError::OutOfRange {
            name,
            value,
            reason,
        });
    }
    Ok(())
}
