//! The OpenAI-compatible HTTP API: request and response bodies, streaming chunks, error bodies,
//! validation against a model's limits, and canonical cache keys.
//!
//! Requests are parsed leniently, as the official clients send them: unknown fields are ignored,
//! `max_tokens` and `max_completion_tokens` are both understood, `stop` is a string or an array.
//! Parameters that would change the answer but are not implemented (`n` > 1, `logprobs`,
//! penalties, tools) are not ignored but refused with a 400 that names them, so a client never
//! gets an answer to a different question than the one it asked.
//!
//! Modules:
//! - [`common`]: `usage`, `stop`, stream options, finish reasons, sampling fields.
//! - [`chat`]: `POST /v1/chat/completions`.
//! - [`completions`]: `POST /v1/completions`.
//! - [`embeddings`]: `POST /v1/embeddings`.
//! - [`models`]: `GET /v1/models`.
//! - [`classify`]: `POST /api/v1/classify` (Flotilla's own, for classifier models).
//! - [`stream`]: streaming chunk builders and server-sent-event framing.
//! - [`error`]: OpenAI-style error bodies with their HTTP status.
//! - [`validate`]: checks against a model's limits, producing normalised generation parameters.
//! - [`cache_key`]: the canonical, deterministic key of a request for the response cache.

pub mod cache_key;
pub mod chat;
pub mod classify;
pub mod common;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod models;
pub mod stream;
pub mod validate;

pub use cache_key::CacheKey;
pub use chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Role};
pub use classify::{ClassifyRequest, ClassifyResponse};
pub use common::{FinishReason, Sampling, Stop, StreamOptions, Usage};
pub use completions::{Completion, CompletionRequest, Prompt};
pub use embeddings::{EmbeddingRequest, EmbeddingResponse, EncodingFormat, Input};
pub use error::ApiError;
pub use models::{ModelCard, ModelList};
pub use validate::{GenerationParams, ModelLimits};
