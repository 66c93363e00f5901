//! Batches of token sequences, checked against a model before any kernel runs.

use crate::error::{Error, Result};
use crate::ops::xent::IGNORE;

use super::config::{Head, TransformerConfig};

/// A right-padded batch of token sequences with optional targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[batch, seq]` token ids, row-major; positions at or past a sequence's length are padding.
    pub tokens: Vec<u32>,
    /// Number of sequences.
    pub batch: usize,
    /// Padded length.
    pub seq: usize,
    /// Real length of each sequence (`1..=seq`).
    pub lens: Vec<usize>,
    /// Language model: `[batch, seq]` next-token ids ([`IGNORE`] to skip a position).
    /// Classifier: `[batch]` class ids. Empty when the batch is only for inference.
    pub targets: Vec<u32>,
}

impl Batch {
    /// Full-length sequences (no padding) with language-model targets.
    pub fn lm(tokens: Vec<u32>, targets: Vec<u32>, batch: usize, seq: usize) -> Self {
        Self {
            tokens,
            batch,
            seq,
            lens: vec![seq; batch],
            targets,
        }
    }

    /// Pads variable-length sequences to the longest (with token 0) and attaches `targets`
    /// (class ids for a classifier, or empty).
    pub fn padded(seqs: &[Vec<u32>], targets: Vec<u32>) -> Self {
        let seq = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut tokens = vec![0u32; seqs.len() * seq];
        for (row, s) in tokens.chunks_mut(seq.max(1)).zip(seqs) {
            row[..s.len()].copy_from_slice(s);
        }
        Self {
            tokens,
            batch: seqs.len(),
            seq,
            lens: seqs.iter().map(Vec::len).collect(),
            targets,
        }
    }

    /// Rows of the flattened `[batch * seq]` activations.
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// Checks shapes, lengths and ids against `cfg`; `need_targets` for a training step.
    pub fn validate(&self, cfg: &TransformerConfig, need_targets: bool) -> Result<()> {
        if self.batch == 0 || self.seq == 0 {
            return Err(Error::EmptyBatch(format!(
                "{} sequences of padded length {}",
                self.batch, self.seq
            )));
        }
        if self.tokens.len() != self.batch * self.seq {
            return Err(Error::InvalidArgument(format!(
                "{} token ids for {} x {} positions",
                self.tokens.len(),
                self.batch,
                self.seq
            )));
        }
        if self.lens.len() != self.batch {
            return Err(Error::InvalidArgument(format!(
                "{} lengths for {} sequences",
                self.lens.len(),
                self.batch
            )));
        }
        for (b, &len) in self.lens.iter().enumerate() {
            if len == 0 {
                return Err(Error::EmptyBatch(format!("sequence {b} has no tokens")));
            }
            if len > self.seq {
                return Err(Error::InvalidArgument(format!(
                    "sequence {b} has length {len} > padded length {}",
                    self.seq
                )));
            }
            if len > cfg.context {
                return Err(Error::SequenceTooLong {
                    sequence: b,
                    len,
                    context: cfg.context,
                });
            }
            for (p, &t) in self.tokens[b * self.seq..b * self.seq + len]
                .iter()
                .enumerate()
            {
                if t as usize >= cfg.vocab {
                    return Err(Error::TokenOutOfRange {
                        token: t,
                        sequence: b,
                        position: p,
                        vocab: cfg.vocab,
                    });
                }
            }
        }
        if self.seq > cfg.context {
            return Err(Error::SequenceTooLong {
                sequence: 0,
                len: self.seq,
                context: cfg.context,
            });
        }
        if !need_targets {
            return Ok(());
        }
        match cfg.head {
            Head::Lm { .. } => {
                if self.targets.len() != self.rows() {
                    return Err(Error::InvalidArgument(format!(
                        "language-model targets: {} for {} positions",
                        self.targets.len(),
                        self.rows()
                    )));
                }
                if let Some(t) = self
                    .targets
                    .iter()
                    .find(|t| **t != IGNORE && **t as usize >= cfg.vocab)
                {
                    return Err(Error::InvalidArgument(format!(
                        "target {t} outside vocabulary {}",
                        cfg.vocab
                    )));
                }
            }
            Head::Classifier { classes, .. } => {
                if self.targets.len() != self.batch {
                    return Err(Error::InvalidArgument(format!(
                        "classifier targets: {} for {} sequences",
                        self.targets.len(),
                        self.batch
                    )));
                }
                if let Some(t) = self.targets.iter().find(|t| **t as usize >= classes) {
                    return Err(Error::InvalidArgument(format!(
                        "label {t} outside {classes} classes"
                    )));
                }
            }
            Head::Embedding { .. } => {
                return Err(Error::InvalidArgument(
                    "an embedding model has no training loss".into(),
                ));
            }
        }
        Ok(())
    }
}
