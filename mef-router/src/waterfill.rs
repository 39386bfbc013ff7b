//! Max-min fair water-filling on one link.
//!
//! Given the link's usable capacity `C` and each flow's demand `d_i` (the most it can use:
//! its own demand, or the rate it is held to elsewhere on its path), the max-min fair allocation
//! gives flow `i` exactly `min(d_i, μ)` where the *water level* μ solves `Σ min(d_i, μ) = C`.
//! This is the single-link step of Charny's distributed max-min algorithm for ATM ABR (A. Charny,
//! D. Clark, R. Jain, "Congestion control with explicit rate indication", ICC 1995; also
//! Bertsekas & Gallager, *Data Networks*, §6.5.2): every router computes its level from the flows
//! that are *not* bottlenecked elsewhere, stamps it, and each flow ends at the minimum over its
//! path. RCP (Dukkipati & McKeown) stamps the same kind of single per-link rate, but reaches it
//! by iteration; computing the level exactly from the demands is what lets MEF give a new
//! connection its fair share from its first packet (seed 003, "MEF 原理").

/// The outcome of water-filling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaterLevel {
    /// The level μ: each flow gets `min(d_i, μ)`.
    pub level: f64,
    /// Number of flows held at the level (bottlenecked on this link). Zero means every flow is
    /// limited below the level by its own demand, so the link is not the bottleneck of anyone
    /// and capacity is left over.
    pub bottlenecked: usize,
    /// `Σ min(d_i, μ)`: the capacity actually allocated (≤ the capacity given).
    pub allocated: f64,
}

impl WaterLevel {
    /// Flow `i`'s allocation for demand `d`.
    pub fn allocation(&self, demand: f64) -> f64 {
        demand.min(self.level)
    }
}

/// Computes the max-min fair water level for `capacity` shared by flows with `demands`.
///
/// Demands may be `f64::INFINITY` (unlimited); negative or NaN demands count as zero.
/// When every flow fits below the fair share (`Σ d_i < C`), the level is set as in Charny's
/// algorithm to `max d_i + (C − Σ d_i)`: the rate any one flow could grow to if it were freed,
/// so a flow that is limited elsewhere is never held back here. With no flows the level is `C`.
/// Runs in `O(n log n)`; `demands` is reordered.
pub fn water_fill(capacity: f64, demands: &mut [f64]) -> WaterLevel {
    let capacity = if capacity.is_finite() {
        capacity.max(0.0)
    } else {
        0.0
    };
    for d in demands.iter_mut() {
        if d.is_nan() || *d < 0.0 {
            *d = 0.0;
        }
    }
    demands.sort_by(f64::total_cmp);
    let mut remaining = capacity;
    let mut allocated = 0.0;
    let n = demands.len();
    for (i, &d) in demands.iter().enumerate() {
        let left = n - i;
        let share = remaining / left as f64;
        if d > share {
            // Every flow from here on demands more than an equal split of what is left.
            return WaterLevel {
                level: share,
                bottlenecked: left,
                allocated: allocated + remaining,
            };
        }
        remaining -= d;
        allocated += d;
    }
    let max_d = demands.last().copied().unwrap_or(0.0);
    WaterLevel {
        level: max_d + remaining.max(0.0),
        bottlenecked: 0,
        allocated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        let w = water_fill(100.0, &mut [f64::INFINITY, f64::INFINITY]);
        assert_eq!(w.level, 50.0);
        assert_eq!(w.bottlenecked, 2);
        let w = water_fill(100.0, &mut [10.0, f64::INFINITY, f64::INFINITY]);
        assert_eq!(w.level, 45.0);
        let w = water_fill(100.0, &mut [10.0, 20.0]);
        assert_eq!((w.level, w.bottlenecked, w.allocated), (90.0, 0, 30.0));
        let w = water_fill(100.0, &mut []);
        assert_eq!(w.level, 100.0);
        let w = water_fill(90.0, &mut [f64::NAN, -3.0, f64::INFINITY]);
        assert_eq!(w.level, 90.0);
    }

    fn demand() -> impl Strategy<Value = f64> {
        prop_oneof![
            3 => 0.0..200.0f64,
            1 => Just(f64::INFINITY),
            1 => Just(0.0),
        ]
    }

    proptest! {
        /// Σ allocations ≤ C; each flow gets min(d_i, μ); and the result is max-min optimal:
        /// a flow below its demand is at the level, the level is the largest allocation and the
        /// link is full, so raising it would lower a flow whose allocation is not larger.
        #[test]
        fn water_filling_is_max_min_fair(
            cap in 0.0..1000.0f64,
            ds in proptest::collection::vec(demand(), 0..40),
        ) {
            let mut sorted = ds.clone();
            let w = water_fill(cap, &mut sorted);
            let alloc: Vec<f64> = ds.iter().map(|&d| w.allocation(d)).collect();
            let sum: f64 = alloc.iter().sum();
            let eps = 1e-9 * cap.max(1.0);
            prop_assert!(sum <= cap + eps, "sum {sum} > cap {cap}");
            prop_assert!((sum - w.allocated).abs() <= eps);
            let max_alloc = alloc.iter().copied().fold(0.0, f64::max);
            for (&d, &a) in ds.iter().zip(&alloc) {
                prop_assert!(a >= 0.0 && a <= d);
                prop_assert_eq!(a, d.min(w.level));
                if a < d {
                    // Not satisfied: must be bottlenecked here, i.e. the link is full and no
                    // other flow has more (the max-min condition).
                    prop_assert!((sum - cap).abs() <= eps, "unsatisfied flow on a non-full link");
                    prop_assert!(a + eps >= max_alloc, "a={a} < max={max_alloc}");
                }
            }
            let unsatisfied = ds.iter().filter(|&&d| d > w.level).count();
            prop_assert_eq!(unsatisfied, w.bottlenecked);
            if w.bottlenecked == 0 {
                // Charny's level for an unsaturated link: the spare plus the largest demand.
                let max_d = ds.iter().copied().fold(0.0, f64::max);
                prop_assert!((w.level - (max_d + cap - sum)).abs() <= eps);
            }
        }

        /// Adding a flow never raises the level (monotonicity, so a new flow cannot make others
        /// send faster and overload the link).
        #[test]
        fn adding_a_flow_never_raises_the_level(
            cap in 1.0..1000.0f64,
            ds in proptest::collection::vec(demand(), 1..20),
            extra in demand(),
        ) {
            let before = water_fill(cap, &mut ds.clone());
            let mut more = ds.clone();
            more.push(extra);
            let after = water_fill(cap, &mut more);
            if before.bottlenecked > 0 {
                prop_assert!(after.level <= before.level + 1e-9 * cap);
            }
        }
    }
}
