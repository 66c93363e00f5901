//! The transformer all models share: flat parameters, a forward that keeps what the backward
//! needs, and the training-step contract (`params_flat`, `set_params_flat`, `loss_and_grads`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::ops::attention::{self, Shape};
use crate::ops::layer_norm::{self, Stats};
use crate::ops::matmul::{gemm_view, linear_forward, View};
use crate::ops::{gelu, pool, xent};

use super::batch::Batch;
use super::config::{BlockOffsets, Head, Layout, NormPlacement, Pooling, TransformerConfig};

/// A transformer with its parameters in one flat `f32` vector.
#[derive(Debug, Clone)]
pub struct Transformer {
    pub(crate) cfg: TransformerConfig,
    pub(crate) layout: Layout,
    pub(crate) params: Vec<f32>,
}

/// What one block's forward keeps for its backward.
#[derive(Debug, Default)]
pub(crate) struct BlockCache {
    /// Block input.
    pub x: Vec<f32>,
    /// Pre-norm: LN1(x), the attention input. Post-norm: unused (the input is `x`).
    pub u: Vec<f32>,
    pub qkv: Vec<f32>,
    pub probs: Vec<f32>,
    pub attn: Vec<f32>,
    /// Pre-norm: `a = x + attn·Wo`. Post-norm: `r1 = x + attn·Wo` (LN1's input).
    pub mid: Vec<f32>,
    pub st1: Stats,
    /// The feed-forward input: LN2(a) (pre) or LN1(r1) (post).
    pub f_in: Vec<f32>,
    /// GELU output and GELU'(pre-activation), from one pass in the forward.
    pub g: Vec<f32>,
    pub gp: Vec<f32>,
    /// Post-norm only: `r2 = a + ffn(a)`, LN2's input.
    pub r2: Vec<f32>,
    pub st2: Stats,
}

/// The whole forward's saved state.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// Summed embeddings (input of the embedding LN when post-norm).
    pub emb: Vec<f32>,
    pub emb_st: Stats,
    pub blocks: Vec<BlockCache>,
    /// Output of the last block (input of the final LN when pre-norm).
    pub last: Vec<f32>,
    pub final_st: Stats,
    /// What the head reads: final LN output (pre) or last block output (post).
    pub top: Vec<f32>,
    /// Pooled `[batch, width]` for classifier and embedding heads.
    pub pooled: Vec<f32>,
}

impl BlockCache {
    /// Hands every buffer back to the pool.
    fn recycle(self) {
        for v in [
            self.x, self.u, self.qkv, self.probs, self.attn, self.mid, self.f_in, self.g, self.gp,
            self.r2,
        ] {
            pool::recycle(v);
        }
    }
}

impl Cache {
    /// Hands every buffer back to the pool, for the next step to reuse.
    pub(crate) fn recycle(self) {
        for b in self.blocks {
            b.recycle();
        }
        for v in [self.emb, self.last, self.top, self.pooled] {
            pool::recycle(v);
        }
    }
}

/// Model outputs for inference.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// LM: `[batch*seq, vocab]`; classifier: `[batch, classes]`; embedding: empty.
    pub logits: Vec<f32>,
    /// Classifier and embedding heads: `[batch, width]` pooled vectors; otherwise empty.
    pub pooled: Vec<f32>,
    /// `[batch*seq, width]` top hidden states.
    pub hidden: Vec<f32>,
}

impl Transformer {
    /// A model with GPT-2-style random initialisation from `seed`: N(0, 0.02) weights, residual
    /// projections scaled by `1/√(2·layers)`, zero biases, unit layer-norm gains.
    pub fn new(cfg: TransformerConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let layout = Layout::new(&cfg);
        let mut params = vec![0.0f32; layout.len()];
        let mut rng = StdRng::seed_from_u64(seed);
        let resid = 0.02 / (2.0 * cfg.layers.max(1) as f32).sqrt();
        for e in layout.entries() {
            let slot = &mut params[e.offset..e.offset + e.len()];
            let leaf = e.name.rsplit('.').next().unwrap_or("");
            let std = match leaf {
                "g" => {
                    slot.fill(1.0);
                    continue;
                }
                _ if leaf.starts_with("b") && e.shape.len() == 1 => continue,
                "w_o" | "w_2" => resid,
                _ => 0.02,
            };
            for v in slot.iter_mut() {
                *v = std * normal(&mut rng);
            }
        }
        Ok(Self {
            cfg,
            layout,
            params,
        })
    }

    /// A model with the given parameters (length-checked).
    pub fn from_params(cfg: TransformerConfig, params: Vec<f32>) -> Result<Self> {
        cfg.validate()?;
        let layout = Layout::new(&cfg);
        if params.len() != layout.len() {
            return Err(Error::len("flat parameters", layout.len(), params.len()));
        }
        Ok(Self {
            cfg,
            layout,
            params,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// Where each named tensor sits in the flat vector.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// A copy of all parameters as one flat vector.
    pub fn params_flat(&self) -> Vec<f32> {
        self.params.clone()
    }

    /// The parameters, borrowed.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Replaces all parameters; the length must match.
    pub fn set_params_flat(&mut self, p: &[f32]) -> Result<()> {
        if p.len() != self.params.len() {
            return Err(Error::len("flat parameters", self.params.len(), p.len()));
        }
        self.params.copy_from_slice(p);
        Ok(())
    }

    /// Mutable access for optimizers that update in place.
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// Inference forward (no targets needed).
    pub fn forward(&self, batch: &Batch) -> Result<Output> {
        batch.validate(&self.cfg, false)?;
        let (mut cache, logits) = self.forward_cached(batch);
        let (pooled, hidden) = (
            std::mem::take(&mut cache.pooled),
            std::mem::take(&mut cache.top),
        );
        cache.recycle();
        Ok(Output {
            logits,
            pooled,
            hidden,
        })
    }

    fn slice(&self, off: usize, len: usize) -> &[f32] {
        &self.params[off..off + len]
    }

    /// Forward keeping every activation the backward needs; returns the head's logits.
    pub(crate) fn forward_cached(&self, batch: &Batch) -> (Cache, Vec<f32>) {
        let c = &self.cfg;
        let (d, n) = (c.width, batch.rows());
        let mut cache = Cache::default();
        // Embeddings; padding positions stay zero so they cannot carry stray ids.
        let mut emb = pool::zeros(n * d);
        let tok = self.slice(self.layout.tok, c.vocab * d);
        let pos = self.slice(self.layout.pos, c.context * d);
        for b in 0..batch.batch {
            for p in 0..batch.lens[b] {
                let id = batch.tokens[b * batch.seq + p] as usize;
                let row = &mut emb[(b * batch.seq + p) * d..][..d];
                let (te, pe) = (&tok[id * d..][..d], &pos[p * d..][..d]);
                for j in 0..d {
                    row[j] = te[j] + pe[j];
                }
                if let Some(t) = self.layout.typ {
                    for (v, e) in row.iter_mut().zip(&self.params[t..t + d]) {
                        *v += e;
                    }
                }
            }
        }
        let mut x = match self.layout.emb_ln {
            Some((g, bb)) => {
                let mut y = pool::scratch(n * d);
                cache.emb_st = layer_norm::forward(
                    &emb,
                    self.slice(g, d),
                    self.slice(bb, d),
                    c.ln_eps,
                    d,
                    &mut y,
                );
                cache.emb = emb;
                y
            }
            None => emb,
        };
        for blk in &self.layout.blocks {
            let (y, bc) = self.block_forward(blk, x, batch);
            cache.blocks.push(bc);
            x = y;
        }
        match self.layout.final_ln {
            Some((g, bb)) => {
                let mut y = pool::scratch(n * d);
                cache.final_st = layer_norm::forward(
                    &x,
                    self.slice(g, d),
                    self.slice(bb, d),
                    c.ln_eps,
                    d,
                    &mut y,
                );
                cache.last = x;
                cache.top = y;
            }
            None => cache.top = x,
        }
        let logits = self.head_forward(&mut cache, batch);
        (cache, logits)
    }

    fn head_forward(&self, cache: &mut Cache, batch: &Batch) -> Vec<f32> {
        let (d, n) = (self.cfg.width, batch.rows());
        match self.cfg.head {
            Head::Lm { tied } => {
                let v = self.cfg.vocab;
                // Every logit is written by the product below.
                let mut logits = pool::scratch(n * v);
                match (tied, self.layout.head_w) {
                    (false, Some(w)) => {
                        linear_forward(&cache.top, self.slice(w, d * v), None, &mut logits, n, d, v)
                    }
                    _ => {
                        let tok = self.slice(self.layout.tok, v * d);
                        gemm_view(
                            n,
                            v,
                            d,
                            &cache.top,
                            View::rows(0, d),
                            tok,
                            View::transposed(0, d),
                            &mut logits,
                            View::rows(0, v),
                            false,
                            true,
                        );
                    }
                }
                logits
            }
            Head::Classifier { classes, pooling } => {
                cache.pooled = pool(&cache.top, batch, d, pooling);
                let mut logits = vec![0.0f32; batch.batch * classes];
                if let (Some(w), Some(b)) = (self.layout.head_w, self.layout.head_b) {
                    linear_forward(
                        &cache.pooled,
                        self.slice(w, d * classes),
                        Some(self.slice(b, classes)),
                        &mut logits,
                        batch.batch,
                        d,
                        classes,
                    );
                }
                logits
            }
            Head::Embedding { pooling } => {
                cache.pooled = pool(&cache.top, batch, d, pooling);
                Vec::new()
            }
        }
    }

    fn block_forward(
        &self,
        o: &BlockOffsets,
        x: Vec<f32>,
        batch: &Batch,
    ) -> (Vec<f32>, BlockCache) {
        let c = &self.cfg;
        let (d, f, n, eps) = (c.width, c.ffn, batch.rows(), c.ln_eps);
        let pre = c.norm == NormPlacement::Pre;
        let mut bc = BlockCache::default();
        if pre {
            bc.u = pool::scratch(n * d);
            bc.st1 = layer_norm::forward(
                &x,
                self.slice(o.ln1_g, d),
                self.slice(o.ln1_b, d),
                eps,
                d,
                &mut bc.u,
            );
        }
        bc.qkv = pool::scratch(n * 3 * d);
        let attn_in = if pre { &bc.u } else { &x };
        linear_forward(
            attn_in,
            self.slice(o.w_qkv, d * 3 * d),
            Some(self.slice(o.b_qkv, 3 * d)),
            &mut bc.qkv,
            n,
            d,
            3 * d,
        );
        let shape = Shape {
            batch: batch.batch,
            seq: batch.seq,
            width: d,
            heads: c.heads,
            causal: c.causal,
        };
        // Attention writes every row and head block of both.
        bc.attn = pool::scratch(n * d);
        bc.probs = pool::scratch(batch.batch * c.heads * batch.seq * batch.seq);
        attention::forward(shape, &bc.qkv, &batch.lens, &mut bc.attn, &mut bc.probs);
        // mid = x + attn·Wo + bo, computed by seeding the GEMM's destination with x + bo.
        bc.mid = residual_seed(&x, self.slice(o.b_o, d), d);
        gemm_view(
            n,
            d,
            d,
            &bc.attn,
            View::rows(0, d),
            self.slice(o.w_o, d * d),
            View::rows(0, d),
            &mut bc.mid,
            View::rows(0, d),
            true,
            true,
        );
        bc.f_in = pool::scratch(n * d);
        if pre {
            bc.st2 = layer_norm::forward(
                &bc.mid,
                self.slice(o.ln2_g, d),
                self.slice(o.ln2_b, d),
                eps,
                d,
                &mut bc.f_in,
            );
        } else {
            bc.st1 = layer_norm::forward(
                &bc.mid,
                self.slice(o.ln1_g, d),
                self.slice(o.ln1_b, d),
                eps,
                d,
                &mut bc.f_in,
            );
        }
        let mut h = pool::scratch(n * f);
        linear_forward(
            &bc.f_in,
            self.slice(o.w_1, d * f),
            Some(self.slice(o.b_1, f)),
            &mut h,
            n,
            d,
            f,
        );
        bc.g = pool::scratch(n * f);
        bc.gp = pool::scratch(n * f);
        gelu::forward_with_grad(c.gelu, &h, &mut bc.g, &mut bc.gp);
        pool::recycle(h);
        let res = if pre { &bc.mid } else { &bc.f_in };
        let mut r = residual_seed(res, self.slice(o.b_2, d), d);
        gemm_view(
            n,
            d,
            f,
            &bc.g,
            View::rows(0, f),
            self.slice(o.w_2, f * d),
            View::rows(0, d),
            &mut r,
            View::rows(0, d),
            true,
            true,
        );
        let y = if pre {
            r
        } else {
            let mut y = pool::scratch(n * d);
            bc.st2 = layer_norm::forward(
                &r,
                self.slice(o.ln2_g, d),
                self.slice(o.ln2_b, d),
                eps,
                d,
                &mut y,
            );
            bc.r2 = r;
            y
        };
        bc.x = x;
        (y, bc)
    }

    /// Mean cross-entropy loss and the gradient of every parameter, as one flat vector.
    pub fn loss_and_grads(&self, batch: &Batch) -> Result<(f32, Vec<f32>)> {
        self.loss_and_grads_with(batch, &Loss::CrossEntropy)
    }

    /// As [`Self::loss_and_grads`], with the loss chosen by `loss`.
    pub fn loss_and_grads_with(&self, batch: &Batch, loss: &Loss<'_>) -> Result<(f32, Vec<f32>)> {
        self.loss_and_grads_scaled(batch, loss, 1.0)
    }

    /// As [`Self::loss_and_grads_with`], with the backward seeded by `scale · dloss/dlogits`
    /// (loss scaling for mixed precision); the returned loss is unscaled.
    pub fn loss_and_grads_scaled(
        &self,
        batch: &Batch,
        loss: &Loss<'_>,
        scale: f32,
    ) -> Result<(f32, Vec<f32>)> {
        // The whole step runs as one job on the current rayon pool: a caller outside the pool
        // would otherwise hand each of the step's ~100 parallel loops and GEMMs to the pool
        // separately and sleep until it finished, a cross-thread wake-up each time.
        rayon::scope(|_| self.loss_and_grads_in_pool(batch, loss, scale))
    }

    fn loss_and_grads_in_pool(
        &self,
        batch: &Batch,
        loss: &Loss<'_>,
        scale: f32,
    ) -> Result<(f32, Vec<f32>)> {
        batch.validate(&self.cfg, matches!(loss, Loss::CrossEntropy))?;
        if matches!(self.cfg.head, Head::Embedding { .. }) {
            return Err(Error::InvalidArgument(
                "an embedding model has no training loss".into(),
            ));
        }
        let (cache, mut logits) = self.forward_cached(batch);
        let classes = logits.len() / batch_rows_for_head(&self.cfg, batch).max(1);
        let value = match loss {
            Loss::CrossEntropy => {
                let targets = self.effective_targets(batch);
                xent::cross_entropy(&mut logits, &targets, classes).0
            }
            Loss::Distill {
                teacher,
                temperature,
                alpha,
                hard_targets,
            } => {
                if teacher.len() != logits.len() {
                    return Err(Error::InvalidArgument(format!(
                        "teacher logits: {} values, student has {}",
                        teacher.len(),
                        logits.len()
                    )));
                }
                if temperature.is_nan() || *temperature <= 0.0 || !(0.0..=1.0).contains(alpha) {
                    return Err(Error::InvalidArgument(
                        "temperature must be > 0 and alpha in [0, 1]".into(),
                    ));
                }
                let targets = hard_targets.then(|| self.effective_targets(batch));
                if targets.is_some() {
                    batch.validate(&self.cfg, true)?;
                }
                xent::distill(
                    &mut logits,
                    teacher,
                    targets.as_deref(),
                    classes,
                    *temperature,
                    *alpha,
                )
            }
        };
        if scale != 1.0 {
            logits.iter_mut().for_each(|g| *g *= scale);
        }
        let grads = self.backward(batch, cache, logits);
        Ok((value, grads))
    }

    /// LM targets with padding positions marked [`xent::IGNORE`]; classifier targets as given.
    fn effective_targets(&self, batch: &Batch) -> Vec<u32> {
        match self.cfg.head {
            Head::Lm { .. } => {
                let mut t = batch.targets.clone();
                for b in 0..batch.batch {
                    for p in batch.lens[b]..batch.seq {
                        t[b * batch.seq + p] = xent::IGNORE;
                    }
                }
                t
            }
            _ => batch.targets.clone(),
        }
    }
}

/// Which training loss.
#[derive(Debug, Clone, Copy)]
pub enum Loss<'a> {
    /// Mean cross-entropy against the batch's targets.
    CrossEntropy,
    /// Distillation from a teacher's logits (same shape as the student's).
    Distill {
        /// Teacher logits.
        teacher: &'a [f32],
        /// Softening temperature.
        temperature: f32,
        /// Weight of the KL term; `1 - alpha` weighs the hard-label cross-entropy.
        alpha: f32,
        /// Whether to add the hard-label term (needs targets).
        hard_targets: bool,
    },
}

fn batch_rows_for_head(cfg: &TransformerConfig, batch: &Batch) -> usize {
    match cfg.head {
        Head::Lm { .. } => batch.rows(),
        _ => batch.batch,
    }
}

/// `out[i] = x[i] + bias` row by row: the starting value of a residual GEMM.
fn residual_seed(x: &[f32], bias: &[f32], d: usize) -> Vec<f32> {
    let mut out = pool::copy_of(x);
    for row in out.chunks_mut(d) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
    out
}

/// Pools `[batch*seq, d]` hidden states to `[batch, d]`.
pub(crate) fn pool(top: &[f32], batch: &Batch, d: usize, pooling: Pooling) -> Vec<f32> {
    let mut out = vec![0.0f32; batch.batch * d];
    for (b, row) in out.chunks_mut(d).enumerate() {
        let base = b * batch.seq;
        match pooling {
            Pooling::First => row.copy_from_slice(&top[base * d..][..d]),
            Pooling::Mean => {
                let len = batch.lens[b];
                for p in 0..len {
                    for (o, v) in row.iter_mut().zip(&top[(base + p) * d..][..d]) {
                        *o += v;
                    }
                }
                let inv = 1.0 / len as f32;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        }
    }
    out
}

/// A standard normal sample (Box–Muller), so initialisation needs no extra crate.
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.gen::<f64>().max(1e-300);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}
