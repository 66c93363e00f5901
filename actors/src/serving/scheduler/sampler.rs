//! Seeded token sampling from logits: greedy at temperature 0, otherwise temperature, top-k
//! and top-p (nucleus) sampling driven by a per-sequence RNG.
//!
//! Each sequence owns its sampler, seeded from the request, so its tokens do not depend on which
//! other sequences shared its batches: one-at-a-time and continuous batching give the same
//! tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use flotilla_protocol::openai::GenerationParams;

/// How to pick tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// Keep the smallest set of likeliest tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Keep at most this many likeliest tokens; 0 is no limit.
    pub top_k: u32,
    pub seed: u64,
}

impl SamplingParams {
    /// Always the likeliest token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }

    /// The parameters of a validated request; `fallback_seed` is used when the client gave
    /// none (the node draws it at random).
    pub fn from_request(p: &GenerationParams, fallback_seed: u64) -> Self {
        Self {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            seed: p.seed.unwrap_or(fallback_seed),
        }
    }
}

/// One sequence's sampler.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler whose draws are fixed by `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        Self {
            params,
            rng: StdRng::seed_from_u64(params.seed),
        }
    }

    /// Picks the next token from `logits` (one per vocabulary entry).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, String> {
        if logits.is_empty() {
            return Err("the model returned no logits".into());
        }
        if logits.iter().any(|x| x.is_nan()) {
            return Err("the model returned NaN logits".into());
        }
        if self.params.temperature <= 0.0 {
            return Ok(argmax(logits));
        }
        // Likeliest first; equal logits by token id, so the order is deterministic.
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        if self.params.top_k > 0 {
            order.truncate(self.params.top_k as usize);
        }
        let max = logits[order[0] as usize];
        let t = f64::from(self.params.temperature);
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| ((f64::from(logits[i as usize]) - f64::from(max)) / t).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
        let mut keep = weights.len();
        if self.params.top_p < 1.0 {
            let target = f64::from(self.params.top_p) * total;
            let mut acc = 0.0;
            for (n, w) in weights.iter().enumerate() {
                acc += w;
                if acc >= target {
                    keep = n + 1;
                    break;
                }
            }
        }
        let kept = &weights[..keep];
        let mass: f64 = kept.iter().sum();
        let mut u = self.rng.gen::<f64>() * mass;
        for (n, w) in kept.iter().enumerate() {
            if u < *w {
                return Ok(order[n]);
            }
            u -= w;
        }
        // Rounding can leave u just above the last weight: that is the last kept token.
        Ok(order[keep - 1])
    }
}

/// The index of the largest logit, the lowest index among equals.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in logits.iter().enumerate() {
        if *x > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGITS: [f32; 6] = [0.1, 2.0, 1.9, -1.0, 2.0, 0.0];

    fn params(temperature: f32, top_p: f32, top_k: u32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed,
        }
    }

    #[test]
    fn greedy_takes_the_first_best() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&LOGITS).unwrap(), 1);
        assert!(s.sample(&[]).is_err());
        assert!(s.sample(&[0.0, f32::NAN]).is_err());
    }

    #[test]
    fn same_seed_same_draws_and_seeds_matter() {
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 1.0, 0, seed));
            (0..64)
                .map(|_| s.sample(&LOGITS).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // Temperature 1 over these logits draws more than one distinct token in 64 draws.
        let mut d = draw(7);
        d.sort();
        d.dedup();
        assert!(d.len() >= 3, "{d:?}");
    }

    #[test]
    fn top_k_and_top_p_restrict_the_choice() {
        let mut k = Sampler::new(params(2.0, 1.0, 2, 1));
        for _ in 0..200 {
            assert!(matches!(k.sample(&LOGITS).unwrap(), 1 | 4));
        }
        // Tokens 1 and 4 (logit 2.0) hold well under 90% of the mass at temperature 1, so
        // top_p 0.5 keeps exactly them.
        let mut p = Sampler::new(params(1.0, 0.5, 0, 2));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(p.sample(&LOGITS).unwrap());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 4]);
        let mut one = Sampler::new(params(1.0, 1.0, 1, 3));
        assert_eq!(one.sample(&LOGITS).unwrap(), 1);
    }
}
