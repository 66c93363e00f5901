//! The compute probe: a short f32 matmul run at node start whose rate (GFLOP/s) becomes the node's
//! compute score, so placement can prefer faster devices.

use std::time::{Duration, Instant};

use dfdx::prelude::*;

/// Result of one probe run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// Matrix side used.
    pub size: usize,
    /// Multiplications run.
    pub iterations: u32,
    /// Achieved rate in GFLOP/s (2·n³ flops per multiplication).
    pub gflops: f64,
    /// Wall time of the timed part.
    pub elapsed: Duration,
}

/// Runs `n × n` f32 matrix multiplications on the CPU until `budget` has elapsed (at least two),
/// and reports the achieved rate. Inputs are seeded so every node does identical work.
pub fn run_cpu_probe(n: usize, budget: Duration) -> ProbeResult {
    let n = n.max(8);
    let dev: Cpu = Cpu::seed_from_u64(0x5eed);
    let a: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(n, n));
    let b: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(n, n));
    // One untimed warm-up so allocation and thread start-up are not measured.
    let warm = a.clone().matmul(b.clone());
    std::hint::black_box(warm.as_vec().first().copied());

    let start = Instant::now();
    let mut iterations = 0u32;
    while iterations < 2 || start.elapsed() < budget {
        let c = a.clone().matmul(b.clone());
        std::hint::black_box(c.as_vec().first().copied());
        iterations += 1;
        if iterations >= 10_000 {
            break;
        }
    }
    let elapsed = start.elapsed();
    let flops = 2.0 * (n as f64).powi(3) * f64::from(iterations);
    ProbeResult {
        size: n,
        iterations,
        gflops: flops / elapsed.as_secs_f64().max(1e-9) / 1e9,
        elapsed,
    }
}

/// Runs exactly `iterations` seeded `n × n` f32 multiplications (the work of a `benchmark` job
/// task), checking `stop` between them. Returns `None` if stopped early.
pub fn run_cpu_matmuls(n: usize, iterations: u32, stop: &dyn Fn() -> bool) -> Option<ProbeResult> {
    let n = n.max(8);
    let dev: Cpu = Cpu::seed_from_u64(0x5eed);
    let a: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(n, n));
    let b: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(n, n));
    let start = Instant::now();
    for _ in 0..iterations {
        if stop() {
            return None;
        }
        let c = a.clone().matmul(b.clone());
        std::hint::black_box(c.as_vec().first().copied());
    }
    let elapsed = start.elapsed();
    let flops = 2.0 * (n as f64).powi(3) * f64::from(iterations);
    Some(ProbeResult {
        size: n,
        iterations,
        gflops: flops / elapsed.as_secs_f64().max(1e-9) / 1e9,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_a_positive_rate() {
        let r = run_cpu_probe(64, Duration::from_millis(20));
        assert!(r.iterations >= 2);
        assert!(r.gflops > 0.0 && r.gflops.is_finite());
    }

    #[test]
    fn fixed_iterations_run_and_stop_on_request() {
        let r = run_cpu_matmuls(32, 3, &|| false).unwrap();
        assert_eq!(r.iterations, 3);
        assert!(r.gflops > 0.0);
        assert!(run_cpu_matmuls(32, 3, &|| true).is_none());
    }

    #[test]
    fn probe_matmul_is_correct_against_naive() {
        // The probe's score is only meaningful if the multiplication is real: check one product.
        let dev: Cpu = Cpu::seed_from_u64(1);
        let a: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(5, 7));
        let b: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(7, 3));
        let c = a.clone().matmul(b.clone()).as_vec();
        let (av, bv) = (a.as_vec(), b.as_vec());
        for i in 0..5 {
            for j in 0..3 {
                let want: f64 = (0..7)
                    .map(|k| f64::from(av[i * 7 + k]) * f64::from(bv[k * 3 + j]))
                    .sum();
                assert!((f64::from(c[i * 3 + j]) - want).abs() < 1e-4);
            }
        }
    }
}
