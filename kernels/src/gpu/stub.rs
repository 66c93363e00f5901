//! The GPU entry points of a build without the `cuda` feature: each returns
//! [`Error::CudaNotCompiled`].

use crate::error::{Error, Result};
use crate::optim::{AdamWConfig, AdamWScalars};
use crate::quant::Int8Matrix;

/// Never constructed: [`Inner::new`] always fails.
pub(super) struct Inner {
    _private: (),
}

impl Inner {
    pub(super) fn new(_ordinal: usize) -> Result<Self> {
        Err(Error::CudaNotCompiled)
    }

    pub(super) fn describe(&self) -> String {
        "none (built without the `cuda` feature)".into()
    }

    pub(super) fn int8_gemm(&self, _a: &[i8], _m: usize, _b: &Int8Matrix) -> Result<Vec<i32>> {
        Err(Error::CudaNotCompiled)
    }

    pub(super) fn adamw_step(
        &self,
        _config: &AdamWConfig,
        _s: AdamWScalars,
        _params: &mut [f32],
        _grads: &[f32],
        _m: &mut [f32],
        _v: &mut [f32],
    ) -> Result<()> {
        Err(Error::CudaNotCompiled)
    }
}
