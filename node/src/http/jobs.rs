//! Jobs over HTTP under `/api/v1/jobs`, answered by any node.
//!
//! - `POST /api/v1/jobs` submits a spec ([`SpecDoc`] as JSON): `201` with the job, or `200`
//!   with `"created": false` when its idempotency key names an existing job; `400` with every
//!   bad field; `413` over [`MAX_SPEC_BYTES`].
//! - `GET /api/v1/jobs` lists every job in this node's catalog replica.
//! - `GET /api/v1/jobs/{id}` shows one: the record, and the tasks and events its owner reports.
//! - `GET /api/v1/jobs/{id}/events?after_ms=T` merges the event logs of every alive node (a job
//!   that changed owners has its history on several), oldest first.
//! - `POST /api/v1/jobs/{id}/cancel` cancels; for a finished job it says so and changes nothing.
//! - `GET /api/v1/executions?job=ID` lists the task executions this node started (its run log),
//!   the tasks running here and, with `job`, this node's ledger entries of the job (epoch,
//!   attempt, outcome).
//!
//! An unknown job id is `404`.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flotilla_actors::jobs::executor::Execution;
use flotilla_actors::jobs::manager::{CancelOutcome, SubmitError};
use flotilla_actors::mesh::Mesh;
use flotilla_protocol::catalog::{CatalogKey, Entry, JobRecord, RecordKind};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::jobs::{JobDetail, JobEvent, RequestBody, ResponseBody};
use flotilla_protocol::{MemberState, NodeId};
use serde::{Deserialize, Serialize};

use super::catalog::{field_error, invalid, unavailable};
use super::routes::error_body;
use super::AppState;
use crate::jobs::SpecDoc;

/// Largest spec body accepted.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub kind: String,
    pub priority: String,
    pub status: String,
    pub owner: String,
    pub epoch: u64,
    pub tasks: u32,
    pub submitted_at_ms: u64,
    pub updated_at_ms: u64,
    /// The whole record, for tools that want every field.
    pub record: JobRecord,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        let kind = match &r.spec.kind {
            flotilla_protocol::jobs::JobKind::Benchmark { .. } => "benchmark",
            flotilla_protocol::jobs::JobKind::DataOps(_) => "data-ops",
            flotilla_protocol::jobs::JobKind::Train { .. } => "train",
        };
        JobView {
            id: r.id.0.clone(),
            kind: kind.to_string(),
            priority: format!("{:?}", r.spec.priority).to_lowercase(),
            status: r.status.to_string(),
            owner: r.owner.0.clone(),
            epoch: r.epoch,
            tasks: r.spec.tasks,
            submitted_at_ms: r.submitted_at_ms,
            updated_at_ms: r.updated_at_ms,
            record: r,
        }
    }
}

/// The body of `POST /api/v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitAnswer {
    pub job: JobView,
    pub created: bool,
}

/// The body of `GET /api/v1/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobShow {
    pub job: JobView,
    pub detail: JobDetail,
    /// Set when the owner could not be asked; `detail` then holds what this node knows.
    pub owner_unreachable: Option<String>,
}

/// The body of `POST /api/v1/jobs/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelAnswer {
    pub cancelled: bool,
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ExecutionsQuery {
    job: Option<String>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/jobs", post(submit).get(list))
        .route("/api/v1/jobs/{id}", get(show))
        .route("/api/v1/jobs/{id}/events", get(events))
        .route("/api/v1/jobs/{id}/cancel", post(cancel))
        .route("/api/v1/executions", get(executions))
        .layer(DefaultBodyLimit::max(MAX_SPEC_BYTES))
        .with_state(state)
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        error_body("not_found", &format!("no job {id:?} in the catalog")),
    )
        .into_response()
}

async fn record(state: &AppState, id: &str) -> Result<JobRecord, Response> {
    let key = CatalogKey {
        kind: RecordKind::Job,
        name: id.to_string(),
        version: 0,
    };
    if key.validate().is_err() {
        return Err(not_found(id));
    }
    match state.catalog.get(key).await {
        Ok(Some(Entry::Job(e))) => Ok(e.record),
        Ok(_) => Err(not_found(id)),
        Err(e) => Err(unavailable(e)),
    }
}

async fn submit(State(state): State<AppState>, body: Bytes) -> Response {
    let doc: SpecDoc = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return invalid(
                "the job spec is not valid",
                &field_error("spec", e.to_string()),
            )
        }
    };
    let spec = match doc.to_spec() {
        Ok(s) => s,
        Err(errors) => return invalid("the job spec is not valid", &errors),
    };
    let spec =
        match crate::jobs::hf_folder::resolve(&state.serving.files, &state.catalog, spec).await {
            Ok(s) => s,
            Err(Ok(errors)) => return invalid("the job spec is not valid", &errors),
            Err(Err(e)) => return unavailable(e),
        };
    match crate::jobs::references::missing(&state.catalog, &spec).await {
        Ok(errors) if !errors.0.is_empty() => {
            return invalid("the job spec names what does not exist", &errors)
        }
        Ok(_) => {}
        Err(e) => return unavailable(e),
    }
    match state.jobs.submit(spec).await {
        Ok(s) => {
            let code = if s.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let answer = SubmitAnswer {
                job: s.record.into(),
                created: s.created,
            };
            (code, Json(answer)).into_response()
        }
        Err(SubmitError::Invalid(errors)) => invalid("the job spec is not valid", &errors),
        Err(SubmitError::Internal(e)) => unavailable(e),
    }
}

async fn list(State(state): State<AppState>) -> Response {
    match state.catalog.list(Some(RecordKind::Job)).await {
        Ok(entries) => {
            let jobs: Vec<JobView> = entries
                .into_iter()
                .filter_map(|(_, e)| match e {
                    Entry::Job(j) => Some(JobView::from(j.record)),
                    Entry::Register(_) => None,
                })
                .collect();
            Json(serde_json::json!({ "jobs": jobs })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// What `node` knows of `job` (this node answers itself).
async fn detail_from(state: &AppState, node: &NodeId, job: &JobId) -> Result<JobDetail, String> {
    if *node == state.mesh.local_id() {
        return state
            .jobs
            .detail(job.clone())
            .await
            .map_err(|e| e.to_string());
    }
    let body = RequestBody::Detail { job: job.clone() };
    match state.mesh.jobs(node, body, state.request_timeout).await {
        Ok(ResponseBody::Detail(d)) => Ok(d),
        Ok(other) => Err(format!("unexpected answer: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let record = match record(&state, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (detail, owner_unreachable) = match detail_from(&state, &record.owner, &record.id).await {
        Ok(d) => (d, None),
        Err(e) => {
            let local = state
                .jobs
                .detail(record.id.clone())
                .await
                .unwrap_or_default();
            (local, Some(format!("owner {}: {e}", record.owner)))
        }
    };
    Json(JobShow {
        job: record.into(),
        detail,
        owner_unreachable,
    })
    .into_response()
}

async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let record = match record(&state, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let view = match state.membership.view().await {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let nodes: Vec<NodeId> = view
        .into_iter()
        .filter(|m| m.state == MemberState::Alive)
        .map(|m| m.info.id)
        .collect();
    let answers =
        futures::future::join_all(nodes.iter().map(|n| detail_from(&state, n, &record.id))).await;
    let after = q.after_ms.unwrap_or(0);
    let merged: BTreeSet<JobEvent> = answers
        .into_iter()
        .filter_map(Result::ok)
        .flat_map(|d| d.events)
        .filter(|e| e.at_ms > after)
        .collect();
    Json(serde_json::json!({
        "job": JobView::from(record),
        "events": merged.into_iter().collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let record = match record(&state, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match state.jobs.cancel(record.id.clone()).await {
        Ok(CancelOutcome::Cancelled) => Json(CancelAnswer {
            cancelled: true,
            message: format!("job {id} is cancelled; its tasks are being stopped"),
        })
        .into_response(),
        Ok(CancelOutcome::AlreadyFinished(status)) => Json(CancelAnswer {
            cancelled: false,
            message: format!("job {id} already finished ({status}); nothing to cancel"),
        })
        .into_response(),
        Ok(CancelOutcome::NotFound) => not_found(&id),
        Err(e) => unavailable(e),
    }
}

async fn executions(State(state): State<AppState>, Query(q): Query<ExecutionsQuery>) -> Response {
    let job = q.job.map(JobId);
    let runs: Result<Vec<Execution>, _> = state.executor.runs(job.clone()).await;
    let runs = match runs {
        Ok(runs) => runs,
        Err(e) => return unavailable(e),
    };
    let running: Vec<serde_json::Value> = state
        .executor
        .usage()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|t| job.as_ref().is_none_or(|j| *j == t.job))
        .map(|t| serde_json::json!({ "job": t.job, "task": t.task }))
        .collect();
    let mut body = serde_json::json!({
        "node": state.mesh.local_id(),
        "executions": runs,
        "running": running,
    });
    if let Some(job) = job {
        match state.executor.survey(job).await {
            Ok(entries) => {
                body["ledger"] = entries
                    .into_iter()
                    .map(|(task, e)| {
                        serde_json::json!({
                            "task": task,
                            "epoch": e.epoch,
                            "attempt": e.attempt,
                            "outcome": e.outcome,
                        })
                    })
                    .collect();
            }
            Err(e) => return unavailable(e),
        }
    }
    Json(body).into_response()
}
