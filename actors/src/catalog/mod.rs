//! The replicated catalog: datasets, model versions, aliases, deployments and job records that
//! every node holds and any node may write.
//!
//! - [`core`]: the state-based CRDT ([`Catalog`]): local writes, validated remote merges,
//!   digests and one-round anti-entropy, the change log for delta gossip.
//! - [`query`]: versions, latest versions, alias resolution and active jobs.
//! - [`persist`]: saving entries to and loading them from the `Catalog` column of the
//!   [`crate::store::Store`].

pub mod core;
pub mod persist;
pub mod query;

#[cfg(test)]
mod fixtures;

pub use self::core::{Catalog, Config, Error, MergeReport, Rejection, Write};
pub use persist::LoadReport;
