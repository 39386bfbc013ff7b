//! The anti-replay sliding window (RFC 6479, "IPsec Anti-Replay Algorithm without Bit
//! Shifting"; the window semantics of RFC 4303 §3.4.3).
//!
//! The bitmap is a ring of [`BLOCKS`] 64-bit words; advancing the window zeroes whole words
//! instead of shifting bits. The usable window is `(BLOCKS - 1) * 64` = [`WINDOW`] counters
//! behind the highest accepted one (one word is the "in-flight" word, RFC 6479 §2).
//! [`ReplayWindow::check`] is side-effect free so a packet is only marked as seen *after* it
//! authenticates (RFC 4303 §3.4.3: "the receive window is updated only if the integrity
//! verification succeeds").

/// Words in the ring.
pub const BLOCKS: usize = 32;
/// Bits in the ring (2048).
pub const RING_BITS: u64 = (BLOCKS as u64) * 64;
/// Counters accepted behind the highest one seen.
pub const WINDOW: u64 = RING_BITS - 64;

/// Why a counter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Already received.
    #[error("replayed counter")]
    Replayed,
    /// Further behind the highest counter than the window reaches.
    #[error("counter too old for the replay window")]
    TooOld,
}

/// An RFC 6479 replay window.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// Highest counter accepted so far (meaningless until `any`).
    last: u64,
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        ReplayWindow {
            last: 0,
            bitmap: [0; BLOCKS],
        }
    }

    /// Whether `counter` would be accepted (no state change).
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        if counter.saturating_add(WINDOW) < self.last {
            return Err(ReplayError::TooOld);
        }
        if counter > self.last {
            return Ok(());
        }
        let block = ((counter / 64) % BLOCKS as u64) as usize;
        if self.bitmap[block] & (1u64 << (counter % 64)) != 0 {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }

    /// Marks `counter` as received, sliding the window forward if needed.
    pub fn update(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        if counter > self.last {
            let current = self.last / 64;
            let index = counter / 64;
            let diff = (index - current).min(BLOCKS as u64);
            for i in 1..=diff {
                self.bitmap[((current + i) % BLOCKS as u64) as usize] = 0;
            }
            self.last = counter;
        }
        let block = ((counter / 64) % BLOCKS as u64) as usize;
        self.bitmap[block] |= 1u64 << (counter % 64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_reorder_replay_too_old() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.update(0), Ok(()));
        assert_eq!(w.update(0), Err(ReplayError::Replayed));
        assert_eq!(w.update(5), Ok(()));
        assert_eq!(w.update(3), Ok(()));
        assert_eq!(w.update(3), Err(ReplayError::Replayed));
        assert_eq!(w.update(5000), Ok(()));
        assert_eq!(w.check(5000 - WINDOW), Ok(()));
        assert_eq!(w.check(5000 - WINDOW - 1), Err(ReplayError::TooOld));
        assert_eq!(w.update(4999), Ok(()));
        // A big jump clears the whole ring.
        assert_eq!(w.update(1 << 40), Ok(()));
        assert_eq!(w.check((1 << 40) - 1), Ok(()));
        assert_eq!(w.check(4999), Err(ReplayError::TooOld));
    }

    #[test]
    fn matches_a_naive_model() {
        use std::collections::BTreeSet;
        let mut w = ReplayWindow::new();
        let mut seen = BTreeSet::new();
        let mut max = 0u64;
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let c = (max + 100).saturating_sub((x >> 33) % 2600);
            let expect = if c + WINDOW < max {
                Err(ReplayError::TooOld)
            } else if seen.contains(&c) {
                Err(ReplayError::Replayed)
            } else {
                Ok(())
            };
            assert_eq!(w.update(c), expect, "counter {c} max {max}");
            if expect.is_ok() {
                seen.insert(c);
                max = max.max(c);
            }
        }
    }
}
