//! The OpenAI-compatible request bodies as the HTTP API parses and validates them (chat,
//! completions, embeddings, classify): never a panic; an accepted body writes back to JSON that
//! parses to the same request, with the same validation verdict and cache key.
#![no_main]
use flotilla_protocol::openai::{
    ApiError, ChatCompletionRequest, ClassifyRequest, CompletionRequest, EmbeddingRequest,
    ModelLimits,
};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

const LIMITS: [ModelLimits; 2] = [
    ModelLimits {
        context_length: 512,
        max_inputs: 16,
        embedding_dim: Some(384),
    },
    ModelLimits {
        context_length: u32::MAX,
        max_inputs: u32::MAX,
        embedding_dim: None,
    },
];

fn parse<T: DeserializeOwned + Serialize>(data: &[u8]) -> Option<(T, T)> {
    match serde_json::from_slice::<T>(data) {
        Ok(v) => {
            let json = serde_json::to_vec(&v).expect("a parsed request serialises");
            let back: T = serde_json::from_slice(&json).unwrap_or_else(|e| {
                panic!(
                    "a written request does not parse: {e}: {}",
                    String::from_utf8_lossy(&json)
                )
            });
            assert_eq!(serde_json::to_vec(&back).expect("serialises"), json);
            Some((v, back))
        }
        Err(e) => {
            let _ = ApiError::from_json_error(&e);
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some((r, back)) = parse::<ChatCompletionRequest>(data) {
        for l in &LIMITS {
            let v = r.validate(l);
            assert_eq!(v.is_ok(), back.validate(l).is_ok());
            if let Ok(p) = v {
                let _ = p.completion_budget(7, l.context_length);
                let _ = p.completion_budget(u32::MAX, l.context_length);
            }
        }
        let _ = r.is_deterministic();
        assert_eq!(
            r.cache_key("h").to_string(),
            back.cache_key("h").to_string()
        );
    }
    if let Some((r, back)) = parse::<CompletionRequest>(data) {
        for l in &LIMITS {
            let v = r.validate(l);
            assert_eq!(v.is_ok(), back.validate(l).is_ok());
            if let Ok(p) = v {
                let _ = p.completion_budget(7, l.context_length);
            }
        }
        assert_eq!(
            r.cache_key("h").to_string(),
            back.cache_key("h").to_string()
        );
    }
    if let Some((r, back)) = parse::<EmbeddingRequest>(data) {
        for l in &LIMITS {
            assert_eq!(r.validate(l).is_ok(), back.validate(l).is_ok());
        }
        assert_eq!(
            r.cache_key("h").to_string(),
            back.cache_key("h").to_string()
        );
    }
    if let Some((r, back)) = parse::<ClassifyRequest>(data) {
        assert_eq!(
            r.cache_key("h").to_string(),
            back.cache_key("h").to_string()
        );
    }
});
