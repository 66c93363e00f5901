//! Multi-node integration tests on real in-process clusters (`flotilla_tests::TestCluster`): one
//! test binary, one module per area. (`overload.rs` is a binary of its own: it measures the
//! process's resident memory, which other tests' clusters would grow.)

mod bad_frames;
mod catalog;
mod checkpoint_writes;
mod data;
mod data_reader;
mod eviction;
mod hostile_peer;
mod http_limits;
mod inbound_budget;
mod jobs;
mod membership;
mod node_health;
mod remote_actors;
mod security;
mod serving;
mod serving_placement;
mod train_faults;
mod train_hf;
mod train_job;
mod train_modes;
