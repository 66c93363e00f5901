//! Serving: what stands between the OpenAI-compatible HTTP API and the models.
//!
//! - [`batcher`]: dynamic batching for models that answer a batch at once (embeddings,
//!   classifiers): flush on size or wait time, bounded queue.
//! - [`scheduler`]: continuous (iteration-level) batching for generation: sequences join and
//!   leave between decoding steps within a KV token budget; tokens stream per sequence through
//!   bounded channels.
//! - [`router`]: any node's entry point: response cache, coalescing of identical in-flight
//!   requests, least-loaded replica choice weighted by capacity, one retry, overload refusal,
//!   deadlines.
//! - [`relay`]: streams across the mesh: the replica's table of pulled streams (long polls
//!   with acknowledgement and leases) and the router's puller that turns them back into a
//!   local stream.
//! - [`replica`]: the replica's side of `/flotilla/serving/1` over a [`replica::Backend`];
//!   [`remote`]: the router's [`router::ReplicaClient`] for replicas on other nodes, over a
//!   [`remote::ServingTransport`].
//! - [`stop`]: the client's stop strings over streamed text, held back across pieces.
//! - [`error`]: [`ServeError`] and its mapping to OpenAI errors.
//!
//! Each has a pure core driven by injected time and inputs, and a thin async shell; the node
//! provides the models ([`batcher::BatchModel`], [`scheduler::Generator`]), the replica's
//! request handling ([`replica::Backend`]) and the transport ([`remote::ServingTransport`]).

pub mod batcher;
pub mod error;
pub mod relay;
pub mod remote;
pub mod replica;
pub mod router;
pub mod scheduler;
pub mod stop;

pub use error::ServeError;
