//! Members over HTTP.
//!
//! - `POST /api/v1/nodes/{id}/evict` removes a member from the cluster (see [`crate::evict`]):
//!   `200` with the eviction record and whether it was already evicted; `400` for a malformed
//!   id or this node's own id; `404` for an id this node does not know; `503` when the eviction
//!   cannot be recorded.
//! - `GET /api/v1/evictions` lists every eviction in this node's catalog replica.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::catalog::{field_error, invalid, unavailable};
use super::routes::error_body;
use super::AppState;
use crate::evict::{self, EvictError};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/nodes/{id}/evict", post(evict_node))
        .route("/api/v1/evictions", get(list))
        .with_state(state)
}

async fn evict_node(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match evict::evict(&state.catalog, &state.membership, &state.mesh, &id).await {
        Ok(done) => Json(done).into_response(),
        Err(e @ (EvictError::NotANodeId(_) | EvictError::OwnNode(_))) => {
            invalid("the eviction is refused", &field_error("id", e.to_string()))
        }
        Err(e @ EvictError::Unknown(_)) => (
            StatusCode::NOT_FOUND,
            error_body("not_found", &e.to_string()),
        )
            .into_response(),
        Err(e @ EvictError::Unavailable(_)) => unavailable(e),
    }
}

async fn list(State(state): State<AppState>) -> Response {
    match evict::evictions(&state.catalog).await {
        Ok(evictions) => Json(serde_json::json!({ "evictions": evictions })).into_response(),
        Err(e) => unavailable(e),
    }
}
