//! ROUGE-1, ROUGE-2 and ROUGE-L F-measures matching Google's `rouge-score` package
//! (`rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=…)`):
//!
//! - tokenizer: lowercase, every run of characters other than `a-z0-9` becomes a separator,
//!   tokens longer than 3 characters are Porter-stemmed when stemming is on (NLTK's stemmer,
//!   see [`super::porter_stem`]);
//! - ROUGE-N: clipped n-gram overlap, precision over the prediction's n-grams and recall over
//!   the target's (each denominator at least 1);
//! - ROUGE-L: sentence-level longest common subsequence over the whole token sequences (not
//!   `rougeLsum`);
//! - several targets: per ROUGE type, the score of the target with the highest F-measure (the
//!   first one on ties), as `score_multi` does.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::porter::porter_stem;
use crate::error::{Error, Result};

/// Precision, recall and F-measure of one ROUGE type.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RougeScore {
    /// Matched units over units in the prediction.
    pub precision: f64,
    /// Matched units over units in the target.
    pub recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub fmeasure: f64,
}

impl RougeScore {
    fn new(precision: f64, recall: f64) -> Self {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        RougeScore {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// ROUGE-1, ROUGE-2 and ROUGE-L of one prediction.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Rouge {
    /// Unigram overlap.
    pub rouge1: RougeScore,
    /// Bigram overlap.
    pub rouge2: RougeScore,
    /// Longest common subsequence.
    pub rouge_l: RougeScore,
}

/// `rouge-score`'s default tokenizer.
pub fn rouge_tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| {
            if use_stemmer && t.len() > 3 {
                porter_stem(t)
            } else {
                t.to_string()
            }
        })
        // The stemmer only ever returns [a-z0-9]+ for such input, but rouge-score re-checks.
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .collect()
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// ROUGE-N on token sequences.
pub fn rouge_n(target: &[String], prediction: &[String], n: usize) -> Result<RougeScore> {
    if n == 0 {
        return Err(Error::InvalidArgument("ROUGE-N needs n >= 1".into()));
    }
    let t = ngrams(target, n);
    let p = ngrams(prediction, n);
    let overlap: usize = t
        .iter()
        .map(|(g, &c)| c.min(p.get(g).copied().unwrap_or(0)))
        .sum();
    let t_total: usize = t.values().sum();
    let p_total: usize = p.values().sum();
    Ok(RougeScore::new(
        overlap as f64 / p_total.max(1) as f64,
        overlap as f64 / t_total.max(1) as f64,
    ))
}

/// Length of the longest common subsequence, in O(len(a)·len(b)) time and O(len(b)) memory.
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Sentence-level ROUGE-L on token sequences.
pub fn rouge_l(target: &[String], prediction: &[String]) -> RougeScore {
    if target.is_empty() || prediction.is_empty() {
        return RougeScore::default();
    }
    let l = lcs_len(target, prediction) as f64;
    RougeScore::new(l / prediction.len() as f64, l / target.len() as f64)
}

/// Scores predictions against targets, with or without stemming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RougeScorer {
    /// Porter-stem tokens longer than 3 characters.
    pub use_stemmer: bool,
}

impl RougeScorer {
    /// A scorer.
    pub fn new(use_stemmer: bool) -> Self {
        RougeScorer { use_stemmer }
    }

    /// ROUGE-1/2/L of `prediction` against one `target`.
    pub fn score(&self, target: &str, prediction: &str) -> Rouge {
        let t = rouge_tokenize(target, self.use_stemmer);
        let p = rouge_tokenize(prediction, self.use_stemmer);
        Rouge {
            // n is 1 and 2 here, never 0.
            rouge1: rouge_n(&t, &p, 1).unwrap_or_default(),
            rouge2: rouge_n(&t, &p, 2).unwrap_or_default(),
            rouge_l: rouge_l(&t, &p),
        }
    }

    /// Against several targets: per type, the target with the best F-measure.
    pub fn score_multi(&self, targets: &[&str], prediction: &str) -> Result<Rouge> {
        let scores: Vec<Rouge> = targets.iter().map(|t| self.score(t, prediction)).collect();
        let best = |get: fn(&Rouge) -> RougeScore| -> Option<RougeScore> {
            // First maximum, like numpy's argmax.
            scores
                .iter()
                .map(get)
                .fold(None, |acc: Option<RougeScore>, s| match acc {
                    Some(a) if a.fmeasure >= s.fmeasure => Some(a),
                    _ => Some(s),
                })
        };
        match (best(|r| r.rouge1), best(|r| r.rouge2), best(|r| r.rouge_l)) {
            (Some(rouge1), Some(rouge2), Some(rouge_l)) => Ok(Rouge {
                rouge1,
                rouge2,
                rouge_l,
            }),
            _ => Err(Error::Empty("ROUGE targets")),
        }
    }

    /// Mean F-measures over a corpus of (targets, prediction) pairs: what evaluation reports.
    pub fn corpus_mean(&self, targets: &[Vec<&str>], predictions: &[&str]) -> Result<Rouge> {
        crate::error::check_len("ROUGE targets", predictions.len(), targets.len())?;
        if predictions.is_empty() {
            return Err(Error::Empty("ROUGE predictions"));
        }
        let mut sum = [[0.0f64; 3]; 3];
        for (t, p) in targets.iter().zip(predictions) {
            let r = self.score_multi(t, p)?;
            for (acc, s) in sum.iter_mut().zip([r.rouge1, r.rouge2, r.rouge_l]) {
                acc[0] += s.precision;
                acc[1] += s.recall;
                acc[2] += s.fmeasure;
            }
        }
        let n = predictions.len() as f64;
        let mean = |a: [f64; 3]| RougeScore {
            precision: a[0] / n,
            recall: a[1] / n,
            fmeasure: a[2] / n,
        };
        Ok(Rouge {
            rouge1: mean(sum[0]),
            rouge2: mean(sum[1]),
            rouge_l: mean(sum[2]),
        })
    }
}
