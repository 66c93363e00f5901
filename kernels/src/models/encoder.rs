//! Bidirectional transformer encoder with a pooled linear classification head.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ops::gelu::Gelu;

use super::config::{Head, NormPlacement, Pooling, TransformerConfig};
use super::transformer::Transformer;

/// Sizes of an encoder classifier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Maximum sequence length.
    pub context: usize,
    /// Width.
    pub width: usize,
    /// Heads.
    pub heads: usize,
    /// Blocks.
    pub layers: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Classes.
    pub classes: usize,
    /// Pooling before the head.
    pub pooling: Pooling,
    /// Layer-norm placement (pre-LN trains more easily from scratch; post-LN is BERT's).
    pub norm: NormPlacement,
}

impl EncoderConfig {
    /// The transformer configuration (exact GELU, LN eps 1e-5).
    pub fn transformer(&self) -> TransformerConfig {
        TransformerConfig {
            vocab: self.vocab,
            context: self.context,
            width: self.width,
            heads: self.heads,
            layers: self.layers,
            ffn: self.ffn,
            causal: false,
            norm: self.norm,
            ln_eps: 1e-5,
            gelu: Gelu::Erf,
            type_vocab: 0,
            head: Head::Classifier {
                classes: self.classes,
                pooling: self.pooling,
            },
        }
    }

    /// A randomly initialised model.
    pub fn build(&self, seed: u64) -> Result<Transformer> {
        Transformer::new(self.transformer(), seed)
    }
}
