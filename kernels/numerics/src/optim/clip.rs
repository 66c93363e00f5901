//! Clipping by global norm with an adaptive threshold.
//!
//! A fixed clip threshold has to be tuned per model and goes stale as gradients shrink during
//! training. Here the threshold follows the run: it is `factor ×` the chosen percentile of the last
//! `window` (unclipped) global norms, optionally capped by `max_norm`. Until `min_history` norms
//! have been seen the threshold is `max_norm` alone (or no clipping without one). Norms that are
//! not finite are reported and neither clip nor enter the history: the loss scaler skips those
//! steps.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Settings of [`GradClipper`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClipConfig {
    /// Multiplier applied to the percentile of recent norms.
    pub factor: f32,
    /// Which percentile of the window, in [0, 1] (0.5 = median).
    pub percentile: f32,
    /// How many recent norms to remember.
    pub window: usize,
    /// Norms needed before the adaptive threshold applies.
    pub min_history: usize,
    /// A fixed ceiling on the threshold; also the threshold while history is short.
    pub max_norm: Option<f32>,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            factor: 2.0,
            percentile: 0.9,
            window: 200,
            min_history: 20,
            max_norm: Some(1.0),
        }
    }
}

impl ClipConfig {
    /// A fixed threshold only (classic `clip_grad_norm_`).
    pub fn fixed(max_norm: f32) -> Self {
        ClipConfig {
            max_norm: Some(max_norm),
            min_history: usize::MAX,
            ..Default::default()
        }
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "clip factor must be > 0, got {}",
                self.factor
            )));
        }
        if !(0.0..=1.0).contains(&self.percentile) {
            return Err(Error::InvalidArgument(format!(
                "clip percentile must lie in [0, 1], got {}",
                self.percentile
            )));
        }
        if self.window == 0 {
            return Err(Error::InvalidArgument("clip window must be > 0".into()));
        }
        if let Some(m) = self.max_norm {
            if !(m.is_finite() && m > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "max_norm must be > 0, got {m}"
                )));
            }
        }
        Ok(())
    }
}

/// What one call to [`GradClipper::clip`] did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipReport {
    /// Global L2 norm of the gradients before clipping.
    pub norm: f64,
    /// Threshold in force (`None`: no clipping yet).
    pub threshold: Option<f64>,
    /// Whether the gradients were scaled down.
    pub clipped: bool,
    /// True when the norm is inf or NaN (gradients left untouched).
    pub non_finite: bool,
}

/// Adaptive global-norm clipper. Serialisable so its history survives a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradClipper {
    config: ClipConfig,
    history: VecDeque<f32>,
}

/// L2 norm of a flat buffer, accumulated in f64 so that large models do not lose precision.
pub fn global_norm(grads: &[f32]) -> f64 {
    // Four partial sums break the dependency chain so the loop vectorises.
    let mut acc = [0.0f64; 4];
    let chunks = grads.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f64::from(x) * f64::from(x);
        }
    }
    let tail: f64 = rest.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (acc.iter().sum::<f64>() + tail).sqrt()
}

impl GradClipper {
    /// A clipper with empty history.
    pub fn new(config: ClipConfig) -> Result<Self> {
        config.validate()?;
        Ok(GradClipper {
            config,
            history: VecDeque::new(),
        })
    }

    /// The threshold that the next call would use.
    pub fn threshold(&self) -> Option<f64> {
        let cap = self.config.max_norm.map(f64::from);
        if self.history.len() < self.config.min_history.max(1) {
            return cap;
        }
        let mut sorted: Vec<f32> = self.history.iter().copied().collect();
        sorted.sort_by(f32::total_cmp);
        // Nearest-rank percentile: cheap, and exact on the values seen.
        let rank = (f64::from(self.config.percentile) * (sorted.len() - 1) as f64).round() as usize;
        let p = f64::from(sorted[rank.min(sorted.len() - 1)]);
        let adaptive = p * f64::from(self.config.factor);
        Some(match cap {
            Some(c) => adaptive.min(c),
            None => adaptive,
        })
    }

    /// Measures the global norm of `grads`, scales them down to the threshold if above it, and
    /// records the norm.
    pub fn clip(&mut self, grads: &mut [f32]) -> Result<ClipReport> {
        if grads.is_empty() {
            return Err(Error::Empty("gradients to clip"));
        }
        Ok(self.clip_with_norm(grads, global_norm(grads)))
    }

    /// As [`GradClipper::clip`] with the global norm given: on a parameter-server shard,
    /// `grads` is one range of a vector whose norm the shards compute together, and every shard
    /// of a step gets the same norm, so their histories and thresholds stay equal.
    pub fn clip_with_norm(&mut self, grads: &mut [f32], norm: f64) -> ClipReport {
        let threshold = self.threshold();
        if !norm.is_finite() {
            return ClipReport {
                norm,
                threshold,
                clipped: false,
                non_finite: true,
            };
        }
        let mut clipped = false;
        if let Some(t) = threshold {
            if norm > t {
                // Same form as torch.nn.utils.clip_grad_norm_: coefficient t / (norm + 1e-6).
                let coef = (t / (norm + 1e-6)) as f32;
                grads.iter_mut().for_each(|g| *g *= coef);
                clipped = true;
            }
        }
        if self.history.len() == self.config.window {
            self.history.pop_front();
        }
        self.history.push_back(norm as f32);
        ClipReport {
            norm,
            threshold,
            clipped,
            non_finite: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }
}
