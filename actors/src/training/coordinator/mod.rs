//! A training run's coordinator on the mesh: the pieces that let a run's parameter-server
//! shards, trainers and coordinator live on different nodes.
//!
//! - [`params`]: the `param_server` role a node hosts for remote spawning (a shard with the
//!   numerics' optimizer), and [`params::RemoteParams`], the `ParamClient` that reaches a run's
//!   shards over the mesh.
//! - [`dispatch`]: the coordinator's `LocalDispatch` as a mesh endpoint, and
//!   [`dispatch::RemoteDispatch`], the trainers' `Dispatch` over the mesh.
//! - [`trainers`]: the `trainer` role, behind a [`trainers::GradientFactory`] port the node
//!   implements with its kernels-backed models.
//!
//! The run itself (load, prepare, spawn, drive, finish) is still the node's
//! (`node/src/train/job.rs`): it builds models on the kernels.

pub mod dispatch;
pub mod params;
pub mod trainers;
