//! A vectorisable `exp` for the elementwise kernels.
//!
//! `f32::exp` calls libm one value at a time, and in the GELU of a training step that alone cost
//! more than all the GEMMs. This version is straight-line arithmetic that LLVM vectorises: Cody–
//! Waite range reduction `x = n·ln2 + r`, Cephes' minimax polynomial for `e^r` (about 1 ulp), and
//! `2^n` built from the exponent bits. Rounding uses the 1.5·2²³ trick so it needs no SSE4.1, and
//! the same sum gives `n` as an integer without a float-to-int conversion.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³

/// `e^x` to about 1 ulp for `x` in [-87, 88] (measured worst: 7.5e-8 relative). Arguments are
/// clamped to that range, so anything below -87 gives e^-87 ≈ 1.6e-38 rather than a smaller
/// number or zero: harmless for the softmaxes and GELU tails that use it, and it keeps the result
/// a normal float.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // `t` holds round(x·log2 e) in its low mantissa bits (its exponent is fixed by ROUND).
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from those bits by integer arithmetic: `n as i32` would be a saturating, NaN-checking
    // conversion that LLVM does one lane at a time, which made this function scalar.
    let bits = (t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23;
    e * f32::from_bits(bits)
}

/// Whether the CPU has everything the kernels' AVX-512 builds enable (`avx512f,avx2,fma`).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
}

/// Lanes of the vectorisable reductions below: two AVX2 registers (or one AVX-512 register).
const LANES: usize = 16;

/// `Σ x`, with 16 running partial sums so the loop vectorises (a single running sum is a serial
/// dependency the compiler may not reorder). The rounding differs from a left-to-right sum only
/// in the order of additions.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    fold(acc) + rest
}

/// `Σ a·b` over the common length, vectorised as [`sum`].
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    fold(acc) + rest
}

/// The largest value (NaNs are skipped; `-inf` for an empty slice), vectorised as [`sum`].
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let mut m = f32::NEG_INFINITY;
    for v in chunks.remainder() {
        if *v > m {
            m = *v;
        }
    }
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = if *v > *a { *v } else { *a };
        }
    }
    for a in acc {
        if a > m {
            m = a;
        }
    }
    m
}

/// Pairwise sum of the lane accumulators.
#[inline(always)]
fn fold(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0]
}
