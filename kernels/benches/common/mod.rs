//! What the kernels' benchmarks share: the timer.

use std::time::{Duration, Instant};

/// Median time per call over `rounds` timed rounds of roughly `budget / rounds` each, after one
/// untimed call that warms caches and lazily initialised state.
pub fn median_time(budget: Duration, rounds: u32, mut f: impl FnMut()) -> Duration {
    f();
    let per_round = budget / rounds;
    let mut samples = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let start = Instant::now();
        let mut iters = 0u32;
        while iters == 0 || start.elapsed() < per_round {
            f();
            iters += 1;
        }
        samples.push(start.elapsed() / iters);
    }
    samples.sort();
    samples[samples.len() / 2]
}
