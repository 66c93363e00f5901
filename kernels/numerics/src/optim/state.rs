//! The optimizer trait and its serialisable state.

use serde::{Deserialize, Serialize};

use super::{AdamW, AdamWConfig, Sgd, SgdConfig};
use crate::error::{check_len, Error, Result};

/// Which optimizer to run, with its hyper-parameters: what a job spec names and a parameter
/// server builds from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// [`AdamW`].
    #[serde(rename = "adamw")]
    AdamW(AdamWConfig),
    /// [`Sgd`].
    Sgd(SgdConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::AdamW(AdamWConfig::default())
    }
}

impl OptimizerConfig {
    /// A fresh optimizer for `n` parameters.
    pub fn build(&self, n: usize) -> Result<Box<dyn Optimizer + Send + Sync>> {
        Ok(match self {
            OptimizerConfig::AdamW(c) => Box::new(AdamW::new(*c, n)?),
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(*c, n)?),
        })
    }

    /// An optimizer for `n` parameters resumed from `state` (which must be of the same kind and
    /// fit `n`).
    pub fn restore(
        &self,
        n: usize,
        state: OptimizerState,
    ) -> Result<Box<dyn Optimizer + Send + Sync>> {
        state.check_fits(n)?;
        Ok(match self {
            OptimizerConfig::AdamW(c) => Box::new(AdamW::from_state(*c, state)?),
            OptimizerConfig::Sgd(c) => Box::new(Sgd::from_state(*c, n, state)?),
        })
    }
}

/// An optimizer that updates a flat parameter buffer in place from a flat gradient buffer.
pub trait Optimizer {
    /// Applies one update with learning rate `lr`. `params` and `grads` must both have the length
    /// the optimizer was created for; non-finite gradients are the caller's concern (see
    /// [`super::LossScaler`]) and are applied as given.
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<()>;
    /// Steps applied so far.
    fn steps_taken(&self) -> u64;
    /// Length of the parameter buffer this optimizer serves.
    fn len(&self) -> usize;
    /// True when it serves an empty buffer.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the full state, for checkpoints.
    fn state(&self) -> OptimizerState;
}

/// Serialisable optimizer state. Buffers are kept as plain vectors so that a checkpoint can store
/// them as tensors ([`OptimizerState::tensors`]) and the step count and kind in its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerState {
    /// AdamW moments.
    #[serde(rename = "adamw")]
    AdamW {
        /// Steps applied (the `t` of bias correction).
        step: u64,
        /// First moment.
        m: Vec<f32>,
        /// Second moment.
        v: Vec<f32>,
    },
    /// SGD momentum buffer (empty when momentum is zero or before the first step).
    Sgd {
        /// Steps applied.
        step: u64,
        /// Momentum buffer.
        momentum: Vec<f32>,
    },
}

impl OptimizerState {
    /// Steps applied.
    pub fn step(&self) -> u64 {
        match self {
            OptimizerState::AdamW { step, .. } | OptimizerState::Sgd { step, .. } => *step,
        }
    }

    /// The state buffers as `(name, data)` pairs: `adamw.m`, `adamw.v` or `sgd.momentum`.
    pub fn tensors(&self) -> Vec<(&'static str, &[f32])> {
        match self {
            OptimizerState::AdamW { m, v, .. } => vec![("adamw.m", m), ("adamw.v", v)],
            OptimizerState::Sgd { momentum, .. } => vec![("sgd.momentum", momentum)],
        }
    }

    /// Rebuilds AdamW state from a step count and named buffers as produced by [`Self::tensors`].
    pub fn adamw_from_tensors(step: u64, m: Vec<f32>, v: Vec<f32>) -> Result<Self> {
        check_len("adamw.v", m.len(), v.len())?;
        Ok(OptimizerState::AdamW { step, m, v })
    }

    /// Checks that the buffers fit a parameter vector of length `n`.
    pub(crate) fn check_fits(&self, n: usize) -> Result<()> {
        match self {
            OptimizerState::AdamW { m, v, .. } => {
                check_len("adamw.m", n, m.len())?;
                check_len("adamw.v", n, v.len())
            }
            OptimizerState::Sgd { momentum, step } => {
                // Before the first step (or without momentum) the buffer is legitimately empty.
                if momentum.is_empty() || momentum.len() == n {
                    Ok(())
                } else {
                    Err(Error::InvalidArgument(format!(
                        "sgd momentum buffer has {} values for {n} parameters (step {step})",
                        momentum.len()
                    )))
                }
            }
        }
    }
}

/// Checks that a learning rate is finite and non-negative.
pub(crate) fn check_lr(lr: f32) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "learning rate must be finite and >= 0, got {lr}"
        )))
    }
}
