//! GELU activations and their derivatives.
//!
//! `Erf` is the exact form BERT and PyTorch's `nn.GELU()` use; `Tanh` is GPT-2's approximation.
//! `std` has no stable `erf`, so [`erf`] uses the Numerical Recipes Chebyshev fit of `erfc`
//! (fractional error below 1.2e-7, i.e. at f32 precision).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::fastmath::exp;

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
#[inline(always)]
fn one_plus_erf(x: f32) -> f32 {
    let erfc = erfc_abs(x.abs());
    if x >= 0.0 {
        2.0 - erfc
    } else {
        erfc
    }
}

/// `erfc(z)` for `z >= 0`, with fractional error below 1.2e-7.
#[inline(always)]
fn erfc_abs(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    t * exp(poly)
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// GELU of one value.
#[inline(always)]
pub fn gelu(kind: Gelu, x: f32) -> f32 {
    match kind {
        Gelu::Erf => 0.5 * x * one_plus_erf(x * INV_SQRT_2),
        // 0.5·(1 + tanh u) = σ(2u), which keeps the negative tail free of cancellation.
        Gelu::Tanh => x / (1.0 + exp(-2.0 * SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x))),
    }
}

/// GELU and its derivative at one value, sharing the erf (or sigmoid) evaluation.
#[inline(always)]
pub fn gelu_and_grad(kind: Gelu, x: f32) -> (f32, f32) {
    match kind {
        Gelu::Erf => {
            let cdf2 = one_plus_erf(x * INV_SQRT_2);
            (
                0.5 * x * cdf2,
                0.5 * cdf2 + x * INV_SQRT_2PI * exp(-0.5 * x * x),
            )
        }
        Gelu::Tanh => {
            let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
            let s = 1.0 / (1.0 + exp(-2.0 * u));
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x);
            (x * s, s + x * 2.0 * s * (1.0 - s) * du)
        }
    }
}

/// d GELU / dx at one value.
#[inline(always)]
pub fn gelu_grad(kind: Gelu, x: f32) -> f32 {
    match kind {
        Gelu::Erf => 0.5 * one_plus_erf(x * INV_SQRT_2) + x * INV_SQRT_2PI * exp(-0.5 * x * x),
        Gelu::Tanh => {
            let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
            let s = 1.0 / (1.0 + exp(-2.0 * u));
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
            simd::dispatch_forward(kind, xc, yc);
        });
}

/// `y = gelu(x)` and `dydx = gelu'(x)` in one pass: the backward then only multiplies, and the
/// erf/exp work is shared between value and derivative.
pub fn forward_with_grad(kind: Gelu, x: &[f32], y: &mut [f32], dydx: &mut [f32]) {
    y[..x.len()]
        .par_chunks_mut(CHUNK)
        .zip(dydx[..x.len()].par_chunks_mut(CHUNK))
        .zip(x.par_chunks(CHUNK))
        .for_each(|((yc, gc), xc)| simd::dispatch_forward_with_grad(kind, xc, yc, gc));
}

/// `dx = dy * gelu'(x)` elementwise, written over `dy` in place to save a buffer.
pub fn backward_in_place(kind: Gelu, x: &[f32], dy: &mut [f32]) {
    dy[..x.len()]
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(dc, xc)| {
            simd::dispatch_backward(kind, xc, dc);
        });
}

/// `dy *= dydx` elementwise: the backward from the derivative [`forward_with_grad`] saved.
pub fn backward_saved(dydx: &[f32], dy: &mut [f32]) {
    dy[..dydx.len()]
        .par_chunks_mut(CHUNK)
        .zip(dydx.par_chunks(CHUNK))
        .for_each(|(dc, gc)| simd::dispatch_mul(gc, dc));
}

/// The same loops compiled three times: for the baseline target, with AVX2 + FMA and with
/// AVX-512F, chosen at run time, because the crate is built for baseline x86-64 (SSE2) and these
/// loops are arithmetic-bound (AVX-512 halves the fused forward's time on a Zen 4 EPYC).
mod simd {
    use super::{gelu, gelu_and_grad, gelu_grad, Gelu};

    #[inline(always)]
    fn fwd(kind: Gelu, x: &[f32], y: &mut [f32]) {
        for (o, v) in y.iter_mut().zip(x) {
            *o = gelu(kind, *v);
        }
    }

    #[inline(always)]
    fn bwd(kind: Gelu, x: &[f32], d: &mut [f32]) {
        for (o, v) in d.iter_mut().zip(x) {
            *o *= gelu_grad(kind, *v);
        }
    }

    #[inline(always)]
    fn fwd_grad(kind: Gelu, x: &[f32], y: &mut [f32], g: &mut [f32]) {
        for ((o, d), v) in y.iter_mut().zip(g.iter_mut()).zip(x) {
            let (val, der) = gelu_and_grad(kind, *v);
            *o = val;
            *d = der;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fwd_grad_avx2(kind: Gelu, x: &[f32], y: &mut [f32], g: &mut [f32]) {
        fwd_grad(kind, x, y, g)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn fwd_grad_avx512(kind: Gelu, x: &[f32], y: &mut [f32], g: &mut [f32]) {
        fwd_grad(kind, x, y, g)
    }

    pub(super) fn dispatch_forward_with_grad(kind: Gelu, x: &[f32], y: &mut [f32], g: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::ops::fastmath::has_avx512() {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
            return unsafe { fwd_grad_avx512(kind, x, y, g) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { fwd_grad_avx2(kind, x, y, g) };
        }
        fwd_grad(kind, x, y, g)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fwd_avx2(kind: Gelu, x: &[f32], y: &mut [f32]) {
        fwd(kind, x, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bwd_avx2(kind: Gelu, x: &[f32], d: &mut [f32]) {
        bwd(kind, x, d)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn fwd_avx512(kind: Gelu, x: &[f32], y: &mut [f32]) {
        fwd(kind, x, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn bwd_avx512(kind: Gelu, x: &[f32], d: &mut [f32]) {
        bwd(kind, x, d)
    }

    pub(super) fn dispatch_forward(kind: Gelu, x: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::ops::fastmath::has_avx512() {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
            return unsafe { fwd_avx512(kind, x, y) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { fwd_avx2(kind, x, y) };
        }
        fwd(kind, x, y)
    }

    #[inline(always)]
    fn mul(g: &[f32], d: &mut [f32]) {
        for (o, v) in d.iter_mut().zip(g) {
            *o *= v;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn mul_avx512(g: &[f32], d: &mut [f32]) {
        mul(g, d)
    }

    /// Every build this CPU can run gives the portable build's values and derivatives (to
    /// rounding), so the AVX2 build is checked even where AVX-512 would be picked.
    #[cfg(all(test, target_arch = "x86_64"))]
    #[test]
    fn every_build_matches_the_portable_one() {
        let x: Vec<f32> = (0..517).map(|i| (i as f32 - 258.0) / 40.0).collect();
        for kind in [Gelu::Erf, Gelu::Tanh] {
            let run = |f: &dyn Fn(&mut [f32], &mut [f32])| {
                let (mut y, mut g) = (vec![0.0; x.len()], vec![0.0; x.len()]);
                f(&mut y, &mut g);
                (y, g)
            };
            let portable = run(&|y, g| fwd_grad(kind, &x, y, g));
            let mut builds = Vec::new();
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                builds.push((
                    "avx2",
                    run(&|y, g| unsafe { fwd_grad_avx2(kind, &x, y, g) }),
                ));
            }
            if crate::ops::fastmath::has_avx512() {
                // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
                builds.push((
                    "avx512",
                    run(&|y, g| unsafe { fwd_grad_avx512(kind, &x, y, g) }),
                ));
            }
            for (name, (y, g)) in builds {
                for i in 0..x.len() {
                    assert!(
                        (y[i] - portable.0[i]).abs() <= 1e-5 * (1.0 + portable.0[i].abs()),
                        "{name} {kind:?} y[{i}]"
                    );
                    assert!(
                        (g[i] - portable.1[i]).abs() <= 1e-5 * (1.0 + portable.1[i].abs()),
                        "{name} {kind:?} g[{i}]"
                    );
                }
            }
        }
    }

    pub(super) fn dispatch_mul(g: &[f32], d: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::ops::fastmath::has_avx512() {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
            return unsafe { mul_avx512(g, d) };
        }
        mul(g, d)
    }

    pub(super) fn dispatch_backward(kind: Gelu, x: &[f32], d: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::ops::fastmath::has_avx512() {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
            return unsafe { bwd_avx512(kind, x, d) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { bwd_avx2(kind, x, d) };
        }
        bwd(kind, x, d)
    }
}
