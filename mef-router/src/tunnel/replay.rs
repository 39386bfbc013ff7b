//! Anti-replay sliding window of RFC 6479 ("IPsec Anti-Replay Algorithm without Bit Shifting"),
//! as the WireGuard paper §5.4.6 prescribes for the 64-bit transport counter.
//!
//! The bitmap is a ring of `BLOCKS` 64-bit words; advancing the window clears whole words instead
//! of shifting bits. One word is always being recycled, so the usable window is
//! `(BLOCKS - 1) * 64` = [`WINDOW_SIZE`] counters.

/// Words in the ring (a power of two).
const BLOCKS: usize = 64;
const BLOCK_BITS: u64 = 64;
/// Counters behind the newest one that are still accepted (RFC 6479 §2): 4032.
pub const WINDOW_SIZE: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// The receive window of one session.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Greatest counter accepted so far, plus one (0 = none yet).
    next: u64,
    ring: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            next: 0,
            ring: [0; BLOCKS],
        }
    }

    /// Whether `counter` could be accepted (not too old, not seen). Cheap: run it before the
    /// AEAD so replays cost no decryption.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= self.next {
            return true;
        }
        if self.next - counter > WINDOW_SIZE {
            return false;
        }
        let block = ((counter / BLOCK_BITS) as usize) % BLOCKS;
        self.ring[block] & (1 << (counter % BLOCK_BITS)) == 0
    }

    /// Marks `counter` as received; call only after the packet authenticated. Returns false (and
    /// changes nothing) if it is a replay or too old.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            // RFC 6479 §2: clear the words between the old and the new top.
            let old_top = if self.next == 0 {
                None
            } else {
                Some((self.next - 1) / BLOCK_BITS)
            };
            let new_top = counter / BLOCK_BITS;
            match old_top {
                Some(old) if new_top - old < BLOCKS as u64 => {
                    for b in old + 1..=new_top {
                        self.ring[(b as usize) % BLOCKS] = 0;
                    }
                }
                Some(old) if old == new_top => {}
                _ => self.ring = [0; BLOCKS],
            }
            self.next = counter + 1;
        }
        let block = ((counter / BLOCK_BITS) as usize) % BLOCKS;
        self.ring[block] |= 1 << (counter % BLOCK_BITS);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_replays_and_old_counters() {
        let mut w = ReplayWindow::new();
        assert!(w.update(0));
        assert!(!w.update(0));
        assert!(w.update(5));
        assert!(w.update(3));
        assert!(!w.update(3));
        assert!(w.update(10_000));
        assert!(!w.update(10_000 - WINDOW_SIZE - 1), "too old");
        assert!(w.update(10_000 - WINDOW_SIZE + 1), "inside window");
        assert!(!w.check(5));
    }

    proptest! {
        /// Against a model: a counter is accepted iff unseen and within the window of the max.
        #[test]
        fn matches_model(counters in prop::collection::vec(0u64..20_000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut max: Option<u64> = None;
            for c in counters {
                let expect = !seen.contains(&c) && max.is_none_or(|m| c > m || m - c < WINDOW_SIZE);
                prop_assert_eq!(w.update(c), expect, "counter {}", c);
                if expect {
                    seen.insert(c);
                    max = Some(max.map_or(c, |m| m.max(c)));
                }
            }
        }
    }
}
