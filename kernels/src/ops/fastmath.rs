//! A vectorisable `exp` for the elementwise kernels.
//!
//! `f32::exp` calls libm one value at a time, and in the GELU of a training step that alone cost
//! more than all the GEMMs. This version is straight-line arithmetic that LLVM vectorises: Cody–
//! Waite range reduction `x = n·ln2 + r`, Cephes' minimax polynomial for `e^r` (about 1 ulp), and
//! `2^n` built from the exponent bits. Rounding uses the 1.5·2²³ trick so it needs no SSE4.1.

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
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let bits = ((n as i32 + 127) as u32) << 23;
    e * f32::from_bits(bits)
}
