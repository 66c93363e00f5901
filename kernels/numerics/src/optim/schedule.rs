//! Learning-rate schedules: linear warmup, then cosine or linear decay to a floor.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The shape of the decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Half a cosine from the peak down to the floor.
    #[default]
    Cosine,
    /// A straight line from the peak down to the floor.
    Linear,
    /// Stay at the peak.
    Constant,
}

/// A learning-rate schedule indexed by the optimizer step (0-based: the rate for the first update
/// is `lr_at(0)`).
///
/// During warmup the rate rises linearly as `peak · (step + 1) / warmup_steps`, so the first update
/// already moves the parameters (Hugging Face's schedule starts at exactly 0, which wastes a step).
/// After warmup, progress `p = (step − warmup) / (total − warmup)` (clamped to [0, 1]) drives the
/// decay from `peak` to `floor`; past `total_steps` the rate stays at the floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Rate at the end of warmup.
    pub peak_lr: f32,
    /// Steps of linear warmup (0 for none).
    pub warmup_steps: u64,
    /// Step at which decay reaches the floor.
    pub total_steps: u64,
    /// Lowest rate after decay.
    pub floor_lr: f32,
    /// Decay shape.
    pub decay: Decay,
}

impl Schedule {
    /// Warmup then cosine decay to `floor_lr`.
    pub fn warmup_cosine(peak_lr: f32, warmup: u64, total: u64, floor_lr: f32) -> Result<Self> {
        Self::new(peak_lr, warmup, total, floor_lr, Decay::Cosine)
    }

    /// Warmup then linear decay to `floor_lr`.
    pub fn warmup_linear(peak_lr: f32, warmup: u64, total: u64, floor_lr: f32) -> Result<Self> {
        Self::new(peak_lr, warmup, total, floor_lr, Decay::Linear)
    }

    /// A validated schedule.
    pub fn new(
        peak_lr: f32,
        warmup_steps: u64,
        total_steps: u64,
        floor_lr: f32,
        decay: Decay,
    ) -> Result<Self> {
        let s = Schedule {
            peak_lr,
            warmup_steps,
            total_steps,
            floor_lr,
            decay,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks `0 ≤ floor ≤ peak` (finite) and `warmup ≤ total`.
    pub fn validate(&self) -> Result<()> {
        if !(self.peak_lr.is_finite() && self.floor_lr.is_finite())
            || self.floor_lr < 0.0
            || self.floor_lr > self.peak_lr
        {
            return Err(Error::InvalidArgument(format!(
                "schedule needs 0 <= floor_lr <= peak_lr, got floor {} peak {}",
                self.floor_lr, self.peak_lr
            )));
        }
        if self.warmup_steps > self.total_steps {
            return Err(Error::InvalidArgument(format!(
                "warmup_steps {} exceeds total_steps {}",
                self.warmup_steps, self.total_steps
            )));
        }
        Ok(())
    }

    /// The learning rate for the update at `step`.
    pub fn lr_at(&self, step: u64) -> f32 {
        let peak = f64::from(self.peak_lr);
        let floor = f64::from(self.floor_lr);
        if step < self.warmup_steps {
            return (peak * (step + 1) as f64 / self.warmup_steps as f64) as f32;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps);
        let progress = if span == 0 {
            1.0
        } else {
            ((step - self.warmup_steps) as f64 / span as f64).min(1.0)
        };
        let lr = match self.decay {
            Decay::Constant => peak,
            Decay::Linear => floor + (peak - floor) * (1.0 - progress),
            Decay::Cosine => {
                floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        };
        lr as f32
    }
}
