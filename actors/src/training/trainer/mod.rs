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
use crate::training::optim::{ClipConfig, LrPlan};

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
    /// Clip each gradient by its global L2 norm, to a fixed or an adaptive threshold (async
    /// and ssp; in sync mode the shards clip the step's mean gradient instead, so this is
    /// `None` there).
    pub clip: Option<ClipConfig>,
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
