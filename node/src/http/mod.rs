//! The HTTP API (axum): health probes, the admin REST API under `/api/v1`, and `/metrics`.
//!
//! Bound to loopback by default. When a token is configured every route except the health
//! probes requires `Authorization: Bearer <token>`.
//!
//! While the node shuts down every request but the health probes and `/metrics` is answered
//! `503` (`shutting_down`); while its store fails writes, every request that would add work or
//! data (any method but `GET`/`HEAD`/`OPTIONS`, inference excepted) is answered `503`
//! (`unhealthy`) with the reason. `GET /health/status` shows both.

// Handlers return `Result<T, Response>`: axum's `Response` is the natural error of a helper
// that has already chosen the status and body, and its size does not matter per request.
#![allow(clippy::result_large_err)]

mod auth;
mod catalog;
pub mod data;
pub mod deployments;
pub mod jobs;
pub mod limits;
mod nodes;
pub mod openai;
pub mod origin;
pub mod redact;
mod routes;
pub mod tls;

pub use routes::ClusterView;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::Router;
use flotilla_actors::jobs::{executor, manager};
use flotilla_actors::{catalog as replica, membership};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Largest request body the admin API accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub membership: membership::Handle,
    pub catalog: replica::Handle,
    pub jobs: manager::Handle,
    pub executor: executor::Handle,
    pub mesh: crate::net::mesh::NetMesh,
    pub serving: crate::serving::Serving,
    /// The data stage (`/api/v1/data`).
    pub data: crate::data::DataNode,
    /// Deadline of requests this node makes to peers on a client's behalf.
    pub request_timeout: std::time::Duration,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Set once the node listens and its actors run; cleared when shutdown starts.
    pub ready: Arc<AtomicBool>,
    /// Whether the node takes new work (draining, store failures).
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    pub token: Option<Arc<str>>,
    /// Whether the API listens on loopback only (then `Host` and `Origin` must be loopback).
    pub loopback_api: bool,
    /// Deadlines, the in-flight cap and the rate limits.
    pub limiter: Arc<limits::Limiter>,
    /// Where uploads are spooled (`<data dir>/spool`).
    pub spool_dir: PathBuf,
    /// Spellings of the data dir that answers must not contain (see [`redact`]).
    pub redact: Arc<[String]>,
}

/// Builds the router. Layers, outermost first: request counting, the in-flight cap, the
/// deadline, the loopback `Host`/`Origin` check, the token check with the rate limits, the
/// refusal of new work while the node shuts down or is unhealthy, and the scrubbing of the data
/// dir from answers.
pub fn router(state: AppState) -> Router {
    // axum starts each connection in a task of its own, outside the node's span: every request
    // is handled in a `request` span under the span the router was built in (the node's).
    let node_span = tracing::Span::current();
    let in_node_span = move |req: axum::extract::Request, next: axum::middleware::Next| {
        let span = tracing::info_span!(
            parent: &node_span,
            "request",
            method = %req.method(),
            path = %req.uri().path()
        );
        tracing::Instrument::instrument(next.run(req), span)
    };
    routes::router(state.clone())
        .merge(catalog::router(state.clone()))
        .merge(jobs::router(state.clone()))
        .merge(deployments::router(state.clone()))
        .merge(openai::router(state.clone()))
        .merge(data::router(state.clone()))
        .merge(nodes::router(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            redact::redact_paths,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::refuse_new_work,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::loopback_only,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::limit_in_flight,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            routes::count_requests,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(in_node_span))
}

/// Empties `<data dir>/spool` (uploads a crash left behind) and returns it.
pub fn prepare_spool(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let spool = data_dir.join("spool");
    match std::fs::remove_dir_all(&spool) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot empty the upload spool {}: {e}", spool.display()),
    }
    std::fs::create_dir_all(&spool)
        .map_err(|e| anyhow::anyhow!("cannot create the upload spool {}: {e}", spool.display()))?;
    Ok(spool)
}

/// Binds the API address with a clear error when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("HTTP API address {addr} is already in use (is another node running? choose another with --api-listen)")
        } else {
            anyhow::anyhow!("cannot bind HTTP API address {addr}: {e}")
        }
    })
}
