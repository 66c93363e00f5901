//! The int8 GEMM `C = A · Bᵀ` with i32 accumulation, where `A` is `m × k` activations and `B` an
//! `n × k` weight matrix (one row per output channel). Three paths give bit-identical results:
//! AVX-512 VNNI, AVX2, and a portable scalar loop; [`Int8Kernel::detect`] picks the best one the
//! CPU has at run time.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{check_len, checked_size, Error, Result};

/// Which implementation runs the int8 GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Int8Kernel {
    /// Portable Rust; any CPU.
    Scalar,
    /// x86-64 AVX2: `vpmaddubsw` on 32 bytes at a time for inputs in −127..=127, sign-extension
    /// and `vpmaddwd` when a −128 is present.
    Avx2,
    /// x86-64 AVX-512 VNNI: `vpdpbusd` on 64 bytes at a time.
    Avx512Vnni,
}

impl Int8Kernel {
    /// The fastest path this CPU supports.
    pub fn detect() -> Self {
        let all = Self::available();
        all.last().copied().unwrap_or(Int8Kernel::Scalar)
    }

    /// Every path this CPU supports, slowest first (always starts with `Scalar`).
    pub fn available() -> Vec<Self> {
        let mut v = vec![Int8Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if super::x86::has_avx2() {
                v.push(Int8Kernel::Avx2);
            }
            if super::x86::has_avx512_vnni() {
                v.push(Int8Kernel::Avx512Vnni);
            }
        }
        v
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        Self::available().contains(&self)
    }

    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Scalar => "scalar",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Avx512Vnni => "avx512-vnni",
        }
    }
}

/// An int8 weight matrix (`rows × cols`, row-major), with the per-row sums the VNNI path needs:
/// `vpdpbusd` multiplies unsigned by signed bytes, so activations are offset by +128 and
/// `128 · Σ b` is subtracted afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    data: Vec<i8>,
    rows: usize,
    cols: usize,
    row_sums: Vec<i32>,
    /// No element is -128 (enables the AVX2 path's faster instruction sequence).
    no_min: bool,
}

impl Int8Matrix {
    /// Wraps `data` (`rows × cols`, row-major).
    pub fn new(data: Vec<i8>, rows: usize, cols: usize) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(Error::InvalidArgument(format!(
                "int8 matrix of {rows} × {cols}"
            )));
        }
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::InvalidArgument("matrix too large".into()))?;
        check_len("int8 matrix data", n, data.len())?;
        let row_sums = data
            .chunks_exact(cols)
            .map(|r| r.iter().map(|&x| i32::from(x)).sum())
            .collect();
        let no_min = !data.contains(&i8::MIN);
        Ok(Int8Matrix {
            data,
            rows,
            cols,
            row_sums,
            no_min,
        })
    }

    /// Rows (output channels).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (the reduction dimension `k`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values, row-major.
    pub fn data(&self) -> &[i8] {
        &self.data
    }

    /// All rows as a kernel operand.
    pub(crate) fn view(&self) -> Rows<'_> {
        self.block(0, self.rows)
    }

    /// Rows `j0..j1` as a kernel operand.
    fn block(&self, j0: usize, j1: usize) -> Rows<'_> {
        Rows {
            data: &self.data[j0 * self.cols..j1 * self.cols],
            sums: &self.row_sums[j0..j1],
            k: self.cols,
            no_min: self.no_min,
        }
    }
}

/// Consecutive rows of an [`Int8Matrix`]: what each kernel multiplies by. Parallel runs hand
/// each thread a block of output channels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows<'a> {
    data: &'a [i8],
    sums: &'a [i32],
    k: usize,
    no_min: bool,
}

impl Rows<'_> {
    pub(crate) fn rows(&self) -> usize {
        self.sums.len()
    }

    pub(crate) fn cols(&self) -> usize {
        self.k
    }

    pub(crate) fn data(&self) -> &[i8] {
        self.data
    }

    pub(crate) fn row_sums(&self) -> &[i32] {
        self.sums
    }

    pub(crate) fn no_min(&self) -> bool {
        self.no_min
    }
}

/// Below this many multiply-adds a GEMM runs on the calling thread: splitting it would cost
/// more in scheduling than it saves (about 10 µs of work on one core).
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// `C = A · Bᵀ` on the detected path, using the rayon pool for large products: `a` is `m × k`
/// (row-major), `b` is `n × k`; returns `m × n`.
pub fn gemm_i8(a: &[i8], m: usize, b: &Int8Matrix) -> Result<Vec<i32>> {
    gemm_i8_parallel(Int8Kernel::detect(), a, m, b)
}

/// [`gemm_i8_with`] split over output channels across the rayon pool when the product is large
/// enough to gain from it. Results are identical to the single-threaded run.
pub fn gemm_i8_parallel(
    kernel: Int8Kernel,
    a: &[i8],
    m: usize,
    b: &Int8Matrix,
) -> Result<Vec<i32>> {
    let threads = rayon::current_num_threads();
    let macs = m.saturating_mul(b.rows).saturating_mul(b.cols);
    if threads < 2 || macs < PARALLEL_MIN_MACS || b.rows < 8 {
        return gemm_i8_with(kernel, a, m, b);
    }
    check_args(kernel, a, m, b)?;
    let n = b.rows;
    // A few blocks per thread balance uneven progress; multiples of 4 keep the SIMD kernels'
    // four-row blocks whole.
    let block = n.div_ceil(threads * 4).next_multiple_of(4).max(4);
    let parts: Vec<(usize, Vec<i32>)> = (0..n)
        .step_by(block)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|j0| {
            let j1 = (j0 + block).min(n);
            let mut c = vec![0i32; m * (j1 - j0)];
            run(kernel, a, m, b.block(j0, j1), &mut c);
            (j0, c)
        })
        .collect();
    let mut c = vec![0i32; m * n];
    for (j0, part) in parts {
        let nb = part.len() / m;
        for (dst, src) in c.chunks_exact_mut(n).zip(part.chunks_exact(nb)) {
            dst[j0..j0 + nb].copy_from_slice(src);
        }
    }
    Ok(c)
}

/// `C = A · Bᵀ` on a chosen path, on the calling thread; an [`Error::UnsupportedKernel`] if this
/// CPU lacks the path.
pub fn gemm_i8_with(kernel: Int8Kernel, a: &[i8], m: usize, b: &Int8Matrix) -> Result<Vec<i32>> {
    check_args(kernel, a, m, b)?;
    let mut c = vec![0i32; checked_size("int8 gemm output", m, b.rows)?];
    run(kernel, a, m, b.view(), &mut c);
    Ok(c)
}

/// Shapes and CPU support, checked once so that the kernels can index freely.
fn check_args(kernel: Int8Kernel, a: &[i8], m: usize, b: &Int8Matrix) -> Result<()> {
    if m == 0 {
        return Err(Error::Empty("int8 gemm batch"));
    }
    let len = checked_size("int8 gemm activations", m, b.cols)?;
    check_len("int8 gemm activations", len, a.len())?;
    checked_size("int8 gemm output", m, b.rows)?;
    if !kernel.is_supported() {
        return Err(Error::UnsupportedKernel(kernel.name()));
    }
    Ok(())
}

/// Runs a kernel whose support and shapes have been checked: `c` is `m × b.rows()`.
fn run(kernel: Int8Kernel, a: &[i8], m: usize, b: Rows<'_>, c: &mut [i32]) {
    match kernel {
        // SAFETY (both SIMD arms): `check_args` verified that the CPU has the path and that `a`
        // holds m·k values; every caller sizes `c` as m × b.rows().
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => unsafe { super::x86::gemm_avx2(a, m, b, c) },
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni => unsafe { super::x86::gemm_vnni(a, m, b, c) },
        // Unsupported paths were refused by `check_args`; off x86-64 only the scalar path exists.
        _ => scalar(a, m, b, c),
    }
}

/// The portable path: plain loops the compiler may auto-vectorise for the baseline target.
fn scalar(a: &[i8], m: usize, b: Rows<'_>, c: &mut [i32]) {
    let (n, k) = (b.rows(), b.cols());
    for i in 0..m {
        let ar = &a[i * k..(i + 1) * k];
        for (j, br) in b.data().chunks_exact(k).enumerate() {
            c[i * n + j] = ar
                .iter()
                .zip(br)
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
        }
    }
}
