//! `flotilla-node`: the Flotilla daemon and the `flotilla` CLI.
//!
//! Modules:
//! - [`config`]: node and client configuration, validation, precedence.
//! - [`admission`]: the cluster key (generated, from a token, or a file) and the admin token.
//! - [`evict`]: removing a member at run time through a replicated eviction record.
//! - [`identity`]: the persistent ed25519 node key.
//! - [`jobs`]: the work each job kind does on this node.
//! - [`data`]: the data stage on the node (uploads, operations as jobs, re-replication).
//! - [`store`]: rocksdb behind the actors' `Store` boundary.
//! - [`net`]: the libp2p swarm, its codec, and the bridge to the actors.
//! - [`sampler`]: the node's heartbeat contents (cores, RAM, GPUs, compute score, load).
//! - [`models`]: model code shared by serving and training: model files (blob store, fetch by
//!   hash, replication), the classifier, embedder and GPT, what a run trains and evaluates.
//! - [`serving`]: model replicas, placement and the router behind the OpenAI-compatible API.
//! - [`metrics`]: the Prometheus registry's metrics.
//! - [`http`]: the axum API.
//! - [`train`]: the `train` job's coordinator and the distributed training roles.
//! - [`daemon`]: composition of all of the above into a [`daemon::RunningNode`].
//! - [`cli`]: the command-line interface.

// Printing results to stdout is what the command line is for; everywhere else it is a lint.
pub mod admission;
#[allow(clippy::print_stdout)]
pub mod cli;
pub mod config;
pub mod daemon;
pub mod data;
pub mod evict;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod lifecycle;
pub mod metrics;
pub mod models;
pub mod net;
#[cfg(unix)]
pub mod notify;
pub mod sampler;
pub mod serving;
pub mod store;
pub mod train;

pub use daemon::RunningNode;

/// Makes aws-lc-rs the process's default rustls provider, once. HTTP clients built by reqwest
/// with rustls but no provider of their own (as in a build whose features are unified with the
/// tests', which speak HTTPS to the API) panic without one; the server's TLS config names its
/// provider explicitly and does not need this. Called by the binary's `main` (which covers
/// every CLI client) and by [`RunningNode::start`]; calling it again is free.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means another provider was installed first, which serves as well.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}
