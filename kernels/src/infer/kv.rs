//! Incremental decoding for the GPT with a key/value cache.
//!
//! The cache holds every layer's keys and values for the positions seen so far
//! (`[batch, context, width]` each). Feeding `t` new tokens per sequence runs the blocks on those
//! `t` rows only; their queries attend to all cached keys up to and including their own position.
//! The result equals recomputing the whole prefix (checked in `tests/kernels/infer.rs`).

use crate::error::{Error, Result};
use crate::models::config::{Head, NormPlacement};
use crate::models::Transformer;
use crate::ops::fastmath::exp;

use super::engine::{embed, ffn, ln, LinearId, Linears};

/// Decoding state of a batch of sequences that advance together.
#[derive(Debug)]
pub struct Decoder<'a> {
    model: &'a Transformer,
    batch: usize,
    /// Per layer: keys and values, `[batch, context, width]`.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Positions filled so far (the same for every sequence).
    len: usize,
}

impl<'a> Decoder<'a> {
    /// An empty cache for `batch` sequences of a causal, pre-LN language model.
    pub fn new(model: &'a Transformer, batch: usize) -> Result<Self> {
        let c = model.config();
        if !matches!(c.head, Head::Lm { .. }) || !c.causal || c.norm != NormPlacement::Pre {
            return Err(Error::InvalidArgument(
                "KV-cache decoding needs a causal pre-LN language model".into(),
            ));
        }
        if batch == 0 {
            return Err(Error::EmptyBatch("decoder for 0 sequences".into()));
        }
        let size = batch * c.context * c.width;
        Ok(Self {
            model,
            batch,
            keys: vec![vec![0.0; size]; c.layers],
            values: vec![vec![0.0; size]; c.layers],
            len: 0,
        })
    }

    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feeds `tokens` (`[batch, t]` row-major, `t ≥ 1`) at the next `t` positions and returns
    /// their logits, `[batch, t, vocab]`.
    pub fn feed(&mut self, lin: &dyn Linears, tokens: &[u32], t: usize) -> Result<Vec<f32>> {
        let m = self.model;
        let c = m.config();
        let (b, d, h) = (self.batch, c.width, c.heads);
        let dh = d / h;
        if t == 0 || tokens.len() != b * t {
            return Err(Error::InvalidArgument(format!(
                "{} tokens for {b} sequences of {t} new positions",
                tokens.len()
            )));
        }
        if self.len + t > c.context {
            return Err(Error::SequenceTooLong {
                sequence: 0,
                len: self.len + t,
                context: c.context,
            });
        }
        for (i, &tok) in tokens.iter().enumerate() {
            if tok as usize >= c.vocab {
                return Err(Error::TokenOutOfRange {
                    token: tok,
                    sequence: i / t,
                    position: self.len + i % t,
                    vocab: c.vocab,
                });
            }
        }
        let rows = b * t;
        let positions: Vec<usize> = (0..rows).map(|i| self.len + i % t).collect();
        let mut x = embed(m, tokens, &positions, &vec![true; rows]);
        let scale = 1.0 / (dh as f32).sqrt();
        for (l, o) in m.layout().blocks.iter().enumerate() {
            let qkv = lin.apply(LinearId::Qkv(l), &ln(m, &x, o.ln1_g, o.ln1_b), rows)?;
            let (kc, vc) = (&mut self.keys[l], &mut self.values[l]);
            for r in 0..rows {
                let slot = ((r / t) * c.context + positions[r]) * d;
                kc[slot..slot + d].copy_from_slice(&qkv[r * 3 * d + d..r * 3 * d + 2 * d]);
                vc[slot..slot + d].copy_from_slice(&qkv[r * 3 * d + 2 * d..r * 3 * d + 3 * d]);
            }
            let mut att = vec![0.0f32; rows * d];
            let mut scores = vec![0.0f32; c.context];
            for r in 0..rows {
                let (seq, visible) = (r / t, positions[r] + 1);
                for head in 0..h {
                    let q = &qkv[r * 3 * d + head * dh..r * 3 * d + (head + 1) * dh];
                    let mut mx = f32::NEG_INFINITY;
                    for (j, s) in scores[..visible].iter_mut().enumerate() {
                        let k = &kc[(seq * c.context + j) * d + head * dh..][..dh];
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
                        let v = &vc[(seq * c.context + j) * d + head * dh..][..dh];
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
        self.len += t;
        lin.apply(LinearId::Head, &x, rows)
    }
}
