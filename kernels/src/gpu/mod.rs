//! GPU kernels compiled at run time with NVRTC: the int8 GEMM and the AdamW update.
//!
//! Built only with the `cuda` feature; without it the same entry points exist and return
//! [`Error::CudaNotCompiled`] ("flotilla-kernels was built without the `cuda` feature"). With the
//! feature, the CUDA driver and NVRTC are loaded dynamically, so building never needs a CUDA
//! toolkit, and a machine without a GPU or driver gets an [`Error::Cuda`] at run time, never a
//! panic. Each kernel has a CPU reference ([`crate::quant::gemm_i8`], [`crate::optim::AdamW`])
//! and a parity test in `tests/kernels/gpu.rs`.
//!
//! ```
//! use flotilla_kernels::gpu::GpuKernels;
//! match GpuKernels::new(0) {
//!     Ok(gpu) => { /* gpu.int8_gemm(...), gpu.adamw_step(...) */ }
//!     Err(e) => println!("no GPU path: {e}"),
//! }
//! ```

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(not(feature = "cuda"))]
mod stub;

#[cfg(feature = "cuda")]
use cuda as imp;
#[cfg(not(feature = "cuda"))]
use stub as imp;

use crate::error::{check_len, checked_size, Error, Result};
use crate::optim::AdamWConfig;
use crate::quant::Int8Matrix;

/// Whether this build has the `cuda` feature.
pub const COMPILED: bool = cfg!(feature = "cuda");

/// Compiled GPU kernels on one device.
pub struct GpuKernels {
    inner: imp::Inner,
}

impl std::fmt::Debug for GpuKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuKernels")
            .field("device", &self.inner.describe())
            .finish()
    }
}

impl GpuKernels {
    /// Opens GPU `ordinal` and compiles the kernels. Errors: [`Error::CudaNotCompiled`] without
    /// the feature; [`Error::Cuda`] when no driver, NVRTC or device is found.
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(GpuKernels {
            inner: imp::Inner::new(ordinal)?,
        })
    }

    /// `C = A · Bᵀ` with i32 accumulation, as [`crate::quant::gemm_i8`]: `a` is `m × k`, `b`
    /// is `n × k`; returns `m × n`.
    pub fn int8_gemm(&self, a: &[i8], m: usize, b: &Int8Matrix) -> Result<Vec<i32>> {
        if m == 0 {
            return Err(Error::Empty("int8 gemm batch"));
        }
        let len = checked_size("int8 gemm activations", m, b.cols())?;
        check_len("int8 gemm activations", len, a.len())?;
        checked_size("int8 gemm output", m, b.rows())?;
        self.inner.int8_gemm(a, m, b)
    }

    /// One AdamW update on the GPU with the same arithmetic as [`crate::optim::AdamW`]: `step` is
    /// the 1-based index of this update (bias correction), `m` and `v` the moments, updated in
    /// place like `params`.
    #[allow(clippy::too_many_arguments)] // The buffers and scalars of one update, as named.
    pub fn adamw_step(
        &self,
        config: &AdamWConfig,
        step: u64,
        lr: f32,
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) -> Result<()> {
        config.validate()?;
        if step == 0 {
            return Err(Error::InvalidArgument("AdamW steps count from 1".into()));
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "learning rate must be >= 0, got {lr}"
            )));
        }
        let n = params.len();
        check_len("adamw grads", n, grads.len())?;
        check_len("adamw m", n, m.len())?;
        check_len("adamw v", n, v.len())?;
        if n == 0 {
            return Ok(());
        }
        let s = config.scalars(step, lr);
        self.inner.adamw_step(config, s, params, grads, m, v)
    }
}
