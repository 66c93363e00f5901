//! Continuous (iteration-level) batching for text generation.
//!
//! - [`core`]: the pure [`Scheduler`]: which sequences join, run and leave between decoding
//!   steps, within `max_running` and a KV `token_budget`.
//! - [`sampler`]: seeded per-sequence sampling (greedy, temperature, top-k, top-p).
//! - [`engine`]: the async shell: owns a [`Generator`], runs each step on a blocking thread,
//!   and streams every sequence's tokens through its own bounded channel.

pub mod core;
pub mod engine;
pub mod sampler;

#[cfg(test)]
pub(crate) mod testing;

pub use self::core::{Config, Finish, Refusal, Scheduler, SeqRequest};
pub use engine::{EngineStats, Handle, SeqStream, StreamEvent};
pub use sampler::{Sampler, SamplingParams};

/// Identifies a sequence within one engine.
pub type SeqId = u64;

/// A model that generates with a KV cache, one decoding step for many sequences at a time.
/// The node implements it with the kernels' decoder; it is called on a blocking thread, never
/// concurrently with itself.
pub trait Generator: Send + 'static {
    /// Runs the prompt of a new sequence, filling its KV cache; returns the logits of the
    /// token after the prompt.
    fn prefill(&mut self, seq: SeqId, prompt: &[u32]) -> Result<Vec<f32>, String>;
    /// One decoding step: appends each sequence's last token to its cache and returns the
    /// logits of its next token, one vector per entry of `batch`, in order.
    fn decode(&mut self, batch: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, String>;
    /// Frees a sequence's KV cache: it finished, was cancelled, or failed.
    fn release(&mut self, seq: SeqId);
}
