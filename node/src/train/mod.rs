//! Training on this node's kernels: the compute behind the distributed training roles.
//!
//! - [`optimizer`]: [`KernelOptimizer`], the parameter servers' `FlatOptimizer` on the
//!   kernels' AdamW and SGD (state saved for checkpoints).
//! - [`gradient`]: [`ClassifierSource`], the trainers' `GradientSource` for transformer
//!   classifiers: tokenise a batch of records, run the kernels' forward and backward, return the
//!   flat mean gradient.
//!
//! - [`model`]: the model a run trains (a new character-level classifier or a Hugging Face BERT
//!   folder with a classification head), as its trainers rebuild it.
//! - [`remote`]: the `param_server` role a node hosts for remote spawning, and
//!   [`remote::RemoteParams`], the trainers' `ParamClient` over the mesh.
//!
//! - [`workers`]: a job's coordinator as a mesh endpoint, [`workers::RemoteDispatch`], and the
//!   `trainer` role (a kernels-backed trainer under the node's supervisor).
//!
//! - [`checkpoints`]: every node's checkpoint store endpoint, and how a coordinator saves a
//!   checkpoint on its holders and restores shards from one.
//! - [`checkpoint_writers`]: who may write a run's checkpoints into a store (its coordinator).
//! - [`job`]: the `train` job kind's coordinator: dataset version → model → shards and trainers
//!   on the alive nodes → a JSON summary.
//! - [`metrics`]: the live step metrics a coordinator publishes (`/metrics`, job events).

pub mod checkpoint_writers;
pub mod checkpoints;
pub mod evaluation;
pub mod gradient;
pub mod job;
pub mod metrics;
pub mod model;
pub mod optimizer;
pub mod parent;
pub mod preflight;
mod recovery;
pub mod remote;
pub mod workers;

pub use gradient::ClassifierSource;
pub use optimizer::KernelOptimizer;
