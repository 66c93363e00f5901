//! Training runs on this node: the `train` job's coordinator and the distributed roles it
//! spawns, on the model code of [`crate::models`].
//!
//! - [`gradients`]: the trainers' gradients on the kernels ([`gradients::ClassifierGradients`],
//!   the port behind the actors' `trainer` role). The `param_server` and `trainer` roles, the
//!   shards and the coordinator over the mesh are the actors'
//!   (`flotilla_actors::training::coordinator`).
//! - [`checkpoints`]: every node's checkpoint store endpoint, and how a coordinator saves a
//!   checkpoint on its holders and restores shards from one.
//! - [`checkpoint_writers`]: who may write a run's checkpoints into a store (its coordinator).
//! - [`job`]: the `train` job kind's coordinator: dataset version → model → shards and trainers
//!   on the alive nodes → a JSON summary.
//! - [`evaluation`]: held-out evaluation every `eval_every` steps while a run trains.
//! - [`preflight`]: checks a run's shards fit the mesh's frames before anything starts.
//! - [`metrics`]: the live step metrics a coordinator publishes (`/metrics`, job events).

pub mod checkpoint_writers;
pub mod checkpoints;
pub mod evaluation;
pub mod gradients;
pub mod job;
pub mod metrics;
pub mod preflight;
mod recovery;
