//! Models with sizes chosen at run time, all one [`Transformer`] with flat `f32` parameters:
//!
//! - [`gpt`]: GPT-style decoder-only language model (pre-LN, learned positions, causal).
//! - [`encoder`]: bidirectional transformer encoder with a pooled classification head.
//! - [`bert`]: the BERT architecture, loaded from a Hugging Face folder.
//! - [`config`]: the run-time configuration and the flat parameter layout.
//! - [`batch`]: padded batches, validated before any kernel runs.
//! - [`reference`]: the same model in dfdx operations, differentiated by dfdx (tests, benchmark).
//!
//! `params_flat`, `set_params_flat` and `loss_and_grads` are the contract the parameter servers
//! use: parameters and gradients travel as one flat vector in [`config::Layout`] order.

pub mod backward;
pub mod batch;
pub mod bert;
pub mod config;
pub mod encoder;
pub mod gpt;
pub mod reference;
pub mod transformer;

pub use batch::Batch;
pub use config::{Head, Layout, NormPlacement, Pooling, TransformerConfig};
pub use transformer::{Loss, Output, Transformer};
