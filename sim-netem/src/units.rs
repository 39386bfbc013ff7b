//! Parsing of the `tc netem`-style quantities the `mef-netem` command line takes: durations
//! (`100ms`, `250us`, `1.5s`), rates (`100mbit`, `1gbit`, `12mbps`), percentages (`1%`,
//! `0.1%`) and queue limits (`1bdp`, `500kb`, `1000p`).
//!
//! The unit names follow `tc(8)`: `bit`, `kbit`, `mbit`, `gbit`, `tbit` are bits per second
//! (decimal prefixes); `bps`, `kbps`, `mbps`, `gbps` are **bytes** per second, as in `tc`.
//! Sizes follow `tc` too: `b` is bytes, `kb`/`k` 1024 bytes, `mb`/`m` 1024² bytes; `p` counts
//! MTU-sized packets.

use std::time::Duration;

use thiserror::Error;

/// A value that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnitError {
    /// The text is empty.
    #[error("empty value")]
    Empty,
    /// The numeric part is not a finite, non-negative decimal number.
    #[error("`{0}` does not start with a non-negative number")]
    Number(String),
    /// The unit suffix is not one this quantity accepts.
    #[error("unknown unit `{unit}` (expected one of {expected})")]
    Unit {
        /// The suffix found.
        unit: String,
        /// The accepted suffixes.
        expected: &'static str,
    },
    /// The value is out of range (a percentage above 100, a zero rate, an overflow).
    #[error("{0}")]
    Range(String),
}

/// Splits `"12.5ms"` into `(12.5, "ms")`.
fn split(text: &str) -> Result<(f64, String), UnitError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(UnitError::Empty);
    }
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let value: f64 = num
        .parse()
        .map_err(|_| UnitError::Number(text.to_string()))?;
    if !value.is_finite() || value < 0.0 {
        return Err(UnitError::Number(text.to_string()));
    }
    Ok((value, unit.trim().to_ascii_lowercase()))
}

/// Parses a duration: `s`/`sec`/`secs`, `ms`/`msec`/`msecs`, `us`/`usec`/`usecs`, `ns`; a bare
/// number is milliseconds (what most people mean by `--delay 100`).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (v, unit) = split(text)?;
    let nanos_per = match unit.as_str() {
        "s" | "sec" | "secs" => 1e9,
        "" | "ms" | "msec" | "msecs" => 1e6,
        "us" | "usec" | "usecs" | "µs" => 1e3,
        "ns" | "nsec" | "nsecs" => 1.0,
        _ => {
            return Err(UnitError::Unit {
                unit,
                expected: "s, ms, us, ns",
            });
        }
    };
    let ns = v * nanos_per;
    if ns > 1e18 {
        return Err(UnitError::Range(format!("duration `{text}` is too long")));
    }
    Ok(Duration::from_nanos(ns.round() as u64))
}

/// Parses a rate into bits per second (see the module docs for the unit names). A bare number
/// is bits per second. Zero is rejected.
pub fn parse_rate(text: &str) -> Result<u64, UnitError> {
    let (v, unit) = split(text)?;
    let bits_per = match unit.as_str() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => {
            return Err(UnitError::Unit {
                unit,
                expected: "bit, kbit, mbit, gbit, tbit (bits/s) or bps, kbps, mbps, gbps (bytes/s)",
            });
        }
    };
    let bps = v * bits_per;
    if bps < 1.0 {
        return Err(UnitError::Range(format!("rate `{text}` is below 1 bit/s")));
    }
    if bps > 1e15 {
        return Err(UnitError::Range(format!("rate `{text}` is too high")));
    }
    Ok(bps.round() as u64)
}

/// Parses a probability: `1%` is 0.01; a bare number is a fraction in `[0, 1]` (`0.01`).
pub fn parse_percent(text: &str) -> Result<f64, UnitError> {
    let (v, unit) = split(text)?;
    let p = match unit.as_str() {
        "%" => v / 100.0,
        "" => v,
        _ => {
            return Err(UnitError::Unit {
                unit,
                expected: "% (or a bare fraction such as 0.01)",
            });
        }
    };
    if p > 1.0 {
        return Err(UnitError::Range(format!(
            "probability `{text}` is above 100%"
        )));
    }
    Ok(p)
}

/// A queue limit as written on the command line, resolved by [`Limit::bytes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// A number of bytes.
    Bytes(usize),
    /// A number of MTU-sized packets.
    Packets(usize),
    /// A multiple of the bandwidth-delay product of the link's rate and the round trip.
    Bdp(f64),
}

impl Limit {
    /// The limit in bytes for a link of `rate_bps` on a path whose round trip is `rtt`;
    /// packets count `mtu` bytes each. Never below one MTU.
    pub fn bytes(&self, rate_bps: u64, rtt: Duration, mtu: usize) -> usize {
        let b = match *self {
            Limit::Bytes(b) => b,
            Limit::Packets(p) => p.saturating_mul(mtu),
            Limit::Bdp(m) => {
                let bdp = rate_bps as f64 * rtt.as_secs_f64() / 8.0;
                (m * bdp).min(usize::MAX as f64 / 2.0) as usize
            }
        };
        b.max(mtu)
    }
}

/// Parses a queue limit: `1bdp`/`0.5bdp`, `1000p` (packets), `500kb`, `2mb`, `150000b` or a
/// bare number of bytes.
pub fn parse_limit(text: &str) -> Result<Limit, UnitError> {
    let (v, unit) = split(text)?;
    let bytes = |mult: f64| -> Result<Limit, UnitError> {
        let b = v * mult;
        if b > 1e15 {
            return Err(UnitError::Range(format!("limit `{text}` is too large")));
        }
        Ok(Limit::Bytes(b.round() as usize))
    };
    match unit.as_str() {
        "bdp" => Ok(Limit::Bdp(v)),
        "p" | "pkt" | "pkts" | "packets" => {
            if v.fract() != 0.0 || v > 1e12 {
                return Err(UnitError::Range(format!(
                    "packet limit `{text}` must be a whole number"
                )));
            }
            Ok(Limit::Packets(v as usize))
        }
        "" | "b" => bytes(1.0),
        "k" | "kb" => bytes(1024.0),
        "m" | "mb" => bytes(1024.0 * 1024.0),
        _ => Err(UnitError::Unit {
            unit,
            expected: "bdp, p (packets), b, kb, mb",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        assert!(matches!(parse_duration("5 h"), Err(UnitError::Unit { .. })));
        assert!(matches!(parse_duration("-5ms"), Err(UnitError::Number(_))));
        assert_eq!(parse_duration(""), Err(UnitError::Empty));
        assert!(matches!(parse_duration("ms"), Err(UnitError::Number(_))));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("1.5Mbit"), Ok(1_500_000));
        assert_eq!(parse_rate("12mbps"), Ok(96_000_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert!(matches!(parse_rate("0mbit"), Err(UnitError::Range(_))));
        assert!(matches!(
            parse_rate("10furlongs"),
            Err(UnitError::Unit { .. })
        ));
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("1%"), Ok(0.01));
        assert_eq!(parse_percent("0.1%"), Ok(0.001));
        assert_eq!(parse_percent("0.25"), Ok(0.25));
        assert!(matches!(parse_percent("101%"), Err(UnitError::Range(_))));
        assert!(matches!(parse_percent("2"), Err(UnitError::Range(_))));
        assert!(matches!(parse_percent("1x"), Err(UnitError::Unit { .. })));
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("1bdp"), Ok(Limit::Bdp(1.0)));
        assert_eq!(parse_limit("1000p"), Ok(Limit::Packets(1000)));
        assert_eq!(parse_limit("500kb"), Ok(Limit::Bytes(512_000)));
        assert_eq!(parse_limit("150000"), Ok(Limit::Bytes(150_000)));
        assert!(matches!(parse_limit("1.5p"), Err(UnitError::Range(_))));
        assert!(matches!(parse_limit("3qq"), Err(UnitError::Unit { .. })));
        // 100 Mbit/s over 200 ms is 2.5 MB.
        let bdp = Limit::Bdp(1.0).bytes(100_000_000, Duration::from_millis(200), 1500);
        assert_eq!(bdp, 2_500_000);
        assert_eq!(Limit::Packets(10).bytes(1, Duration::ZERO, 1500), 15_000);
        assert_eq!(Limit::Bytes(1).bytes(1, Duration::ZERO, 1500), 1500);
    }
}
