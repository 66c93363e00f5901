//! AdamW with decoupled weight decay and bias correction, as `torch.optim.AdamW`
//! (`amsgrad=False`, `maximize=False`):
//!
//! ```text
//! p ← p · (1 − lr·λ)
//! m ← β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//! The order of operations (decay first, ε added after the bias-corrected square root) follows
//! PyTorch's single-tensor implementation, so results agree with it to f32 rounding.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::state::{check_lr, Optimizer, OptimizerState};
use crate::error::{check_len, Error, Result};

/// AdamW hyper-parameters other than the learning rate (which comes from a schedule each step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// β₁, decay of the first moment.
    pub beta1: f32,
    /// β₂, decay of the second moment.
    pub beta2: f32,
    /// ε added to the denominator.
    pub eps: f32,
    /// Decoupled weight decay λ (PyTorch's default is 0.01).
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        // PyTorch's defaults.
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The per-step scalars of an AdamW update, computed once on the host (in f64 where precision
/// matters) and shared by the CPU loop and the GPU kernel so that both apply the same numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bc2_sqrt: f32,
    /// `1 − lr·λ`.
    pub decay: f32,
}

impl AdamWConfig {
    /// Scalars for step `t` (1-based) at learning rate `lr`.
    pub fn scalars(&self, t: u64, lr: f32) -> AdamWScalars {
        // In f64: β₂ᵗ approaches 1 slowly and (1 − β₂ᵗ) loses digits in f32 early on.
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        let bc1 = 1.0 - f64::from(self.beta1).powi(t);
        let bc2 = 1.0 - f64::from(self.beta2).powi(t);
        AdamWScalars {
            step_size: (f64::from(lr) / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            decay: 1.0 - lr * self.weight_decay,
        }
    }

    /// Checks ranges: β in [0, 1), ε > 0, λ ≥ 0, all finite.
    pub fn validate(&self) -> Result<()> {
        let ok_beta = |b: f32| b.is_finite() && (0.0..1.0).contains(&b);
        if !ok_beta(self.beta1) || !ok_beta(self.beta2) {
            return Err(Error::InvalidArgument(format!(
                "adamw betas must lie in [0, 1), got ({}, {})",
                self.beta1, self.beta2
            )));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "adamw eps must be > 0, got {}",
                self.eps
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "adamw weight_decay must be >= 0, got {}",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

/// Buffers at least this long are updated on the rayon pool (a shard of a large model);
/// smaller ones on the calling thread, where splitting would cost more than it saves.
const PARALLEL_MIN: usize = 1 << 18;
/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// The scalars of one update, shared by every chunk.
struct Consts {
    beta1: f32,
    beta2: f32,
    one_m_b1: f32,
    one_m_b2: f32,
    eps: f32,
    decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
}

/// Whether this CPU runs the AVX-512F build (which also uses AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
}

/// The AdamW update of one run of elements, compiled for AVX-512F or AVX2 + FMA when the CPU has
/// them (the crate targets baseline x86-64, whose 4-wide SSE2 square roots and divisions are
/// several times slower). Element-wise, so every build gives the same result.
fn update(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], k: &Consts) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
        return unsafe { update_avx512(params, grads, m, v, k) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { update_avx2(params, grads, m, v, k) };
    }
    update_impl(params, grads, m, v, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn update_avx512(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &Consts,
) {
    update_impl(params, grads, m, v, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn update_avx2(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], k: &Consts) {
    update_impl(params, grads, m, v, k)
}

/// The update itself. Zipped iteration lets the compiler drop bounds checks and vectorise the loop.
#[inline(always)]
fn update_impl(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], k: &Consts) {
    for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(m).zip(v) {
        *p *= k.decay;
        *m = k.beta1 * *m + k.one_m_b1 * g;
        *v = k.beta2 * *v + k.one_m_b2 * g * g;
        let denom = v.sqrt() / k.bc2_sqrt + k.eps;
        *p -= k.step_size * *m / denom;
    }
}

/// AdamW over a flat buffer of fixed length.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    step: u64,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl AdamW {
    /// A fresh optimizer for `n` parameters.
    pub fn new(config: AdamWConfig, n: usize) -> Result<Self> {
        config.validate()?;
        Ok(AdamW {
            config,
            step: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        })
    }

    /// Restores an optimizer from saved state (as returned by [`Optimizer::state`]).
    pub fn from_state(config: AdamWConfig, state: OptimizerState) -> Result<Self> {
        config.validate()?;
        match state {
            OptimizerState::AdamW { step, m, v } => {
                check_len("adamw.v", m.len(), v.len())?;
                Ok(AdamW { config, step, m, v })
            }
            OptimizerState::Sgd { .. } => Err(Error::InvalidArgument(
                "cannot restore AdamW from SGD state".into(),
            )),
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<()> {
        check_lr(lr)?;
        check_len("adamw params", self.m.len(), params.len())?;
        check_len("adamw grads", self.m.len(), grads.len())?;
        self.step += 1;
        let AdamWConfig {
            beta1, beta2, eps, ..
        } = self.config;
        let AdamWScalars {
            step_size,
            bc2_sqrt,
            decay,
        } = self.config.scalars(self.step, lr);
        let k = Consts {
            beta1,
            beta2,
            one_m_b1: 1.0 - beta1,
            one_m_b2: 1.0 - beta2,
            eps,
            decay,
            step_size,
            bc2_sqrt,
        };
        if params.len() >= PARALLEL_MIN {
            // Element-wise, so chunks on the rayon pool give exactly the sequential result.
            params
                .par_chunks_mut(CHUNK)
                .zip(grads.par_chunks(CHUNK))
                .zip(self.m.par_chunks_mut(CHUNK))
                .zip(self.v.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), m), v)| update(p, g, m, v, &k));
        } else {
            update(params, grads, &mut self.m, &mut self.v, &k);
        }
        Ok(())
    }

    fn steps_taken(&self) -> u64 {
        self.step
    }

    fn len(&self) -> usize {
        self.m.len()
    }

    fn state(&self) -> OptimizerState {
        OptimizerState::AdamW {
            step: self.step,
            m: self.m.clone(),
            v: self.v.clone(),
        }
    }
}

/// Every build of the update this CPU can run gives the portable build's results.
#[cfg(all(test, target_arch = "x86_64"))]
mod build_tests {
    use super::*;

    #[test]
    fn every_build_matches_the_portable_one() {
        let n = 1037;
        let grads: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let k = Consts {
            beta1: 0.9,
            beta2: 0.999,
            one_m_b1: 0.1,
            one_m_b2: 0.001,
            eps: 1e-8,
            decay: 1.0 - 1e-3 * 0.01,
            step_size: 1e-3 / 0.1,
            bc2_sqrt: 0.001f32.sqrt(),
        };
        let start = || {
            let p: Vec<f32> = (0..n).map(|i| (i as f32 * 0.013).sin()).collect();
            let m: Vec<f32> = (0..n).map(|i| (i as f32 * 0.007).cos() * 0.1).collect();
            let v: Vec<f32> = (0..n).map(|i| 1e-3 + (i % 13) as f32 * 1e-4).collect();
            (p, m, v)
        };
        let (mut p0, mut m0, mut v0) = start();
        update_impl(&mut p0, &grads, &mut m0, &mut v0, &k);
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
                    "{what}[{i}]: {x} vs {y}"
                );
            }
        };
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let (mut p, mut m, mut v) = start();
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { update_avx2(&mut p, &grads, &mut m, &mut v, &k) };
            close(&p, &p0, "avx2 params");
            close(&m, &m0, "avx2 m");
            close(&v, &v0, "avx2 v");
        }
        if has_avx512() {
            let (mut p, mut m, mut v) = start();
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
            unsafe { update_avx512(&mut p, &grads, &mut m, &mut v, &k) };
            close(&p, &p0, "avx512 params");
            close(&m, &m0, "avx512 m");
            close(&v, &v0, "avx512 v");
        }
    }
}
