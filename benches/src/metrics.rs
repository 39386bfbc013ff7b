//! The arithmetic behind the figures: Jain's index, percentiles, max-min fair shares, the
//! processor-sharing ideal for flow completion times, and the flow-size distribution.

use std::time::Duration;

use rand::RngExt;

/// Jain's fairness index `(Σx)² / (n·Σx²)`: 1 when all equal, `1/n` when one takes all.
/// `None` for an empty slice or all zeros.
pub fn jain(xs: &[f64]) -> Option<f64> {
    let n = xs.len() as f64;
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    (n > 0.0 && sq > 0.0).then(|| sum * sum / (n * sq))
}

/// The `q`-quantile (nearest rank, `q` in `[0, 1]`) of the values; `None` if empty.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Arithmetic mean; `None` if empty.
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Max-min fair rates by water-filling: `capacity[l]` per link, `paths[f]` the links flow `f`
/// crosses. Every flow is assumed to want more than it can get.
pub fn max_min(capacity: &[f64], paths: &[Vec<usize>]) -> Vec<f64> {
    let mut rate = vec![0.0; paths.len()];
    let mut frozen = vec![false; paths.len()];
    let mut left = capacity.to_vec();
    loop {
        // The link that saturates first when all unfrozen flows grow equally.
        let mut best: Option<(usize, f64)> = None;
        for (l, &cap) in left.iter().enumerate() {
            let n = paths
                .iter()
                .zip(&frozen)
                .filter(|(p, fz)| !**fz && p.contains(&l))
                .count();
            if n > 0 {
                let inc = cap / n as f64;
                if best.is_none_or(|(_, b)| inc < b) {
                    best = Some((l, inc));
                }
            }
        }
        let Some((link, inc)) = best else { break };
        for (f, p) in paths.iter().enumerate() {
            if frozen[f] {
                continue;
            }
            rate[f] += inc;
            for &l in p {
                left[l] -= inc;
            }
        }
        for (f, p) in paths.iter().enumerate() {
            if !frozen[f] && p.contains(&link) {
                frozen[f] = true;
            }
        }
        if frozen.iter().all(|&f| f) {
            break;
        }
    }
    rate
}

/// Sojourn times of jobs under an ideal fluid processor-sharing server of `rate` (bytes per
/// second): `jobs[i] = (arrival, size in bytes)`. Every job present gets an equal share of the
/// rate. Exact event-driven computation (arrivals and completions), `O(n²)` worst case.
pub fn processor_sharing(jobs: &[(Duration, u64)], rate: f64) -> Vec<Duration> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| (jobs[i].0, i));
    let mut out = vec![Duration::ZERO; jobs.len()];
    // Active jobs: (index, remaining bytes).
    let mut active: Vec<(usize, f64)> = Vec::new();
    let mut t = 0.0f64;
    let mut next = 0;
    while next < order.len() || !active.is_empty() {
        let arrival = order.get(next).map(|&i| jobs[i].0.as_secs_f64());
        if active.is_empty() {
            // Idle: jump to the next arrival.
            if let (Some(a), Some(&i)) = (arrival, order.get(next)) {
                t = t.max(a);
                active.push((i, jobs[i].1 as f64));
                next += 1;
            }
            continue;
        }
        let share = rate / active.len() as f64;
        let min_rem = active.iter().map(|a| a.1).fold(f64::INFINITY, f64::min);
        let finish = t + min_rem / share;
        match arrival {
            Some(a) if a < finish => {
                let dt = a - t;
                active.iter_mut().for_each(|j| j.1 -= dt * share);
                t = a;
                let i = order[next];
                active.push((i, jobs[i].1 as f64));
                next += 1;
            }
            _ => {
                let dt = finish - t;
                t = finish;
                active.iter_mut().for_each(|j| j.1 -= dt * share);
                // Complete every job at (numerically) zero remaining.
                let eps = 1e-9 * rate.max(1.0);
                active.retain(|&(i, rem)| {
                    if rem <= eps {
                        out[i] = Duration::from_secs_f64((t - jobs[i].0.as_secs_f64()).max(0.0));
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
    out
}

/// A Pareto-distributed flow size in packets with the given mean and shape (`shape > 1`),
/// rounded up to whole packets and capped at `cap` packets.
pub fn pareto_packets(rng: &mut impl rand::Rng, mean: f64, shape: f64, cap: u64) -> u64 {
    let scale = mean * (shape - 1.0) / shape;
    // U in (0, 1]: 1 - [0, 1).
    let u = 1.0 - rng.random::<f64>();
    let x = scale / u.powf(1.0 / shape);
    (x.ceil() as u64).clamp(1, cap)
}

/// An exponential inter-arrival time of a Poisson process with `rate` arrivals per second.
pub fn exp_interval(rng: &mut impl rand::Rng, rate: f64) -> Duration {
    let u = 1.0 - rng.random::<f64>();
    Duration::from_secs_f64(-u.ln() / rate)
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), recorded with CPU-bound figures so a
/// reader sees how quiet the machine was.
pub fn load_avg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_extremes_and_hand_example() {
        assert_eq!(jain(&[5.0, 5.0, 5.0, 5.0]), Some(1.0));
        let one = jain(&[10.0, 0.0, 0.0, 0.0]).expect("defined");
        assert!((one - 0.25).abs() < 1e-12);
        // (1+2+3)² / (3·(1+4+9)) = 36/42.
        let j = jain(&[1.0, 2.0, 3.0]).expect("defined");
        assert!((j - 36.0 / 42.0).abs() < 1e-12, "{j}");
        assert_eq!(jain(&[]), None);
        assert_eq!(jain(&[0.0, 0.0]), None);
    }

    #[test]
    fn quantiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn max_min_parking_lot() {
        // Links 0,1,2 of 90; flow 0 crosses all, flow 1 link 0, flows 2,3 link 1, flow 4 link 2.
        let r = max_min(
            &[90.0; 3],
            &[vec![0, 1, 2], vec![0], vec![1], vec![1], vec![2]],
        );
        let want = [30.0, 60.0, 30.0, 30.0, 60.0];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-9, "{r:?}");
        }
    }

    #[test]
    fn processor_sharing_hand_worked() {
        // Server 1 byte/s. A: arrives 0, 2 bytes. B: arrives 1, 1 byte.
        // [0,1): A alone, 1 byte done, 1 left. From 1: both at 0.5 B/s, both have 1 byte left,
        // both finish at 3. Sojourns: A 3 s, B 2 s.
        let s = processor_sharing(&[(Duration::ZERO, 2), (Duration::from_secs(1), 1)], 1.0);
        assert!((s[0].as_secs_f64() - 3.0).abs() < 1e-9, "{s:?}");
        assert!((s[1].as_secs_f64() - 2.0).abs() < 1e-9, "{s:?}");
        // C: arrives 10 (idle server), 4 bytes at 2 B/s: 2 s. D: arrives 11 with 1 byte:
        // at 11, C has 2 left; both at 1 B/s; D finishes at 12, C has 1 left, alone at 2 B/s
        // finishes at 12.5. Sojourns: C 2.5 s, D 1 s.
        let s = processor_sharing(
            &[(Duration::from_secs(11), 1), (Duration::from_secs(10), 4)],
            2.0,
        );
        assert!((s[1].as_secs_f64() - 2.5).abs() < 1e-9, "{s:?}");
        assert!((s[0].as_secs_f64() - 1.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn pareto_mean_is_close() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // Shape 2.5 converges fast enough to check the scale.
        let n = 200_000;
        let sum: u64 = (0..n)
            .map(|_| pareto_packets(&mut rng, 25.0, 2.5, u64::MAX))
            .sum();
        let m = sum as f64 / n as f64;
        // Rounding up adds about half a packet.
        assert!((m - 25.5).abs() < 0.6, "mean {m}");
    }
}
