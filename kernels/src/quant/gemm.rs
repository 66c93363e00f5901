//! The int8 GEMM `C = A · Bᵀ` with i32 accumulation, where `A` is `m × k` activations and `B` an
//! `n × k` weight matrix (one row per output channel). Three paths give bit-identical results:
//! AVX-512 VNNI, AVX2, and a portable scalar loop; [`Int8Kernel::detect`] picks the best one the
//! CPU has at run time.

use serde::{Deserialize, Serialize};

use crate::error::{check_len, checked_size, Error, Result};

/// Which implementation runs the int8 GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Int8Kernel {
    /// Portable Rust; any CPU.
    Scalar,
    /// x86-64 AVX2: sign-extend to i16, `vpmaddwd`.
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
        Ok(Int8Matrix {
            data,
            rows,
            cols,
            row_sums,
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

    pub(crate) fn row_sums(&self) -> &[i32] {
        &self.row_sums
    }
}

/// `C = A · Bᵀ` on the detected path: `a` is `m × k` (row-major), `b` is `n × k`; returns `m × n`.
pub fn gemm_i8(a: &[i8], m: usize, b: &Int8Matrix) -> Result<Vec<i32>> {
    gemm_i8_with(Int8Kernel::detect(), a, m, b)
}

/// [`gemm_i8`] on a chosen path; an [`Error::UnsupportedKernel`] if this CPU lacks it.
pub fn gemm_i8_with(kernel: Int8Kernel, a: &[i8], m: usize, b: &Int8Matrix) -> Result<Vec<i32>> {
    if m == 0 {
        return Err(Error::Empty("int8 gemm batch"));
    }
    let k = b.cols;
    let len = m
        .checked_mul(k)
        .ok_or_else(|| Error::InvalidArgument("batch too large".into()))?;
    check_len("int8 gemm activations", len, a.len())?;
    let mut c = vec![0i32; checked_size("int8 gemm output", m, b.rows)?];
    match kernel {
        Int8Kernel::Scalar => scalar(a, m, b, &mut c),
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => {
            if !super::x86::has_avx2() {
                return Err(Error::UnsupportedKernel("avx2"));
            }
            super::x86::gemm_avx2(a, m, b, &mut c);
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni => {
            if !super::x86::has_avx512_vnni() {
                return Err(Error::UnsupportedKernel("avx512-vnni"));
            }
            super::x86::gemm_vnni(a, m, b, &mut c);
        }
        #[cfg(not(target_arch = "x86_64"))]
        other => return Err(Error::UnsupportedKernel(other.name())),
    }
    Ok(c)
}

/// The portable path: plain loops the compiler may auto-vectorise for the baseline target.
fn scalar(a: &[i8], m: usize, b: &Int8Matrix, c: &mut [i32]) {
    let (n, k) = (b.rows, b.cols);
    for i in 0..m {
        let ar = &a[i * k..(i + 1) * k];
        for (j, br) in b.data.chunks_exact(k).enumerate() {
            c[i * n + j] = ar
                .iter()
                .zip(br)
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
        }
    }
}
