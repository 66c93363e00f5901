//! Dynamic batching for models that answer a batch at once (embeddings, classifiers): a pure
//! [`core::Batcher`] that decides when to flush, and a tokio task ([`worker`]) that runs a
//! [`BatchModel`] on a blocking thread and answers each request through its own reply channel.

pub mod core;
pub mod stats;
pub mod worker;

pub use self::core::{Batcher, Config};
pub use stats::{BatchStats, BatchStatsSnapshot};
pub use worker::Handle;

/// A model that answers a batch of inputs in one call. The node implements it with the kernels;
/// it is called on a blocking thread, one batch at a time.
pub trait BatchModel: Send + Sync + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// One output per input, in input order; an error fails every request of the batch.
    fn run(&self, inputs: Vec<Self::Input>) -> Result<Vec<Self::Output>, String>;
}
