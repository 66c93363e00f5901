//! Latency summaries for evaluation under load: percentiles with numpy's default (linear
//! interpolation between closest ranks), mean and max, and throughput.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Percentile `q` (in [0, 100]) of `sorted` (ascending), as `numpy.percentile(x, q)` computes it
/// by default: the value at fractional rank `q/100 · (n − 1)`, interpolated linearly.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> Result<f64> {
    if sorted.is_empty() {
        return Err(Error::Empty("samples for a percentile"));
    }
    if !(0.0..=100.0).contains(&q) {
        return Err(Error::InvalidArgument(format!(
            "percentile {q} is outside [0, 100]"
        )));
    }
    let rank = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Ok(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Summary of request latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: usize,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Requests per second over `wall`, when given.
    pub throughput_per_s: Option<f64>,
}

impl LatencySummary {
    /// Summarises `latencies`; `wall` is the elapsed time of the whole run (for throughput).
    pub fn new(latencies: &[Duration], wall: Option<Duration>) -> Result<Self> {
        let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let p = |q| percentile_sorted(&ms, q);
        let throughput_per_s = match wall {
            Some(w) if w.is_zero() => {
                return Err(Error::InvalidArgument("wall time must be > 0".into()))
            }
            Some(w) => Some(ms.len() as f64 / w.as_secs_f64()),
            None => None,
        };
        Ok(LatencySummary {
            count: ms.len(),
            p50_ms: p(50.0)?,
            p90_ms: p(90.0)?,
            p95_ms: p(95.0)?,
            p99_ms: p(99.0)?,
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            max_ms: ms.last().copied().unwrap_or(0.0),
            throughput_per_s,
        })
    }
}
