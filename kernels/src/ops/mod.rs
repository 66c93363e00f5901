//! Hand-written CPU kernels for transformer training: each has a forward and a backward, works on
//! row-major `f32` slices, and is checked against a float64 reference in `tests/kernels/ops_kernels.rs`.
//!
//! - [`matmul`]: strided GEMM on top of the `gemm` crate (the one dfdx uses), with thread control.
//! - [`layer_norm`]: layer normalisation over the last axis.
//! - [`gelu`]: exact (erf) and tanh-approximated GELU.
//! - [`attention`]: fused multi-head scaled-dot-product attention over a packed QKV matrix.
//! - [`fastmath`]: a vectorisable `exp` (libm's scalar `expf` dominated the GELU).
//! - [`xent`]: fused softmax + cross-entropy, and the temperature-scaled KL of distillation.
//!
//! Rows are split across rayon's current pool; run a step inside a pool of the size you want
//! (`rayon::ThreadPoolBuilder::new().num_threads(2)`), and the GEMMs use the same count.

pub mod attention;
pub mod fastmath;
pub mod gelu;
pub mod layer_norm;
pub mod matmul;
pub(crate) mod pool;
pub mod xent;

/// A raw pointer that may be shared across rayon tasks which write disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);

// SAFETY: every user of `SendPtr` hands each task a region of the buffer no other task touches,
// and the buffer outlives the parallel section (it is borrowed mutably for its duration).
unsafe impl Send for SendPtr {}
// SAFETY: as above; the pointer itself is only copied, never used to alias a written region.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer. A method (rather than `.0`) so closures capture the whole `Send` wrapper.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Splits `rows` rows into about one chunk per thread (at least `min_rows` each) for rayon.
pub(crate) fn chunk_rows(rows: usize, min_rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(threads * 4).max(min_rows).max(1)
}
