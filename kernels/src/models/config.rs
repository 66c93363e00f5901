//! Run-time model configuration and the layout of the flat parameter vector.
//!
//! Every model is one [`TransformerConfig`]; the GPT, the encoder classifier and BERT differ only
//! in its switches. The flat vector holds the named tensors in the order of [`Layout::entries`];
//! linear weights are stored `[in, out]` so a layer is `y = x·W + b` with no transpose.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ops::gelu::Gelu;

/// Where each block's layer norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// GPT-2 style: `x + f(LN(x))`, with a final layer norm after the last block.
    Pre,
    /// BERT style: `LN(x + f(x))`, with a layer norm on the embeddings.
    Post,
}

/// How a sequence becomes one vector for classification or embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the non-padding positions (sentence-transformers' default).
    Mean,
    /// The first position (BERT's `[CLS]`).
    First,
}

/// What sits on top of the last block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// Next-token logits over the vocabulary; `tied` reuses the token embedding matrix.
    Lm {
        /// Share the token embedding as the output matrix.
        tied: bool,
    },
    /// Pool, then a linear layer to `classes` logits.
    Classifier {
        /// Number of classes.
        classes: usize,
        /// Pooling.
        pooling: Pooling,
    },
    /// Pool only: the model's output is a sentence embedding (no trainable head, no loss).
    Embedding {
        /// Pooling.
        pooling: Pooling,
    },
}

/// A transformer whose sizes are chosen at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Maximum sequence length (learned positions).
    pub context: usize,
    /// Model width.
    pub width: usize,
    /// Attention heads (must divide `width`).
    pub heads: usize,
    /// Blocks.
    pub layers: usize,
    /// Hidden width of the feed-forward layer.
    pub ffn: usize,
    /// Causal (decoder) or bidirectional (encoder) attention.
    pub causal: bool,
    /// Layer-norm placement.
    pub norm: NormPlacement,
    /// Layer-norm epsilon.
    pub ln_eps: f32,
    /// GELU flavour.
    pub gelu: Gelu,
    /// Token-type (segment) vocabulary; 0 for none. Only segment 0 is used (single sentences).
    pub type_vocab: usize,
    /// Output head.
    pub head: Head,
}

impl TransformerConfig {
    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::ModelConfig(m.to_string()));
        if self.vocab == 0 || self.context == 0 || self.width == 0 || self.ffn == 0 {
            return bad("vocab, context, width and ffn must be positive");
        }
        if self.heads == 0 || !self.width.is_multiple_of(self.heads) {
            return bad(&format!(
                "width {} is not a multiple of heads {}",
                self.width, self.heads
            ));
        }
        if self.vocab > u32::MAX as usize {
            return bad("vocabulary does not fit u32 token ids");
        }
        if let Head::Classifier { classes: 0, .. } = self.head {
            return bad("a classifier needs at least one class");
        }
        if self.ln_eps.is_nan() || self.ln_eps <= 0.0 {
            return bad("ln_eps must be positive");
        }
        Ok(())
    }
}

/// Offsets of one block's tensors in the flat vector.
#[derive(Debug, Clone, Copy)]
pub struct BlockOffsets {
    pub(crate) ln1_g: usize,
    pub(crate) ln1_b: usize,
    pub(crate) w_qkv: usize,
    pub(crate) b_qkv: usize,
    pub(crate) w_o: usize,
    pub(crate) b_o: usize,
    pub(crate) ln2_g: usize,
    pub(crate) ln2_b: usize,
    pub(crate) w_1: usize,
    pub(crate) b_1: usize,
    pub(crate) w_2: usize,
    pub(crate) b_2: usize,
}

/// One named tensor of the flat vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name, e.g. `blocks.0.attn.w_qkv`.
    pub name: String,
    /// Shape (linear weights are `[in, out]`).
    pub shape: Vec<usize>,
    /// Offset in the flat vector.
    pub offset: usize,
}

impl Entry {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where every tensor lives in the flat vector.
#[derive(Debug, Clone)]
pub struct Layout {
    pub(crate) tok: usize,
    pub(crate) pos: usize,
    pub(crate) typ: Option<usize>,
    pub(crate) emb_ln: Option<(usize, usize)>,
    pub(crate) blocks: Vec<BlockOffsets>,
    pub(crate) final_ln: Option<(usize, usize)>,
    pub(crate) head_w: Option<usize>,
    pub(crate) head_b: Option<usize>,
    entries: Vec<Entry>,
    total: usize,
}

impl Layout {
    /// The layout a config implies.
    pub fn new(c: &TransformerConfig) -> Self {
        let mut entries = Vec::new();
        let mut total = 0usize;
        let mut add = |name: String, shape: Vec<usize>| {
            let offset = total;
            total += shape.iter().product::<usize>();
            entries.push(Entry {
                name,
                shape,
                offset,
            });
            offset
        };
        let d = c.width;
        let tok = add("tok_emb".into(), vec![c.vocab, d]);
        let pos = add("pos_emb".into(), vec![c.context, d]);
        let typ = (c.type_vocab > 0).then(|| add("type_emb".into(), vec![c.type_vocab, d]));
        let emb_ln = (c.norm == NormPlacement::Post).then(|| {
            (
                add("emb_ln.g".into(), vec![d]),
                add("emb_ln.b".into(), vec![d]),
            )
        });
        let mut blocks = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let p = |s: &str| format!("blocks.{l}.{s}");
            blocks.push(BlockOffsets {
                ln1_g: add(p("ln1.g"), vec![d]),
                ln1_b: add(p("ln1.b"), vec![d]),
                w_qkv: add(p("attn.w_qkv"), vec![d, 3 * d]),
                b_qkv: add(p("attn.b_qkv"), vec![3 * d]),
                w_o: add(p("attn.w_o"), vec![d, d]),
                b_o: add(p("attn.b_o"), vec![d]),
                ln2_g: add(p("ln2.g"), vec![d]),
                ln2_b: add(p("ln2.b"), vec![d]),
                w_1: add(p("ffn.w_1"), vec![d, c.ffn]),
                b_1: add(p("ffn.b_1"), vec![c.ffn]),
                w_2: add(p("ffn.w_2"), vec![c.ffn, d]),
                b_2: add(p("ffn.b_2"), vec![d]),
            });
        }
        let final_ln = (c.norm == NormPlacement::Pre).then(|| {
            (
                add("final_ln.g".into(), vec![d]),
                add("final_ln.b".into(), vec![d]),
            )
        });
        let (head_w, head_b) = match c.head {
            Head::Lm { tied: true } | Head::Embedding { .. } => (None, None),
            Head::Lm { tied: false } => (Some(add("head.w".into(), vec![d, c.vocab])), None),
            Head::Classifier { classes, .. } => (
                Some(add("head.w".into(), vec![d, classes])),
                Some(add("head.b".into(), vec![classes])),
            ),
        };
        Self {
            tok,
            pos,
            typ,
            emb_ln,
            blocks,
            final_ln,
            head_w,
            head_b,
            entries,
            total,
        }
    }

    /// Total parameter count.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the model has no parameters.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The named tensors in flat-vector order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Looks a tensor up by name.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}
