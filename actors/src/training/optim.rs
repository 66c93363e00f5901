//! The optimizer boundary of a parameter-server shard and the learning-rate plan.
//!
//! The math lives in `flotilla-numerics`, which the kernels' single-process training uses too:
//! [`ShardOptimizer`] runs its AdamW or SGD over a shard's flat range and [`LrPlan`] is the
//! numerics' [`Schedule`] with a zero floor.

use flotilla_numerics::optim::{Decay, Optimizer, OptimizerConfig, OptimizerState, Schedule};
use flotilla_protocol::codec;
use flotilla_protocol::training::{AdaptiveClip, Consistency, LrSchedule};

pub use flotilla_numerics::optim::{global_norm, AdamWConfig, ClipConfig, GradClipper, SgdConfig};

/// An optimizer over one shard's flat range: parameters and gradients have the same length,
/// the one the optimizer was built for.
pub trait FlatOptimizer: Send + 'static {
    /// One update with learning rate `lr`. Errors (a length mismatch) leave `params` as they
    /// were.
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), String>;
    /// The optimizer state (moments, step count) as bytes, for checkpoints.
    fn save_state(&self) -> Vec<u8>;
    /// Replaces the state with one from [`FlatOptimizer::save_state`].
    fn load_state(&mut self, bytes: &[u8]) -> Result<(), String>;
}

/// Largest saved optimizer state (two moments of a 1 GiB shard fit).
const MAX_STATE_BYTES: usize = 2 << 30;

/// The optimizer state as a checkpoint blob holds it. The numerics' `OptimizerState` is an
/// internally tagged enum, which bincode cannot decode, and its vectors would go one float at
/// a time; this mirror is externally tagged and carries the buffers as byte strings.
#[derive(serde::Serialize, serde::Deserialize)]
enum SavedState {
    AdamW {
        step: u64,
        #[serde(with = "flotilla_protocol::floats")]
        m: Vec<f32>,
        #[serde(with = "flotilla_protocol::floats")]
        v: Vec<f32>,
    },
    Sgd {
        step: u64,
        #[serde(with = "flotilla_protocol::floats")]
        momentum: Vec<f32>,
    },
}

impl From<OptimizerState> for SavedState {
    fn from(s: OptimizerState) -> Self {
        match s {
            OptimizerState::AdamW { step, m, v } => SavedState::AdamW { step, m, v },
            OptimizerState::Sgd { step, momentum } => SavedState::Sgd { step, momentum },
        }
    }
}

impl From<SavedState> for OptimizerState {
    fn from(s: SavedState) -> Self {
        match s {
            SavedState::AdamW { step, m, v } => OptimizerState::AdamW { step, m, v },
            SavedState::Sgd { step, momentum } => OptimizerState::Sgd { step, momentum },
        }
    }
}

/// AdamW or SGD (the shared numerics') over one shard's range of the flat parameters.
pub struct ShardOptimizer {
    config: OptimizerConfig,
    len: usize,
    inner: Box<dyn Optimizer + Send + Sync>,
}

impl ShardOptimizer {
    /// A fresh optimizer for `len` parameters.
    pub fn new(config: OptimizerConfig, len: usize) -> Result<Self, String> {
        Ok(Self {
            config,
            len,
            inner: config.build(len).map_err(|e| e.to_string())?,
        })
    }

    /// SGD with momentum and coupled weight decay (PyTorch's `torch.optim.SGD`, no dampening,
    /// no Nesterov) for `len` parameters.
    pub fn sgd(len: usize, momentum: f32, weight_decay: f32) -> Result<Self, String> {
        let config = SgdConfig {
            momentum,
            weight_decay,
            ..SgdConfig::default()
        };
        Self::new(OptimizerConfig::Sgd(config), len)
    }
}

impl FlatOptimizer for ShardOptimizer {
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), String> {
        self.inner
            .step(params, grads, lr)
            .map_err(|e| e.to_string())
    }

    fn save_state(&self) -> Vec<u8> {
        // Encoding plain vectors and integers cannot fail below the cap; an empty result makes
        // `load_state` refuse the checkpoint rather than restore a wrong state.
        let saved = SavedState::from(self.inner.state());
        codec::encode::<_, MAX_STATE_BYTES>("optimizer state", &saved).unwrap_or_default()
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        let saved: SavedState = codec::decode::<_, MAX_STATE_BYTES>("optimizer state", bytes)
            .map_err(|e| format!("optimizer state: {e}"))?;
        let state = OptimizerState::from(saved);
        self.inner = self
            .config
            .restore(self.len, state)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The learning rate by optimizer update (0-based): linear warmup to `peak`, then linear or
/// cosine decay to zero at `total` updates. With `total` at or below `warmup` (0: unknown) the
/// rate stays at the peak after warmup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrPlan {
    pub peak: f32,
    pub warmup: u64,
    pub total: u64,
    pub decay: LrSchedule,
}

impl LrPlan {
    /// A constant rate.
    pub fn constant(lr: f32) -> Self {
        Self {
            peak: lr,
            warmup: 0,
            total: 0,
            decay: LrSchedule::Linear,
        }
    }

    /// The numerics' schedule that gives these rates.
    pub fn schedule(&self) -> Schedule {
        let decay = match self.decay {
            _ if self.total <= self.warmup => Decay::Constant,
            LrSchedule::Linear => Decay::Linear,
            LrSchedule::Cosine => Decay::Cosine,
        };
        Schedule {
            peak_lr: self.peak,
            warmup_steps: self.warmup,
            total_steps: self.total.max(self.warmup),
            floor_lr: 0.0,
            decay,
        }
    }

    /// The rate of update `step`.
    pub fn lr_at(&self, step: u64) -> f32 {
        self.schedule().lr_at(step)
    }
}

/// Whether the shards clip (sync: a step's mean gradient, by its global norm, so a step is the
/// same however its batch was split) rather than each trainer its own gradient (async, ssp).
pub fn shards_clip(consistency: Consistency) -> bool {
    consistency == Consistency::Sync
}

/// The clipping a job's `clip_norm` and `adaptive_clip` ask for: none, a fixed threshold, or an
/// adaptive one capped by `clip_norm`.
pub fn clip_config(clip_norm: Option<f32>, adaptive: Option<AdaptiveClip>) -> Option<ClipConfig> {
    match (clip_norm, adaptive) {
        (None, None) => None,
        (Some(max), None) => Some(ClipConfig::fixed(max)),
        (max_norm, Some(a)) => Some(ClipConfig {
            factor: a.factor,
            percentile: a.percentile,
            window: a.window as usize,
            min_history: a.min_history as usize,
            max_norm,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let mut o = ShardOptimizer::sgd(2, 0.9, 0.0).unwrap();
        let mut p = vec![1.0, -1.0];
        o.step(&mut p, &[0.5, 1.0], 0.1).unwrap();
        assert_eq!(p, vec![0.95, -1.1]);
        o.step(&mut p, &[0.5, 1.0], 0.1).unwrap();
        // v = 0.9·0.5 + 0.5 = 0.95 and 0.9·1 + 1 = 1.9.
        assert!(
            (p[0] - 0.855).abs() < 1e-6 && (p[1] + 1.29).abs() < 1e-6,
            "{p:?}"
        );
        assert!(o.step(&mut p, &[1.0], 0.1).is_err());
        assert!(
            (p[0] - 0.855).abs() < 1e-6,
            "a failed step changed parameters"
        );
    }

    #[test]
    fn sgd_minimises_a_quadratic() {
        let mut o = ShardOptimizer::sgd(3, 0.9, 0.0).unwrap();
        let target = [1.0f32, -2.0, 0.5];
        let mut p = vec![0.0; 3];
        for _ in 0..200 {
            let g: Vec<f32> = p.iter().zip(&target).map(|(a, b)| a - b).collect();
            o.step(&mut p, &g, 0.05).unwrap();
        }
        for (a, b) in p.iter().zip(&target) {
            assert!((a - b).abs() < 1e-3, "{p:?}");
        }
    }

    #[test]
    fn saved_state_restores_the_same_updates_for_adamw_and_sgd() {
        for config in [
            OptimizerConfig::AdamW(AdamWConfig::default()),
            OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                ..SgdConfig::default()
            }),
        ] {
            let mut a = ShardOptimizer::new(config, 3).unwrap();
            let mut p = vec![0.5f32, -1.0, 2.0];
            a.step(&mut p, &[0.1, -0.2, 0.3], 0.01).unwrap();
            let saved = a.save_state();
            assert!(!saved.is_empty());
            let mut b = ShardOptimizer::new(config, 3).unwrap();
            b.load_state(&saved).unwrap();
            let mut pb = p.clone();
            a.step(&mut p, &[0.2, 0.1, -0.4], 0.01).unwrap();
            b.step(&mut pb, &[0.2, 0.1, -0.4], 0.01).unwrap();
            assert_eq!(p, pb);
            assert!(
                b.load_state(&saved[..saved.len() - 1]).is_err(),
                "truncated"
            );
        }
        let mut sgd = ShardOptimizer::sgd(2, 0.9, 0.0).unwrap();
        assert!(sgd.load_state(&[0; 3]).is_err());
    }

    #[test]
    fn schedules() {
        let s = LrPlan {
            peak: 1.0,
            warmup: 4,
            total: 14,
            decay: LrSchedule::Linear,
        };
        assert_eq!(s.lr_at(0), 0.25);
        assert_eq!(s.lr_at(3), 1.0);
        assert_eq!(s.lr_at(4), 1.0);
        assert!((s.lr_at(9) - 0.5).abs() < 1e-6);
        assert_eq!(s.lr_at(14), 0.0);
        assert_eq!(s.lr_at(100), 0.0);
        let c = LrPlan {
            decay: LrSchedule::Cosine,
            ..s
        };
        assert!((c.lr_at(9) - 0.5).abs() < 1e-6);
        assert!(c.lr_at(6) > s.lr_at(6), "cosine stays high early");
        assert_eq!(LrPlan::constant(0.3).lr_at(1_000_000), 0.3);
        // An unknown total keeps the peak after warmup.
        let open = LrPlan { total: 0, ..s };
        assert_eq!(open.lr_at(1), 0.5);
        assert_eq!(open.lr_at(1_000), 1.0);
        assert!(open.schedule().validate().is_ok());
    }

    #[test]
    fn clip_settings_map_to_the_numerics_clipper() {
        assert_eq!(clip_config(None, None), None);
        assert_eq!(clip_config(Some(1.5), None), Some(ClipConfig::fixed(1.5)));
        let a = AdaptiveClip::default();
        let c = clip_config(Some(2.0), Some(a)).unwrap();
        assert_eq!((c.window, c.min_history, c.max_norm), (200, 20, Some(2.0)));
        assert_eq!(clip_config(None, Some(a)).unwrap().max_norm, None);
        // What validation accepts, the clipper accepts.
        GradClipper::new(c).unwrap();
    }
}
