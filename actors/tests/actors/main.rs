//! The actors with in-memory stores and meshes: catalog gossip, the data plane (shards, ingest,
//! operations, dedup, PII), the job executor. One test binary, one module per area.

mod catalog_gossip;
mod data_cluster;
mod data_common;
mod data_dedup;
mod data_ingest;
mod data_ops_job;
mod data_pii;
mod data_props;
mod data_shard;
mod data_shard_props;
mod job_executor;
