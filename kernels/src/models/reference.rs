//! The same transformer written with dfdx tensor operations, differentiated by dfdx's autodiff.
//!
//! This is the reference the hand-written backward is checked against (`tests/kernels/models_grad.rs`)
//! and the "dfdx step" of the training-step benchmark. It reads the same flat parameter vector
//! (traced once, then sliced), so its gradient comes back in the same layout. It favours
//! plain, obviously-correct operations (a loop over heads, masks as constant tensors) over speed.

use dfdx::prelude::*;

use crate::error::{Error, Result};
use crate::ops::gelu::Gelu;
use crate::ops::xent::IGNORE;

use super::batch::Batch;
use super::config::{Head, NormPlacement, Pooling};
use super::transformer::Transformer;

type Tape = OwnedTape<f32, Cpu>;
type T1 = Tensor<(usize,), f32, Cpu, Tape>;
type T2 = Tensor<(usize, usize), f32, Cpu, Tape>;

/// A second handle on a traced tensor. Its tape starts empty; the original keeps its history,
/// and dfdx sorts the merged operations by time, so gradients from both handles accumulate.
fn dup<S: Shape>(x: &Tensor<S, f32, Cpu, Tape>) -> Tensor<S, f32, Cpu, Tape> {
    x.retaped::<Tape>()
}

struct Params<'a> {
    flat: &'a T1,
}

impl Params<'_> {
    fn vec(&self, off: usize, len: usize) -> T1 {
        dup(self.flat).slice((off..off + len,))
    }
    fn mat(&self, off: usize, rows: usize, cols: usize) -> T2 {
        self.vec(off, rows * cols).reshape_like(&(rows, cols))
    }
}

fn bias(x: T2, b: T1) -> T2 {
    let s = *x.shape();
    x + b.broadcast_like::<_, Axis<0>>(&s)
}

fn layer_norm(x: T2, g: T1, b: T1, eps: f32) -> T2 {
    let s = *x.shape();
    x.normalize::<Axis<1>>(eps) * g.broadcast_like::<_, Axis<0>>(&s)
        + b.broadcast_like::<_, Axis<0>>(&s)
}

/// Exact GELU with a correct derivative.
///
/// dfdx 0.13's `accurate_gelu` computes the right values but its derivative drops the `1/√2` of
/// `d erf(x/√2)/dx`: it uses `0.5·x·(2/√π)·e^{-x²/2}` where `0.5·x·√(2/π)·e^{-x²/2}` is right.
/// The missing part is `-k·x·e^{-x²/2}` with `k = (1 - 1/√2)/√π`, which is the derivative of
/// `k·e^{-x²/2}`; adding that term minus its own (constant) value fixes the gradient and leaves
/// the forward unchanged.
fn exact_gelu(h: T2) -> T2 {
    let k = (1.0 - std::f32::consts::FRAC_1_SQRT_2) / std::f32::consts::PI.sqrt();
    let e = (dup(&h).square() * -0.5).exp();
    let e_const: Tensor<(usize, usize), f32, Cpu> =
        e.device().tensor_from_vec(e.as_vec(), *e.shape());
    h.accurate_gelu() + (e - e_const) * k
}

/// Loss and flat gradient of `model` on `batch` (cross-entropy), by dfdx autodiff.
pub fn loss_and_grads(model: &Transformer, batch: &Batch) -> Result<(f32, Vec<f32>)> {
    batch.validate(&model.cfg, true)?;
    let c = &model.cfg;
    let lay = &model.layout;
    let dev = Cpu::default();
    let (d, n, bsz, t) = (c.width, batch.rows(), batch.batch, batch.seq);
    let dh = d / c.heads;
    let flat0: Tensor<(usize,), f32, Cpu> =
        dev.tensor_from_vec(model.params.clone(), (model.params.len(),));
    let flat = flat0.leaky_trace();
    let p = Params { flat: &flat };

    // Embeddings, with padding rows zeroed as in the fast path.
    let valid = |i: usize| (i % t) < batch.lens[i / t];
    let ids: Vec<usize> = (0..n)
        .map(|i| {
            if valid(i) {
                batch.tokens[i] as usize
            } else {
                0
            }
        })
        .collect();
    let pos: Vec<usize> = (0..n).map(|i| i % t).collect();
    let rowmask: Vec<f32> = (0..n)
        .flat_map(|i| std::iter::repeat_n(if valid(i) { 1.0 } else { 0.0 }, d))
        .collect();
    let rowmask = dev.tensor_from_vec(rowmask, (n, d));
    let mut emb = p
        .mat(lay.tok, c.vocab, d)
        .gather(dev.tensor_from_vec(ids, (n,)))
        + p.mat(lay.pos, c.context, d)
            .gather(dev.tensor_from_vec(pos, (n,)));
    if let Some(ty) = lay.typ {
        emb = emb
            + p.mat(ty, c.type_vocab, d)
                .gather(dev.tensor_from_vec(vec![0usize; n], (n,)));
    }
    emb = emb * rowmask;
    let mut x = match lay.emb_ln {
        Some((g, b)) => layer_norm(emb, p.vec(g, d), p.vec(b, d), c.ln_eps),
        None => emb,
    };

    // Attention mask: 0 where visible, -1e9 elsewhere.
    let mut mask = vec![0.0f32; bsz * t * t];
    for b in 0..bsz {
        for i in 0..t {
            for j in 0..t {
                let vis = j < batch.lens[b] && (!c.causal || j <= i);
                let vis = vis || (j == 0 && batch.lens[b] == 0);
                if !vis {
                    mask[(b * t + i) * t + j] = -1e9;
                }
            }
        }
    }
    let mask = dev.tensor_from_vec(mask, (bsz, t, t));
    let scale = 1.0 / (dh as f32).sqrt();
    let act = |h: T2| match c.gelu {
        Gelu::Erf => exact_gelu(h),
        Gelu::Tanh => h.fast_gelu(),
    };

    for o in &lay.blocks {
        let pre = c.norm == NormPlacement::Pre;
        let attn_in = if pre {
            layer_norm(dup(&x), p.vec(o.ln1_g, d), p.vec(o.ln1_b, d), c.ln_eps)
        } else {
            dup(&x)
        };
        let qkv = bias(
            attn_in.matmul(p.mat(o.w_qkv, d, 3 * d)),
            p.vec(o.b_qkv, 3 * d),
        );
        let mut attn_out: Option<T2> = None;
        for h in 0..c.heads {
            let col = |base: usize| {
                dup(&qkv)
                    .slice((0..n, base + h * dh..base + (h + 1) * dh))
                    .reshape_like(&(bsz, t, dh))
            };
            let (q, k, v) = (col(0), col(d), col(2 * d));
            let scores = q.matmul(k.permute::<_, Axes3<0, 2, 1>>()) * scale + mask.clone();
            let probs = scores.softmax::<Axis<2>>();
            let oh = probs.matmul(v).reshape_like(&(n, dh));
            // Rows h·dh.. of the row-major W_o are contiguous in the flat vector.
            let wo_h = p.mat(o.w_o + h * dh * d, dh, d);
            let part = oh.matmul(wo_h);
            attn_out = Some(match attn_out {
                Some(a) => a + part,
                None => part,
            });
        }
        // Merge the qkv tape (it holds the history of `x`) by using the original once.
        let qkv_sum = qkv.sum::<Rank0, _>() * 0.0;
        let attn_out = attn_out.ok_or_else(|| Error::ModelConfig("no heads".into()))?;
        let mid =
            bias(x + attn_out, p.vec(o.b_o, d)) + qkv_sum.broadcast_like::<_, Axes2<0, 1>>(&(n, d));
        let (mid_n, ffn_in) = if pre {
            let f = layer_norm(dup(&mid), p.vec(o.ln2_g, d), p.vec(o.ln2_b, d), c.ln_eps);
            (mid, f)
        } else {
            let a = layer_norm(mid, p.vec(o.ln1_g, d), p.vec(o.ln1_b, d), c.ln_eps);
            (dup(&a), a)
        };
        let hidden = act(bias(
            ffn_in.matmul(p.mat(o.w_1, d, c.ffn)),
            p.vec(o.b_1, c.ffn),
        ));
        let r = bias(hidden.matmul(p.mat(o.w_2, c.ffn, d)), p.vec(o.b_2, d)) + mid_n;
        x = if pre {
            r
        } else {
            layer_norm(r, p.vec(o.ln2_g, d), p.vec(o.ln2_b, d), c.ln_eps)
        };
    }
    let top = match lay.final_ln {
        Some((g, b)) => layer_norm(x, p.vec(g, d), p.vec(b, d), c.ln_eps),
        None => x,
    };

    let (logits, targets, classes): (T2, Vec<u32>, usize) = match c.head {
        Head::Lm { tied } => {
            let logits = match (tied, lay.head_w) {
                (false, Some(w)) => top.matmul(p.mat(w, d, c.vocab)),
                // Tied: the forward is right, but dfdx 0.13's gradient through this transposed
                // operand disagrees with finite differences, so tests check tied models by finite
                // differences (`tests/kernels/models_grad.rs`).
                _ => {
                    let idx: Vec<usize> = (0..d * c.vocab)
                        .map(|k| lay.tok + (k % c.vocab) * d + k / c.vocab)
                        .collect();
                    let tok_t = dup(&flat)
                        .gather(dev.tensor_from_vec(idx, (d * c.vocab,)))
                        .reshape_like(&(d, c.vocab));
                    top.matmul(tok_t)
                }
            };
            let mut tg = batch.targets.clone();
            for (i, v) in tg.iter_mut().enumerate() {
                if !valid(i) {
                    *v = IGNORE;
                }
            }
            (logits, tg, c.vocab)
        }
        Head::Classifier { classes, pooling } => {
            // pooledᵀ = topᵀ · poolᵀ keeps the traced tensor on the left of the product.
            let mut pool_t = vec![0.0f32; n * bsz];
            for b in 0..bsz {
                match pooling {
                    Pooling::First => pool_t[(b * t) * bsz + b] = 1.0,
                    Pooling::Mean => {
                        for q in 0..batch.lens[b] {
                            pool_t[(b * t + q) * bsz + b] = 1.0 / batch.lens[b] as f32;
                        }
                    }
                }
            }
            let pool_t = dev.tensor_from_vec(pool_t, (n, bsz));
            let pooled = top
                .permute::<_, Axes2<1, 0>>()
                .matmul(pool_t)
                .permute::<_, Axes2<1, 0>>();
            let (w, b) = match (lay.head_w, lay.head_b) {
                (Some(w), Some(b)) => (w, b),
                _ => return Err(Error::ModelConfig("classifier without head weights".into())),
            };
            let logits = bias(pooled.matmul(p.mat(w, d, classes)), p.vec(b, classes));
            (logits, batch.targets.clone(), classes)
        }
        Head::Embedding { .. } => {
            return Err(Error::InvalidArgument(
                "an embedding model has no training loss".into(),
            ))
        }
    };
    let rows = targets.len();
    let counted = targets.iter().filter(|v| **v != IGNORE).count().max(1);
    let mut weights = vec![0.0f32; rows * classes];
    for (i, &tg) in targets.iter().enumerate() {
        if tg != IGNORE {
            weights[i * classes + tg as usize] = 1.0 / counted as f32;
        }
    }
    let weights = dev.tensor_from_vec(weights, (rows, classes));
    let loss = (logits.log_softmax::<Axis<1>>() * weights)
        .sum::<Rank0, _>()
        .negate();
    let value = loss.array();
    let grads = loss.backward();
    Ok((value, grads.get(&flat).as_vec()))
}
