//! A thin wrapper over the `tokenizers` crate that speaks the crate's error type.

use std::path::Path;

use crate::error::{Error, Result};

/// Everything a BERT-style model takes for one input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment ids (0 for the first sequence, 1 for the second of a pair).
    pub type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
}

impl From<tokenizers::Encoding> for Encoded {
    fn from(e: tokenizers::Encoding) -> Self {
        Encoded {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            attention_mask: e.get_attention_mask().to_vec(),
        }
    }
}

/// A Hugging Face tokenizer (any `tokenizer.json`). Padding and truncation follow the file
/// (as in Python) unless changed with [`HfTokenizer::without_padding`] and
/// [`HfTokenizer::with_truncation`].
#[derive(Debug, Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
}

fn tk_err(e: tokenizers::Error) -> Error {
    Error::Tokenizer(e.to_string())
}

impl HfTokenizer {
    /// Loads a `tokenizer.json`. A missing file is an [`Error::Io`] naming it; a malformed one an
    /// [`Error::Tokenizer`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Parses a `tokenizer.json` held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(tk_err)?;
        Ok(HfTokenizer { inner })
    }

    pub(crate) fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        HfTokenizer { inner }
    }

    /// Token ids of `text`; `add_special_tokens` adds what the post-processor defines
    /// (`[CLS] … [SEP]` for BERT).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(tk_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids, segment ids and attention mask of `text`.
    pub fn encode_full(&self, text: &str, add_special_tokens: bool) -> Result<Encoded> {
        Ok(self
            .inner
            .encode(text, add_special_tokens)
            .map_err(tk_err)?
            .into())
    }

    /// A sentence pair (`[CLS] a [SEP] b [SEP]` for BERT), with segment ids 0 and 1.
    pub fn encode_pair(&self, a: &str, b: &str, add_special_tokens: bool) -> Result<Encoded> {
        Ok(self
            .inner
            .encode((a, b), add_special_tokens)
            .map_err(tk_err)?
            .into())
    }

    /// Turns off padding (the file may pad every input to a fixed length).
    pub fn without_padding(mut self) -> Self {
        self.inner.with_padding(None);
        self
    }

    /// Truncates every input to at most `max_len` tokens, special tokens included.
    pub fn with_truncation(mut self, max_len: usize) -> Result<Self> {
        if max_len == 0 {
            return Err(Error::InvalidArgument(
                "truncation length must be > 0".into(),
            ));
        }
        let params = tokenizers::TruncationParams {
            max_length: max_len,
            ..Default::default()
        };
        self.inner.with_truncation(Some(params)).map_err(tk_err)?;
        Ok(self)
    }

    /// Ids of several texts.
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| self.encode(t, add_special_tokens))
            .collect()
    }

    /// Text of `ids`. Ids outside the vocabulary are an error rather than silently dropped.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let vocab = self.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::UnknownTokenId {
                id,
                vocab_size: vocab,
            });
        }
        self.inner.decode(ids, skip_special_tokens).map_err(tk_err)
    }

    /// Vocabulary size including added (special) tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if present.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of an id, if present.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Serialises to `tokenizer.json` form.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tk_err)
    }

    /// Writes `tokenizer.json` to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let json = self.to_json()?;
        let path = path.as_ref();
        std::fs::write(path, json).map_err(|e| Error::io(path, e))
    }
}
