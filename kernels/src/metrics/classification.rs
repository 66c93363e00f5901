//! Classification and language-model metrics: accuracy, confusion matrix, macro-F1, perplexity.

use serde::{Deserialize, Serialize};

use crate::error::{check_len, Error, Result};

fn check_labels(targets: &[usize], predictions: &[usize], num_classes: usize) -> Result<()> {
    check_len("predictions", targets.len(), predictions.len())?;
    if targets.is_empty() {
        return Err(Error::Empty("labels"));
    }
    if let Some(&bad) = targets
        .iter()
        .chain(predictions)
        .find(|&&c| c >= num_classes)
    {
        return Err(Error::InvalidArgument(format!(
            "label {bad} is outside {num_classes} classes"
        )));
    }
    Ok(())
}

/// Fraction of predictions equal to their target.
pub fn accuracy(targets: &[usize], predictions: &[usize]) -> Result<f64> {
    check_len("predictions", targets.len(), predictions.len())?;
    if targets.is_empty() {
        return Err(Error::Empty("labels"));
    }
    let hits = targets
        .iter()
        .zip(predictions)
        .filter(|(t, p)| t == p)
        .count();
    Ok(hits as f64 / targets.len() as f64)
}

/// A confusion matrix: `counts[target][predicted]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Number of classes.
    pub num_classes: usize,
    /// Row-major `num_classes × num_classes` counts; row = target, column = prediction.
    pub counts: Vec<u64>,
}

impl Confusion {
    /// Counts `(target, prediction)` pairs; labels must be `< num_classes`.
    pub fn new(targets: &[usize], predictions: &[usize], num_classes: usize) -> Result<Self> {
        check_labels(targets, predictions, num_classes)?;
        let mut counts = vec![0u64; num_classes * num_classes];
        for (&t, &p) in targets.iter().zip(predictions) {
            counts[t * num_classes + p] += 1;
        }
        Ok(Confusion {
            num_classes,
            counts,
        })
    }

    /// Count of items of class `target` predicted as `predicted` (0 outside the matrix).
    pub fn get(&self, target: usize, predicted: usize) -> u64 {
        if target < self.num_classes && predicted < self.num_classes {
            self.counts[target * self.num_classes + predicted]
        } else {
            0
        }
    }

    /// Per-class F1, `None` for a class that appears neither as a target nor as a prediction.
    pub fn per_class_f1(&self) -> Vec<Option<f64>> {
        let k = self.num_classes;
        (0..k)
            .map(|c| {
                let tp = self.get(c, c) as f64;
                let support: u64 = (0..k).map(|p| self.get(c, p)).sum();
                let predicted: u64 = (0..k).map(|t| self.get(t, c)).sum();
                if support == 0 && predicted == 0 {
                    return None;
                }
                // F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted); 0 when TP = 0.
                Some(2.0 * tp / (support + predicted) as f64)
            })
            .collect()
    }

    /// Macro-F1 over the classes present in targets or predictions (scikit-learn's default
    /// `f1_score(average="macro")`, with 0 for a class that is never predicted correctly).
    pub fn macro_f1(&self) -> f64 {
        let f: Vec<f64> = self.per_class_f1().into_iter().flatten().collect();
        if f.is_empty() {
            0.0
        } else {
            f.iter().sum::<f64>() / f.len() as f64
        }
    }
}

/// Macro-F1 of predictions (see [`Confusion::macro_f1`]).
pub fn macro_f1(targets: &[usize], predictions: &[usize], num_classes: usize) -> Result<f64> {
    Ok(Confusion::new(targets, predictions, num_classes)?.macro_f1())
}

/// Perplexity from a mean negative log-likelihood per token (natural log): `exp(mean_nll)`.
pub fn perplexity(mean_nll: f64) -> Result<f64> {
    if !mean_nll.is_finite() || mean_nll < 0.0 {
        return Err(Error::InvalidArgument(format!(
            "mean NLL must be finite and >= 0, got {mean_nll}"
        )));
    }
    Ok(mean_nll.exp())
}

/// Perplexity from a summed NLL over `tokens` tokens, as evaluation accumulates it across batches.
pub fn perplexity_from_sum(total_nll: f64, tokens: u64) -> Result<f64> {
    if tokens == 0 {
        return Err(Error::Empty("tokens for perplexity"));
    }
    perplexity(total_nll / tokens as f64)
}
