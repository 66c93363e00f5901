//! The `Trainer` role: one worker's loop of pull → batch → gradient → push → acknowledge.
//!
//! - [`GradientSource`]: the model, provided by the node (kernels) or by tests.
//! - [`msg`]: the actor's messages; [`actor`]: the ractor shell; [`handle`]: the typed API.
//!
//! A step: pull every shard (in sync mode "after" the step last pushed, so the pull waits for
//! the barrier); ask the coordinator for a batch for that version; compute the gradient on a
//! blocking thread; clip it; push each shard its range (in the job's wire precision); when
//! every shard accepted it, acknowledge the lease; report metrics. With no batch (others hold
//! the last leases) an empty contribution keeps sync barriers and ssp clocks moving. A
//! non-finite loss poisons the whole gradient, so every shard skips the step alike.

pub mod actor;
pub mod handle;
pub mod msg;

use flotilla_protocol::training::{Precision, WorkerId};

use crate::data::record::Record;
use crate::training::optim::LrPlan;

pub use handle::Handle;

/// Computes gradients: the model behind a trainer. Called on a blocking thread.
pub trait GradientSource: Send + Sync + 'static {
    /// The mean gradient over `batch` at `params` (flat, same length), the mean loss and the
    /// number of samples it covers.
    fn compute(&self, params: &[f32], batch: &[Record]) -> Result<(Vec<f32>, f32, usize), String>;
}

/// One trainer's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub worker: WorkerId,
    /// Sync mode: pulls wait for the barrier and batches are per step.
    pub sync: bool,
    /// Wire precision of gradients.
    pub precision: Precision,
    /// Clip each gradient to this global L2 norm (async and ssp; in sync mode the shards clip
    /// the step's mean gradient instead, so this is `None` there).
    pub clip_norm: Option<f32>,
    /// Stop once the shards have taken this many steps.
    pub max_steps: Option<u64>,
    /// For reports: the rate the servers apply.
    pub lr: LrPlan,
    /// Wait before asking again when idle in async mode.
    pub idle_wait: std::time::Duration,
}

/// How a trainer ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The data (or `max_steps`) is done.
    Done { steps: u64, samples: u64 },
    /// It was asked to leave and did, after its current step.
    Drained { steps: u64, samples: u64 },
    /// An error stopped it.
    Failed(String),
}

/// L2 norm of a flat gradient (accumulated in f64).
pub fn l2_norm(g: &[f32]) -> f32 {
    g.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt() as f32
}

/// Scales `g` down to norm `max` when it is longer; returns the norm before clipping.
pub fn clip(g: &mut [f32], max: Option<f32>) -> f32 {
    let norm = l2_norm(g);
    if let Some(max) = max {
        if norm.is_finite() && norm > max && norm > 0.0 {
            let f = max / norm;
            g.iter_mut().for_each(|x| *x *= f);
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_scales_to_the_bound() {
        let mut g = vec![3.0, 4.0];
        assert_eq!(clip(&mut g, Some(1.0)), 5.0);
        assert!((l2_norm(&g) - 1.0).abs() < 1e-6);
        let mut g = vec![0.3, 0.4];
        clip(&mut g, Some(1.0));
        assert_eq!(g, vec![0.3, 0.4]);
        let mut g = vec![f32::NAN, 1.0];
        assert!(clip(&mut g, Some(1.0)).is_nan());
    }
}
