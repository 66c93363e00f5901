//! GPT-style decoder-only language model: pre-LN blocks, learned positions, causal attention,
//! a final layer norm and a tied or untied output matrix (no bias), as in nanoGPT.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ops::gelu::Gelu;

use super::config::{Head, NormPlacement, TransformerConfig};
use super::transformer::Transformer;

/// Sizes of a GPT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Context length.
    pub context: usize,
    /// Width.
    pub width: usize,
    /// Heads.
    pub heads: usize,
    /// Blocks.
    pub layers: usize,
    /// Share the token embedding with the output layer.
    pub tied: bool,
}

impl GptConfig {
    /// The transformer configuration (FFN width 4×, exact GELU, LN eps 1e-5).
    pub fn transformer(&self) -> TransformerConfig {
        TransformerConfig {
            vocab: self.vocab,
            context: self.context,
            width: self.width,
            heads: self.heads,
            layers: self.layers,
            ffn: 4 * self.width,
            causal: true,
            norm: NormPlacement::Pre,
            ln_eps: 1e-5,
            gelu: Gelu::Erf,
            type_vocab: 0,
            head: Head::Lm { tied: self.tied },
        }
    }

    /// A randomly initialised model.
    pub fn build(&self, seed: u64) -> Result<Transformer> {
        Transformer::new(self.transformer(), seed)
    }
}
