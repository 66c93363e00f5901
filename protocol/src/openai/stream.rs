//! Streaming: builders that turn generated text pieces into the chunks OpenAI clients expect,
//! and server-sent-event framing.
//!
//! A chat stream is: a first chunk with `delta.role = "assistant"`, one chunk per text piece,
//! a chunk with `finish_reason`, then — only with `stream_options.include_usage` — a chunk with
//! empty `choices` and `usage`, then `data: [DONE]`. Text completion streams are the same
//! without the role chunk.

use serde::Serialize;

use super::chat::{ChatCompletionChunk, ChunkChoice, ChunkDelta, Role};
use super::common::{FinishReason, Usage};
use super::completions::{Completion, CompletionChoice};

/// The last event of every stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

/// One server-sent event carrying `value` as JSON.
pub fn sse_event<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    Ok(format!("data: {}\n\n", serde_json::to_string(value)?))
}

/// Builds the chunks of one streamed chat completion.
#[derive(Debug, Clone)]
pub struct ChatStream {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl ChatStream {
    /// A stream answering with `id`, `created` and `model` in every chunk.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        include_usage: bool,
    ) -> Self {
        Self {
            id: id.into(),
            created,
            model: model.into(),
            include_usage,
        }
    }

    fn chunk(&self, delta: ChunkDelta, finish_reason: Option<FinishReason>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_string(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                logprobs: None,
            }],
            usage: None,
            system_fingerprint: None,
        }
    }

    /// The first chunk: the assistant role, no content.
    pub fn start(&self) -> ChatCompletionChunk {
        self.chunk(
            ChunkDelta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
            },
            None,
        )
    }

    /// A chunk adding `text`.
    pub fn text(&self, text: impl Into<String>) -> ChatCompletionChunk {
        self.chunk(
            ChunkDelta {
                role: None,
                content: Some(text.into()),
            },
            None,
        )
    }

    /// The closing chunks: the finish reason, and the usage chunk when it was asked for.
    pub fn finish(&self, reason: FinishReason, usage: Usage) -> Vec<ChatCompletionChunk> {
        let mut out = vec![self.chunk(ChunkDelta::default(), Some(reason))];
        if self.include_usage {
            let mut last = self.chunk(ChunkDelta::default(), None);
            last.choices.clear();
            last.usage = Some(usage);
            out.push(last);
        }
        out
    }
}

/// Builds the chunks of one streamed text completion.
#[derive(Debug, Clone)]
pub struct CompletionStream {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl CompletionStream {
    /// A stream answering with `id`, `created` and `model` in every chunk.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        include_usage: bool,
    ) -> Self {
        Self {
            id: id.into(),
            created,
            model: model.into(),
            include_usage,
        }
    }

    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion".to_string(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            system_fingerprint: None,
        }
    }

    /// A chunk adding `text` to choice `index`.
    pub fn text(&self, index: u32, text: impl Into<String>) -> Completion {
        self.chunk(
            vec![CompletionChoice {
                text: text.into(),
                index,
                logprobs: None,
                finish_reason: None,
            }],
            None,
        )
    }

    /// The chunk ending choice `index`.
    pub fn finish_choice(&self, index: u32, reason: FinishReason) -> Completion {
        self.chunk(
            vec![CompletionChoice {
                text: String::new(),
                index,
                logprobs: None,
                finish_reason: Some(reason),
            }],
            None,
        )
    }

    /// The usage chunk for the whole request, if it was asked for.
    pub fn usage(&self, usage: Usage) -> Option<Completion> {
        self.include_usage
            .then(|| self.chunk(Vec::new(), Some(usage)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_stream_shape_with_and_without_usage() {
        let s = ChatStream::new("c1", 7, "m", true);
        let start = serde_json::to_value(s.start()).unwrap();
        assert_eq!(start["object"], "chat.completion.chunk");
        assert_eq!(start["choices"][0]["delta"]["role"], "assistant");
        assert!(start["choices"][0]["finish_reason"].is_null());
        assert!(start.get("usage").is_none());
        let t = serde_json::to_value(s.text("Hel")).unwrap();
        assert_eq!(t["choices"][0]["delta"]["content"], "Hel");
        assert!(t["choices"][0]["delta"].get("role").is_none());
        let end = s.finish(FinishReason::Length, Usage::new(3, 4));
        assert_eq!(end.len(), 2);
        let fin = serde_json::to_value(&end[0]).unwrap();
        assert_eq!(fin["choices"][0]["finish_reason"], "length");
        let usage = serde_json::to_value(&end[1]).unwrap();
        assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
        assert_eq!(usage["usage"]["total_tokens"], 7);

        let quiet = ChatStream::new("c1", 7, "m", false);
        assert_eq!(quiet.finish(FinishReason::Stop, Usage::new(1, 1)).len(), 1);
    }

    #[test]
    fn completion_stream_and_sse_framing() {
        let s = CompletionStream::new("x", 1, "m", true);
        let e = sse_event(&s.text(1, "a b")).unwrap();
        assert!(e.starts_with("data: {") && e.ends_with("}\n\n"), "{e}");
        let v: serde_json::Value =
            serde_json::from_str(e.trim_start_matches("data: ").trim_end()).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["index"], 1);
        assert!(v["choices"][0]["finish_reason"].is_null());
        let u = s.usage(Usage::new(2, 3)).unwrap();
        assert!(u.choices.is_empty() && u.usage == Some(Usage::new(2, 3)));
        assert!(CompletionStream::new("x", 1, "m", false)
            .usage(Usage::default())
            .is_none());
        assert_eq!(SSE_DONE, "data: [DONE]\n\n");
    }
}
