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
//! - [`upload`]: the streaming shard builder and the upload flow (ingest → shards → holders).
//! - [`replication`]: rendezvous placement of replicas and the re-replication planner;
//!   [`survey`]: where a version's shards are now, and carrying out a plan's copies.
//! - [`shard`]: shard bodies and the `DataShard` actor holding a node's shards in the store.
//! - [`job`]: dataset operations as a cluster job (phase 1 summaries, phase 2 decision,
//!   phase 3 apply) producing a new version with lineage.
//! - [`export`]: a version's records reassembled in upload order, checked against the catalog.
//! - [`version`]: lineage encoding, schema after ops, and the walk back to the upload.
//! - [`peers`], [`transfer`], [`service`]: the `/flotilla/data/1` boundary: calling peers,
//!   moving shards in chunks, and answering requests with the local shard actor.
//! - [`error`]: this module's errors.

pub mod error;
pub mod export;
pub mod ingest;
pub mod job;
pub mod ops;
pub mod peers;
pub mod reader;
pub mod record;
pub mod replication;
pub mod service;
pub mod shard;
pub mod survey;
pub mod transfer;
pub mod upload;
pub mod version;

pub use error::{Error, Result};
pub use record::Record;
