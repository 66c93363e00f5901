//! The catalog's HTTP surface under `/api/v1/catalog`: list live entries, and read, write and
//! delete model versions and aliases. Writes return once the answering node has saved them
//! (`Durability::Sync`); other nodes learn them by gossip and anti-entropy.
//!
//! Bad input is answered `400` with every problem by field:
//! `{"error":{"code":"invalid","message":..,"fields":[{"field":..,"message":..}]}}`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use flotilla_actors::catalog::{self as replica, WriteError};
use flotilla_protocol::catalog::{
    CatalogKey, Entry, Lineage, ModelAlias, ModelVersion, Record, RecordKind,
};
use flotilla_protocol::hlc::Hlc;
use flotilla_protocol::validation::{FieldError, FieldErrors};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::routes::error_body;
use super::AppState;

/// One live entry as `GET /api/v1/catalog` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEntry {
    pub key: CatalogKey,
    /// Timestamp of the write that set the value.
    pub hlc: Hlc,
    /// The record (`{"Model": {..}}`, `{"Alias": {..}}`, …) or, for jobs, the job record.
    pub value: serde_json::Value,
}

/// The body of `GET /api/v1/catalog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// Live entries (deleted ones left out), in key order.
    pub entries: Vec<LiveEntry>,
}

/// Query of `GET /api/v1/catalog`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    kind: Option<String>,
}

/// Lineage in a write body; defaults to a first upload.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LineageBody {
    parent_version: Option<u64>,
    operation: String,
    parameters: BTreeMap<String, String>,
}

impl Default for LineageBody {
    fn default() -> Self {
        Self {
            parent_version: None,
            operation: "upload".into(),
            parameters: BTreeMap::new(),
        }
    }
}

/// Body of `PUT /api/v1/catalog/models/{name}/{version}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ModelBody {
    metadata: BTreeMap<String, String>,
    artifact_hashes: BTreeMap<String, String>,
    lineage: LineageBody,
    /// Defaults to the time the node receives the request.
    created_at_ms: Option<u64>,
}

/// Body of `PUT /api/v1/catalog/aliases/{model}/{alias}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    version: u64,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/catalog", get(list))
        .route(
            "/api/v1/catalog/models/{name}/{version}",
            put(put_model).get(get_model).delete(delete_model),
        )
        .route("/api/v1/catalog/aliases/{model}/{alias}", put(put_alias))
        .with_state(state)
}

pub(super) fn invalid(message: &str, errors: &FieldErrors) -> Response {
    let fields: Vec<&FieldError> = errors.0.iter().collect();
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({
            "error": { "code": "invalid", "message": message, "fields": fields }
        })),
    )
        .into_response()
}

pub(super) fn field_error(field: &str, message: impl Into<String>) -> FieldErrors {
    FieldErrors(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        error_body("unavailable", &e.to_string()),
    )
        .into_response()
}

fn not_found(key: &CatalogKey) -> Response {
    (
        StatusCode::NOT_FOUND,
        error_body("not_found", &format!("{key} is not in the catalog")),
    )
        .into_response()
}

/// Maps a refused or failed write to its status and body.
fn write_error(e: WriteError) -> Response {
    use replica::Error as Refused;
    let message = e.to_string();
    match e {
        WriteError::Refused(Refused::Invalid { errors, .. }) => invalid(&message, &errors),
        WriteError::Refused(Refused::KeyMismatch { .. } | Refused::JobDelete(_)) => {
            (StatusCode::BAD_REQUEST, error_body("invalid", &message)).into_response()
        }
        WriteError::Refused(Refused::TooLarge { .. }) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            error_body("too_large", &message),
        )
            .into_response(),
        WriteError::Refused(Refused::StaleEpoch { .. }) => {
            (StatusCode::CONFLICT, error_body("conflict", &message)).into_response()
        }
        WriteError::Refused(Refused::Full { .. } | Refused::Clock(_))
        | WriteError::Store { .. }
        | WriteError::Unavailable(_) => unavailable(message),
    }
}

/// Parses a JSON body, turning serde's complaint into a field error instead of axum's plain
/// text rejection.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        let errors = field_error("body", e.to_string());
        invalid("the request body is not valid", &errors)
    })
}

fn parse_version(raw: &str) -> Result<u64, Response> {
    raw.parse().map_err(|_| {
        let errors = field_error("version", "must be a positive integer");
        invalid("invalid key", &errors)
    })
}

fn parse_kind(raw: &str) -> Option<RecordKind> {
    Some(match raw {
        "dataset" | "datasets" => RecordKind::Dataset,
        "model" | "models" => RecordKind::Model,
        "alias" | "aliases" => RecordKind::ModelAlias,
        "deployment" | "deployments" => RecordKind::Deployment,
        "job" | "jobs" => RecordKind::Job,
        "eviction" | "evictions" => RecordKind::Eviction,
        _ => return None,
    })
}

fn live(key: CatalogKey, entry: Entry) -> Option<LiveEntry> {
    let (hlc, value) = match entry {
        Entry::Register(r) => (r.hlc, serde_json::to_value(r.value?).ok()?),
        Entry::Job(j) => (j.hlc, serde_json::to_value(j.record).ok()?),
    };
    Some(LiveEntry { key, hlc, value })
}

async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let kind = match q.kind.as_deref().map(|k| (k, parse_kind(k))) {
        None => None,
        Some((_, Some(kind))) => Some(kind),
        Some((raw, None)) => {
            let errors = field_error(
                "kind",
                format!(
                    "unknown kind {raw:?}; one of dataset, model, alias, deployment, job, eviction"
                ),
            );
            return invalid("invalid query", &errors);
        }
    };
    match state.catalog.list(kind).await {
        Ok(entries) => Json(Listing {
            entries: entries
                .into_iter()
                .filter_map(|(k, e)| live(k, e))
                .collect(),
        })
        .into_response(),
        Err(e) => unavailable(e),
    }
}

async fn put_model(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let version = match parse_version(&version) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let body: ModelBody = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let record = ModelVersion {
        name,
        version,
        metadata: body.metadata,
        artifact_hashes: body.artifact_hashes,
        lineage: Lineage {
            parent_version: body.lineage.parent_version,
            operation: body.lineage.operation,
            parameters: body.lineage.parameters,
        },
        created_at_ms: body
            .created_at_ms
            .unwrap_or_else(flotilla_actors::clock::wall_ms),
    };
    // Report every bad field of the record at once, before the catalog checks the key.
    if let Err(errors) = record.validate() {
        return invalid("invalid model version", &errors);
    }
    let key = CatalogKey::model(&record.name, record.version);
    put_record(&state, key, Record::Model(record)).await
}

async fn put_alias(
    State(state): State<AppState>,
    Path((model, alias)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: AliasBody = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let record = ModelAlias {
        model,
        alias,
        version: body.version,
    };
    if let Err(errors) = record.validate() {
        return invalid("invalid model alias", &errors);
    }
    let key = CatalogKey::alias(&record.model, &record.alias);
    put_record(&state, key, Record::Alias(record)).await
}

async fn put_record(state: &AppState, key: CatalogKey, record: Record) -> Response {
    let value = serde_json::to_value(&record).unwrap_or_default();
    match state.catalog.put(record).await {
        Ok(()) => Json(serde_json::json!({ "key": key, "value": value })).into_response(),
        Err(e) => write_error(e),
    }
}

async fn get_model(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let key = match parse_version(&version) {
        Ok(v) => CatalogKey::model(&name, v),
        Err(r) => return r,
    };
    match state.catalog.get(key.clone()).await {
        Ok(Some(entry)) => match live(key.clone(), entry) {
            Some(e) => Json(e).into_response(),
            None => not_found(&key),
        },
        Ok(None) => not_found(&key),
        Err(e) => unavailable(e),
    }
}

async fn delete_model(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let key = match parse_version(&version) {
        Ok(v) => CatalogKey::model(&name, v),
        Err(r) => return r,
    };
    match state.catalog.get(key.clone()).await {
        Ok(Some(Entry::Register(r))) if r.value.is_some() => {}
        Ok(_) => return not_found(&key),
        Err(e) => return unavailable(e),
    }
    match state.catalog.delete(key.clone()).await {
        Ok(()) => Json(serde_json::json!({ "deleted": key })).into_response(),
        Err(e) => write_error(e),
    }
}
