//! Training on this node's kernels: the compute behind the distributed training roles.
//!
//! - [`optimizer`]: [`KernelOptimizer`], the parameter servers' `FlatOptimizer` on the
//!   kernels' AdamW and SGD (state saved for checkpoints).
//! - [`gradient`]: [`ClassifierSource`], the trainers' `GradientSource` for transformer
//!   classifiers: tokenise a batch of records, run the kernels' forward and backward, return the
//!   flat mean gradient.
//!
//! The job kind, the roles on the mesh and the data path from dataset shards are not wired yet.

pub mod gradient;
pub mod optimizer;

pub use gradient::ClassifierSource;
pub use optimizer::KernelOptimizer;
