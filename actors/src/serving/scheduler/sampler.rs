//! A sequence's sampling settings as its request gave them. The sampler itself is the shared
//! numerics' ([`flotilla_numerics::Sampler`]): greedy at temperature 0, otherwise temperature,
//! top-k and top-p sampling driven by a per-sequence RNG.
//!
//! Each sequence owns its sampler, seeded from the request, so its tokens do not depend on which
//! other sequences shared its batches: one-at-a-time and continuous batching give the same
//! tokens.

pub use flotilla_numerics::{Sampler, Sampling};

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

impl SamplingParams {
    /// This sequence's sampler, seeded from the request. Validated requests always give one;
    /// out-of-range settings are an error rather than a silent default.
    pub fn sampler(&self) -> Result<Sampler, String> {
        let how = Sampling::from_request(self.temperature, self.top_p, self.top_k);
        Sampler::new(how, self.seed).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn request_parameters_make_seeded_samplers() {
        let logits = [0.1, 2.0, 1.9, -1.0, 2.0, 0.0];
        assert_eq!(
            SamplingParams::greedy()
                .sampler()
                .unwrap()
                .sample(&logits)
                .unwrap(),
            1
        );
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: 7,
        };
        let draw = |p: SamplingParams| {
            let mut s = p.sampler().unwrap();
            (0..32)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(p), draw(p));
        assert_ne!(draw(p), draw(SamplingParams { seed: 8, ..p }));
        let bad = SamplingParams {
            temperature: f32::INFINITY,
            ..p
        };
        assert!(bad.sampler().is_err());
    }
}
