//! The data-engineering cores: pure, socket-free building blocks of the data stage.
//!
//! The data stage runs operations where dataset shards live and writes new dataset versions
//! with lineage. Everything here is a pure function of its inputs (records, parameters, seeds),
//! so the shard actors, the simulator and the tests drive the same code, and the result of every
//! cluster-wide operation (dedup, split, reader order) does not depend on how records are spread
//! over shards and nodes.
//!
//! Modules:
//! - [`record`]: the [`record::Record`], its canonical encoding, shards with blake3 hashes and
//!   their rendezvous placement.
//! - [`ingest`]: incremental JSONL, CSV and plain-text parsing with malformed-line reports, and
//!   CSV export.
//! - [`ops`]: normalise, filter, PII masking, exact and near dedup, rule labelling,
//!   augmentation, splits, and [`ops::apply_chain`] with lineage.
//! - [`reader`]: the seeded, resumable, partitioned read order for training workers.
//! - [`error`]: this module's errors.

pub mod error;
pub mod ingest;
pub mod ops;
pub mod reader;
pub mod record;

pub use error::{Error, Result};
pub use record::Record;
