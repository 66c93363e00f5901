//! The model's linear layers as int8 [`QuantizedLinear`]s (per-output-channel weight scales,
//! per-row activation scales), for the inference forward and the KV-cache decoder.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::models::config::Head;
use crate::models::Transformer;
use crate::quant::QuantizedLinear;

use super::engine::{LinearId, Linears};

/// Int8 versions of every linear layer of one model.
#[derive(Debug, Clone)]
pub struct Int8Linears {
    layers: BTreeMap<LinearId, QuantizedLinear>,
}

/// `[in, out]` (our layout) → `[out, in]` (PyTorch's, which `QuantizedLinear` takes).
fn transpose(w: &[f32], din: usize, dout: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; w.len()];
    for i in 0..din {
        for o in 0..dout {
            t[o * din + i] = w[i * dout + o];
        }
    }
    t
}

impl Int8Linears {
    /// Quantises the blocks' four linear layers and the head (a tied LM head quantises the token
    /// embedding, which is already `[vocab, width]`, i.e. `[out, in]`).
    pub fn quantize(m: &Transformer) -> Result<Self> {
        let (c, lay, p) = (m.config(), m.layout(), m.params());
        let d = c.width;
        let q = |w: usize, b: Option<usize>, din: usize, dout: usize| {
            QuantizedLinear::quantize(
                &transpose(&p[w..w + din * dout], din, dout),
                dout,
                din,
                b.map(|b| &p[b..b + dout]),
            )
        };
        let mut layers = BTreeMap::new();
        for (l, o) in lay.blocks.iter().enumerate() {
            layers.insert(LinearId::Qkv(l), q(o.w_qkv, Some(o.b_qkv), d, 3 * d)?);
            layers.insert(LinearId::Out(l), q(o.w_o, Some(o.b_o), d, d)?);
            layers.insert(LinearId::Ffn1(l), q(o.w_1, Some(o.b_1), d, c.ffn)?);
            layers.insert(LinearId::Ffn2(l), q(o.w_2, Some(o.b_2), c.ffn, d)?);
        }
        match (c.head, lay.head_w) {
            (Head::Lm { tied: false }, Some(w)) => {
                layers.insert(LinearId::Head, q(w, None, d, c.vocab)?);
            }
            (Head::Lm { .. }, _) => {
                let tok = &p[lay.tok..lay.tok + c.vocab * d];
                layers.insert(
                    LinearId::Head,
                    QuantizedLinear::quantize(tok, c.vocab, d, None)?,
                );
            }
            (Head::Classifier { classes, .. }, Some(w)) => {
                layers.insert(LinearId::Head, q(w, lay.head_b, d, classes)?);
            }
            _ => {}
        }
        Ok(Self { layers })
    }

    /// Bytes of int8 weights, scales and biases.
    pub fn size_bytes(&self) -> usize {
        self.layers.values().map(QuantizedLinear::size_bytes).sum()
    }
}

impl Linears for Int8Linears {
    fn apply(&self, id: LinearId, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let layer = self
            .layers
            .get(&id)
            .ok_or_else(|| Error::InvalidArgument(format!("no quantised layer {id:?}")))?;
        layer.forward(x, rows)
    }
}
