//! `flotilla-protocol`: what Flotilla nodes say to each other, and nothing that does I/O.
//!
//! Modules:
//! - [`ids`]: node and request identifiers.
//! - [`node_info`]: the membership heartbeat every node publishes.
//! - [`codec`]: the bincode codec with hard size caps, used by every service.
//! - [`services`]: protocol names, per-service size caps and the request/response messages.
//! - [`error`]: wire-level errors.
//! - [`floats`]: f32 vectors as one little-endian byte string on the wire.
//! - [`catalog`]: the replicated catalog's records, keys and CRDT entries.
//! - [`jobs`]: job specifications, priority classes and the job status lattice.
//! - [`hlc`]: hybrid logical clock timestamps for the replicated catalog.
//! - [`validation`]: field-level validation errors shared by records and specs.
//! - [`training`]: the training job spec, gradient payloads and per-step metrics records.
//! - [`openai`]: the OpenAI-compatible HTTP API's bodies, validation and cache keys.

pub mod catalog;
pub mod codec;
pub mod error;
pub mod floats;
pub mod hlc;
pub mod ids;
pub mod jobs;
pub mod node_info;
pub mod openai;
pub mod services;
pub mod toml_text;
pub mod training;
pub mod validation;

pub use error::{Error, Result};
pub use hlc::{Hlc, HlcClock, HlcError};
pub use ids::{NodeId, RequestId};
pub use jobs::{JobId, JobSpec, JobStatus, Priority};
pub use node_info::{GpuState, GpuSummary, MemberState, MemberView, NodeInfo};
