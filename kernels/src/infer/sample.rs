//! Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
//! (nucleus), from a seeded RNG so that a request with a seed is reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How to pick a token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// The highest logit (ties: the lowest id).
    Greedy,
    /// Sample from `softmax(logits / temperature)`, restricted to the `top_k` most likely tokens
    /// and then to the smallest set whose probability reaches `top_p`.
    Sample {
        /// Softening (> 0).
        temperature: f32,
        /// Keep only this many tokens (≥ 1), if set.
        top_k: Option<usize>,
        /// Keep the smallest prefix with this much probability (0 < p ≤ 1), if set.
        top_p: Option<f32>,
    },
}

/// A sampler with its own seeded RNG.
#[derive(Debug, Clone)]
pub struct Sampler {
    how: Sampling,
    rng: StdRng,
}

impl Sampler {
    /// Checks the settings and seeds the RNG.
    pub fn new(how: Sampling, seed: u64) -> Result<Self> {
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } = how
        {
            if !(temperature > 0.0 && temperature.is_finite()) {
                return Err(Error::InvalidArgument(format!(
                    "temperature {temperature} must be > 0"
                )));
            }
            if top_k == Some(0) {
                return Err(Error::InvalidArgument("top_k must be at least 1".into()));
            }
            if let Some(p) = top_p {
                if !(p > 0.0 && p <= 1.0) {
                    return Err(Error::InvalidArgument(format!(
                        "top_p {p} must be in (0, 1]"
                    )));
                }
            }
        }
        Ok(Self {
            how,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// Picks a token id from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::Empty("logits"));
        }
        if let Some(i) = logits.iter().position(|v| v.is_nan()) {
            return Err(Error::InvalidArgument(format!("logit {i} is NaN")));
        }
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold(0, |best, (i, v)| if *v > logits[best] { i } else { best })
        };
        let (temperature, top_k, top_p) = match self.how {
            Sampling::Greedy => return Ok(argmax() as u32),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
            } => (temperature, top_k, top_p),
        };
        // Candidates by descending logit (stable: ties keep the lower id first).
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
        if let Some(k) = top_k {
            order.truncate(k.min(order.len()));
        }
        let mx = logits[order[0]];
        let mut probs: Vec<f64> = order
            .iter()
            .map(|i| f64::from((logits[*i] - mx) / temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(p) = top_p {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= f64::from(p) {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.gen::<f64>() * total;
        for (i, q) in probs.iter().enumerate() {
            if u < *q {
                return Ok(order[i] as u32);
            }
            u -= q;
        }
        Ok(order[order.len() - 1] as u32)
    }
}
