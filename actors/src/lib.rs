//! `flotilla-actors`: every role of a Flotilla node as a ractor actor with a pure core beside it,
//! and the boundaries to the outside world.
//!
//! Modules:
//! - [`membership`]: the failure detector (pure core) and the `Membership` actor that keeps this
//!   node's view of the cluster.
//! - [`catalog`]: the replicated catalog, a state-based CRDT (pure core) and its persistence.
//! - [`jobs`]: job ownership and failover (pure rule over a job record and the view).
//! - [`placement`]: the pure, deterministic placement of a job's tasks on alive members.
//! - [`remote`]: typed messages to named actors on peers, spawning role actors under a peer's
//!   supervisor, and monitoring them.
//! - [`rendezvous`]: rendezvous (highest-random-weight) hashing for owner failover and placement.
//! - [`training`]: parameter servers, trainers and the training cores (aggregation, batch
//!   shares, exactly-once sample assignment, elasticity, checkpoints, metrics).
//! - [`serving`]: dynamic batching, continuous batching of generation, and the request router
//!   (cache, coalescing, least-loaded replica choice) behind the OpenAI-compatible API.
//! - [`store`]: the storage boundary ([`store::Store`]); rocksdb implements it in `flotilla-node`.
//! - `testing` (tests and the `testing` feature only): `CrashStore`, an in-memory store that
//!   models what a crash keeps.
//! - [`mesh`]: the network boundary ([`mesh::Mesh`]); libp2p implements it in `flotilla-node`.
//! - [`clock`]: the injected clock the cores are driven by.
//! - [`error`]: this crate's errors.

pub mod call;
pub mod catalog;
pub mod clock;
pub mod data;
pub mod error;
pub mod jobs;
pub mod membership;
pub mod mesh;
pub mod placement;
pub mod remote;
pub mod rendezvous;
pub mod serving;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod store_conformance;
pub mod task;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod training;

pub use error::{Error, Result};
