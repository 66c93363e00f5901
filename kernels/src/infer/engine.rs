//! Cache-free forward for inference, generic over how the linear layers are computed.
//!
//! The training forward keeps every activation for the backward; serving needs none of that and
//! may swap the linear layers for int8 ones. Everything else (embeddings, layer norms, attention
//! with padding masks, GELU, pooling) is shared with training through the same `ops`.

use crate::error::{Error, Result};
use crate::models::config::{Head, NormPlacement};
use crate::models::transformer::pool;
use crate::models::{Batch, Output, Transformer};
use crate::ops::attention::{self, Shape};
use crate::ops::matmul::{gemm_view, linear_forward, View};
use crate::ops::{gelu, layer_norm};

/// Which linear layer of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearId {
    /// Block `l`'s packed Q/K/V projection (`d → 3d`).
    Qkv(usize),
    /// Block `l`'s attention output projection (`d → d`).
    Out(usize),
    /// Block `l`'s first feed-forward layer (`d → ffn`).
    Ffn1(usize),
    /// Block `l`'s second feed-forward layer (`ffn → d`).
    Ffn2(usize),
    /// The output head (LM: `d → vocab`, tied or not; classifier: `d → classes`).
    Head,
}

/// How linear layers are evaluated: `y[rows, out] = x[rows, in] · W + b`.
pub trait Linears {
    /// Applies layer `id` to `rows` rows of `x`.
    fn apply(&self, id: LinearId, x: &[f32], rows: usize) -> Result<Vec<f32>>;
}

/// The model's own f32 weights.
#[derive(Debug, Clone, Copy)]
pub struct F32Linears<'a>(pub &'a Transformer);

impl Linears for F32Linears<'_> {
    fn apply(&self, id: LinearId, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let m = self.0;
        let (cfg, lay, p) = (m.config(), m.layout(), m.params());
        let d = cfg.width;
        let lin = |w: usize, b: Option<usize>, din: usize, dout: usize| {
            let mut y = vec![0.0f32; rows * dout];
            linear_forward(
                x,
                &p[w..w + din * dout],
                b.map(|b| &p[b..b + dout]),
                &mut y,
                rows,
                din,
                dout,
            );
            y
        };
        let block = |l: usize| {
            lay.blocks
                .get(l)
                .copied()
                .ok_or_else(|| Error::InvalidArgument(format!("no block {l}")))
        };
        Ok(match id {
            LinearId::Qkv(l) => lin(block(l)?.w_qkv, Some(block(l)?.b_qkv), d, 3 * d),
            LinearId::Out(l) => lin(block(l)?.w_o, Some(block(l)?.b_o), d, d),
            LinearId::Ffn1(l) => lin(block(l)?.w_1, Some(block(l)?.b_1), d, cfg.ffn),
            LinearId::Ffn2(l) => lin(block(l)?.w_2, Some(block(l)?.b_2), cfg.ffn, d),
            LinearId::Head => match (cfg.head, lay.head_w) {
                (Head::Lm { tied: false }, Some(w)) => lin(w, None, d, cfg.vocab),
                (Head::Lm { .. }, _) => {
                    let v = cfg.vocab;
                    let mut y = vec![0.0f32; rows * v];
                    gemm_view(
                        rows,
                        v,
                        d,
                        x,
                        View::rows(0, d),
                        &p[lay.tok..lay.tok + v * d],
                        View::transposed(0, d),
                        &mut y,
                        View::rows(0, v),
                        false,
                        true,
                    );
                    y
                }
                (Head::Classifier { classes, .. }, Some(w)) => lin(w, lay.head_b, d, classes),
                _ => {
                    return Err(Error::InvalidArgument(
                        "this model has no output layer".into(),
                    ))
                }
            },
        })
    }
}

/// Embeddings (token + position + segment 0) for `rows` positions starting at `positions[i]`.
pub(crate) fn embed(
    m: &Transformer,
    tokens: &[u32],
    positions: &[usize],
    valid: &[bool],
) -> Vec<f32> {
    let (cfg, lay, p) = (m.config(), m.layout(), m.params());
    let d = cfg.width;
    let mut x = vec![0.0f32; tokens.len() * d];
    for (i, row) in x.chunks_mut(d).enumerate() {
        if !valid[i] {
            continue;
        }
        let (t, q) = (tokens[i] as usize, positions[i]);
        for j in 0..d {
            row[j] = p[lay.tok + t * d + j] + p[lay.pos + q * d + j];
        }
        if let Some(ty) = lay.typ {
            row.iter_mut()
                .zip(&p[ty..ty + d])
                .for_each(|(v, e)| *v += e);
        }
    }
    if let Some((g, b)) = lay.emb_ln {
        let mut y = vec![0.0f32; x.len()];
        layer_norm::forward(&x, &p[g..g + d], &p[b..b + d], cfg.ln_eps, d, &mut y);
        return y;
    }
    x
}

pub(crate) fn ln(m: &Transformer, x: &[f32], g: usize, b: usize) -> Vec<f32> {
    let (d, p) = (m.config().width, m.params());
    let mut y = vec![0.0f32; x.len()];
    layer_norm::forward(x, &p[g..g + d], &p[b..b + d], m.config().ln_eps, d, &mut y);
    y
}

fn add_into(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// The feed-forward sub-block `gelu(x·W1 + b1)·W2 + b2`.
pub(crate) fn ffn(
    m: &Transformer,
    lin: &dyn Linears,
    l: usize,
    x: &[f32],
    rows: usize,
) -> Result<Vec<f32>> {
    let h = lin.apply(LinearId::Ffn1(l), x, rows)?;
    let mut g = vec![0.0f32; h.len()];
    gelu::forward(m.config().gelu, &h, &mut g);
    lin.apply(LinearId::Ffn2(l), &g, rows)
}

/// Batched forward of a padded batch without keeping activations.
pub fn forward(m: &Transformer, lin: &dyn Linears, batch: &Batch) -> Result<Output> {
    batch.validate(m.config(), false)?;
    let cfg = m.config();
    let lay = m.layout();
    let (d, n) = (cfg.width, batch.rows());
    let positions: Vec<usize> = (0..n).map(|i| i % batch.seq).collect();
    let valid: Vec<bool> = (0..n)
        .map(|i| i % batch.seq < batch.lens[i / batch.seq])
        .collect();
    let mut x = embed(m, &batch.tokens, &positions, &valid);
    let shape = Shape {
        batch: batch.batch,
        seq: batch.seq,
        width: d,
        heads: cfg.heads,
        causal: cfg.causal,
    };
    let mut probs = vec![0.0f32; batch.batch * cfg.heads * batch.seq * batch.seq];
    for (l, o) in lay.blocks.iter().enumerate() {
        let pre = cfg.norm == NormPlacement::Pre;
        let a_in = if pre {
            ln(m, &x, o.ln1_g, o.ln1_b)
        } else {
            x.clone()
        };
        let qkv = lin.apply(LinearId::Qkv(l), &a_in, n)?;
        let mut att = vec![0.0f32; n * d];
        attention::forward(shape, &qkv, &batch.lens, &mut att, &mut probs);
        let proj = lin.apply(LinearId::Out(l), &att, n)?;
        add_into(&mut x, &proj);
        if pre {
            let f = ffn(m, lin, l, &ln(m, &x, o.ln2_g, o.ln2_b), n)?;
            add_into(&mut x, &f);
        } else {
            x = ln(m, &x, o.ln1_g, o.ln1_b);
            let f = ffn(m, lin, l, &x, n)?;
            add_into(&mut x, &f);
            x = ln(m, &x, o.ln2_g, o.ln2_b);
        }
    }
    if let Some((g, b)) = lay.final_ln {
        x = ln(m, &x, g, b);
    }
    let (logits, pooled) = match cfg.head {
        Head::Lm { .. } => (lin.apply(LinearId::Head, &x, n)?, Vec::new()),
        Head::Classifier { pooling, .. } => {
            let pooled = pool(&x, batch, d, pooling);
            (lin.apply(LinearId::Head, &pooled, batch.batch)?, pooled)
        }
        Head::Embedding { pooling } => (Vec::new(), pool(&x, batch, d, pooling)),
    };
    Ok(Output {
        logits,
        pooled,
        hidden: x,
    })
}
