//! Incremental decoding for the GPT with a key/value cache, over ragged batches.
//!
//! Each sequence has its own [`KvCache`]: every layer's keys and values for the positions it
//! has seen (`[context, width]` each). [`Decoder::feed`] takes any number of sequences, each
//! with its own count of new tokens (a long prompt being prefilled beside sequences decoding
//! one token each), and runs them as **one** forward: the rows of every sequence go through
//! each linear layer together (one matrix product per layer for the whole batch), and each
//! row's query attends to its own sequence's cached keys up to and including its position.
//! The result equals recomputing every prefix alone (checked in `tests/kernels/infer.rs`).
//!
//! The decoder holds its model by `Arc`, so a serving engine can keep it on another thread for
//! as long as it runs, and the model is freed when the last engine using it stops.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::models::config::{Head, NormPlacement};
use crate::models::Transformer;
use crate::ops::fastmath::exp;

use super::engine::{embed, ffn, ln, LinearId, Linears};

/// One sequence's keys and values, per layer `[context, width]`, and how many positions of
/// them are filled.
#[derive(Debug, Clone)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on (nothing if it holds fewer): the next token fed
    /// goes at position `len`.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// A causal, pre-LN language model ready for cached decoding.
#[derive(Debug, Clone)]
pub struct Decoder {
    model: Arc<Transformer>,
}

impl Decoder {
    /// A decoder for `model`, which must be a causal, pre-LN language model.
    pub fn new(model: Arc<Transformer>) -> Result<Self> {
        let c = model.config();
        if !matches!(c.head, Head::Lm { .. }) || !c.causal || c.norm != NormPlacement::Pre {
            return Err(Error::InvalidArgument(
                "KV-cache decoding needs a causal pre-LN language model".into(),
            ));
        }
        Ok(Self { model })
    }

    /// The model it decodes with.
    pub fn model(&self) -> &Transformer {
        &self.model
    }

    /// An empty cache for one new sequence.
    pub fn cache(&self) -> KvCache {
        let c = self.model.config();
        KvCache {
            keys: vec![vec![0.0; c.context * c.width]; c.layers],
            values: vec![vec![0.0; c.context * c.width]; c.layers],
            len: 0,
        }
    }

    /// Feeds each sequence of `batch` its new tokens (at least one) at its next positions, all
    /// in one forward, and returns per sequence the logits of its new positions
    /// (`[tokens, vocab]` row-major). Nothing is written to any cache unless the whole batch is
    /// valid: a sequence past the context or a token outside the vocabulary is an error naming
    /// the sequence's index in `batch`.
    pub fn feed(
        &self,
        lin: &dyn Linears,
        batch: &mut [(&mut KvCache, &[u32])],
    ) -> Result<Vec<Vec<f32>>> {
        let m: &Transformer = &self.model;
        let c = m.config();
        let (d, h) = (c.width, c.heads);
        let dh = d / h;
        if batch.is_empty() {
            return Err(Error::EmptyBatch("decoding step with no sequence".into()));
        }
        for (i, (cache, tokens)) in batch.iter().enumerate() {
            if tokens.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "sequence {i} of the batch feeds no token"
                )));
            }
            if cache.keys.len() != c.layers || cache.keys[0].len() != c.context * d {
                return Err(Error::InvalidArgument(format!(
                    "sequence {i}'s cache was made for another model"
                )));
            }
            if cache.len + tokens.len() > c.context {
                return Err(Error::SequenceTooLong {
                    sequence: i,
                    len: cache.len + tokens.len(),
                    context: c.context,
                });
            }
            for (j, &tok) in tokens.iter().enumerate() {
                if tok as usize >= c.vocab {
                    return Err(Error::TokenOutOfRange {
                        token: tok,
                        sequence: i,
                        position: cache.len + j,
                        vocab: c.vocab,
                    });
                }
            }
        }
        // Every row of every sequence: its sequence and its position.
        let mut owner = Vec::new();
        let mut positions = Vec::new();
        let mut tokens = Vec::new();
        for (i, (cache, new)) in batch.iter().enumerate() {
            for (j, &tok) in new.iter().enumerate() {
                owner.push(i);
                positions.push(cache.len + j);
                tokens.push(tok);
            }
        }
        let rows = tokens.len();
        let mut x = embed(m, &tokens, &positions, &vec![true; rows]);
        let scale = 1.0 / (dh as f32).sqrt();
        let mut scores = vec![0.0f32; c.context];
        for (l, o) in m.layout().blocks.iter().enumerate() {
            let qkv = lin.apply(LinearId::Qkv(l), &ln(m, &x, o.ln1_g, o.ln1_b), rows)?;
            for r in 0..rows {
                let cache = &mut *batch[owner[r]].0;
                let slot = positions[r] * d;
                cache.keys[l][slot..slot + d]
                    .copy_from_slice(&qkv[r * 3 * d + d..r * 3 * d + 2 * d]);
                cache.values[l][slot..slot + d]
                    .copy_from_slice(&qkv[r * 3 * d + 2 * d..r * 3 * d + 3 * d]);
            }
            let mut att = vec![0.0f32; rows * d];
            for r in 0..rows {
                let cache = &*batch[owner[r]].0;
                let (kc, vc) = (&cache.keys[l], &cache.values[l]);
                let visible = positions[r] + 1;
                for head in 0..h {
                    let q = &qkv[r * 3 * d + head * dh..r * 3 * d + (head + 1) * dh];
                    let mut mx = f32::NEG_INFINITY;
                    for (j, s) in scores[..visible].iter_mut().enumerate() {
                        let k = &kc[j * d + head * dh..][..dh];
                        *s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                        mx = mx.max(*s);
                    }
                    let mut sum = 0.0f32;
                    for s in &mut scores[..visible] {
                        *s = exp(*s - mx);
                        sum += *s;
                    }
                    let out = &mut att[r * d + head * dh..r * d + (head + 1) * dh];
                    for (j, s) in scores[..visible].iter().enumerate() {
                        let v = &vc[j * d + head * dh..][..dh];
                        let w = s / sum;
                        out.iter_mut().zip(v).for_each(|(o, vv)| *o += w * vv);
                    }
                }
            }
            let proj = lin.apply(LinearId::Out(l), &att, rows)?;
            x.iter_mut().zip(&proj).for_each(|(a, p)| *a += p);
            let f = ffn(m, lin, l, &ln(m, &x, o.ln2_g, o.ln2_b), rows)?;
            x.iter_mut().zip(&f).for_each(|(a, p)| *a += p);
        }
        if let Some((g, bb)) = m.layout().final_ln {
            x = ln(m, &x, g, bb);
        }
        let logits = lin.apply(LinearId::Head, &x, rows)?;
        let vocab = c.vocab;
        let mut out = Vec::with_capacity(batch.len());
        let mut row = 0;
        for (cache, new) in batch.iter_mut() {
            cache.len += new.len();
            out.push(logits[row * vocab..(row + new.len()) * vocab].to_vec());
            row += new.len();
        }
        Ok(out)
    }
}
