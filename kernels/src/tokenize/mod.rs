//! Tokenisers.
//!
//! - [`HfTokenizer`]: a Hugging Face `tokenizer.json` (WordPiece, BPE, Unigram… anything the
//!   `tokenizers` crate reads), loaded from a file or bytes, giving the same ids as the Python
//!   `tokenizers` / `transformers` libraries. Built without onig (C) and without network access.
//! - [`train_byte_level_bpe`]: trains a GPT-2-style byte-level BPE on a text corpus; every string
//!   round-trips through it exactly.
//! - [`CharTokenizer`]: one id per character, for tiny models; unknown characters are an error.
//!
//! All three report problems as [`crate::Error`] and never panic on bad input.

mod bpe;
mod char;
mod hf;

pub use self::bpe::{train_byte_level_bpe, BpeTrainConfig};
pub use self::char::CharTokenizer;
pub use self::hf::{Encoded, HfTokenizer};
