//! The OpenAI-compatible API, answered by every node through its router:
//!
//! - `POST /v1/chat/completions`, `POST /v1/completions` (with `stream: true` as server-sent
//!   events ending in `data: [DONE]`, and `stream_options.include_usage`);
//! - `POST /v1/embeddings`; `GET /v1/models`, `GET /v1/models/{model}`;
//! - `POST /api/v1/classify` (Flotilla's own, for classifier models).
//!
//! The `model` field names a deployment. Errors are OpenAI error bodies: unknown model 404,
//! invalid parameters 400 (`max_tokens` beyond the context included), malformed JSON 400, a body
//! over [`MAX_REQUEST_BODY_BYTES`] 413, overload 429 with `Retry-After`. A streamed answer that
//! fails midway ends with an `error` event; a client that goes away drops the stream, which
//! frees its sequence's slot on the replica at once.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flotilla_actors::serving::router::{RouteRequest, RoutedStream, StreamItem};
use flotilla_protocol::openai::stream::{sse_event, ChatStream, CompletionStream, SSE_DONE};
use flotilla_protocol::openai::{
    ApiError, CacheKey, ChatCompletionRequest, ClassifyRequest, CompletionRequest,
    EmbeddingRequest, ModelList, Usage,
};
use flotilla_protocol::services::serving::{Endpoint, MAX_REQUEST_BODY_BYTES};

use super::AppState;
use crate::serving::DeploymentView;

/// How long a client waits for a whole answer.
const DEADLINE: Duration = Duration::from_secs(120);

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/api/v1/classify", post(classify))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        .with_state(state)
}

/// An OpenAI error as an HTTP response.
pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        e.to_json(),
    )
        .into_response();
    if let Some(s) = e.retry_after_s {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// Reads the body within the serving limit; a longer one is a 413 in OpenAI's shape (the
/// admin API's smaller default limit does not apply here).
async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_REQUEST_BODY_BYTES)
        .await
        .map_err(|_| error_response(&ApiError::request_too_large(MAX_REQUEST_BODY_BYTES)))
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| error_response(&ApiError::from_json_error(&e)))
}

fn find(state: &AppState, model: &str) -> Result<DeploymentView, Response> {
    state
        .serving
        .deployment(model)
        .ok_or_else(|| error_response(&ApiError::model_not_found(model)))
}

/// What every endpoint hands the router.
struct Prepared {
    view: DeploymentView,
    endpoint: Endpoint,
    body: Bytes,
    key: Option<CacheKey>,
    stream: Option<(bool, bool)>,
}

async fn route(state: AppState, p: Prepared) -> Response {
    let started = std::time::Instant::now();
    let endpoint = endpoint_name(p.endpoint);
    let deployment = p.view.record.name.clone();
    let metrics = state.serving.metrics.clone();
    let request = RouteRequest {
        deployment: p.view.record.name.clone(),
        model_hash: p.view.model.hash.clone(),
        endpoint: p.endpoint,
        body: p.body.to_vec().into(),
        cache_key: p.key.filter(|_| p.view.record.cache),
        deadline: DEADLINE,
    };
    let response = match p.stream {
        Some((chat, include_usage)) => match state.serving.router.stream(request).await {
            Ok(s) => {
                let timing = Timing {
                    metrics: metrics.clone(),
                    deployment: deployment.clone(),
                    started,
                };
                sse(s, &p.view.record.name, chat, include_usage, timing)
            }
            Err(e) => error_response(&e.to_api_error()),
        },
        None => match state.serving.router.infer(request).await {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_vec(),
            )
                .into_response(),
            Err(e) => error_response(&e.to_api_error()),
        },
    };
    // For a stream this is the time to its first event; its first token is timed apart.
    let seconds = started.elapsed().as_secs_f64();
    metrics.request(&deployment, endpoint, response.status().as_u16(), seconds);
    response
}

fn endpoint_name(e: Endpoint) -> &'static str {
    match e {
        Endpoint::ChatCompletions => "chat_completions",
        Endpoint::Completions => "completions",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Classify => "classify",
    }
}

/// What a stream records: time to its first piece.
struct Timing {
    metrics: std::sync::Arc<crate::serving::metrics::ServingMetrics>,
    deployment: String,
    started: std::time::Instant,
}

async fn chat(State(state): State<AppState>, body: Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req: ChatCompletionRequest = match parse(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let view = match find(&state, &req.model) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let params = match req.validate(&view.model.limits) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let key = req
        .is_deterministic()
        .then(|| req.cache_key(&view.model.hash));
    let stream = params.stream.then_some((true, params.include_usage));
    route(
        state,
        Prepared {
            view,
            endpoint: Endpoint::ChatCompletions,
            body: bytes,
            key,
            stream,
        },
    )
    .await
}

async fn completions(State(state): State<AppState>, body: Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req: CompletionRequest = match parse(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let view = match find(&state, &req.model) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let params = match req.validate(&view.model.limits) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let key = req
        .is_deterministic()
        .then(|| req.cache_key(&view.model.hash));
    let stream = params.stream.then_some((false, params.include_usage));
    route(
        state,
        Prepared {
            view,
            endpoint: Endpoint::Completions,
            body: bytes,
            key,
            stream,
        },
    )
    .await
}

async fn embeddings(State(state): State<AppState>, body: Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req: EmbeddingRequest = match parse(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let view = match find(&state, &req.model) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(e) = req.validate(&view.model.limits) {
        return error_response(&e);
    }
    let key = Some(req.cache_key(&view.model.hash));
    route(
        state,
        Prepared {
            view,
            endpoint: Endpoint::Embeddings,
            body: bytes,
            key,
            stream: None,
        },
    )
    .await
}

async fn classify(State(state): State<AppState>, body: Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req: ClassifyRequest = match parse(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let view = match find(&state, &req.model) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let key = Some(req.cache_key(&view.model.hash));
    route(
        state,
        Prepared {
            view,
            endpoint: Endpoint::Classify,
            body: bytes,
            key,
            stream: None,
        },
    )
    .await
}

fn model_list(state: &AppState) -> ModelList {
    ModelList::new(
        state
            .serving
            .all_deployments()
            .into_iter()
            .map(|d| (d.record.name.clone(), d.model_created_s())),
    )
}

async fn models(State(state): State<AppState>) -> Response {
    Json(model_list(&state)).into_response()
}

async fn model(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match model_list(&state).data.into_iter().find(|m| m.id == name) {
        Some(card) => Json(card).into_response(),
        None => error_response(&ApiError::model_not_found(&name)),
    }
}

/// The state of an SSE answer being written.
struct Sse {
    stream: RoutedStream,
    chat: Option<ChatStream>,
    text: Option<CompletionStream>,
    started: bool,
    done: bool,
    timing: Option<Timing>,
}

impl Sse {
    /// The next events to write; `None` when the answer is complete.
    async fn next(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            if let Some(c) = &self.chat {
                return Some(event(&c.start()));
            }
        }
        match self.stream.next().await {
            Some(Ok(StreamItem::Piece(p))) => {
                if let Some(t) = self.timing.take() {
                    t.metrics
                        .first_token(&t.deployment, t.started.elapsed().as_secs_f64());
                }
                Some(match (&self.chat, &self.text) {
                    (Some(c), _) => event(&c.text(p)),
                    (_, Some(t)) => event(&t.text(0, p)),
                    _ => String::new(),
                })
            }
            Some(Ok(StreamItem::End(end))) => {
                self.done = true;
                let usage = Usage::new(end.prompt_tokens, end.completion_tokens);
                let mut out = String::new();
                if let Some(c) = &self.chat {
                    for chunk in c.finish(end.finish_reason, usage) {
                        out.push_str(&event(&chunk));
                    }
                } else if let Some(t) = &self.text {
                    out.push_str(&event(&t.finish_choice(0, end.finish_reason)));
                    if let Some(u) = t.usage(usage) {
                        out.push_str(&event(&u));
                    }
                }
                out.push_str(SSE_DONE);
                Some(out)
            }
            Some(Err(e)) => {
                self.done = true;
                Some(format!("data: {}\n\n", e.to_api_error().to_json()))
            }
            None => {
                self.done = true;
                let e = ApiError::server_error("the replica's stream ended without an answer");
                Some(format!("data: {}\n\n", e.to_json()))
            }
        }
    }
}

fn event<T: serde::Serialize>(v: &T) -> String {
    sse_event(v).unwrap_or_default()
}

fn sse(
    stream: RoutedStream,
    model: &str,
    chat: bool,
    include_usage: bool,
    timing: Timing,
) -> Response {
    let id = format!("{:016x}", rand::random::<u64>());
    let created = flotilla_actors::clock::wall_ms() / 1000;
    let state = Sse {
        stream,
        chat: chat
            .then(|| ChatStream::new(format!("chatcmpl-{id}"), created, model, include_usage)),
        text: (!chat)
            .then(|| CompletionStream::new(format!("cmpl-{id}"), created, model, include_usage)),
        started: false,
        done: false,
        timing: Some(timing),
    };
    // Dropping the body (the client went away) drops the routed stream, which cancels the
    // sequence on its replica.
    let events = futures::stream::unfold(state, |mut s| async move {
        s.next().await.map(|e| (Ok::<_, Infallible>(e), s))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}
