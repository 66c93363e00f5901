//! `POST /v1/embeddings`.
//!
//! The official Python client asks for `encoding_format: "base64"` unless told otherwise and
//! decodes the string as little-endian `f32`s, so both formats are served.

use serde::{Deserialize, Serialize};

/// An embeddings request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Input,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    /// Only the model's own dimension is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Inputs of embeddings and classification: one text, several, or pre-tokenised inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl Input {
    /// How many inputs there are (one result each).
    pub fn len(&self) -> usize {
        match self {
            Input::Text(_) | Input::Tokens(_) => 1,
            Input::Texts(v) => v.len(),
            Input::TokenLists(v) => v.len(),
        }
    }

    /// Whether there is no input at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How vectors are written in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Base64 of the little-endian `f32` bytes.
    Base64,
}

/// The embeddings response (`object: "list"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// One input's vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    pub index: u32,
    pub embedding: Vector,
}

/// A vector as floats or as base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

/// Embeddings count only prompt tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

impl EmbeddingResponse {
    /// The response for `vectors` (one per input, in order) written in `format`.
    pub fn new(
        model: impl Into<String>,
        vectors: Vec<Vec<f32>>,
        format: EncodingFormat,
        prompt_tokens: u32,
    ) -> Self {
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| Embedding {
                object: "embedding".to_string(),
                index: i as u32,
                embedding: match format {
                    EncodingFormat::Float => Vector::Float(v),
                    EncodingFormat::Base64 => Vector::Base64(f32s_to_base64(&v)),
                },
            })
            .collect();
        Self {
            object: "list".to_string(),
            data,
            model: model.into(),
            usage: EmbeddingUsage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        }
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (with padding) of the little-endian bytes of `v`: what numpy's
/// `frombuffer(base64.b64decode(s), dtype="float32")` reads back.
pub fn f32s_to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        // A chunk of k bytes gives k + 1 characters; the rest of the quartet is padding.
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[*s as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_encodings() {
        // 1.0f32 = 00 00 80 3f; [1.0, -2.5] = 00 00 80 3f 00 00 20 c0.
        assert_eq!(f32s_to_base64(&[1.0]), "AACAPw==");
        assert_eq!(f32s_to_base64(&[1.0, -2.5]), "AACAPwAAIMA=");
        assert_eq!(f32s_to_base64(&[]), "");
        // Three floats = 12 bytes = no padding.
        assert_eq!(f32s_to_base64(&[0.0, 0.0, 0.0]), "AAAAAAAAAAAAAAAA");
    }

    #[test]
    fn inputs_parse_in_every_shape() {
        let one: EmbeddingRequest =
            serde_json::from_str(r#"{"model":"m","input":"hi","encoding_format":"base64"}"#)
                .unwrap();
        assert_eq!(one.input, Input::Text("hi".into()));
        assert_eq!(one.encoding_format, Some(EncodingFormat::Base64));
        let many: EmbeddingRequest =
            serde_json::from_str(r#"{"model":"m","input":["a","b"],"extra":1}"#).unwrap();
        assert_eq!(many.input.len(), 2);
        let toks: EmbeddingRequest =
            serde_json::from_str(r#"{"model":"m","input":[[1,2],[3]]}"#).unwrap();
        assert_eq!(toks.input, Input::TokenLists(vec![vec![1, 2], vec![3]]));
    }

    #[test]
    fn responses_write_the_requested_format() {
        let r = EmbeddingResponse::new(
            "m",
            vec![vec![1.0], vec![1.0, -2.5]],
            EncodingFormat::Base64,
            3,
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["data"][1]["embedding"], "AACAPwAAIMA=");
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["usage"]["total_tokens"], 3);
        let r = EmbeddingResponse::new("m", vec![vec![0.5]], EncodingFormat::Float, 1);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["data"][0]["embedding"][0], 0.5);
        assert_eq!(v["object"], "list");
    }
}
