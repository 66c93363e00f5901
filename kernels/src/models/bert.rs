//! The BERT architecture loaded from a Hugging Face folder (`config.json` + `model.safetensors`).
//!
//! BERT is the post-LN [`Transformer`] with token-type embeddings and an embedding layer norm.
//! Hugging Face stores linear weights `[out, in]` and Q, K, V separately; loading transposes them
//! and packs Q, K, V into one `[d, 3d]` matrix. Every tensor is checked by name, shape and dtype
//! against the config before it is copied, and the error names the tensor that disagrees.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ops::gelu::Gelu;

use super::config::{Head, NormPlacement, TransformerConfig};
use super::transformer::Transformer;

/// `architectures` values this loader accepts (all share BERT's encoder weights).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "BertModel",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
];

/// Reads `config.json` into a transformer configuration with the given head.
pub fn read_config(dir: &Path, head: Head) -> Result<TransformerConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let supported = || {
        format!(
            "model_type \"bert\" with architectures {}",
            SUPPORTED_ARCHITECTURES.join(", ")
        )
    };
    let model_type = v
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("(none)");
    if model_type != "bert" {
        return Err(Error::UnsupportedModel {
            got: format!("model_type {model_type:?}"),
            supported: supported(),
        });
    }
    if let Some(archs) = v.get("architectures").and_then(Value::as_array) {
        let names: Vec<&str> = archs.iter().filter_map(Value::as_str).collect();
        if !names.iter().any(|a| SUPPORTED_ARCHITECTURES.contains(a)) {
            return Err(Error::UnsupportedModel {
                got: format!("architectures {names:?}"),
                supported: supported(),
            });
        }
    }
    let num = |key: &str| -> Result<usize> {
        v.get(key)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| Error::Parse {
                path: path.clone(),
                message: format!("missing or non-integer {key:?}"),
            })
    };
    let gelu = match v
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("gelu")
    {
        "gelu" => Gelu::Erf,
        "gelu_new" | "gelu_pytorch_tanh" => Gelu::Tanh,
        other => {
            return Err(Error::UnsupportedModel {
                got: format!("hidden_act {other:?}"),
                supported: "hidden_act gelu, gelu_new, gelu_pytorch_tanh".into(),
            })
        }
    };
    let pos_type = v
        .get("position_embedding_type")
        .and_then(Value::as_str)
        .unwrap_or("absolute");
    if pos_type != "absolute" {
        return Err(Error::UnsupportedModel {
            got: format!("position_embedding_type {pos_type:?}"),
            supported: "position_embedding_type absolute".into(),
        });
    }
    let cfg = TransformerConfig {
        vocab: num("vocab_size")?,
        context: num("max_position_embeddings")?,
        width: num("hidden_size")?,
        heads: num("num_attention_heads")?,
        layers: num("num_hidden_layers")?,
        ffn: num("intermediate_size")?,
        causal: false,
        norm: NormPlacement::Post,
        ln_eps: v
            .get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-12) as f32,
        gelu,
        type_vocab: num("type_vocab_size").unwrap_or(2).max(1),
        head,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Loads a BERT folder. A classifier head is not in the checkpoint: it starts from `seed`'s
/// random initialisation (N(0, 0.02) weights, zero bias).
pub fn load(dir: &Path, head: Head, seed: u64) -> Result<Transformer> {
    let cfg = read_config(dir, head)?;
    let mut model = Transformer::new(cfg.clone(), seed)?;
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    // Checkpoints saved from task models prefix the encoder's names with `bert.`.
    let prefix = if st.names().iter().any(|n| n.starts_with("bert.")) {
        "bert."
    } else {
        ""
    };
    let loader = Loader {
        st: &st,
        path: &path,
        prefix,
    };
    let layout = model.layout().clone();
    let d = cfg.width;
    let p = model.params_mut();
    let mut put = |off: usize, vals: Vec<f32>| p[off..off + vals.len()].copy_from_slice(&vals);
    put(
        layout.tok,
        loader.get("embeddings.word_embeddings.weight", &[cfg.vocab, d])?,
    );
    put(
        layout.pos,
        loader.get("embeddings.position_embeddings.weight", &[cfg.context, d])?,
    );
    if let Some(t) = layout.typ {
        put(
            t,
            loader.get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab, d],
            )?,
        );
    }
    if let Some((g, b)) = layout.emb_ln {
        put(g, loader.get("embeddings.LayerNorm.weight", &[d])?);
        put(b, loader.get("embeddings.LayerNorm.bias", &[d])?);
    }
    for (l, o) in layout.blocks.iter().enumerate() {
        let n = |s: &str| format!("encoder.layer.{l}.{s}");
        let q = loader.get(&n("attention.self.query.weight"), &[d, d])?;
        let k = loader.get(&n("attention.self.key.weight"), &[d, d])?;
        let v = loader.get(&n("attention.self.value.weight"), &[d, d])?;
        let mut qkv = vec![0.0f32; d * 3 * d];
        for (part, w) in [q, k, v].iter().enumerate() {
            for out in 0..d {
                for inp in 0..d {
                    qkv[inp * 3 * d + part * d + out] = w[out * d + inp];
                }
            }
        }
        put(o.w_qkv, qkv);
        let mut bqkv = loader.get(&n("attention.self.query.bias"), &[d])?;
        bqkv.extend(loader.get(&n("attention.self.key.bias"), &[d])?);
        bqkv.extend(loader.get(&n("attention.self.value.bias"), &[d])?);
        put(o.b_qkv, bqkv);
        put(
            o.w_o,
            transpose(
                &loader.get(&n("attention.output.dense.weight"), &[d, d])?,
                d,
                d,
            ),
        );
        put(o.b_o, loader.get(&n("attention.output.dense.bias"), &[d])?);
        put(
            o.ln1_g,
            loader.get(&n("attention.output.LayerNorm.weight"), &[d])?,
        );
        put(
            o.ln1_b,
            loader.get(&n("attention.output.LayerNorm.bias"), &[d])?,
        );
        put(
            o.w_1,
            transpose(
                &loader.get(&n("intermediate.dense.weight"), &[cfg.ffn, d])?,
                cfg.ffn,
                d,
            ),
        );
        put(
            o.b_1,
            loader.get(&n("intermediate.dense.bias"), &[cfg.ffn])?,
        );
        put(
            o.w_2,
            transpose(
                &loader.get(&n("output.dense.weight"), &[d, cfg.ffn])?,
                d,
                cfg.ffn,
            ),
        );
        put(o.b_2, loader.get(&n("output.dense.bias"), &[d])?);
        put(o.ln2_g, loader.get(&n("output.LayerNorm.weight"), &[d])?);
        put(o.ln2_b, loader.get(&n("output.LayerNorm.bias"), &[d])?);
    }
    Ok(model)
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

struct Loader<'a> {
    st: &'a SafeTensors<'a>,
    path: &'a Path,
    prefix: &'a str,
}

impl Loader<'_> {
    /// The tensor `name` as f32 (F32, F16 and BF16 accepted), checked against `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let view = self.st.tensor(&full).map_err(|_| Error::MissingTensor {
            name: full.clone(),
            path: self.path.to_path_buf(),
        })?;
        if view.shape() != shape {
            return Err(Error::TensorMismatch {
                name: full,
                reason: format!(
                    "config.json implies shape {shape:?}, the file has {:?}",
                    view.shape()
                ),
            });
        }
        let data = view.data();
        let vals: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::TensorMismatch {
                    name: full,
                    reason: format!("dtype {other:?}; supported: F32, F16, BF16"),
                })
            }
        };
        Ok(vals)
    }
}
