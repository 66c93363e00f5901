//! A parameter-server shard's optimizer on the kernels.

use flotilla_actors::training::optim::FlatOptimizer;
use flotilla_kernels::optim::{Optimizer, OptimizerConfig, OptimizerState};
use flotilla_protocol::codec;

/// Largest saved optimizer state (two moments of a 1 GiB shard fit).
const MAX_STATE_BYTES: usize = 2 << 30;

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
        codec::encode::<_, MAX_STATE_BYTES>("optimizer state", &self.inner.state())
            .unwrap_or_default()
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        let state: OptimizerState = codec::decode::<_, MAX_STATE_BYTES>("optimizer state", bytes)
            .map_err(|e| format!("optimizer state: {e}"))?;
        self.inner = self
            .config
            .restore(self.len, state)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
