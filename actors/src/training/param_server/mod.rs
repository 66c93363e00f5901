//! The `ParamServer` role: one shard of a job's flat parameter vector.
//!
//! - [`core`]: the pure shard ([`core::Shard`]): aggregation per mode, staleness, non-finite
//!   policy, snapshots.
//! - [`msg`]: the actor's messages; [`actor`]: the ractor shell that holds pulls that are not
//!   ready yet; [`handle`]: typed calls with deadlines.

pub mod actor;
pub mod core;
pub mod handle;
pub mod msg;
pub mod rpc;

#[cfg(test)]
mod core_tests;
#[cfg(test)]
mod rpc_tests;

pub use flotilla_protocol::services::training::StepNorm;
pub use handle::Handle;

/// Values of a shard's range as pulled.
#[derive(Debug, Clone, PartialEq)]
pub struct Pulled {
    /// The shard version the values are at.
    pub version: u64,
    /// Offset of `values` in the shard's range.
    pub offset: u64,
    /// Empty when `norm` is [`StepNorm::Needed`].
    pub values: Vec<f32>,
    pub norm: StepNorm,
}

/// Limits of a `ParamServer` actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Pulls held at most (waiting for a sync step or the staleness bound); more are refused
    /// with [`crate::training::Error::Busy`]. A worker's new pull replaces its held one.
    pub max_held_pulls: usize,
    /// Deadline of calls other than pulls.
    pub call_deadline: std::time::Duration,
    /// Deadline of a pull, which may wait for the slowest worker's step.
    pub pull_deadline: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_held_pulls: 4096,
            call_deadline: std::time::Duration::from_secs(10),
            pull_deadline: std::time::Duration::from_secs(120),
        }
    }
}
