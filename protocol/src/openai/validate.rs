//! Checks of requests against a model's limits. Each failure is the 400 an OpenAI client
//! expects, naming the parameter at fault; success gives the normalised [`GenerationParams`]
//! the replica decodes with.

use super::chat::{ChatCompletionRequest, Role};
use super::common::Sampling;
use super::completions::{CompletionRequest, Prompt};
use super::embeddings::{EmbeddingRequest, Input};
use super::error::ApiError;

/// Most stop sequences, as in OpenAI's API.
pub const MAX_STOP_SEQUENCES: usize = 4;

/// What a deployed model accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    /// Tokens of prompt plus completion the model can attend to.
    pub context_length: u32,
    /// Most inputs (prompts, texts) in one request.
    pub max_inputs: u32,
    /// The embedding dimension, for `dimensions` checks of embedding models.
    pub embedding_dim: Option<u32>,
}

/// Generation parameters after validation and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// The completion limit the client set, if it set one.
    pub max_tokens: Option<u32>,
    /// Which parameter set it (`max_tokens` or `max_completion_tokens`), for error messages.
    pub max_tokens_param: &'static str,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 is no limit.
    pub top_k: u32,
    /// The client's seed, bit-cast to unsigned.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

impl GenerationParams {
    /// The number of tokens to generate for a prompt of `prompt_tokens` tokens: the client's
    /// limit, or what is left of the context. A prompt that leaves no room, or a limit past the
    /// context, is the 400 OpenAI answers with.
    pub fn completion_budget(
        &self,
        prompt_tokens: u32,
        context_length: u32,
    ) -> Result<u32, ApiError> {
        let room = context_length.saturating_sub(prompt_tokens);
        match self.max_tokens {
            Some(m) if u64::from(m) + u64::from(prompt_tokens) > u64::from(context_length) => {
                Err(ApiError::invalid_request(
                    format!(
                        "This model's maximum context length is {context_length} tokens. However, you requested {} tokens ({prompt_tokens} in the messages, {m} in the completion). Please reduce the length of the messages or completion.",
                        u64::from(m) + u64::from(prompt_tokens)
                    ),
                    Some(self.max_tokens_param),
                ))
            }
            Some(m) => Ok(m),
            None if room == 0 => Err(ApiError::invalid_request(
                format!("This model's maximum context length is {context_length} tokens; the prompt has {prompt_tokens}."),
                Some("messages"),
            )),
            None => Ok(room),
        }
    }
}

fn in_range(v: Option<f32>, lo: f32, hi: f32, param: &str) -> Result<(), ApiError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::invalid_request(
            format!("{x} is not a valid value for '{param}': it must be between {lo} and {hi}."),
            Some(param),
        )),
        _ => Ok(()),
    }
}

fn validate_sampling(s: &Sampling, limits: &ModelLimits) -> Result<GenerationParams, ApiError> {
    if let Some(n) = s.n {
        if n != 1 {
            return Err(ApiError::unsupported(
                "n",
                format!("n = {n} is not supported: only one choice per prompt (n = 1)."),
            ));
        }
    }
    in_range(s.temperature, 0.0, 2.0, "temperature")?;
    in_range(s.top_p, 0.0, 1.0, "top_p")?;
    for (param, v) in [
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ] {
        if v.is_some_and(|x| x != 0.0) {
            return Err(ApiError::unsupported(
                param,
                format!("{param} is not supported; omit it or set it to 0."),
            ));
        }
    }
    let (max_tokens, max_tokens_param) = match (s.max_completion_tokens, s.max_tokens) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid_request(
                "max_tokens and max_completion_tokens disagree; set only one.",
                Some("max_tokens"),
            ))
        }
        (Some(a), _) => (Some(a), "max_completion_tokens"),
        (None, b) => (b, "max_tokens"),
    };
    if let Some(m) = max_tokens {
        if m == 0 {
            return Err(ApiError::invalid_request(
                format!("{max_tokens_param} must be at least 1."),
                Some(max_tokens_param),
            ));
        }
        if m > limits.context_length {
            return Err(ApiError::invalid_request(
                format!(
                    "{max_tokens_param} is too large: {m}. This model's maximum context length is {} tokens.",
                    limits.context_length
                ),
                Some(max_tokens_param),
            ));
        }
    }
    let stop = s.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::invalid_request(
            format!(
                "At most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {}.",
                stop.len()
            ),
            Some("stop"),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid_request(
            "Stop sequences must not be empty.",
            Some("stop"),
        ));
    }
    let stream = s.is_stream();
    if s.stream_options.is_some() && !stream {
        return Err(ApiError::invalid_request(
            "stream_options is only allowed when stream is true.",
            Some("stream_options"),
        ));
    }
    Ok(GenerationParams {
        max_tokens,
        max_tokens_param,
        temperature: s.temperature.unwrap_or(1.0),
        top_p: s.top_p.unwrap_or(1.0),
        top_k: s.top_k.unwrap_or(0),
        // OpenAI's seed is signed; the sampler takes the same 64 bits unsigned.
        seed: s.seed.map(|x| x as u64),
        stop,
        stream,
        include_usage: s.stream_options.is_some_and(|o| o.include_usage),
    })
}

fn check_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::invalid_request(
            "model must be set.",
            Some("model"),
        ));
    }
    Ok(())
}

fn check_count(n: usize, limits: &ModelLimits, param: &str) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::invalid_request(
            format!("'{param}' must not be empty."),
            Some(param),
        ));
    }
    if n > limits.max_inputs as usize {
        return Err(ApiError::invalid_request(
            format!(
                "'{param}' has {n} entries; at most {} are allowed.",
                limits.max_inputs
            ),
            Some(param),
        ));
    }
    Ok(())
}

impl ChatCompletionRequest {
    /// Validates the request for a model with `limits`.
    pub fn validate(&self, limits: &ModelLimits) -> Result<GenerationParams, ApiError> {
        check_model(&self.model)?;
        if self.messages.is_empty() {
            return Err(ApiError::invalid_request(
                "'messages' must contain at least one message.",
                Some("messages"),
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            let param = format!("messages[{i}].content");
            if m.text().is_none() {
                return Err(ApiError::unsupported(
                    &param,
                    "Only text content parts are supported.",
                ));
            }
            if m.content.is_none() && m.role != Role::Assistant {
                return Err(ApiError::invalid_request(
                    format!("A {} message must have content.", m.role.as_str()),
                    Some(&param),
                ));
            }
        }
        if self.logprobs == Some(true) || self.top_logprobs.is_some() {
            return Err(ApiError::unsupported(
                "logprobs",
                "logprobs are not supported by this server.",
            ));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::unsupported(
                "tools",
                "Tool calling is not supported.",
            ));
        }
        validate_sampling(&self.sampling, limits)
    }
}

impl CompletionRequest {
    /// Validates the request for a model with `limits`.
    pub fn validate(&self, limits: &ModelLimits) -> Result<GenerationParams, ApiError> {
        check_model(&self.model)?;
        let prompts = self.prompt.prompts();
        check_count(prompts.len(), limits, "prompt")?;
        if let Prompt::Tokens(t) = &self.prompt {
            if t.is_empty() {
                return Err(ApiError::invalid_request(
                    "'prompt' must not be empty.",
                    Some("prompt"),
                ));
            }
        }
        if self.logprobs.is_some() {
            return Err(ApiError::unsupported(
                "logprobs",
                "logprobs are not supported by this server.",
            ));
        }
        if self.echo == Some(true) {
            return Err(ApiError::unsupported("echo", "echo is not supported."));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::unsupported(
                "best_of",
                "best_of is not supported above 1.",
            ));
        }
        if self.suffix.is_some() {
            return Err(ApiError::unsupported("suffix", "suffix is not supported."));
        }
        validate_sampling(&self.sampling, limits)
    }
}

/// Checks inputs of embeddings and classification.
pub fn validate_input(input: &Input, limits: &ModelLimits) -> Result<(), ApiError> {
    check_count(input.len(), limits, "input")?;
    let empty = match input {
        Input::Text(t) => t.is_empty(),
        Input::Texts(v) => v.iter().any(String::is_empty),
        Input::Tokens(t) => t.is_empty(),
        Input::TokenLists(v) => v.iter().any(Vec::is_empty),
    };
    if empty {
        return Err(ApiError::invalid_request(
            "'input' must not contain empty strings or token lists.",
            Some("input"),
        ));
    }
    Ok(())
}

impl EmbeddingRequest {
    /// Validates the request for a model with `limits`.
    pub fn validate(&self, limits: &ModelLimits) -> Result<(), ApiError> {
        check_model(&self.model)?;
        validate_input(&self.input, limits)?;
        if let Some(d) = self.dimensions {
            if Some(d) != limits.embedding_dim {
                return Err(ApiError::unsupported(
                    "dimensions",
                    format!(
                        "dimensions = {d} is not supported; this model gives {} dimensions.",
                        limits
                            .embedding_dim
                            .map_or("no".to_string(), |x| x.to_string())
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
