//! SGD with momentum, dampening, Nesterov and (coupled) weight decay, as `torch.optim.SGD`:
//!
//! ```text
//! g ← g + λ·p
//! b ← g                          (first step)
//! b ← μ·b + (1 − dampening)·g    (later steps)
//! g ← g + μ·b  if nesterov, else g ← b
//! p ← p − lr·g
//! ```

use serde::{Deserialize, Serialize};

use super::state::{check_lr, Optimizer, OptimizerState};
use crate::error::{check_len, Error, Result};

/// SGD hyper-parameters other than the learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Momentum μ (0 disables the buffer).
    pub momentum: f32,
    /// Dampening applied to the gradient in the momentum update.
    pub dampening: f32,
    /// Weight decay λ added to the gradient (L2, coupled, as in PyTorch's SGD).
    pub weight_decay: f32,
    /// Nesterov momentum (needs μ > 0 and zero dampening, as PyTorch requires).
    pub nesterov: bool,
}

impl SgdConfig {
    /// Checks ranges and the Nesterov preconditions.
    pub fn validate(&self) -> Result<()> {
        let finite_nonneg = |x: f32| x.is_finite() && x >= 0.0;
        if !finite_nonneg(self.momentum)
            || !finite_nonneg(self.dampening)
            || !finite_nonneg(self.weight_decay)
        {
            return Err(Error::InvalidArgument(format!(
                "sgd momentum, dampening and weight_decay must be finite and >= 0, got {:?}",
                self
            )));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::InvalidArgument(
                "nesterov momentum requires momentum > 0 and zero dampening".into(),
            ));
        }
        Ok(())
    }
}

/// SGD over a flat buffer of fixed length.
#[derive(Debug, Clone)]
pub struct Sgd {
    config: SgdConfig,
    n: usize,
    step: u64,
    /// Empty until the first step with momentum; PyTorch initialises it to the first gradient.
    buf: Vec<f32>,
}

impl Sgd {
    /// A fresh optimizer for `n` parameters.
    pub fn new(config: SgdConfig, n: usize) -> Result<Self> {
        config.validate()?;
        Ok(Sgd {
            config,
            n,
            step: 0,
            buf: Vec::new(),
        })
    }

    /// Restores from saved state for `n` parameters.
    pub fn from_state(config: SgdConfig, n: usize, state: OptimizerState) -> Result<Self> {
        config.validate()?;
        state.check_fits(n)?;
        match state {
            OptimizerState::Sgd { step, momentum } => Ok(Sgd {
                config,
                n,
                step,
                buf: momentum,
            }),
            OptimizerState::AdamW { .. } => Err(Error::InvalidArgument(
                "cannot restore SGD from AdamW state".into(),
            )),
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<()> {
        check_lr(lr)?;
        check_len("sgd params", self.n, params.len())?;
        check_len("sgd grads", self.n, grads.len())?;
        let SgdConfig {
            momentum,
            dampening,
            weight_decay,
            nesterov,
        } = self.config;
        self.step += 1;
        if momentum == 0.0 {
            for (p, &g) in params.iter_mut().zip(grads) {
                let d = g + weight_decay * *p;
                *p -= lr * d;
            }
            return Ok(());
        }
        let first = self.buf.is_empty();
        if first {
            self.buf = vec![0.0; self.n];
        }
        for ((p, &g), b) in params.iter_mut().zip(grads).zip(&mut self.buf) {
            let d = g + weight_decay * *p;
            *b = if first {
                d
            } else {
                momentum * *b + (1.0 - dampening) * d
            };
            let upd = if nesterov { d + momentum * *b } else { *b };
            *p -= lr * upd;
        }
        Ok(())
    }

    fn steps_taken(&self) -> u64 {
        self.step
    }

    fn len(&self) -> usize {
        self.n
    }

    fn state(&self) -> OptimizerState {
        OptimizerState::Sgd {
            step: self.step,
            momentum: self.buf.clone(),
        }
    }
}
