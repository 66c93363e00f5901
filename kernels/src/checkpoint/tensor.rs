//! Owned tensors as stored in checkpoints, and their safetensors encoding.

use std::collections::BTreeMap;

use half::{bf16, f16};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Element types a checkpoint stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 8-bit integer (quantised weights).
    I8,
    /// Signed 32-bit integer.
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 => 1,
        }
    }

    fn to_st(self) -> StDtype {
        match self {
            DType::F32 => StDtype::F32,
            DType::F16 => StDtype::F16,
            DType::BF16 => StDtype::BF16,
            DType::I8 => StDtype::I8,
            DType::I32 => StDtype::I32,
        }
    }

    fn from_st(d: StDtype) -> Option<Self> {
        Some(match d {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            StDtype::I8 => DType::I8,
            StDtype::I32 => DType::I32,
            _ => return None,
        })
    }
}

/// What a model expects of one tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Shorthand constructor.
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<usize>) -> Self {
        TensorSpec {
            name: name.into(),
            dtype,
            shape,
        }
    }
}

/// An owned tensor: shape, element type and little-endian bytes. The constructors guarantee that
/// the byte length matches the shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn elements(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::InvalidArgument(format!("tensor shape {shape:?} overflows")))
}

impl Tensor {
    /// A tensor from raw little-endian bytes.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Self> {
        let n = elements(&shape)?;
        let len = crate::error::checked_size("tensor bytes", n, dtype.size())?;
        crate::error::check_len("tensor bytes", len, bytes.len())?;
        Ok(Tensor {
            dtype,
            shape,
            bytes,
        })
    }

    /// An f32 tensor.
    pub fn from_f32(shape: Vec<usize>, data: &[f32]) -> Result<Self> {
        Self::from_bytes(
            DType::F32,
            shape,
            data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    /// An f16 tensor.
    pub fn from_f16(shape: Vec<usize>, data: &[f16]) -> Result<Self> {
        Self::from_bytes(
            DType::F16,
            shape,
            data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    /// A bf16 tensor.
    pub fn from_bf16(shape: Vec<usize>, data: &[bf16]) -> Result<Self> {
        Self::from_bytes(
            DType::BF16,
            shape,
            data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    /// An i8 tensor.
    pub fn from_i8(shape: Vec<usize>, data: &[i8]) -> Result<Self> {
        Self::from_bytes(
            DType::I8,
            shape,
            data.iter().map(|&x| x.to_le_bytes()[0]).collect(),
        )
    }

    /// An i32 tensor.
    pub fn from_i32(shape: Vec<usize>, data: &[i32]) -> Result<Self> {
        Self::from_bytes(
            DType::I32,
            shape,
            data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// True when it has no elements.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The values as f32: exact for f32, f16 and bf16; an error for integer tensors.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::I8 | DType::I32 => {
                return Err(Error::InvalidArgument(format!(
                    "{:?} tensor read as f32",
                    self.dtype
                )))
            }
        })
    }

    /// The values of an i8 tensor.
    pub fn to_i8(&self) -> Result<Vec<i8>> {
        match self.dtype {
            DType::I8 => Ok(self.bytes.iter().map(|&b| i8::from_le_bytes([b])).collect()),
            d => Err(Error::InvalidArgument(format!("{d:?} tensor read as i8"))),
        }
    }

    /// The values of an i32 tensor.
    pub fn to_i32(&self) -> Result<Vec<i32>> {
        match self.dtype {
            DType::I32 => Ok(self
                .bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            d => Err(Error::InvalidArgument(format!("{d:?} tensor read as i32"))),
        }
    }
}

/// Encodes named tensors as one safetensors buffer.
pub(crate) fn serialize(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, t)| {
            TensorView::new(t.dtype.to_st(), t.shape.clone(), &t.bytes)
                .map(|v| (name.as_str(), v))
                .map_err(|e| Error::TensorMismatch {
                    name: name.clone(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| Error::Serde(e.to_string()))
}

/// Decodes a safetensors buffer read from `file`.
pub(crate) fn deserialize(file: &str, bytes: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::CorruptFile {
        file: file.into(),
        reason: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = DType::from_st(view.dtype()).ok_or_else(|| Error::TensorMismatch {
            name: name.clone(),
            reason: format!("unsupported dtype {:?}", view.dtype()),
        })?;
        let t = Tensor::from_bytes(dtype, view.shape().to_vec(), view.data().to_vec())?;
        out.insert(name, t);
    }
    Ok(out)
}
