//! Inference helpers for serving.
//!
//! - [`engine`]: a cache-free batched forward with padding masks, over either f32 or int8
//!   linear layers ([`Linears`]); classify, embed or score a padded batch.
//! - [`kv`]: incremental decoding with a key/value cache per sequence for the GPT, over
//!   ragged batches (prefilling and decoding sequences in one forward); each new token costs
//!   one position's work instead of the whole prefix.
//! - [`sample`]: greedy, temperature, top-k and top-p sampling with a seeded RNG.
//! - [`quant`]: the model's linear layers as the numerics module's int8 `QuantizedLinear`s.

pub mod engine;
pub mod kv;
pub mod quant;
pub use flotilla_numerics::sample;

pub use engine::{F32Linears, LinearId, Linears};
pub use kv::{Decoder, KvCache};
pub use quant::Int8Linears;
pub use sample::{Sampler, Sampling};
