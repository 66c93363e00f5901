//! Distributed training: parameter-server shards, trainers, and the pure cores that decide
//! aggregation, batch shares, sample assignment, elasticity and checkpoints.
//!
//! Cores (pure, driven by tests and the simulator):
//! - [`partition`]: the flat parameter vector cut into contiguous shard ranges.
//! - [`optim`]: the [`optim::FlatOptimizer`] boundary and [`optim::ShardOptimizer`] (the shared
//!   numerics' AdamW and SGD), the learning-rate plan and the clipping settings.
//! - [`param_server::core`]: one shard's aggregation in sync, async and ssp modes, staleness,
//!   the non-finite policy, snapshots.
//! - [`shares`]: batch shares proportional to smoothed throughput.
//! - [`assignment`]: seeded per-epoch sample order, leases, exactly-once across deaths and
//!   restarts; [`ledger`] proves it.
//! - [`elastic`]: joins, departures, standbys and the below-minimum timeout.
//! - [`checkpoint`]: when, what, where (rendezvous holders) and which to restore.
//! - [`metrics`]: per-step records and the bounded series.
//! - [`plan`]: a [`flotilla_protocol::training::TrainSpec`] turned into each role's settings.
//! - [`dispatch`]: the coordinator's side of a job (assignment + shares + elasticity +
//!   metrics) behind the [`dispatch::Dispatch`] trait.
//!
//! Actors:
//! - [`param_server`]: the `ParamServer` actor around a shard, and `param_server::rpc`, its
//!   answers to training requests (carried by `/flotilla/actors/1` calls).
//! - [`trainer`]: the `Trainer` actor, driven by a [`trainer::GradientSource`], talking to
//!   the shards through [`client::ParamClient`] and to the coordinator through
//!   [`dispatch::Dispatch`], so the node can put the mesh in between.
//! - [`coordinator`]: the mesh in between — the `param_server` role, the shards and the
//!   coordinator reached over remote-actor calls.
//!
//! Known limit: a push to several shards is not atomic. When a worker dies between its pushes
//! to two shards, its lease is given back (the sample ledger stays exactly-once) and a sync
//! shard that still holds its gradient drops it; but a shard that already applied it (any
//! shard in async and ssp mode, or a sync shard whose step that gradient completed) sees those
//! samples' contribution a second time when they are served again.

pub mod assignment;
pub mod checkpoint;
pub mod client;
pub mod coordinator;
pub mod dispatch;
pub mod elastic;
pub mod error;
pub mod ledger;
pub mod metrics;
pub mod optim;
pub mod param_server;
pub mod partition;
pub mod plan;
pub mod shares;
pub mod trainer;

#[cfg(test)]
mod assignment_tests;
#[cfg(test)]
mod checkpoint_tests;
#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod e2e;

pub use error::{Error, Result};
