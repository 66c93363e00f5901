//! The hand-written backward pass of [`Transformer`]: the forward's saved activations and the
//! gradient of the logits in, the gradient of every parameter (one flat vector) out.

use crate::ops::attention::{self, Shape};
use crate::ops::matmul::{gemm_view, linear_backward, View};
use crate::ops::{gelu, layer_norm, pool};

use super::batch::Batch;
use super::config::{BlockOffsets, Head, NormPlacement, Pooling};
use super::transformer::{BlockCache, Cache, Transformer};

/// Disjoint mutable views of two regions of the gradient vector.
fn two_mut(
    g: &mut [f32],
    a: usize,
    alen: usize,
    b: usize,
    blen: usize,
) -> (&mut [f32], &mut [f32]) {
    if a < b {
        let (lo, hi) = g.split_at_mut(b);
        (&mut lo[a..a + alen], &mut hi[..blen])
    } else {
        let (lo, hi) = g.split_at_mut(a);
        (&mut hi[..alen], &mut lo[b..b + blen])
    }
}

impl Transformer {
    /// Backward from `dlogits` (the head's logits already replaced by their gradient).
    pub(crate) fn backward(&self, batch: &Batch, cache: Cache, dlogits: Vec<f32>) -> Vec<f32> {
        let c = &self.cfg;
        let (d, n) = (c.width, batch.rows());
        let mut grads = vec![0.0f32; self.params.len()];
        // Zeros: mean pooling leaves padding positions untouched.
        let mut dtop = pool::zeros(n * d);
        match c.head {
            Head::Lm { tied } => {
                let v = c.vocab;
                match (tied, self.layout.head_w) {
                    (false, Some(w)) => linear_backward(
                        &cache.top,
                        self.slice_p(w, d * v),
                        &dlogits,
                        &mut grads[w..w + d * v],
                        None,
                        Some(&mut dtop),
                        false,
                        n,
                        d,
                        v,
                    ),
                    _ => {
                        let t = self.layout.tok;
                        // logits = top · tokᵀ ⇒ dtop = dlogits · tok, dtok += dlogitsᵀ · top.
                        gemm_view(
                            n,
                            d,
                            v,
                            &dlogits,
                            View::rows(0, v),
                            self.slice_p(t, v * d),
                            View::rows(0, d),
                            &mut dtop,
                            View::rows(0, d),
                            false,
                            true,
                        );
                        gemm_view(
                            v,
                            d,
                            n,
                            &dlogits,
                            View::transposed(0, v),
                            &cache.top,
                            View::rows(0, d),
                            &mut grads[t..t + v * d],
                            View::rows(0, d),
                            true,
                            true,
                        );
                    }
                }
            }
            Head::Classifier { classes, pooling } => {
                let mut dpooled = vec![0.0f32; batch.batch * d];
                if let (Some(w), Some(b)) = (self.layout.head_w, self.layout.head_b) {
                    let (gw, gb) = two_mut(&mut grads, w, d * classes, b, classes);
                    linear_backward(
                        &cache.pooled,
                        self.slice_p(w, d * classes),
                        &dlogits,
                        gw,
                        Some(gb),
                        Some(&mut dpooled),
                        false,
                        batch.batch,
                        d,
                        classes,
                    );
                }
                unpool(&dpooled, batch, d, pooling, &mut dtop);
            }
            Head::Embedding { .. } => {}
        }
        let mut dx = match self.layout.final_ln {
            Some((g, b)) => {
                let mut dx = pool::scratch(n * d);
                let (gg, gb) = two_mut(&mut grads, g, d, b, d);
                layer_norm::backward(
                    &cache.last,
                    self.slice_p(g, d),
                    &cache.final_st,
                    &dtop,
                    d,
                    &mut dx,
                    false,
                    gg,
                    gb,
                );
                pool::recycle(dtop);
                dx
            }
            None => dtop,
        };
        for (blk, bc) in self.layout.blocks.iter().zip(cache.blocks.iter()).rev() {
            dx = self.block_backward(blk, bc, dx, batch, &mut grads);
        }
        pool::recycle(dlogits);
        let demb = match self.layout.emb_ln {
            Some((g, b)) => {
                let mut de = pool::scratch(n * d);
                let (gg, gb) = two_mut(&mut grads, g, d, b, d);
                layer_norm::backward(
                    &cache.emb,
                    self.slice_p(g, d),
                    &cache.emb_st,
                    &dx,
                    d,
                    &mut de,
                    false,
                    gg,
                    gb,
                );
                pool::recycle(dx);
                de
            }
            None => dx,
        };
        // Embedding gradients: scatter-add each valid position's row.
        for bi in 0..batch.batch {
            for p in 0..batch.lens[bi] {
                let id = batch.tokens[bi * batch.seq + p] as usize;
                let row = &demb[(bi * batch.seq + p) * d..][..d];
                for (gv, r) in grads[self.layout.tok + id * d..][..d].iter_mut().zip(row) {
                    *gv += r;
                }
                for (gv, r) in grads[self.layout.pos + p * d..][..d].iter_mut().zip(row) {
                    *gv += r;
                }
                if let Some(t) = self.layout.typ {
                    for (gv, r) in grads[t..t + d].iter_mut().zip(row) {
                        *gv += r;
                    }
                }
            }
        }
        pool::recycle(demb);
        cache.recycle();
        grads
    }

    fn slice_p(&self, off: usize, len: usize) -> &[f32] {
        &self.params[off..off + len]
    }

    /// One block's backward: returns the gradient of its input, adds to `grads`.
    fn block_backward(
        &self,
        o: &BlockOffsets,
        bc: &BlockCache,
        dy: Vec<f32>,
        batch: &Batch,
        grads: &mut [f32],
    ) -> Vec<f32> {
        let c = &self.cfg;
        let (d, f, n) = (c.width, c.ffn, batch.rows());
        let pre = c.norm == NormPlacement::Pre;
        // dr: gradient at the feed-forward residual sum (y itself when pre-norm).
        let dr = if pre {
            dy
        } else {
            let mut dr = pool::scratch(n * d);
            let (gg, gb) = two_mut(grads, o.ln2_g, d, o.ln2_b, d);
            layer_norm::backward(
                &bc.r2,
                self.slice_p(o.ln2_g, d),
                &bc.st2,
                &dy,
                d,
                &mut dr,
                false,
                gg,
                gb,
            );
            pool::recycle(dy);
            dr
        };
        // Feed-forward: r = res + gelu(f_in·W1 + b1)·W2 + b2.
        let mut dg = pool::scratch(n * f);
        {
            let (gw, gb) = two_mut(grads, o.w_2, f * d, o.b_2, d);
            linear_backward(
                &bc.g,
                self.slice_p(o.w_2, f * d),
                &dr,
                gw,
                Some(gb),
                Some(&mut dg),
                false,
                n,
                f,
                d,
            );
        }
        gelu::backward_saved(&bc.gp, &mut dg);
        let mut df_in = pool::scratch(n * d);
        {
            let (gw, gb) = two_mut(grads, o.w_1, d * f, o.b_1, f);
            linear_backward(
                &bc.f_in,
                self.slice_p(o.w_1, d * f),
                &dg,
                gw,
                Some(gb),
                Some(&mut df_in),
                false,
                n,
                d,
                f,
            );
        }
        pool::recycle(dg);
        // dmid: gradient at the attention residual sum.
        let dmid = if pre {
            // a feeds both LN2 (→ f_in) and the residual.
            let mut dmid = dr;
            let (gg, gb) = two_mut(grads, o.ln2_g, d, o.ln2_b, d);
            layer_norm::backward(
                &bc.mid,
                self.slice_p(o.ln2_g, d),
                &bc.st2,
                &df_in,
                d,
                &mut dmid,
                true,
                gg,
                gb,
            );
            pool::recycle(df_in);
            dmid
        } else {
            // f_in = LN1(r1) feeds the FFN and the residual.
            let mut da = df_in;
            for (a, r) in da.iter_mut().zip(&dr) {
                *a += r;
            }
            let mut dmid = pool::scratch(n * d);
            let (gg, gb) = two_mut(grads, o.ln1_g, d, o.ln1_b, d);
            layer_norm::backward(
                &bc.mid,
                self.slice_p(o.ln1_g, d),
                &bc.st1,
                &da,
                d,
                &mut dmid,
                false,
                gg,
                gb,
            );
            pool::recycle(da);
            pool::recycle(dr);
            dmid
        };
        // Attention: mid = x + attn·Wo + bo.
        let mut dattn = pool::scratch(n * d);
        {
            let (gw, gb) = two_mut(grads, o.w_o, d * d, o.b_o, d);
            linear_backward(
                &bc.attn,
                self.slice_p(o.w_o, d * d),
                &dmid,
                gw,
                Some(gb),
                Some(&mut dattn),
                false,
                n,
                d,
                d,
            );
        }
        let shape = Shape {
            batch: batch.batch,
            seq: batch.seq,
            width: d,
            heads: c.heads,
            causal: c.causal,
        };
        let mut dqkv = pool::scratch(n * 3 * d);
        attention::backward(shape, &bc.qkv, &bc.probs, &dattn, &mut dqkv);
        pool::recycle(dattn);
        let attn_in = if pre { &bc.u } else { &bc.x };
        let mut dx = dmid;
        if pre {
            let mut du = pool::scratch(n * d);
            {
                let (gw, gb) = two_mut(grads, o.w_qkv, d * 3 * d, o.b_qkv, 3 * d);
                linear_backward(
                    attn_in,
                    self.slice_p(o.w_qkv, d * 3 * d),
                    &dqkv,
                    gw,
                    Some(gb),
                    Some(&mut du),
                    false,
                    n,
                    d,
                    3 * d,
                );
            }
            let (gg, gb) = two_mut(grads, o.ln1_g, d, o.ln1_b, d);
            layer_norm::backward(
                &bc.x,
                self.slice_p(o.ln1_g, d),
                &bc.st1,
                &du,
                d,
                &mut dx,
                true,
                gg,
                gb,
            );
            pool::recycle(du);
        } else {
            let (gw, gb) = two_mut(grads, o.w_qkv, d * 3 * d, o.b_qkv, 3 * d);
            linear_backward(
                attn_in,
                self.slice_p(o.w_qkv, d * 3 * d),
                &dqkv,
                gw,
                Some(gb),
                Some(&mut dx),
                true,
                n,
                d,
                3 * d,
            );
        }
        pool::recycle(dqkv);
        dx
    }
}

/// Spreads the pooled gradient back over the positions pooling read.
fn unpool(dpooled: &[f32], batch: &Batch, d: usize, pooling: Pooling, dtop: &mut [f32]) {
    for (b, drow) in dpooled.chunks(d).enumerate() {
        let base = b * batch.seq;
        match pooling {
            Pooling::First => dtop[base * d..][..d].copy_from_slice(drow),
            Pooling::Mean => {
                let inv = 1.0 / batch.lens[b] as f32;
                for p in 0..batch.lens[b] {
                    for (o, v) in dtop[(base + p) * d..][..d].iter_mut().zip(drow) {
                        *o = v * inv;
                    }
                }
            }
        }
    }
}
