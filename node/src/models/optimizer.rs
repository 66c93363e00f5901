//! A parameter-server shard's optimizer on the kernels.

use flotilla_actors::training::optim::FlatOptimizer;
use flotilla_kernels::optim::{Optimizer, OptimizerConfig, OptimizerState};
use flotilla_protocol::codec;

/// Largest saved optimizer state (two moments of a 1 GiB shard fit).
const MAX_STATE_BYTES: usize = 2 << 30;

/// The optimizer state as a checkpoint blob holds it. The kernels' `OptimizerState` is an
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

/// The kernels' AdamW or SGD over one shard's range of the flat parameters.
pub struct KernelOptimizer {
    config: OptimizerConfig,
    len: usize,
    inner: Box<dyn Optimizer + Send + Sync>,
}

impl KernelOptimizer {
    /// A fresh optimizer for `len` parameters.
    pub fn new(config: OptimizerConfig, len: usize) -> Result<Self, String> {
        Ok(Self {
            config,
            len,
            inner: config.build(len).map_err(|e| e.to_string())?,
        })
    }
}

impl FlatOptimizer for KernelOptimizer {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use flotilla_kernels::optim::{AdamWConfig, SgdConfig};

    use super::*;

    #[test]
    fn saved_state_restores_the_same_updates_for_adamw_and_sgd() {
        for config in [
            OptimizerConfig::AdamW(AdamWConfig::default()),
            OptimizerConfig::Sgd(SgdConfig::default()),
        ] {
            let mut a = KernelOptimizer::new(config, 3).unwrap();
            let mut p = vec![0.5f32, -1.0, 2.0];
            a.step(&mut p, &[0.1, -0.2, 0.3], 0.01).unwrap();
            let saved = a.save_state();
            assert!(!saved.is_empty());
            let mut b = KernelOptimizer::new(config, 3).unwrap();
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
    }
}
