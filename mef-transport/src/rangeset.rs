//! A set of `u64` values stored as disjoint half-open ranges: received packet numbers, acked
//! and lost stream bytes.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub const fn new() -> Self {
        Self {
            map: BTreeMap::new(),
        }
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// `true` if the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Smallest value, if any.
    pub fn min(&self) -> Option<u64> {
        self.map.first_key_value().map(|(s, _)| *s)
    }

    /// Largest value, if any.
    pub fn max(&self) -> Option<u64> {
        self.map.last_key_value().map(|(_, e)| *e - 1)
    }

    /// `true` if `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        self.map
            .range(..=v)
            .next_back()
            .is_some_and(|(_, e)| v < *e)
    }

    /// Inserts a range; returns `true` if any value in it was new.
    pub fn insert(&mut self, r: Range<u64>) -> bool {
        if r.is_empty() {
            return false;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Already covered entirely?
        if let Some((_, e)) = self.map.range(..=start).next_back()
            && *e >= end
        {
            return false;
        }
        // Merge with a predecessor that overlaps or touches.
        if let Some((&s, &e)) = self.map.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.map.remove(&s);
        }
        // Merge with successors that start inside or right after.
        while let Some((&s, &e)) = self.map.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
        true
    }

    /// Removes a range.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let mut touched: Vec<(u64, u64)> = Vec::new();
        if let Some((&s, &e)) = self.map.range(..r.start).next_back()
            && e > r.start
        {
            touched.push((s, e));
        }
        touched.extend(self.map.range(r.start..r.end).map(|(s, e)| (*s, *e)));
        for (s, e) in touched {
            self.map.remove(&s);
            if s < r.start {
                self.map.insert(s, r.start);
            }
            if e > r.end {
                self.map.insert(r.end, e);
            }
        }
    }

    /// Removes and returns the first range, at most `max_len` long.
    pub fn pop_min(&mut self, max_len: u64) -> Option<Range<u64>> {
        let (s, e) = self.map.pop_first()?;
        let take_end = e.min(s.saturating_add(max_len.max(1)));
        if take_end < e {
            self.map.insert(take_end, e);
        }
        Some(s..take_end)
    }

    /// Removes every value below `v`.
    pub fn remove_below(&mut self, v: u64) {
        while let Some((&s, &e)) = self.map.first_key_value() {
            if s >= v {
                break;
            }
            self.map.remove(&s);
            if e > v {
                self.map.insert(v, e);
                break;
            }
        }
    }

    /// Drops the lowest ranges until at most `n` remain.
    pub fn truncate_lowest(&mut self, n: usize) {
        while self.map.len() > n {
            self.map.pop_first();
        }
    }

    /// Iterates ranges in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(s, e)| *s..*e)
    }

    /// The end of the range starting at or containing `v`, if `v` is in the set.
    pub fn range_end_containing(&self, v: u64) -> Option<u64> {
        self.map
            .range(..=v)
            .next_back()
            .filter(|(_, e)| v < **e)
            .map(|(_, e)| *e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn basics() {
        let mut s = RangeSet::new();
        assert!(s.insert(5..10));
        assert!(s.insert(12..15));
        assert!(!s.insert(6..8));
        assert!(s.insert(10..12));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![5..15]);
        s.remove(7..9);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![5..7, 9..15]);
        assert_eq!(s.pop_min(1), Some(5..6));
        s.remove_below(10);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10..15]);
        assert_eq!(s.max(), Some(14));
    }

    proptest! {
        #[test]
        fn matches_model(ops in proptest::collection::vec((any::<bool>(), 0u64..200, 0u64..20), 0..60)) {
            let mut s = RangeSet::new();
            let mut m = BTreeSet::new();
            for (ins, a, l) in ops {
                if ins { s.insert(a..a + l); m.extend(a..a + l); }
                else { s.remove(a..a + l); for v in a..a + l { m.remove(&v); } }
            }
            let got: BTreeSet<u64> = s.iter().flatten().collect();
            prop_assert_eq!(&got, &m);
            // Disjoint and non-adjacent.
            let v: Vec<_> = s.iter().collect();
            for w in v.windows(2) { prop_assert!(w[0].end < w[1].start); }
            for x in 0..220 { prop_assert_eq!(s.contains(x), m.contains(&x)); }
        }
    }
}
