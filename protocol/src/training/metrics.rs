//! Per-step training metrics: what a worker reports and what the coordinator records.

use serde::{Deserialize, Serialize};

use super::WorkerId;

/// One worker's account of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: WorkerId,
    /// The parameter version the gradient was computed at.
    pub step: u64,
    /// Mean loss over the worker's batch (NaN when it had no samples).
    pub loss: f32,
    /// L2 norm of the worker's gradient before clipping.
    pub grad_norm: f32,
    /// The learning rate the servers apply at this step.
    pub lr: f32,
    /// Samples in the worker's batch (its share).
    pub samples: u32,
    /// Time the worker spent computing the gradient, in milliseconds (waits excluded).
    pub compute_ms: f64,
}

/// One worker's part in a step record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStat {
    pub worker: WorkerId,
    pub step_time_ms: f64,
    /// Samples it was given (its batch share).
    pub share: u32,
}

/// The cluster-wide record of one step, as the node stores and exports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    /// Sample-weighted mean loss of the workers that reported.
    pub loss: f32,
    pub lr: f32,
    /// Sample-weighted mean of the workers' gradient norms.
    pub grad_norm: f32,
    /// Samples in the step.
    pub samples: u32,
    /// Samples per second: the step's samples over its slowest worker's compute time.
    pub samples_per_s: f64,
    /// Per worker, in worker order.
    pub workers: Vec<WorkerStat>,
}
