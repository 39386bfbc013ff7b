//! Anti-replay sliding window of RFC 6479 ("IPsec Anti-Replay Algorithm without Bit Shifting"),
//! as the WireGuard paper §5.4.6 prescribes for the 64-bit transport counter.
//!
//! The bitmap is a ring of `BLOCKS` 64-bit words; advancing the window clears whole words instead
//! of shifting bits. One word is always being recycled, so the usable window is
//! `(BLOCKS - 1) * 64` = [`WINDOW_SIZE`] counters. The implementation is the MEF transport's
//! ([`mef_transport::crypto::ReplayWindow`]); only the ring size differs.

/// Words in the ring.
const BLOCKS: usize = 64;
/// Counters behind the newest one that are still accepted (RFC 6479 §2): 4032.
pub const WINDOW_SIZE: u64 = ReplayWindow::USABLE;

/// The receive window of one session: the MEF transport's RFC 6479 ring, with 64 words.
pub type ReplayWindow = mef_transport::crypto::ReplayWindow<BLOCKS>;

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
