//! The replicated catalog: datasets, model versions, aliases, deployments and job records that
//! every node holds and any node may write.
//!
//! - [`core`]: the state-based CRDT ([`Catalog`]): local writes, validated remote merges,
//!   digests and one-round anti-entropy, the change log for delta gossip.
//! - [`keys`]: seals: this node signs its writes; peers' entries are verified against the key
//!   their writer's id names.
//! - [`query`]: versions, latest versions, alias resolution and active jobs.
//! - [`persist`]: saving entries to and loading them from the `Catalog` column of the
//!   [`crate::store::Store`].
//! - [`msg`]: the actor's messages.
//! - [`actor`]: the thin ractor shell: wall clock, persistence, hand-off of deltas to gossip.
//! - [`handle`]: the typed, deadline-bounded API callers use.

pub mod actor;
pub mod core;
pub mod handle;
pub mod keys;
pub mod msg;
pub mod persist;
pub mod query;

#[cfg(test)]
mod fixtures;

pub use self::core::{Catalog, Config, Error, MergeReport, Rejection, Write};
pub use actor::{MergeSummary, Stats, WriteError};
pub use handle::Handle;
pub use keys::Keys;
pub use persist::LoadReport;
