//! f16 / bf16 conversion of flat buffers for mixed precision: compute copies in half precision,
//! master weights and optimizer state in f32. The `half` crate's slice conversions use F16C / NEON
//! where the CPU has them.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::error::{check_len, Result};

/// f32 → f16 (round to nearest even; out-of-range values become ±inf).
pub fn to_f16(src: &[f32]) -> Vec<f16> {
    let mut dst = vec![f16::ZERO; src.len()];
    dst.convert_from_f32_slice(src);
    dst
}

/// f16 → f32 (exact).
pub fn from_f16(src: &[f16]) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    src.convert_to_f32_slice(&mut dst);
    dst
}

/// f32 → bf16 (round to nearest even).
pub fn to_bf16(src: &[f32]) -> Vec<bf16> {
    let mut dst = vec![bf16::ZERO; src.len()];
    dst.convert_from_f32_slice(src);
    dst
}

/// bf16 → f32 (exact).
pub fn from_bf16(src: &[bf16]) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    src.convert_to_f32_slice(&mut dst);
    dst
}

/// f32 → f16 into an existing buffer of the same length.
pub fn to_f16_into(src: &[f32], dst: &mut [f16]) -> Result<()> {
    check_len("f16 destination", src.len(), dst.len())?;
    dst.convert_from_f32_slice(src);
    Ok(())
}

/// f16 → f32 into an existing buffer of the same length.
pub fn from_f16_into(src: &[f16], dst: &mut [f32]) -> Result<()> {
    check_len("f32 destination", src.len(), dst.len())?;
    src.convert_to_f32_slice(dst);
    Ok(())
}

/// f32 → bf16 into an existing buffer of the same length.
pub fn to_bf16_into(src: &[f32], dst: &mut [bf16]) -> Result<()> {
    check_len("bf16 destination", src.len(), dst.len())?;
    dst.convert_from_f32_slice(src);
    Ok(())
}

/// bf16 → f32 into an existing buffer of the same length.
pub fn from_bf16_into(src: &[bf16], dst: &mut [f32]) -> Result<()> {
    check_len("f32 destination", src.len(), dst.len())?;
    src.convert_to_f32_slice(dst);
    Ok(())
}

/// Rounds an f32 buffer through f16 in place: what a value looks like after an f16 round trip.
pub fn round_through_f16(buf: &mut [f32]) {
    buf.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
}

/// Rounds an f32 buffer through bf16 in place.
pub fn round_through_bf16(buf: &mut [f32]) {
    buf.iter_mut()
        .for_each(|x| *x = bf16::from_f32(*x).to_f32());
}
