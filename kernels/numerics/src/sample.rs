//! Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
//! (nucleus), from a seeded RNG so that a request with a seed is reproducible.
//!
//! The serving engine gives each sequence its own sampler, seeded from its request, so a
//! sequence's tokens do not depend on which other sequences shared its batches; the kernels'
//! generation loop and examples use the same sampler.

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

impl Sampling {
    /// The settings of an OpenAI-style request: temperature 0 is greedy, `top_k` 0 is no limit,
    /// `top_p` 1 is no nucleus and `top_p` 0 keeps only the likeliest token.
    pub fn from_request(temperature: f32, top_p: f32, top_k: u32) -> Self {
        if temperature <= 0.0 || temperature.is_nan() {
            return Sampling::Greedy;
        }
        let (top_k, top_p) = if top_p <= 0.0 {
            (Some(1), None)
        } else {
            (
                (top_k > 0).then_some(top_k as usize),
                (top_p < 1.0).then_some(top_p),
            )
        };
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
        }
    }
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
        // Unnormalised weights exp((x − max) / T), in f64 so that long tails keep their mass.
        let mx = f64::from(logits[order[0]]);
        let t = f64::from(temperature);
        let weights: Vec<f64> = order
            .iter()
            .map(|i| ((f64::from(logits[*i]) - mx) / t).exp())
            .collect();
        let mut keep = weights.len();
        if let Some(p) = top_p {
            // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
            let target = f64::from(p) * weights.iter().sum::<f64>();
            let mut acc = 0.0;
            for (i, w) in weights.iter().enumerate() {
                acc += w;
                if acc >= target {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &weights[..keep];
        let mut u = self.rng.gen::<f64>() * kept.iter().sum::<f64>();
        for (i, w) in kept.iter().enumerate() {
            if u < *w {
                return Ok(order[i] as u32);
            }
            u -= w;
        }
        // Rounding can leave u just above the last weight: that is the last kept token.
        Ok(order[keep - 1] as u32)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LOGITS: [f32; 6] = [0.1, 2.0, 1.9, -1.0, 2.0, 0.0];

    fn sampler(temperature: f32, top_p: f32, top_k: u32, seed: u64) -> Sampler {
        Sampler::new(Sampling::from_request(temperature, top_p, top_k), seed).unwrap()
    }

    #[test]
    fn request_settings_map_to_samplings() {
        assert_eq!(Sampling::from_request(0.0, 0.9, 5), Sampling::Greedy);
        assert_eq!(
            Sampling::from_request(0.7, 1.0, 0),
            Sampling::Sample {
                temperature: 0.7,
                top_k: None,
                top_p: None
            }
        );
        assert_eq!(
            Sampling::from_request(0.7, 0.9, 5),
            Sampling::Sample {
                temperature: 0.7,
                top_k: Some(5),
                top_p: Some(0.9)
            }
        );
        // top_p 0 keeps the likeliest token only.
        let mut s = sampler(1.0, 0.0, 0, 9);
        for _ in 0..50 {
            assert_eq!(s.sample(&LOGITS).unwrap(), 1);
        }
    }

    #[test]
    fn greedy_takes_the_first_best_and_bad_logits_are_errors() {
        let mut s = sampler(0.0, 1.0, 0, 0);
        assert_eq!(s.sample(&LOGITS).unwrap(), 1);
        assert!(s.sample(&[]).is_err());
        assert!(s.sample(&[0.0, f32::NAN]).is_err());
    }

    #[test]
    fn same_seed_same_draws_and_seeds_matter() {
        let draw = |seed| {
            let mut s = sampler(1.0, 1.0, 0, seed);
            (0..64)
                .map(|_| s.sample(&LOGITS).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut d = draw(7);
        d.sort();
        d.dedup();
        assert!(d.len() >= 3, "{d:?}");
    }

    #[test]
    fn top_k_and_top_p_restrict_the_choice() {
        let mut k = sampler(2.0, 1.0, 2, 1);
        for _ in 0..200 {
            assert!(matches!(k.sample(&LOGITS).unwrap(), 1 | 4));
        }
        // Tokens 1 and 4 (logit 2.0) hold well under 90% of the mass at temperature 1, so
        // top_p 0.5 keeps exactly them.
        let mut p = sampler(1.0, 0.5, 0, 2);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(p.sample(&LOGITS).unwrap());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(sampler(1.0, 1.0, 1, 3).sample(&LOGITS).unwrap(), 1);
    }
}
