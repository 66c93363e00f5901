//! `flotilla-kernels`: everything Flotilla computes, with no networking.
//!
//! Modules:
//! - [`devices`]: GPU discovery through cudarc's dynamic loading (no CUDA toolkit needed to build).
//! - [`probe`]: the short matmul probe that gives each node its compute score.
//! - [`ops`]: hand-written CPU kernels (GEMM, layer norm, GELU, attention, softmax-cross-entropy).
//! - [`models`]: GPT, encoder classifier and BERT with flat parameters and a fast training step.
//! - [`infer`]: serving helpers: masked batched forward, KV-cache decoding, sampling, int8 layers.
//! - [`train`]: weight-decay masks and mixed-precision steps over the models' flat vectors.
//! - [`error`]: the crate's `Error` and `Result`.
//! - [`optim`]: AdamW and SGD on flat f32 buffers, LR schedules, adaptive clipping, loss scaling,
//!   f16/bf16 conversion.
//! - [`tokenize`]: Hugging Face `tokenizer.json` loading, byte-level BPE training, a character
//!   tokenizer.
//! - [`checkpoint`]: safetensors weights + optimizer state with a blake3 manifest, written atomically.
//! - [`quant`]: per-channel int8 linear layers and the int8 GEMM (AVX-512 VNNI, AVX2, scalar).
//! - [`metrics`]: accuracy, macro-F1, confusion, perplexity, sacreBLEU-compatible BLEU, ROUGE.
//! - [`gpu`]: NVRTC kernels (int8 matmul, AdamW) behind the `cuda` feature.

pub mod checkpoint;
pub mod devices;
pub mod error;
pub mod gpu;
pub mod infer;
pub mod metrics;
pub mod models;
pub mod ops;
pub use flotilla_numerics::optim;
pub mod probe;
pub mod quant;
pub mod tokenize;
pub mod train;

pub use error::{Error, Result};
