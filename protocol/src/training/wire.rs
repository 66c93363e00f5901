//! Gradients on the wire: f32, or f16 / bf16 to halve the bytes.
//!
//! Half-precision values travel as little-endian bit patterns in a byte string: bincode writes
//! integers as varints, which would spend three bytes on most `u16` bit patterns.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use super::spec::Precision;

/// A flat gradient (or a range of one) in the precision it was sent in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GradPayload {
    /// 4 little-endian bytes a value.
    F32(#[serde(with = "crate::floats")] Vec<f32>),
    /// IEEE half precision, 2 little-endian bytes a value.
    F16(#[serde(with = "serde_bytes")] Vec<u8>),
    /// bfloat16, 2 little-endian bytes a value.
    Bf16(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl GradPayload {
    /// Encodes `grad` in `precision` (round to nearest even; f16 overflows become ±inf, which
    /// [`GradPayload::is_finite`] then reports).
    pub fn encode(grad: &[f32], precision: Precision) -> GradPayload {
        match precision {
            Precision::F32 => GradPayload::F32(grad.to_vec()),
            Precision::F16 => GradPayload::F16(
                grad.iter()
                    .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
                    .collect(),
            ),
            Precision::Bf16 => GradPayload::Bf16(
                grad.iter()
                    .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
                    .collect(),
            ),
        }
    }

    /// The precision this payload was sent in.
    pub fn precision(&self) -> Precision {
        match self {
            GradPayload::F32(_) => Precision::F32,
            GradPayload::F16(_) => Precision::F16,
            GradPayload::Bf16(_) => Precision::Bf16,
        }
    }

    /// Values held; a half payload with an odd byte count is malformed and reports `None`.
    pub fn len(&self) -> Option<usize> {
        match self {
            GradPayload::F32(v) => Some(v.len()),
            GradPayload::F16(b) | GradPayload::Bf16(b) => {
                b.len().is_multiple_of(2).then_some(b.len() / 2)
            }
        }
    }

    /// True when it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The values as f32 (exact for f16 and bf16); `None` when the payload is malformed.
    pub fn decode(&self) -> Option<Vec<f32>> {
        match self {
            GradPayload::F32(v) => Some(v.clone()),
            GradPayload::F16(b) => halves(b, |bits| f16::from_bits(bits).to_f32()),
            GradPayload::Bf16(b) => halves(b, |bits| bf16::from_bits(bits).to_f32()),
        }
    }

    /// Whether every value is finite (false for a malformed payload).
    pub fn is_finite(&self) -> bool {
        match self {
            GradPayload::F32(v) => v.iter().all(|x| x.is_finite()),
            GradPayload::F16(b) => {
                b.len().is_multiple_of(2)
                    && b.chunks_exact(2)
                        .all(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).is_finite())
            }
            GradPayload::Bf16(b) => {
                b.len().is_multiple_of(2)
                    && b.chunks_exact(2)
                        .all(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).is_finite())
            }
        }
    }
}

fn halves(bytes: &[u8], to_f32: impl Fn(u16) -> f32) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(2)
            .map(|c| to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
    )
}
