//! `POST /v1/completions` (text completion): request, response, and the chunk, which has the
//! same shape as the response (`object: "text_completion"`).

use serde::{Deserialize, Serialize};

use super::common::{FinishReason, Sampling, Usage};

/// A text completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Not supported: any value is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Not supported: `true` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Not supported above 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of: Option<u32>,
    /// Not supported: any value is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

/// `prompt`: one text, several texts (one choice each), or pre-tokenised prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// One prompt after splitting a [`Prompt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnePrompt<'a> {
    Text(&'a str),
    Tokens(&'a [u32]),
}

impl Prompt {
    /// The prompts, in order; the choice for prompt `i` has `index: i`.
    pub fn prompts(&self) -> Vec<OnePrompt<'_>> {
        match self {
            Prompt::Text(t) => vec![OnePrompt::Text(t)],
            Prompt::Texts(v) => v.iter().map(|t| OnePrompt::Text(t)).collect(),
            Prompt::Tokens(t) => vec![OnePrompt::Tokens(t)],
            Prompt::TokenLists(v) => v.iter().map(|t| OnePrompt::Tokens(t)).collect(),
        }
    }
}

/// A text completion, or one chunk of a streamed one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    /// Always `text_completion`, for responses and chunks alike.
    pub object: String,
    pub created: u64,
    pub model: String,
    /// Empty in a stream's final usage chunk.
    pub choices: Vec<CompletionChoice>,
    /// Always set in a response; in a stream, only in the final usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

/// One choice of a [`Completion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    /// Always `null`: log-probabilities are not supported.
    #[serde(default)]
    pub logprobs: Option<()>,
    /// `null` in stream chunks before the last one of a choice.
    pub finish_reason: Option<FinishReason>,
}

impl Completion {
    /// A response with one choice per `(text, finish_reason)`, indexed in order.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        choices: Vec<(String, FinishReason)>,
        usage: Usage,
    ) -> Self {
        Self {
            id: id.into(),
            object: "text_completion".to_string(),
            created,
            model: model.into(),
            choices: choices
                .into_iter()
                .enumerate()
                .map(|(i, (text, reason))| CompletionChoice {
                    text,
                    index: i as u32,
                    logprobs: None,
                    finish_reason: Some(reason),
                })
                .collect(),
            usage: Some(usage),
            system_fingerprint: None,
        }
    }
}
