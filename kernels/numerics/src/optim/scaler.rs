//! Dynamic loss scaling for mixed precision, with the semantics of PyTorch's `GradScaler`: the
//! loss is multiplied by `scale` before backward so that small f16 gradients do not flush to zero;
//! gradients are divided by it before the update. A step whose gradients hold inf/NaN is skipped
//! and the scale backs off; after `growth_interval` clean steps in a row the scale grows.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Settings of [`LossScaler`] (PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalerConfig {
    /// Starting scale.
    pub init_scale: f32,
    /// Multiplier after `growth_interval` clean steps.
    pub growth_factor: f32,
    /// Multiplier after an overflow, in (0, 1).
    pub backoff_factor: f32,
    /// Clean steps needed before growing.
    pub growth_interval: u32,
    /// The scale never backs off below this.
    pub min_scale: f32,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            min_scale: 1.0,
        }
    }
}

/// The decision for one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScalerStep {
    /// Gradients are finite and unscaled: apply the update.
    Apply,
    /// Gradients overflowed: skip the update (the scale has backed off).
    Skip,
}

/// Dynamic loss scaler. Serialisable for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    config: ScalerConfig,
    scale: f32,
    good_steps: u32,
    skipped: u64,
}

impl LossScaler {
    /// A scaler at `init_scale`.
    pub fn new(config: ScalerConfig) -> Result<Self> {
        let finite_pos = |x: f32| x.is_finite() && x > 0.0;
        // Written as "all good" so that NaN fields fail every comparison and are rejected.
        let valid = finite_pos(config.init_scale)
            && finite_pos(config.min_scale)
            && finite_pos(config.growth_factor)
            && config.growth_factor > 1.0
            && config.backoff_factor > 0.0
            && config.backoff_factor < 1.0
            && config.growth_interval > 0;
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "invalid loss scaler config {config:?}"
            )));
        }
        Ok(LossScaler {
            config,
            scale: config.init_scale,
            good_steps: 0,
            skipped: 0,
        })
    }

    /// The current scale: multiply the loss by it before backward.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Steps skipped so far because of overflow.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// Divides the (scaled) gradients by the scale in place, checks them for inf/NaN and updates
    /// the scale. On [`ScalerStep::Skip`] the gradients must not be applied.
    pub fn unscale_and_update(&mut self, grads: &mut [f32]) -> ScalerStep {
        // Checking before unscaling is enough: dividing finite values by a finite scale >= 1
        // cannot create inf or NaN.
        let finite = grads.iter().all(|g| g.is_finite());
        if !finite {
            self.scale = (self.scale * self.config.backoff_factor).max(self.config.min_scale);
            self.good_steps = 0;
            self.skipped += 1;
            return ScalerStep::Skip;
        }
        let inv = 1.0 / self.scale;
        grads.iter_mut().for_each(|g| *g *= inv);
        self.good_steps += 1;
        if self.good_steps >= self.config.growth_interval {
            let grown = self.scale * self.config.growth_factor;
            // Never grow into inf: an infinite scale would turn every later loss into inf.
            if grown.is_finite() {
                self.scale = grown;
            }
            self.good_steps = 0;
        }
        ScalerStep::Apply
    }
}
