//! Int8 quantisation of linear layers.
//!
//! [`QuantizedLinear`] stores a linear layer's weight (`out × in`) as int8 with one symmetric
//! scale per output channel (`w ≈ scale[o] · q[o][i]`, `q ∈ [−127, 127]`) and keeps the bias in
//! f32. Its [`QuantizedLinear::forward`] quantises each activation row dynamically with its own
//! symmetric scale, runs the int8 GEMM with i32 accumulation, and rescales:
//! `y[b][o] = acc[b][o] · s_x[b] · s_w[o] + bias[o]`.
//!
//! The GEMM ([`gemm_i8`]) has AVX-512 VNNI, AVX2 and scalar paths chosen at run time
//! ([`Int8Kernel::detect`]); all three are exact, so results do not depend on the machine.
//! Large products are split over output channels across the rayon pool ([`gemm_i8_parallel`]);
//! [`QuantizedLinear::single_threaded`] keeps a layer on the calling thread.
//! [`QuantizedLinear::to_tensors`] / [`QuantizedLinear::from_tensors`] store a layer in a
//! [`crate::checkpoint`].
//!
//! The range is symmetric (−127..=127, never −128) so that negation is exact and every path sees
//! the same values.

mod gemm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use gemm::{gemm_i8, gemm_i8_parallel, gemm_i8_with, Int8Kernel, Int8Matrix};

use std::collections::BTreeMap;

use crate::checkpoint::{DType, Tensor};
use crate::error::{check_len, checked_size, Error, Result};

/// Rounds `x` (|x| ≤ 127 up to rounding) to the nearest integer, ties to even, and clamps to
/// ±127. Adding and subtracting 1.5·2²³ rounds in the FPU's default mode with plain adds, which
/// vectorise on every x86-64 (`f32::round` is a library call without SSE4.1).
#[inline]
fn round_to_i8(x: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    let r = (x + MAGIC) - MAGIC;
    r.clamp(-127.0, 127.0) as i8
}

/// Symmetric per-row int8 quantisation of a `rows × cols` f32 matrix: returns the int8 values and
/// one scale per row (`max |x| / 127`; 0 for an all-zero row). Non-finite inputs are an error.
pub fn quantize_rows(x: &[f32], rows: usize, cols: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    if rows == 0 || cols == 0 {
        return Err(Error::Empty("rows to quantise"));
    }
    check_len(
        "matrix to quantise",
        checked_size("matrix", rows, cols)?,
        x.len(),
    )?;
    let mut q = vec![0i8; x.len()];
    let mut scales = Vec::with_capacity(rows);
    for (r, (xr, qr)) in x
        .chunks_exact(cols)
        .zip(q.chunks_exact_mut(cols))
        .enumerate()
    {
        // Branch-free passes so they vectorise: the largest magnitude, and whether any value has
        // an all-ones exponent (inf or NaN).
        let mut max = 0.0f32;
        let mut non_finite = false;
        for &v in xr {
            let a = v.abs();
            max = if a > max { a } else { max };
            non_finite |= v.to_bits() & 0x7f80_0000 == 0x7f80_0000;
        }
        if non_finite {
            return Err(Error::InvalidArgument(format!(
                "row {r} holds a non-finite value"
            )));
        }
        if max == 0.0 {
            scales.push(0.0);
            continue;
        }
        let inv = 127.0 / max;
        for (qv, &v) in qr.iter_mut().zip(xr) {
            *qv = round_to_i8(v * inv);
        }
        scales.push(max / 127.0);
    }
    Ok((q, scales))
}

/// A linear layer with int8 weights (per-output-channel scales) and f32 bias.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLinear {
    weight: Int8Matrix,
    scales: Vec<f32>,
    bias: Option<Vec<f32>>,
    kernel: Int8Kernel,
    parallel: bool,
}

impl QuantizedLinear {
    /// Quantises an f32 weight (`out_features × in_features`, row-major, PyTorch's layout) and
    /// keeps `bias` (length `out_features`) in f32.
    pub fn quantize(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        let (q, scales) = quantize_rows(weight, out_features, in_features)?;
        Self::from_parts(
            q,
            scales,
            bias.map(<[f32]>::to_vec),
            out_features,
            in_features,
        )
    }

    /// Rebuilds a layer from stored parts (e.g. loaded from a checkpoint).
    pub fn from_parts(
        weight_i8: Vec<i8>,
        scales: Vec<f32>,
        bias: Option<Vec<f32>>,
        out_features: usize,
        in_features: usize,
    ) -> Result<Self> {
        let weight = Int8Matrix::new(weight_i8, out_features, in_features)?;
        check_len("quantised layer scales", out_features, scales.len())?;
        if let Some(b) = &bias {
            check_len("quantised layer bias", out_features, b.len())?;
        }
        if weight.data().contains(&i8::MIN) {
            return Err(Error::InvalidArgument(
                "int8 weights must lie in -127..=127".into(),
            ));
        }
        Ok(QuantizedLinear {
            weight,
            scales,
            bias,
            kernel: Int8Kernel::detect(),
            parallel: true,
        })
    }

    /// Uses a specific GEMM path (for tests and benchmarks); an error if the CPU lacks it.
    pub fn with_kernel(mut self, kernel: Int8Kernel) -> Result<Self> {
        if !kernel.is_supported() {
            return Err(Error::UnsupportedKernel(kernel.name()));
        }
        self.kernel = kernel;
        Ok(self)
    }

    /// Runs every forward on the calling thread (by default large products use the rayon pool).
    pub fn single_threaded(mut self) -> Self {
        self.parallel = false;
        self
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.rows()
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.cols()
    }

    /// The int8 weight, `out × in` row-major.
    pub fn weight_i8(&self) -> &[i8] {
        self.weight.data()
    }

    /// Per-output-channel scales.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The f32 bias.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The weight as f32 (`scale · q`), e.g. to measure quantisation error.
    pub fn dequantized_weight(&self) -> Vec<f32> {
        let k = self.in_features();
        self.weight
            .data()
            .chunks_exact(k)
            .zip(&self.scales)
            .flat_map(|(row, &s)| row.iter().map(move |&q| f32::from(q) * s))
            .collect()
    }

    /// Bytes the layer occupies: int8 weights, f32 scales and bias.
    pub fn size_bytes(&self) -> usize {
        self.weight.data().len()
            + 4 * self.scales.len()
            + 4 * self.bias.as_ref().map_or(0, Vec::len)
    }

    /// The layer as checkpoint tensors: `{prefix}.weight_i8` (i8, `[out, in]`),
    /// `{prefix}.scales` (f32, `[out]`) and, with a bias, `{prefix}.bias` (f32, `[out]`).
    pub fn to_tensors(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let (n, k) = (self.out_features(), self.in_features());
        let mut v = vec![
            (
                format!("{prefix}.weight_i8"),
                Tensor::from_i8(vec![n, k], self.weight.data())?,
            ),
            (
                format!("{prefix}.scales"),
                Tensor::from_f32(vec![n], &self.scales)?,
            ),
        ];
        if let Some(b) = &self.bias {
            v.push((format!("{prefix}.bias"), Tensor::from_f32(vec![n], b)?));
        }
        Ok(v)
    }

    /// Rebuilds a layer written by [`QuantizedLinear::to_tensors`]; a missing or mis-shaped
    /// tensor is an [`Error::TensorMismatch`] naming it.
    pub fn from_tensors(tensors: &BTreeMap<String, Tensor>, prefix: &str) -> Result<Self> {
        let get = |suffix: &str, dtype: DType| -> Result<Option<&Tensor>> {
            let name = format!("{prefix}.{suffix}");
            match tensors.get(&name) {
                None => Ok(None),
                Some(t) if t.dtype() == dtype => Ok(Some(t)),
                Some(t) => Err(Error::TensorMismatch {
                    name,
                    reason: format!("dtype {:?}, expected {dtype:?}", t.dtype()),
                }),
            }
        };
        let missing = |suffix: &str| Error::TensorMismatch {
            name: format!("{prefix}.{suffix}"),
            reason: "missing".into(),
        };
        let w = get("weight_i8", DType::I8)?.ok_or_else(|| missing("weight_i8"))?;
        let [n, k] = w.shape() else {
            return Err(Error::TensorMismatch {
                name: format!("{prefix}.weight_i8"),
                reason: format!("shape {:?} is not 2-D", w.shape()),
            });
        };
        let scales = get("scales", DType::F32)?
            .ok_or_else(|| missing("scales"))?
            .to_f32()?;
        let bias = get("bias", DType::F32)?.map(Tensor::to_f32).transpose()?;
        Self::from_parts(w.to_i8()?, scales, bias, *n, *k)
    }

    /// `y = x · Wᵀ + b` for `batch` rows of `in_features` activations; returns `batch ×
    /// out_features`.
    pub fn forward(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        if batch == 0 {
            return Err(Error::Empty("batch"));
        }
        let k = self.in_features();
        check_len(
            "activations",
            checked_size("activations", batch, k)?,
            x.len(),
        )?;
        let (xq, xs) = quantize_rows(x, batch, k)?;
        let acc = if self.parallel {
            gemm_i8_parallel(self.kernel, &xq, batch, &self.weight)?
        } else {
            gemm_i8_with(self.kernel, &xq, batch, &self.weight)?
        };
        let n = self.out_features();
        let mut acc = acc;
        // Rescale in place, storing each f32's bits in the i32 buffer, then reinterpret the
        // buffer: `into_iter().map().collect()` between same-sized types reuses the allocation.
        // A second output-sized buffer would make the allocator return and re-fault its pages on
        // every call, which costs more than the rescale itself.
        for (row, &sx) in acc.chunks_exact_mut(n).zip(&xs) {
            let scaled = row.iter_mut().zip(&self.scales);
            match &self.bias {
                Some(b) => scaled.zip(b).for_each(|((a, &sw), &bv)| {
                    *a = (*a as f32 * (sx * sw) + bv).to_bits() as i32;
                }),
                None => scaled.for_each(|(a, &sw)| *a = (*a as f32 * (sx * sw)).to_bits() as i32),
            }
        }
        let y: Vec<f32> = acc
            .into_iter()
            .map(|bits| f32::from_bits(bits as u32))
            .collect();
        Ok(y)
    }
}
