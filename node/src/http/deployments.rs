//! Models and deployments over HTTP, answered by any node:
//!
//! - `POST /api/v1/models` registers a model version from a folder on this node (a Hugging Face
//!   BERT folder or a kernels GPT checkpoint): every file is hashed with blake3 into the record.
//! - `GET /api/v1/models` lists the model versions registered for serving.
//! - `POST /api/v1/deployments` deploys a model version; `GET /api/v1/deployments` lists
//!   deployments with their placement; `DELETE /api/v1/deployments/{name}` undeploys.
//! - `GET /api/v1/serving` shows this node's router counters (for the node, per deployment and
//!   per replica) and local replicas.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use flotilla_actors::serving::router::{ReplicaStatsSnapshot, RouterStatsSnapshot};
use flotilla_protocol::catalog::{
    CatalogKey, DeploymentRecord, Entry, Record, RecordKind, TrafficSplit,
};
use serde::{Deserialize, Serialize};

use super::catalog::{field_error, invalid, unavailable};
use super::routes::error_body;
use super::AppState;
use crate::models::artifacts::{register_folder, ServedModel};

/// A model version as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelView {
    pub name: String,
    pub version: u64,
    pub kind: String,
    pub hash: String,
    pub context_length: u32,
    /// The node that registered it.
    pub origin: String,
    pub artifacts: usize,
    /// The artifacts' bytes together (0 when the record has no sizes).
    pub bytes: u64,
    /// The nodes holding the files when a registration answered (empty in listings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<String>,
}

impl From<&ServedModel> for ModelView {
    fn from(m: &ServedModel) -> Self {
        ModelView {
            name: m.name.clone(),
            version: m.version,
            kind: m.kind.as_str().to_string(),
            hash: m.hash.clone(),
            context_length: m.limits.context_length,
            origin: m.origin.clone(),
            artifacts: m.artifacts.len(),
            bytes: m.sizes.values().sum(),
            held_by: Vec::new(),
        }
    }
}

/// The body of `POST /api/v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterModel {
    pub name: String,
    /// The next free version when omitted.
    #[serde(default)]
    pub version: Option<u64>,
    pub path: PathBuf,
}

/// The body of `POST /api/v1/deployments`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub name: String,
    pub model: String,
    /// The latest version when omitted.
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default = "eight")]
    pub max_batch: u32,
    #[serde(default = "five")]
    pub max_wait_ms: u32,
    /// Default: 4 × `max_batch`.
    #[serde(default)]
    pub max_inflight: Option<u32>,
    #[serde(default = "yes")]
    pub cache: bool,
    /// Cores each replica reserves on its node.
    #[serde(default = "one")]
    pub cores: u32,
    /// RAM each replica reserves on its node, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// GPUs each replica reserves on its node.
    #[serde(default)]
    pub gpus: u32,
}

/// What a replica reserves by default: enough for the bundled models (MiniLM's weights are
/// 90 MB, its activations for a batch of 32 a few tens of MB more) with room to spare.
fn default_memory_mib() -> u64 {
    512
}

fn one() -> u32 {
    1
}
fn eight() -> u32 {
    8
}
fn five() -> u32 {
    5
}
fn yes() -> bool {
    true
}

/// A deployment as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentInfo {
    pub name: String,
    pub model: String,
    pub version: u64,
    pub replicas: u32,
    pub max_batch: u32,
    pub max_wait_ms: u32,
    pub max_inflight: u32,
    pub cache: bool,
    /// Cores, RAM (MiB) and GPUs each replica reserves.
    pub cores: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    /// Nodes placed to run a replica (empty until this node's reconciler has seen it).
    pub placed_on: Vec<String>,
    /// The placed nodes whose replica is loaded and ready: this node routes only to these.
    #[serde(default)]
    pub ready_on: Vec<String>,
    /// Why fewer replicas than asked are placed (no node with room), if so.
    pub pending: Option<String>,
    /// The version hash this node's router sends traffic to, once its reconciler has seen it.
    pub serving_hash: Option<String>,
}

/// A replica on this node, with its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalReplicaInfo {
    pub deployment: String,
    pub model_hash: String,
    /// Requests that reached the model.
    pub executions: u64,
    pub outstanding: u32,
    pub batches: Option<u64>,
    pub decode_steps: Option<u64>,
    pub generated_tokens: Option<u64>,
    /// Sequences the engine dropped because their consumer went away.
    pub cancelled: Option<u64>,
}

/// One deployment's counters in this node's router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRouterInfo {
    /// `requests`, `streams`, `cache_hits`, … as at the top of [`ServingInfo`].
    #[serde(flatten)]
    pub counters: RouterStatsSnapshot,
    /// Per replica the router sends this deployment's requests to (on any node), by replica id:
    /// `attempts`, `failures`, `retried_away`.
    pub replicas: BTreeMap<String, ReplicaStatsSnapshot>,
}

/// `GET /api/v1/serving`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServingInfo {
    pub node: String,
    /// The router's counters over every deployment.
    pub requests: u64,
    pub streams: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub coalesced: u64,
    pub retries: u64,
    pub rejected: u64,
    pub failed: u64,
    #[serde(default)]
    pub deadline_exceeded: u64,
    /// The router's counters per deployment with replicas, by deployment name.
    #[serde(default)]
    pub by_deployment: BTreeMap<String, DeploymentRouterInfo>,
    /// This node's replicas.
    pub replicas: Vec<LocalReplicaInfo>,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/models", get(list_models).post(register))
        .route("/api/v1/deployments", get(list_deployments).post(deploy))
        .route("/api/v1/deployments/{name}", delete(undeploy))
        .route("/api/v1/serving", get(serving))
        .with_state(state)
}

async fn served_models(state: &AppState) -> Result<Vec<ServedModel>, Response> {
    let entries = state
        .catalog
        .list(Some(RecordKind::Model))
        .await
        .map_err(unavailable)?;
    Ok(entries
        .into_iter()
        .filter_map(|(_, e)| match e {
            Entry::Register(r) => match r.value {
                Some(Record::Model(m)) => ServedModel::from_record(&m),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

async fn list_models(State(state): State<AppState>) -> Response {
    match served_models(&state).await {
        Ok(models) => Json(models.iter().map(ModelView::from).collect::<Vec<_>>()).into_response(),
        Err(r) => r,
    }
}

async fn register(State(state): State<AppState>, Json(req): Json<RegisterModel>) -> Response {
    let version = match req.version {
        Some(v) => v,
        None => match crate::models::artifacts::next_version(&state.catalog, &req.name).await {
            Ok(v) => v,
            Err(e) => return unavailable(e),
        },
    };
    let files = &state.serving.files;
    let (name, path, me) = (req.name.clone(), req.path.clone(), files.me.clone());
    let blobs = files.blobs.clone();
    let record = match tokio::task::spawn_blocking(move || {
        register_folder(&name, version, &path, &me, &blobs)
    })
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return invalid(&e.to_string(), &field_error("path", e.to_string())),
        Err(e) => return unavailable(e),
    };
    let Some(view) = ServedModel::from_record(&record) else {
        return unavailable("the registered record lacks its serving fields");
    };
    if let Err(e) = state.catalog.put(Record::Model(record)).await {
        return unavailable(e);
    }
    // Answer once the files are on more than this node (or the download deadline passed).
    let deadline = crate::models::fetch::download_deadline(view.sizes.values().sum());
    let held = crate::models::replicate::wait_replicated(
        files,
        &state.membership,
        &view,
        files.replication,
        deadline,
    )
    .await;
    let mut answer = ModelView::from(&view);
    answer.held_by = held.into_iter().map(|n| n.0).collect();
    (StatusCode::CREATED, Json(answer)).into_response()
}

fn info(d: &DeploymentRecord, view: Option<crate::serving::DeploymentView>) -> DeploymentInfo {
    DeploymentInfo {
        name: d.name.clone(),
        model: d.model.clone(),
        version: d.traffic.first().map_or(0, |t| t.version),
        replicas: d.max_replicas,
        max_batch: d.max_batch_size,
        max_wait_ms: d.max_batch_wait_ms,
        max_inflight: d.max_inflight,
        cache: d.cache,
        cores: d.resources.cores,
        memory_mib: d.resources.ram_bytes >> 20,
        gpus: d.resources.gpus,
        placed_on: view
            .as_ref()
            .map(|v| v.replicas.clone())
            .unwrap_or_default(),
        ready_on: view.as_ref().map(|v| v.ready.clone()).unwrap_or_default(),
        pending: view.as_ref().and_then(|v| v.short.clone()),
        serving_hash: view.map(|v| v.model.hash),
    }
}

async fn deploy(State(state): State<AppState>, Json(req): Json<Deploy>) -> Response {
    let models = match served_models(&state).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let version = match req.version {
        Some(v) => Some(v),
        None => models
            .iter()
            .filter(|m| m.name == req.model)
            .map(|m| m.version)
            .max(),
    };
    let Some(version) = version.filter(|v| {
        models
            .iter()
            .any(|m| m.name == req.model && m.version == *v)
    }) else {
        return (
            StatusCode::NOT_FOUND,
            error_body(
                "not_found",
                &format!(
                    "no model version {}@{:?} is registered",
                    req.model, req.version
                ),
            ),
        )
            .into_response();
    };
    let record = DeploymentRecord {
        name: req.name,
        model: req.model,
        traffic: vec![TrafficSplit {
            version,
            percent: 100,
        }],
        min_replicas: req.replicas,
        max_replicas: req.replicas,
        max_batch_size: req.max_batch,
        max_batch_wait_ms: req.max_wait_ms,
        max_inflight: req
            .max_inflight
            .unwrap_or_else(|| req.max_batch.saturating_mul(4)),
        cache: req.cache,
        resources: flotilla_protocol::jobs::Resources {
            cores: req.cores,
            ram_bytes: req.memory_mib.saturating_mul(1 << 20),
            gpus: req.gpus,
        },
    };
    if let Err(e) = record.validate() {
        return invalid("invalid deployment", &e);
    }
    let answer = info(&record, None);
    if let Err(e) = state.catalog.put(Record::Deployment(record)).await {
        return unavailable(e);
    }
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn list_deployments(State(state): State<AppState>) -> Response {
    let entries = match state.catalog.list(Some(RecordKind::Deployment)).await {
        Ok(e) => e,
        Err(e) => return unavailable(e),
    };
    let out: Vec<DeploymentInfo> = entries
        .into_iter()
        .filter_map(|(_, e)| match e {
            Entry::Register(r) => match r.value {
                Some(Record::Deployment(d)) => Some(info(&d, state.serving.deployment(&d.name))),
                _ => None,
            },
            _ => None,
        })
        .collect();
    Json(out).into_response()
}

async fn undeploy(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let key = CatalogKey::deployment(&name);
    match state.catalog.get(key.clone()).await {
        Ok(Some(Entry::Register(r))) if r.value.is_some() => {}
        Ok(_) => {
            return (
                StatusCode::NOT_FOUND,
                error_body("not_found", &format!("no deployment {name}")),
            )
                .into_response()
        }
        Err(e) => return unavailable(e),
    }
    match state.catalog.delete(key).await {
        Ok(()) => Json(serde_json::json!({ "undeployed": name })).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn serving(State(state): State<AppState>) -> Response {
    let s = state.serving.router.stats();
    let replicas = state
        .serving
        .local
        .all()
        .iter()
        .map(|r| {
            let engine = r.engine_stats();
            LocalReplicaInfo {
                deployment: r.deployment.clone(),
                model_hash: r.model.hash.clone(),
                executions: r.executions.load(std::sync::atomic::Ordering::Relaxed),
                outstanding: r.outstanding(),
                batches: r.batch_stats().map(|b| b.batches),
                decode_steps: engine.map(|e| e.0),
                generated_tokens: engine.map(|e| e.1),
                cancelled: r.cancelled(),
            }
        })
        .collect();
    let router = &state.serving.router;
    let by_deployment = router
        .deployment_stats()
        .into_iter()
        .map(|(name, counters)| {
            let replicas = router
                .replica_stats(&name)
                .into_iter()
                .map(|(id, s)| (id.0, s))
                .collect();
            (name, DeploymentRouterInfo { counters, replicas })
        })
        .collect();
    Json(ServingInfo {
        node: state.serving.me.clone(),
        requests: s.requests,
        streams: s.streams,
        cache_hits: s.cache_hits,
        cache_misses: s.cache_misses,
        coalesced: s.coalesced,
        retries: s.retries,
        rejected: s.rejected,
        failed: s.failed,
        deadline_exceeded: s.deadline_exceeded,
        by_deployment,
        replicas,
    })
    .into_response()
}
