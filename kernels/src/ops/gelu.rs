//! GELU activations and their derivatives.
//!
//! `Erf` is the exact form BERT and PyTorch's `nn.GELU()` use; `Tanh` is GPT-2's approximation.
//! `std` has no stable `erf`, so [`erf`] uses the Numerical Recipes Chebyshev fit of `erfc`
//! (fractional error below 1.2e-7, i.e. at f32 precision).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Gelu {
    /// `0.5 x (1 + erf(x / √2))`.
    #[default]
    Erf,
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    Tanh,
}

/// The error function, accurate to f32 precision.
#[inline]
pub fn erf(x: f32) -> f32 {
    let erfc = erfc_abs(x.abs());
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

/// `1 + erf(x)`, computed without cancellation for negative `x` (where GELU's tail lives).
#[inline]
fn one_plus_erf(x: f32) -> f32 {
    let erfc = erfc_abs(x.abs());
    if x >= 0.0 {
        2.0 - erfc
    } else {
        erfc
    }
}

/// `erfc(z)` for `z >= 0`, with fractional error below 1.2e-7.
#[inline]
fn erfc_abs(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t * poly.exp()
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// GELU of one value.
#[inline]
pub fn gelu(kind: Gelu, x: f32) -> f32 {
    match kind {
        Gelu::Erf => 0.5 * x * one_plus_erf(x * INV_SQRT_2),
        // 0.5·(1 + tanh u) = σ(2u), which keeps the negative tail free of cancellation.
        Gelu::Tanh => x / (1.0 + (-2.0 * SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).exp()),
    }
}

/// d GELU / dx at one value.
#[inline]
pub fn gelu_grad(kind: Gelu, x: f32) -> f32 {
    match kind {
        Gelu::Erf => 0.5 * one_plus_erf(x * INV_SQRT_2) + x * INV_SQRT_2PI * (-0.5 * x * x).exp(),
        Gelu::Tanh => {
            let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
            let s = 1.0 / (1.0 + (-2.0 * u).exp());
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x);
            s + x * 2.0 * s * (1.0 - s) * du
        }
    }
}

const CHUNK: usize = 4096;

/// `y = gelu(x)` elementwise.
pub fn forward(kind: Gelu, x: &[f32], y: &mut [f32]) {
    y[..x.len()]
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(yc, xc)| {
            for (o, v) in yc.iter_mut().zip(xc) {
                *o = gelu(kind, *v);
            }
        });
}

/// `dx = dy * gelu'(x)` elementwise, written over `dy` in place to save a buffer.
pub fn backward_in_place(kind: Gelu, x: &[f32], dy: &mut [f32]) {
    dy[..x.len()]
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(dc, xc)| {
            for (o, v) in dc.iter_mut().zip(xc) {
                *o *= gelu_grad(kind, *v);
            }
        });
}
