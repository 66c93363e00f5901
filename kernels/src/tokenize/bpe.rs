//! Byte-level BPE training (the GPT-2 scheme): text is split with the GPT-2 pattern, every byte is
//! mapped to a printable character, and merges are learned over those. Because the 256 byte
//! symbols are all in the initial alphabet, any string encodes and decodes back exactly.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use super::HfTokenizer;
use crate::error::{Error, Result};

/// Settings for [`train_byte_level_bpe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BpeTrainConfig {
    /// Target vocabulary size, including the 256 byte symbols and the special tokens.
    pub vocab_size: usize,
    /// A pair must occur at least this often to be merged.
    pub min_frequency: u64,
    /// Special tokens, given the first ids in order (e.g. `<|endoftext|>`).
    pub special_tokens: Vec<String>,
}

impl Default for BpeTrainConfig {
    fn default() -> Self {
        BpeTrainConfig {
            vocab_size: 1000,
            min_frequency: 2,
            special_tokens: vec!["<|endoftext|>".into()],
        }
    }
}

/// Trains a byte-level BPE tokenizer on `corpus` (one string per document or line).
pub fn train_byte_level_bpe<S: AsRef<str> + Send>(
    corpus: impl IntoIterator<Item = S, IntoIter: Send>,
    config: &BpeTrainConfig,
) -> Result<HfTokenizer> {
    let min_vocab = 256 + config.special_tokens.len();
    if config.vocab_size < min_vocab {
        return Err(Error::InvalidArgument(format!(
            "byte-level BPE needs a vocabulary of at least {min_vocab} (256 bytes + specials), got {}",
            config.vocab_size
        )));
    }
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let specials = config
        .special_tokens
        .iter()
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    let trainer = BpeTrainer::builder()
        .vocab_size(config.vocab_size)
        .min_frequency(config.min_frequency)
        .initial_alphabet(alphabet)
        .special_tokens(specials)
        .show_progress(false)
        .build();
    let mut trainer = TrainerWrapper::from(trainer);

    // No prefix space: a leading space would be invented on encode and kept on decode, breaking
    // the exact round trip.
    let byte_level = ByteLevel::new(false, true, true);
    let mut tk = tokenizers::Tokenizer::new(BPE::default());
    tk.with_pre_tokenizer(Some(byte_level));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    let mut seen = false;
    let docs = corpus.into_iter().inspect(|_| seen = true);
    tk.train(&mut trainer, docs)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    if !seen {
        return Err(Error::Empty("BPE training corpus"));
    }
    Ok(HfTokenizer::from_inner(tk))
}
