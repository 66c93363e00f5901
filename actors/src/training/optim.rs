//! The optimizer boundary of a parameter-server shard, the learning-rate schedule, and SGD with
//! momentum as a reference optimizer.
//!
//! `flotilla-node` implements [`FlatOptimizer`] with the kernels' AdamW and SGD (this crate does
//! not depend on the kernels); [`SgdMomentum`] is a complete optimizer of its own so that the
//! cores, the simulator and the tests train real models.

use flotilla_protocol::training::LrSchedule;

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

/// SGD with momentum and coupled weight decay, as PyTorch's `torch.optim.SGD` (no dampening,
/// no Nesterov): `g += wd·p; v = μ·v + g; p -= lr·v`.
#[derive(Debug, Clone, PartialEq)]
pub struct SgdMomentum {
    pub momentum: f32,
    pub weight_decay: f32,
    velocity: Vec<f32>,
}

impl SgdMomentum {
    /// A fresh optimizer for `len` parameters.
    pub fn new(len: usize, momentum: f32, weight_decay: f32) -> Self {
        Self {
            momentum,
            weight_decay,
            velocity: vec![0.0; len],
        }
    }
}

impl FlatOptimizer for SgdMomentum {
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), String> {
        let n = self.velocity.len();
        if params.len() != n || grads.len() != n {
            return Err(format!(
                "optimizer serves {n} values, got {} parameters and {} gradients",
                params.len(),
                grads.len()
            ));
        }
        for ((p, &g), v) in params.iter_mut().zip(grads).zip(&mut self.velocity) {
            let g = g + self.weight_decay * *p;
            *v = self.momentum * *v + g;
            *p -= lr * *v;
        }
        Ok(())
    }

    fn save_state(&self) -> Vec<u8> {
        self.velocity.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.len() != self.velocity.len() * 4 {
            return Err(format!(
                "state of {} bytes for {} values",
                bytes.len(),
                self.velocity.len()
            ));
        }
        for (v, c) in self.velocity.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }
}

/// The learning rate by optimizer update (0-based): linear warmup to `peak`, then linear or
/// cosine decay to zero at `total` updates. With `total == 0` (unknown) the rate stays at the
/// peak after warmup. Same shape as the kernels' `Schedule` with a zero floor.
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

    /// The rate of update `step`.
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup {
            return self.peak * (step + 1) as f32 / self.warmup as f32;
        }
        if self.total <= self.warmup {
            return self.peak;
        }
        let p = ((step - self.warmup) as f64 / (self.total - self.warmup) as f64).min(1.0);
        let f = match self.decay {
            LrSchedule::Linear => 1.0 - p,
            LrSchedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        };
        (f64::from(self.peak) * f) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let mut o = SgdMomentum::new(2, 0.9, 0.0);
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
        let mut restored = SgdMomentum::new(2, 0.9, 0.0);
        restored.load_state(&o.save_state()).unwrap();
        assert_eq!(restored, o);
        assert!(restored.load_state(&[0; 3]).is_err());
    }

    #[test]
    fn sgd_minimises_a_quadratic() {
        let mut o = SgdMomentum::new(3, 0.9, 0.0);
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
    }
}
