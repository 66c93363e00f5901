//! Training: the job specification, the gradient payloads on the wire and the per-step metrics
//! records.
//!
//! - [`spec`]: [`TrainSpec`] (TOML, serde) and its sections; [`Versioned`] `name@version`.
//! - [`validate`]: [`TrainSpec::validate`], field-level errors for every bad field.
//! - [`wire`]: gradients as f32, f16 or bf16 payloads, with the conversions.
//! - [`metrics`]: what a worker reports per step and the per-step record the coordinator keeps.
//! - [`roles`]: what a coordinator sends to spawn a parameter-server shard ([`ShardArgs`]) or a
//!   trainer ([`TrainerArgs`]).
//!
//! A training spec is standalone rather than a variant of [`crate::jobs::JobKind`]: job kinds
//! are `Eq + Ord + Hash` (they key catalog records) and a spec holds learning rates as floats.

pub mod metrics;
pub mod roles;
pub mod spec;
pub mod validate;
pub mod wire;

#[cfg(test)]
mod tests;

pub use metrics::{StepRecord, WorkerReport, WorkerStat};
pub use roles::{LrArgs, ShardArgs, TrainerArgs};
pub use spec::{
    AdaptiveClip, Architecture, ClusterSpec, Consistency, DatasetRef, LrSchedule, Mode,
    ModelSource, NanPolicy, NewModel, OptimizerKind, OutputSpec, Precision, TrainSpec,
    TrainingArgs, Versioned,
};
pub use wire::GradPayload;

use serde::{Deserialize, Serialize};

/// A worker slot of one training job, assigned by the job's coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkerId(pub u32);

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "w{}", self.0)
    }
}
