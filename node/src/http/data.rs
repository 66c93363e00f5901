//! Datasets over HTTP under `/api/v1/data`, answered by any node.
//!
//! - `POST /api/v1/data?name=N&format=jsonl|csv|text&text_field=F&label_field=L&on_error=skip|fail`
//!   uploads the request body as `N@1`. The body is spooled to a file under
//!   `<data dir>/spool/` as it arrives (never held whole in memory; removed when the request
//!   ends, and any left by a crash when the node starts) and then ingested a record at a time; `201` with the catalog
//!   record, the malformed-line report and the placement.
//! - `GET /api/v1/data` lists datasets with their versions.
//! - `GET /api/v1/data/{name}[/{version}]` shows a version: schema, counts, sample rows, shard
//!   holders and the lineage chain back to the upload.
//! - `GET /api/v1/data/{name}/{version}/export?format=jsonl|csv` streams the records in upload
//!   order, each shard checked against the catalog's hash.
//! - `DELETE /api/v1/data/{name}[/{version}]` deletes versions and their shards.
//! - `POST /api/v1/data/{name}/ops` runs a chain of operations as a job
//!   ([`OpsRequest`]); with `"wait": true` it answers once the job has finished.
//!
//! Unknown datasets and versions are `404`; bad input `400` with the field named; a dataset
//! that exists `409`; a holder or the catalog failing `503`.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flotilla_actors::data::ingest::{write_csv, Format, OnError, Options};
use flotilla_actors::data::record::Record as DataRow;
use flotilla_actors::data::version;
use flotilla_actors::jobs::manager::SubmitError;
use flotilla_actors::mesh::Mesh;
use flotilla_protocol::catalog::{CatalogKey, DatasetRecord, Entry, JobRecord, RecordKind};
use flotilla_protocol::jobs::{JobId, JobStatus};
use flotilla_protocol::services::jobs::{RequestBody, ResponseBody};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::catalog::{field_error, invalid, unavailable};
use super::routes::error_body;
use super::AppState;
use crate::data::ops::OpsRequest;
use crate::data::Error;

/// Largest upload accepted.
pub const MAX_UPLOAD_BYTES: u64 = 16 << 30;
/// Rows `show` samples.
const SAMPLE_ROWS: usize = 5;
/// How often a waiting operation request looks at its job.
const WAIT_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
struct UploadQuery {
    name: Option<String>,
    format: Option<String>,
    text_field: Option<String>,
    label_field: Option<String>,
    on_error: Option<String>,
    records_per_shard: Option<usize>,
    source: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ExportQuery {
    format: Option<String>,
}

/// One version in a lineage chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainLink {
    pub version: u64,
    pub parent_version: Option<u64>,
    pub operation: String,
    pub record_count: u64,
    pub steps: Vec<version::Step>,
}

/// One shard in `show`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardView {
    pub index: u32,
    pub hash: String,
    pub holders: Vec<String>,
}

/// The body of `GET /api/v1/data/{name}[/{version}]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetShow {
    pub record: DatasetRecord,
    pub versions: Vec<u64>,
    pub shards: Vec<ShardView>,
    pub sample: Vec<std::collections::BTreeMap<String, String>>,
    /// Newest first, ending at the upload.
    pub lineage: Vec<ChainLink>,
}

/// One dataset in `GET /api/v1/data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub name: String,
    pub versions: Vec<u64>,
    pub latest: u64,
    pub records: u64,
    pub shards: usize,
    pub operation: String,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/data",
            post(upload).get(list).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/data/{name}", get(show_latest).delete(delete_all))
        .route("/api/v1/data/{name}/ops", post(run_ops))
        .route(
            "/api/v1/data/{name}/{version}",
            get(show_version).delete(delete_version),
        )
        .route("/api/v1/data/{name}/{version}/export", get(export))
        .with_state(state)
}

/// The response for a data error; `field` names the input it concerns.
fn error_response(e: Error, field: &str) -> Response {
    match e {
        Error::NotFound(m) => (
            StatusCode::NOT_FOUND,
            error_body("not_found", &format!("dataset {m} not found")),
        )
            .into_response(),
        Error::Conflict(m) => (StatusCode::CONFLICT, error_body("conflict", &m)).into_response(),
        Error::Invalid(m) => invalid(&m, &field_error(field, m.clone())),
        Error::Unavailable(m) => unavailable(m),
    }
}

fn parse_version(v: &str) -> Result<u64, Response> {
    v.parse::<u64>().ok().filter(|v| *v >= 1).ok_or_else(|| {
        invalid(
            "the version is not valid",
            &field_error("version", format!("{v:?} is not a version (1, 2, …)")),
        )
    })
}

fn upload_options(q: &UploadQuery) -> Result<Options, Response> {
    let bad = |f: &str, m: String| invalid("the upload options are not valid", &field_error(f, m));
    let format = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" | "json" => Format::Jsonl,
        "csv" => Format::Csv,
        "text" | "txt" => Format::Text,
        other => return Err(bad("format", format!("{other:?}: use jsonl, csv or text"))),
    };
    let mut opts = Options::new(format);
    if let Some(f) = &q.text_field {
        opts.text_field = f.clone();
    }
    opts.label_field = q.label_field.clone().filter(|l| !l.is_empty());
    opts.on_error = match q.on_error.as_deref().unwrap_or("skip") {
        "skip" => OnError::Skip,
        "fail" => OnError::Fail,
        other => return Err(bad("on_error", format!("{other:?}: use skip or fail"))),
    };
    Ok(opts)
}

async fn upload(
    State(state): State<AppState>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Response {
    let Some(name) = q.name.clone().filter(|n| !n.is_empty()) else {
        return invalid(
            "the upload options are not valid",
            &field_error("name", "a dataset name is required"),
        );
    };
    if let Err(m) = flotilla_protocol::validation::name_problem(&name) {
        return invalid("the upload options are not valid", &field_error("name", m));
    }
    let opts = match upload_options(&q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if q.records_per_shard == Some(0) {
        return invalid(
            "the upload options are not valid",
            &field_error("records_per_shard", "must be at least 1"),
        );
    }
    // Spool the body to disk as it arrives; the ingest then reads it a line at a time.
    // The spool lives in the node's data dir (`spool/`); the file is removed when `spool` drops,
    // whichever way this handler ends (including the request's deadline dropping it).
    let spool = match tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(&state.spool_dir)
    {
        Ok(f) => f,
        // Only the kind: tempfile's errors name the path.
        Err(e) => return unavailable(format!("cannot create a spool file: {}", e.kind())),
    };
    let file = match spool.as_file().try_clone() {
        Ok(f) => f,
        Err(e) => return unavailable(format!("spool file: {e}")),
    };
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return invalid(
                    "the upload was interrupted",
                    &field_error("body", e.to_string()),
                )
            }
        };
        total += chunk.len() as u64;
        if total > MAX_UPLOAD_BYTES {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                error_body(
                    "too_large",
                    &format!("uploads are limited to {MAX_UPLOAD_BYTES} bytes"),
                ),
            )
                .into_response();
        }
        if let Err(e) = out.write_all(&chunk).await {
            return unavailable(format!("spool file: {e}"));
        }
    }
    if let Err(e) = out.flush().await {
        return unavailable(format!("spool file: {e}"));
    }
    let source = q.source.clone().unwrap_or_else(|| "http upload".into());
    let answer = state
        .data
        .upload_file(
            &name,
            spool.path().to_path_buf(),
            opts,
            source,
            q.records_per_shard,
        )
        .await;
    drop(spool);
    match answer {
        Ok(a) => (StatusCode::CREATED, Json(a)).into_response(),
        Err(e) => error_response(e, "file"),
    }
}

async fn list(State(state): State<AppState>) -> Response {
    match state.data.datasets().await {
        Ok(all) => {
            let datasets: Vec<DatasetSummary> = all
                .into_iter()
                .filter_map(|(name, versions)| {
                    let (latest, r) = versions.iter().next_back()?;
                    Some(DatasetSummary {
                        name,
                        versions: versions.keys().copied().collect(),
                        latest: *latest,
                        records: r.record_count,
                        shards: r.shard_hashes.len(),
                        operation: r.lineage.operation.clone(),
                    })
                })
                .collect();
            Json(serde_json::json!({ "datasets": datasets })).into_response()
        }
        Err(e) => error_response(e, "name"),
    }
}

async fn show(state: &AppState, name: &str, version: Option<u64>) -> Response {
    let data = &state.data;
    let record = match data.get(name, version).await {
        Ok(r) => r,
        Err(e) => return error_response(e, "name"),
    };
    let versions = match data.versions(name).await {
        Ok(v) => v.keys().copied().collect(),
        Err(e) => return error_response(e, "name"),
    };
    let chain = match data.chain(&record).await {
        Ok(c) => c,
        Err(e) => return error_response(e, "version"),
    };
    let holders = data.holders(&record).await;
    let sample = match data.sample(&record, SAMPLE_ROWS).await {
        Ok(s) => s.into_iter().map(|r| r.fields).collect(),
        Err(e) => return error_response(e, "version"),
    };
    let shards = record
        .shard_hashes
        .iter()
        .enumerate()
        .map(|(i, h)| ShardView {
            index: i as u32,
            hash: h.clone(),
            holders: holders
                .get(&(i as u32))
                .into_iter()
                .flatten()
                .map(|n| n.to_string())
                .collect(),
        })
        .collect();
    let lineage = chain
        .iter()
        .map(|r| ChainLink {
            version: r.version,
            parent_version: r.lineage.parent_version,
            operation: r.lineage.operation.clone(),
            record_count: r.record_count,
            steps: version::steps(&r.lineage),
        })
        .collect();
    Json(DatasetShow {
        record,
        versions,
        shards,
        sample,
        lineage,
    })
    .into_response()
}

async fn show_latest(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    show(&state, &name, None).await
}

async fn show_version(
    State(state): State<AppState>,
    Path((name, v)): Path<(String, String)>,
) -> Response {
    match parse_version(&v) {
        Ok(v) => show(&state, &name, Some(v)).await,
        Err(r) => r,
    }
}

async fn delete(state: &AppState, name: &str, version: Option<u64>) -> Response {
    match state.data.delete(name, version).await {
        Ok(n) => Json(serde_json::json!({ "deleted_versions": n })).into_response(),
        Err(e) => error_response(e, "name"),
    }
}

async fn delete_all(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    delete(&state, &name, None).await
}

async fn delete_version(
    State(state): State<AppState>,
    Path((name, v)): Path<(String, String)>,
) -> Response {
    match parse_version(&v) {
        Ok(v) => delete(&state, &name, Some(v)).await,
        Err(r) => r,
    }
}

/// One shard's records in the export format (`csv_header`: write the header row).
fn encode(rows: &[DataRow], csv: bool, with_label: bool, header: bool) -> Result<Vec<u8>, String> {
    if csv {
        let mut buf = Vec::new();
        write_csv(rows, &mut buf, with_label).map_err(|e| e.to_string())?;
        if !header {
            // `write_csv` always starts with the header row (plain names, no quoting).
            let start = buf.iter().position(|b| *b == b'\n').map_or(0, |p| p + 1);
            buf.drain(..start);
        }
        return Ok(buf);
    }
    let mut buf = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut buf, &r.fields).map_err(|e| e.to_string())?;
        buf.push(b'\n');
    }
    Ok(buf)
}

async fn export(
    State(state): State<AppState>,
    Path((name, v)): Path<(String, String)>,
    Query(q): Query<ExportQuery>,
) -> Response {
    let v = match parse_version(&v) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let csv = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" | "json" => false,
        "csv" => true,
        other => {
            return invalid(
                "the export options are not valid",
                &field_error("format", format!("{other:?}: use jsonl or csv")),
            )
        }
    };
    let data = state.data.clone();
    let record = match data.get(&name, Some(v)).await {
        Ok(r) => r,
        Err(e) => return error_response(e, "name"),
    };
    let holders = data.holders(&record).await;
    if let Some(i) = (0..record.shard_hashes.len() as u32).find(|i| !holders.contains_key(i)) {
        return unavailable(format!("no live holder of shard {i} of {name}@{v}"));
    }
    let with_label = record.schema.iter().any(|f| f.name == "label");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    flotilla_actors::task::spawn(async move {
        for i in 0..record.shard_hashes.len() as u32 {
            let chunk = match data.read_shard(&record, i, &holders).await {
                Ok(rows) => encode(&rows, csv, with_label, i == 0).map(Bytes::from),
                Err(e) => Err(e.to_string()),
            };
            let failed = chunk.is_err();
            if tx.send(chunk.map_err(std::io::Error::other)).await.is_err() || failed {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let kind = if csv {
        "text/csv"
    } else {
        "application/x-ndjson"
    };
    ([(header::CONTENT_TYPE, kind)], Body::from_stream(stream)).into_response()
}

/// The job record of `id`, if the catalog has it.
async fn job_record(state: &AppState, id: &JobId) -> Option<JobRecord> {
    let key = CatalogKey {
        kind: RecordKind::Job,
        name: id.0.clone(),
        version: 0,
    };
    match state.catalog.get(key).await {
        Ok(Some(Entry::Job(e))) => Some(e.record),
        _ => None,
    }
}

/// The result (or failure reason) of the job's task, as its owner reports it.
async fn task_result(state: &AppState, r: &JobRecord) -> Option<String> {
    let detail = if r.owner == state.mesh.local_id() {
        state.jobs.detail(r.id.clone()).await.ok()?
    } else {
        let body = RequestBody::Detail { job: r.id.clone() };
        match state.mesh.jobs(&r.owner, body, state.request_timeout).await {
            Ok(ResponseBody::Detail(d)) => d,
            _ => return None,
        }
    };
    detail.tasks.into_iter().find_map(|t| t.result)
}

async fn run_ops(State(state): State<AppState>, Path(name): Path<String>, body: Bytes) -> Response {
    let req: OpsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return invalid(
                "the operation request is not valid",
                &field_error("body", e.to_string()),
            )
        }
    };
    let prepared = match state.data.prepare_ops(&name, &req).await {
        Ok(p) => p,
        Err(e) => return error_response(e, "ops"),
    };
    let submitted = match state.jobs.submit(prepared.spec.clone()).await {
        Ok(s) => s,
        Err(SubmitError::Invalid(errors)) => return invalid("the job is not valid", &errors),
        Err(SubmitError::Internal(e)) => return unavailable(e),
    };
    let job = submitted.record.id.clone();
    let head = serde_json::json!({
        "job": job.0,
        "dataset": prepared.dataset,
        "parent_version": prepared.parent_version,
        "version": prepared.output_version,
    });
    if !req.wait {
        return (StatusCode::ACCEPTED, Json(head)).into_response();
    }
    let deadline = Instant::now() + Duration::from_secs(req.wait_secs.unwrap_or(600));
    let record = loop {
        match job_record(&state, &job).await {
            Some(r) if r.status.is_terminal() => break r,
            _ if Instant::now() >= deadline => {
                return (
                    StatusCode::GATEWAY_TIMEOUT,
                    error_body(
                        "timeout",
                        &format!(
                            "job {} has not finished; follow it with `flotilla job show`",
                            job.0
                        ),
                    ),
                )
                    .into_response()
            }
            _ => tokio::time::sleep(WAIT_POLL).await,
        }
    };
    let result = task_result(&state, &record).await;
    let mut answer = head;
    answer["status"] = serde_json::json!(record.status.to_string());
    if record.status == JobStatus::Succeeded {
        answer["result"] = result
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or(serde_json::Value::Null);
        return (StatusCode::CREATED, Json(answer)).into_response();
    }
    let reason = result.unwrap_or_else(|| format!("job {} {}", job.0, record.status));
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        error_body(
            "job_failed",
            &format!(
                "{} on {name}@{} failed: {reason}; {name}@{} is unchanged",
                prepared.output_version, prepared.parent_version, prepared.parent_version
            ),
        ),
    )
        .into_response()
}
