//! Batch shares proportional to measured throughput, so fast and slow devices finish a step
//! together.
//!
//! Each worker's speed is an exponentially smoothed samples-per-second of its compute time
//! (waits excluded). The global batch `G` is split in proportion to speed by largest
//! remainder: integer shares summing to exactly `G`, each at least 1 (validation makes
//! `G ≥ workers`). A worker with no measurement yet is assumed as fast as the mean of the
//! measured ones (1.0 when none is measured), so the first step is an equal split.

use std::collections::BTreeMap;

use flotilla_protocol::training::WorkerId;

/// The allocator.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    global: u32,
    /// Weight of a new measurement in the smoothed speed, in (0, 1].
    alpha: f64,
    speeds: BTreeMap<WorkerId, Option<f64>>,
}

impl Shares {
    /// An allocator of `global` samples, smoothing speeds with weight `alpha` (clamped to
    /// (0, 1]; exactly 0 turns adaptation off: equal shares).
    pub fn new(global: u32, alpha: f64) -> Self {
        Self {
            global,
            alpha: if alpha == 0.0 {
                0.0
            } else if alpha.is_finite() {
                alpha.clamp(1e-3, 1.0)
            } else {
                0.5
            },
            speeds: BTreeMap::new(),
        }
    }

    /// Changes the global batch (when it follows the number of workers).
    pub fn set_global(&mut self, global: u32) {
        self.global = global;
    }

    /// The global batch.
    pub fn global(&self) -> u32 {
        self.global
    }

    /// Adds a worker (no measurement yet).
    pub fn add(&mut self, worker: WorkerId) {
        self.speeds.entry(worker).or_insert(None);
    }

    /// Removes a worker.
    pub fn remove(&mut self, worker: WorkerId) {
        self.speeds.remove(&worker);
    }

    /// Records that `worker` computed `samples` samples in `secs` seconds. Measurements of
    /// unknown workers, of no samples or of no time are ignored, and so is every measurement
    /// when the smoothing weight is 0: shares then stay equal (adaptation off).
    pub fn observe(&mut self, worker: WorkerId, samples: u32, secs: f64) {
        if self.alpha <= 0.0 || samples == 0 || !(secs.is_finite() && secs > 0.0) {
            return;
        }
        let Some(speed) = self.speeds.get_mut(&worker) else {
            return;
        };
        let now = f64::from(samples) / secs;
        *speed = Some(match *speed {
            None => now,
            Some(old) => old + self.alpha * (now - old),
        });
    }

    /// The smoothed speed of `worker` (samples/s), if measured.
    pub fn speed(&self, worker: WorkerId) -> Option<f64> {
        self.speeds.get(&worker).copied().flatten()
    }

    /// Every worker's share of the global batch, in worker order.
    pub fn shares(&self) -> BTreeMap<WorkerId, u32> {
        let n = self.speeds.len();
        if n == 0 {
            return BTreeMap::new();
        }
        let known: Vec<f64> = self.speeds.values().filter_map(|s| *s).collect();
        let default = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let speeds: Vec<(WorkerId, f64)> = self
            .speeds
            .iter()
            .map(|(w, s)| (*w, s.unwrap_or(default).max(1e-9)))
            .collect();
        let total: f64 = speeds.iter().map(|(_, s)| s).sum();
        let g = f64::from(self.global);
        let ideal: Vec<f64> = speeds.iter().map(|(_, s)| g * s / total).collect();
        let mut share: Vec<u32> = ideal.iter().map(|x| (x.floor() as u32).max(1)).collect();
        let remainder = |i: usize| ideal[i] - ideal[i].floor();
        let mut sum: u64 = share.iter().map(|&s| u64::from(s)).sum();
        // Largest remainders first take the samples the floors left over.
        let mut by_rem: Vec<usize> = (0..n).collect();
        by_rem.sort_by(|&a, &b| remainder(b).total_cmp(&remainder(a)).then(a.cmp(&b)));
        let mut k = 0;
        while sum < u64::from(self.global) {
            share[by_rem[k % n]] += 1;
            sum += 1;
            k += 1;
        }
        // Shares raised to 1 may overshoot: take back from the largest shares.
        while sum > u64::from(self.global) {
            let Some(i) = (0..n)
                .filter(|&i| share[i] > 1)
                .max_by(|&a, &b| share[a].cmp(&share[b]).then(b.cmp(&a)))
            else {
                break; // fewer samples than workers: every worker keeps 1
            };
            share[i] -= 1;
            sum -= 1;
        }
        speeds.iter().map(|(w, _)| *w).zip(share).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_zero_weight_keeps_shares_equal() {
        let mut s = Shares::new(12, 0.0);
        for w in 0..3 {
            s.add(WorkerId(w));
        }
        s.observe(WorkerId(0), 100, 1.0);
        s.observe(WorkerId(1), 10, 1.0);
        assert!(s.shares().values().all(|&n| n == 4), "{:?}", s.shares());
        let mut adaptive = Shares::new(12, 1.0);
        for w in 0..3 {
            adaptive.add(WorkerId(w));
        }
        adaptive.observe(WorkerId(0), 100, 1.0);
        adaptive.observe(WorkerId(1), 10, 1.0);
        assert!(adaptive.shares()[&WorkerId(0)] > adaptive.shares()[&WorkerId(1)]);
    }

    fn w(i: u32) -> WorkerId {
        WorkerId(i)
    }

    #[test]
    fn equal_until_measured_then_proportional() {
        let mut s = Shares::new(30, 1.0);
        for i in 0..3 {
            s.add(w(i));
        }
        assert_eq!(
            s.shares().values().copied().collect::<Vec<_>>(),
            vec![10, 10, 10]
        );
        s.observe(w(0), 10, 1.0);
        s.observe(w(1), 10, 1.0);
        s.observe(w(2), 10, 2.0);
        assert_eq!(
            s.shares().values().copied().collect::<Vec<_>>(),
            vec![12, 12, 6]
        );
        // Unmeasured newcomers are assumed average.
        s.add(w(3));
        assert_eq!(s.shares().values().sum::<u32>(), 30);
        assert_eq!(s.speed(w(3)), None);
        s.remove(w(3));
        // Bad measurements are ignored.
        s.observe(w(0), 10, 0.0);
        s.observe(w(9), 10, 1.0);
        assert_eq!(s.speed(w(0)), Some(10.0));
    }

    #[test]
    fn every_worker_keeps_at_least_one_sample() {
        let mut s = Shares::new(5, 1.0);
        for i in 0..4 {
            s.add(w(i));
        }
        s.observe(w(0), 1000, 1.0);
        for i in 1..4 {
            s.observe(w(i), 1, 1.0);
        }
        let sh = s.shares();
        assert_eq!(sh.values().sum::<u32>(), 5);
        assert!(sh.values().all(|&x| x >= 1), "{sh:?}");
        assert_eq!(sh[&w(0)], 2);
    }

    /// Step time of a synchronous step: the slowest worker's `share / speed`.
    fn step_time(shares: &BTreeMap<WorkerId, u32>, speed: &[f64]) -> f64 {
        shares
            .iter()
            .map(|(w, &s)| f64::from(s) / speed[w.0 as usize])
            .fold(0.0, f64::max)
    }

    #[test]
    fn adaptive_shares_beat_equal_shares_with_a_half_speed_worker() {
        let global = 60;
        let mut speed = vec![100.0, 100.0, 50.0]; // samples/s; worker 2 at half speed
        let mut s = Shares::new(global, 0.5);
        for i in 0..3 {
            s.add(w(i));
        }
        let equal: BTreeMap<WorkerId, u32> = (0..3).map(|i| (w(i), 20)).collect();
        let run = |s: &mut Shares, speed: &[f64], steps: usize| {
            let mut last = 0.0;
            for _ in 0..steps {
                let sh = s.shares();
                assert_eq!(sh.values().sum::<u32>(), global);
                last = f64::from(global) / step_time(&sh, speed);
                for (wk, &n) in &sh {
                    s.observe(*wk, n, f64::from(n) / speed[wk.0 as usize]);
                }
            }
            last
        };
        let adaptive = run(&mut s, &speed, 20);
        let baseline = f64::from(global) / step_time(&equal, &speed);
        println!("throughput: adaptive {adaptive:.1}/s, equal {baseline:.1}/s");
        assert!(adaptive >= 1.3 * baseline, "{adaptive} vs {baseline}");

        // The slow worker speeds up mid-run: shares follow.
        speed[2] = 100.0;
        let after = run(&mut s, &speed, 20);
        let sh = s.shares();
        assert!(sh[&w(2)] >= 19, "{sh:?}");
        assert!(after >= 0.95 * f64::from(global) / step_time(&equal, &speed));
    }

    proptest! {
        #[test]
        fn shares_sum_to_the_global_batch(
            speeds in prop::collection::vec(0.01f64..1000.0, 1..32),
            extra in 0u32..500,
        ) {
            let global = speeds.len() as u32 + extra;
            let mut s = Shares::new(global, 0.3);
            for (i, v) in speeds.iter().enumerate() {
                s.add(w(i as u32));
                s.observe(w(i as u32), 10, 10.0 / v);
            }
            let sh = s.shares();
            prop_assert_eq!(sh.values().sum::<u32>(), global);
            prop_assert!(sh.values().all(|&x| x >= 1));
        }
    }
}
