//! Route handlers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flotilla_protocol::{MemberState, MemberView, NodeId};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::metrics::{HttpLabel, StateLabel};

/// The JSON error body of every failed request.
pub fn error_body(code: &str, message: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "error": { "code": code, "message": message } }))
}

/// The body of `GET /api/v1/cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// The answering node's id.
    pub node_id: String,
    /// Members by state.
    pub counts: BTreeMap<MemberState, usize>,
    /// Every member, in id order.
    pub members: Vec<MemberView>,
    /// Nodes evicted from the cluster (their members show as left), in id order.
    #[serde(default)]
    pub evicted: Vec<NodeId>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health/status", get(status))
        .route("/api/v1/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Counts requests by matched route and status.
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabel {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn live() -> &'static str {
    "ok"
}

/// `200 ready` when the node serves and takes work; otherwise `503` and why not.
async fn ready(State(state): State<AppState>) -> Response {
    if let Some(reason) = state.lifecycle.refusal() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response();
    }
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// The body of `GET /health/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// `ok`, `unhealthy` (the store failed a write) or `shutting_down`.
    pub status: String,
    /// Whether the node takes new work.
    pub ready: bool,
    /// Why it is unhealthy, if it is.
    pub unhealthy: Option<String>,
}

/// `200` with [`HealthStatus`] when the node is healthy, `503` with it otherwise.
async fn status(State(state): State<AppState>) -> Response {
    let unhealthy = state.lifecycle.unhealthy();
    let status = if state.lifecycle.is_draining() {
        "shutting_down"
    } else if unhealthy.is_some() {
        "unhealthy"
    } else {
        "ok"
    };
    let body = HealthStatus {
        status: status.into(),
        ready: state.ready.load(Ordering::Acquire) && state.lifecycle.refusal().is_none(),
        unhealthy,
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Refuses new requests while the node shuts down, and new work while it is unhealthy (see
/// the module's documentation).
pub async fn refuse_new_work(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path.starts_with("/health/") || path == "/metrics" {
        return next.run(request).await;
    }
    if state.lifecycle.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            error_body(
                "shutting_down",
                "the node is shutting down and takes no new requests",
            ),
        )
            .into_response();
    }
    if let Some(reason) = state.lifecycle.unhealthy() {
        let reads = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
        let inference = path.starts_with("/v1/") || path == "/api/v1/classify";
        if !reads && !inference {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                error_body(
                    "unhealthy",
                    &format!("the node is unhealthy and takes no new work: {reason}"),
                ),
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn cluster(State(state): State<AppState>) -> Response {
    match state.membership.view().await {
        Ok(members) => {
            let mut counts = BTreeMap::new();
            for m in &members {
                *counts.entry(m.state).or_insert(0) += 1;
            }
            let node_id = members
                .iter()
                .find(|m| m.is_self)
                .map(|m| m.info.id.to_string())
                .unwrap_or_default();
            // The catalog may be busy; the view is still worth answering without evictions.
            let mut evicted: Vec<NodeId> = crate::evict::evictions(&state.catalog)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.node)
                .collect();
            evicted.sort();
            Json(ClusterView {
                node_id,
                counts,
                members,
                evicted,
            })
            .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            error_body("unavailable", &e.to_string()),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    crate::net::catalog_sync::refresh_entries(&state.catalog, &state.metrics).await;
    state.serving.metrics.refresh(&state.serving);
    // Refresh the membership gauges at scrape time so they are never stale.
    if let Ok(view) = state.membership.view().await {
        for s in [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Dead,
            MemberState::Left,
        ] {
            let n = view.iter().filter(|m| m.state == s).count() as i64;
            state
                .metrics
                .members
                .get_or_create(&StateLabel {
                    state: s.to_string(),
                })
                .set(n);
        }
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn not_found(request: Request) -> Response {
    (
        StatusCode::NOT_FOUND,
        error_body(
            "not_found",
            &format!("no route for {} {}", request.method(), request.uri().path()),
        ),
    )
        .into_response()
}
