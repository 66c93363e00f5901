//! GEMM on row-major `f32` slices with optional transposes, on top of the `gemm` crate.
//!
//! Large products use `gemm`'s rayon parallelism with the current pool's thread count; the small
//! per-head products of attention run single-threaded inside already-parallel tasks.

use gemm::Parallelism;

/// A strided matrix view: element `(i, j)` lives at `off + i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// Offset of element (0, 0).
    pub off: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl View {
    /// A contiguous row-major `rows x cols` matrix at `off`.
    pub fn rows(off: usize, cols: usize) -> Self {
        Self {
            off,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a contiguous row-major matrix with `cols` columns, stored at `off`.
    pub fn transposed(off: usize, cols: usize) -> Self {
        Self {
            off,
            rs: 1,
            cs: cols,
        }
    }
    /// One past the largest index touched by a `rows x cols` use of this view.
    fn end(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return self.off;
        }
        self.off + (rows - 1) * self.rs + (cols - 1) * self.cs + 1
    }
}

/// How many threads a GEMM of this size should use: small products are not worth splitting.
fn parallelism(m: usize, n: usize, k: usize, parallel: bool) -> Parallelism {
    let threads = rayon::current_num_threads();
    if parallel && threads > 1 && m * n * k >= 64 * 64 * 64 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `c[m,n] = (accumulate ? c : 0) + a[m,k] · b[k,n]` over strided views.
///
/// Panics if a view reaches outside its slice: that is a bug in the caller, and checking here is
/// what makes the raw-pointer call below sound.
#[allow(clippy::too_many_arguments)]
pub fn gemm_view(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    av: View,
    b: &[f32],
    bv: View,
    c: &mut [f32],
    cv: View,
    accumulate: bool,
    parallel: bool,
) {
    assert!(av.end(m, k) <= a.len(), "gemm: lhs view out of bounds");
    assert!(bv.end(k, n) <= b.len(), "gemm: rhs view out of bounds");
    assert!(cv.end(m, n) <= c.len(), "gemm: dst view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c[cv.off + i * cv.rs + j * cv.cs] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every index each view can reach inside its slice; `c` is a
    // unique borrow, so the destination does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr().add(cv.off),
            cv.cs as isize,
            cv.rs as isize,
            accumulate,
            a.as_ptr().add(av.off),
            av.cs as isize,
            av.rs as isize,
            b.as_ptr().add(bv.off),
            bv.cs as isize,
            bv.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, n, k, parallel),
        )
    }
}

/// Raw-pointer GEMM for tasks that write disjoint blocks of one shared destination.
///
/// # Safety
/// Every index the views reach must be inside the allocations behind the pointers, and no other
/// thread may read or write the destination block while this runs.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    av: View,
    b: *const f32,
    bv: View,
    c: *mut f32,
    cv: View,
    accumulate: bool,
) {
    // SAFETY: forwarded to the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.add(cv.off),
            cv.cs as isize,
            cv.rs as isize,
            accumulate,
            a.add(av.off),
            av.cs as isize,
            av.rs as isize,
            b.add(bv.off),
            bv.cs as isize,
            bv.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// `y[n,out] = x[n,in] · w[in,out] (+ bias)`, the forward of a linear layer.
pub fn linear_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    n: usize,
    din: usize,
    dout: usize,
) {
    match bias {
        Some(b) => {
            for row in y[..n * dout].chunks_mut(dout) {
                row.copy_from_slice(&b[..dout]);
            }
            gemm_view(
                n,
                dout,
                din,
                x,
                View::rows(0, din),
                w,
                View::rows(0, dout),
                y,
                View::rows(0, dout),
                true,
                true,
            );
        }
        None => gemm_view(
            n,
            dout,
            din,
            x,
            View::rows(0, din),
            w,
            View::rows(0, dout),
            y,
            View::rows(0, dout),
            false,
            true,
        ),
    }
}

/// Backward of [`linear_forward`]: `dw += xᵀ·dy`, `db += Σ dy`, and `dx (+)= dy·wᵀ` when asked.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
    dx_accumulate: bool,
    n: usize,
    din: usize,
    dout: usize,
) {
    gemm_view(
        din,
        dout,
        n,
        x,
        View::transposed(0, din),
        dy,
        View::rows(0, dout),
        dw,
        View::rows(0, dout),
        true,
        true,
    );
    if let Some(db) = db {
        col_sum_into(dy, n, dout, db);
    }
    if let Some(dx) = dx {
        gemm_view(
            n,
            din,
            dout,
            dy,
            View::rows(0, dout),
            w,
            View::transposed(0, dout),
            dx,
            View::rows(0, din),
            dx_accumulate,
            true,
        );
    }
}

/// `out[j] += Σ_i m[i, j]` for a row-major `rows x cols` matrix (compiled for AVX-512F when the
/// CPU has it; the additions happen in the same order either way).
pub fn col_sum_into(m: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::ops::fastmath::has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
        return unsafe { col_sum_into_avx512(m, rows, cols, out) };
    }
    col_sum_into_impl(m, rows, cols, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn col_sum_into_avx512(m: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    col_sum_into_impl(m, rows, cols, out)
}

#[inline(always)]
fn col_sum_into_impl(m: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    for row in m[..rows * cols].chunks(cols) {
        for (o, v) in out[..cols].iter_mut().zip(row) {
            *o += v;
        }
    }
}
