//! Training on this node's kernels: the compute behind the distributed training roles.
//!
//! - [`optimizer`]: [`KernelOptimizer`], the parameter servers' `FlatOptimizer` on the
//!   kernels' AdamW and SGD (state saved for checkpoints).
//! - [`gradient`]: [`ClassifierSource`], the trainers' `GradientSource` for transformer
//!   classifiers: tokenise a batch of records, run the kernels' forward and backward, return the
//!   flat mean gradient.
//!
//! - [`remote`]: the `param_server` role a node hosts for remote spawning, and
//!   [`remote::RemoteParams`], the trainers' `ParamClient` over the mesh.
//!
//! The `train` job kind, the coordinator as a mesh actor and the data path from dataset shards
//! are not wired yet.

pub mod gradient;
pub mod optimizer;
pub mod remote;

pub use gradient::ClassifierSource;
pub use optimizer::KernelOptimizer;
