//! A character-level tokenizer for tiny models: one id per distinct character of the training
//! corpus, ids assigned in code-point order so that the same corpus always gives the same ids.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Character vocabulary. Serialises as its ordered character list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CharVocab", into = "CharVocab")]
pub struct CharTokenizer {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

#[derive(Serialize, Deserialize)]
struct CharVocab {
    chars: Vec<char>,
}

impl TryFrom<CharVocab> for CharTokenizer {
    type Error = Error;
    fn try_from(v: CharVocab) -> Result<Self> {
        Self::from_chars(v.chars)
    }
}

impl From<CharTokenizer> for CharVocab {
    fn from(t: CharTokenizer) -> Self {
        CharVocab { chars: t.chars }
    }
}

impl CharTokenizer {
    /// Builds the vocabulary from every character in `corpus`.
    pub fn from_corpus(corpus: &str) -> Result<Self> {
        let mut chars: Vec<char> = corpus.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::from_chars(chars)
    }

    /// A vocabulary with exactly these characters, ids in the given order. Duplicates are an error.
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() {
            return Err(Error::Empty("character vocabulary"));
        }
        let mut index = HashMap::with_capacity(chars.len());
        for (i, &c) in chars.iter().enumerate() {
            let id = u32::try_from(i)
                .map_err(|_| Error::InvalidArgument("character vocabulary too large".into()))?;
            if index.insert(c, id).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "character {c:?} appears twice"
                )));
            }
        }
        Ok(CharTokenizer { chars, index })
    }

    /// Number of characters in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Ids of `text`; the first character outside the vocabulary is an [`Error::UnknownChar`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .enumerate()
            .map(|(position, ch)| {
                self.index
                    .get(&ch)
                    .copied()
                    .ok_or(Error::UnknownChar { ch, position })
            })
            .collect()
    }

    /// Text of `ids`; an id outside the vocabulary is an [`Error::UnknownTokenId`].
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter()
            .map(|&id| {
                self.chars
                    .get(id as usize)
                    .copied()
                    .ok_or(Error::UnknownTokenId {
                        id,
                        vocab_size: self.chars.len(),
                    })
            })
            .collect()
    }
}
