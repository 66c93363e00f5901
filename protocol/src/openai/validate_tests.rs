use super::*;
use crate::openai::chat::MessageContent;

const LIMITS: ModelLimits = ModelLimits {
    context_length: 512,
    max_inputs: 8,
    embedding_dim: Some(16),
};

fn chat(json: &str) -> ChatCompletionRequest {
    serde_json::from_str(json).unwrap()
}

fn param(e: &ApiError) -> Option<&str> {
    e.body.error.param.as_deref()
}

#[test]
fn parses_what_the_python_client_sends() {
    // As openai-python 1.x serialises `client.chat.completions.create(...)` with extra fields
    // a newer client may add.
    let r = chat(
        r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
            "model":"tiny","max_completion_tokens":16,"seed":42,"stop":["\n"],"stream":true,
            "stream_options":{"include_usage":true},"temperature":0.7,"top_p":0.9,"top_k":5,
            "user":"u","n":1,"metadata":{"a":"b"},"store":false,"parallel_tool_calls":null}"#,
    );
    let p = r.validate(&LIMITS).unwrap();
    assert_eq!(p.max_tokens, Some(16));
    assert_eq!(p.max_tokens_param, "max_completion_tokens");
    assert_eq!((p.temperature, p.top_p, p.top_k), (0.7, 0.9, 5));
    assert_eq!(p.seed, Some(42));
    assert_eq!(p.stop, vec!["\n".to_string()]);
    assert!(p.stream && p.include_usage);
    assert!(r.is_deterministic(), "a seed makes it deterministic");

    let defaults = chat(r#"{"model":"tiny","messages":[{"role":"user","content":"Hi"}]}"#)
        .validate(&LIMITS)
        .unwrap();
    assert_eq!(defaults.max_tokens, None);
    assert_eq!(
        (defaults.temperature, defaults.top_p, defaults.top_k),
        (1.0, 1.0, 0)
    );
    assert!(!defaults.stream && !defaults.include_usage);
    // Nulls mean omitted.
    let nulls = chat(
        r#"{"model":"tiny","messages":[{"role":"user","content":"Hi"}],"stop":null,"temperature":null,"max_tokens":null}"#,
    );
    assert_eq!(nulls.validate(&LIMITS).unwrap(), defaults);
}

#[test]
fn bad_chat_requests_name_their_parameter() {
    let cases = [
        (r#"{"model":"t","messages":[]}"#, "messages"),
        (
            r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
            "model",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"n":2}"#,
            "n",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"temperature":2.5}"#,
            "temperature",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"temperature":-0.1}"#,
            "temperature",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"top_p":1.5}"#,
            "top_p",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"max_tokens":513}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"max_completion_tokens":9999}"#,
            "max_completion_tokens",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"max_tokens":5,"max_completion_tokens":6}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"logprobs":true}"#,
            "logprobs",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#,
            "logprobs",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
            "stop",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"stop":""}"#,
            "stop",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#,
            "stream_options",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"presence_penalty":0.5}"#,
            "presence_penalty",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#,
            "tools",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user"}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"model":"t","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
            "messages[0].content",
        ),
    ];
    for (json, expected) in cases {
        let e = chat(json).validate(&LIMITS).unwrap_err();
        assert_eq!(e.status, 400, "{json}");
        assert_eq!(param(&e), Some(expected), "{json}: {e}");
    }
    // Explicitly neutral values of unsupported features are accepted.
    chat(r#"{"model":"t","messages":[{"role":"user","content":"x"}],"n":1,"logprobs":false,"presence_penalty":0,"tools":[]}"#)
        .validate(&LIMITS)
        .unwrap();
    // An assistant turn without content is part of a normal conversation.
    let r = chat(
        r#"{"model":"t","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null}]}"#,
    );
    r.validate(&LIMITS).unwrap();
    assert!(matches!(
        r.messages[0].content,
        Some(MessageContent::Text(_))
    ));
}

#[test]
fn unknown_roles_and_bad_json_are_parse_errors() {
    let e = serde_json::from_str::<ChatCompletionRequest>(
        r#"{"model":"t","messages":[{"role":"wizard","content":"x"}]}"#,
    )
    .unwrap_err();
    let api = ApiError::from_json_error(&e);
    assert_eq!(api.status, 400);
    assert!(api.body.error.message.contains("wizard"), "{api}");
}

#[test]
fn completion_budget_counts_the_prompt() {
    let p = chat(r#"{"model":"t","messages":[{"role":"user","content":"x"}],"max_tokens":100}"#)
        .validate(&LIMITS)
        .unwrap();
    assert_eq!(p.completion_budget(412, 512).unwrap(), 100);
    let e = p.completion_budget(413, 512).unwrap_err();
    assert_eq!(param(&e), Some("max_tokens"));
    assert!(e.body.error.message.contains("513"), "{e}");
    let open = chat(r#"{"model":"t","messages":[{"role":"user","content":"x"}]}"#)
        .validate(&LIMITS)
        .unwrap();
    assert_eq!(open.completion_budget(500, 512).unwrap(), 12);
    assert_eq!(
        param(&open.completion_budget(512, 512).unwrap_err()),
        Some("messages")
    );
}

#[test]
fn completions_requests() {
    let ok: CompletionRequest = serde_json::from_str(
        r#"{"model":"t","prompt":["a","b"],"max_tokens":3,"temperature":0,"stop":"."}"#,
    )
    .unwrap();
    let p = ok.validate(&LIMITS).unwrap();
    assert_eq!(ok.prompt.prompts().len(), 2);
    assert_eq!(p.max_tokens, Some(3));
    assert!(ok.is_deterministic());
    let cases = [
        (r#"{"model":"t","prompt":[]}"#, "prompt"),
        (
            r#"{"model":"t","prompt":["a","a","a","a","a","a","a","a","a"]}"#,
            "prompt",
        ),
        (r#"{"model":"t","prompt":"a","logprobs":1}"#, "logprobs"),
        (r#"{"model":"t","prompt":"a","echo":true}"#, "echo"),
        (r#"{"model":"t","prompt":"a","best_of":2}"#, "best_of"),
        (r#"{"model":"t","prompt":"a","suffix":"z"}"#, "suffix"),
        (r#"{"model":"t","prompt":"a","n":3}"#, "n"),
    ];
    for (json, expected) in cases {
        let r: CompletionRequest = serde_json::from_str(json).unwrap();
        let e = r.validate(&LIMITS).unwrap_err();
        assert_eq!(param(&e), Some(expected), "{json}");
    }
}

#[test]
fn embeddings_requests() {
    let parse = |j: &str| serde_json::from_str::<EmbeddingRequest>(j).unwrap();
    parse(r#"{"model":"e","input":["a","b"],"dimensions":16}"#)
        .validate(&LIMITS)
        .unwrap();
    for (json, expected) in [
        (r#"{"model":"e","input":[]}"#, "input"),
        (r#"{"model":"e","input":""}"#, "input"),
        (r#"{"model":"e","input":["a",""]}"#, "input"),
        (r#"{"model":"e","input":"a","dimensions":8}"#, "dimensions"),
    ] {
        let e = parse(json).validate(&LIMITS).unwrap_err();
        assert_eq!(param(&e), Some(expected), "{json}");
    }
}
