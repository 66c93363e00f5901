//! The replicated catalog's records: datasets, model versions, model aliases, deployments, job
//! records and node evictions, and the keys they live under.
//!
//! Every record is plain data that bincode encodes canonically (maps are `BTreeMap`s, no
//! skipped fields, no internally tagged enums), so two nodes holding the same record hold the
//! same bytes and the same digest. Every record has a `validate()` that lists bad fields; a
//! record from a peer that fails it is dropped and counted, never merged.
//!
//! The CRDT entries that wrap the records (last-writer-wins registers and job entries) are in
//! [`entry`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::jobs::{JobId, JobSpec, JobStatus};
use crate::validation::{name_problem, Checker, FieldErrors};

pub mod entry;

pub use entry::{Entry, JobEntry, Register};

/// Most fields in a dataset schema.
pub const MAX_SCHEMA_FIELDS: usize = 1024;
/// Most shards of one dataset version.
pub const MAX_SHARDS: usize = 65_536;
/// Most entries in a metadata, parameter or artifact map.
pub const MAX_MAP_ENTRIES: usize = 256;
/// Longest value in a metadata or parameter map.
pub const MAX_TEXT_BYTES: usize = 4096;

/// What a catalog entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordKind {
    Dataset,
    Model,
    ModelAlias,
    Deployment,
    Job,
    /// A node removed from the cluster: every node refuses its connections.
    Eviction,
}

impl RecordKind {
    /// The first byte of store keys of this kind, so one kind can be scanned by prefix.
    pub fn tag(self) -> u8 {
        match self {
            RecordKind::Dataset => b'd',
            RecordKind::Model => b'm',
            RecordKind::ModelAlias => b'a',
            RecordKind::Deployment => b'p',
            RecordKind::Job => b'j',
            RecordKind::Eviction => b'e',
        }
    }

    /// Whether keys of this kind carry a version (datasets and model versions do).
    pub fn is_versioned(self) -> bool {
        matches!(self, RecordKind::Dataset | RecordKind::Model)
    }
}

/// Where a record lives in the catalog: kind, name and version.
///
/// Unversioned kinds use version 0. An alias is named `<model>/<alias>` (names cannot contain
/// `/`, so the split is unambiguous).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CatalogKey {
    pub kind: RecordKind,
    pub name: String,
    pub version: u64,
}

impl CatalogKey {
    /// Version `version` of dataset `name`.
    pub fn dataset(name: &str, version: u64) -> Self {
        Self {
            kind: RecordKind::Dataset,
            name: name.to_string(),
            version,
        }
    }
    /// Version `version` of model `name`.
    pub fn model(name: &str, version: u64) -> Self {
        Self {
            kind: RecordKind::Model,
            name: name.to_string(),
            version,
        }
    }
    /// Alias `alias` (`latest`, `production`, …) of model `model`.
    pub fn alias(model: &str, alias: &str) -> Self {
        Self {
            kind: RecordKind::ModelAlias,
            name: format!("{model}/{alias}"),
            version: 0,
        }
    }
    /// Deployment `name`.
    pub fn deployment(name: &str) -> Self {
        Self {
            kind: RecordKind::Deployment,
            name: name.to_string(),
            version: 0,
        }
    }
    /// The record of job `id`.
    pub fn job(id: &JobId) -> Self {
        Self {
            kind: RecordKind::Job,
            name: id.0.clone(),
            version: 0,
        }
    }
    /// The eviction of node `node`.
    pub fn eviction(node: &NodeId) -> Self {
        Self {
            kind: RecordKind::Eviction,
            name: node.0.clone(),
            version: 0,
        }
    }

    /// Checks the name's shape and that the version agrees with the kind.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        if self.kind == RecordKind::ModelAlias {
            match self.name.split_once('/') {
                Some((model, alias)) => {
                    c.name("name.model", model);
                    c.name("name.alias", alias);
                }
                None => c.push("name", "an alias key is named <model>/<alias>"),
            }
        } else {
            c.name("name", &self.name);
        }
        if self.kind.is_versioned() {
            c.check(self.version >= 1, "version", "versions start at 1");
        } else {
            c.check(
                self.version == 0,
                "version",
                "must be 0 for an unversioned kind",
            );
        }
        c.finish()
    }

    /// The key's bytes in the store: kind tag, name, a 0 byte, version big-endian. Keys of one
    /// kind share a prefix and versions of one name sort numerically.
    pub fn store_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.name.len() + 10);
        k.push(self.kind.tag());
        k.extend_from_slice(self.name.as_bytes());
        k.push(0);
        k.extend_from_slice(&self.version.to_be_bytes());
        k
    }

    /// Reads a key back from [`CatalogKey::store_key`] bytes; `None` if they are not one.
    pub fn from_store_key(bytes: &[u8]) -> Option<CatalogKey> {
        let (&tag, rest) = bytes.split_first()?;
        let kind = [
            RecordKind::Dataset,
            RecordKind::Model,
            RecordKind::ModelAlias,
            RecordKind::Deployment,
            RecordKind::Job,
            RecordKind::Eviction,
        ]
        .into_iter()
        .find(|k| k.tag() == tag)?;
        let (name, version) = rest.split_at_checked(rest.len().checked_sub(9)?)?;
        let (&zero, version) = version.split_first()?;
        if zero != 0 {
            return None;
        }
        let name = String::from_utf8(name.to_vec()).ok()?;
        let version = u64::from_be_bytes(version.try_into().ok()?);
        Some(CatalogKey {
            kind,
            name,
            version,
        })
    }
}

impl std::fmt::Display for CatalogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            RecordKind::Dataset => "dataset",
            RecordKind::Model => "model",
            RecordKind::ModelAlias => "alias",
            RecordKind::Deployment => "deployment",
            RecordKind::Job => "job",
            RecordKind::Eviction => "eviction",
        };
        if self.kind.is_versioned() {
            write!(f, "{kind}/{}@{}", self.name, self.version)
        } else {
            write!(f, "{kind}/{}", self.name)
        }
    }
}

/// Where a version came from: its parent version of the same dataset or model, the operation
/// that produced it and that operation's parameters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lineage {
    /// `None` for a first version (an upload or import).
    pub parent_version: Option<u64>,
    /// `upload`, `normalise`, `dedup`, `train`, `quantise`, …
    pub operation: String,
    pub parameters: BTreeMap<String, String>,
}

impl Lineage {
    fn check(&self, c: &mut Checker, version: u64) {
        if let Some(p) = self.parent_version {
            c.check(
                p >= 1 && p < version,
                "lineage.parent_version",
                format!("must be an earlier version than {version}"),
            );
        }
        c.name("lineage.operation", &self.operation);
        check_map(c, "lineage.parameters", &self.parameters);
    }
}

fn check_map(c: &mut Checker, field: &str, map: &BTreeMap<String, String>) {
    if map.len() > MAX_MAP_ENTRIES {
        c.push(field, format!("at most {MAX_MAP_ENTRIES} entries"));
    }
    for (k, v) in map {
        if let Err(m) = name_problem(k) {
            c.push(format!("{field}.{k}"), format!("key {m}"));
        }
        c.text(&format!("{field}.{k}"), v, MAX_TEXT_BYTES);
    }
}

/// The type of a dataset field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FieldType {
    Text,
    Integer,
    Float,
    Boolean,
    /// Any JSON value.
    Json,
}

/// One field of a dataset's schema.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SchemaField {
    pub name: String,
    pub field_type: FieldType,
    pub nullable: bool,
}

/// One version of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub name: String,
    pub version: u64,
    pub schema: Vec<SchemaField>,
    pub record_count: u64,
    /// blake3 of each shard, in shard order, as 64 lowercase hex characters.
    pub shard_hashes: Vec<String>,
    pub lineage: Lineage,
    /// When the version was recorded, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl DatasetRecord {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        c.name("name", &self.name);
        c.check(self.version >= 1, "version", "versions start at 1");
        c.check(
            self.schema.len() <= MAX_SCHEMA_FIELDS,
            "schema",
            format!("at most {MAX_SCHEMA_FIELDS} fields"),
        );
        let mut seen = std::collections::BTreeSet::new();
        for (i, f) in self.schema.iter().enumerate() {
            c.name(&format!("schema[{i}].name"), &f.name);
            c.check(
                seen.insert(&f.name),
                format!("schema[{i}].name"),
                format!("field {} appears twice", f.name),
            );
        }
        c.check(
            self.shard_hashes.len() <= MAX_SHARDS,
            "shard_hashes",
            format!("at most {MAX_SHARDS} shards"),
        );
        for (i, h) in self.shard_hashes.iter().enumerate() {
            c.blake3_hex(&format!("shard_hashes[{i}]"), h);
        }
        c.check(
            self.record_count == 0 || !self.shard_hashes.is_empty(),
            "shard_hashes",
            "records need at least one shard",
        );
        self.lineage.check(&mut c, self.version);
        c.finish()
    }
}

/// The metadata key older nodes used for the folder a version was served from; refused.
pub const FORBIDDEN_PATH_KEY: &str = "serving.path";

/// One version of a model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: u64,
    /// Architecture, tokenizer, evaluation results and the like, as text.
    pub metadata: BTreeMap<String, String>,
    /// Artifact file name → blake3 of its bytes (64 lowercase hex characters).
    pub artifact_hashes: BTreeMap<String, String>,
    pub lineage: Lineage,
    /// When the version was recorded, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl ModelVersion {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        c.name("name", &self.name);
        c.check(self.version >= 1, "version", "versions start at 1");
        check_map(&mut c, "metadata", &self.metadata);
        // A record must never tell a node to read one of its own paths: model files are
        // found by hash in each node's artifact store.
        c.check(
            !self.metadata.contains_key(FORBIDDEN_PATH_KEY),
            format!("metadata.{FORBIDDEN_PATH_KEY}"),
            "model records name no local paths; files are found by their hashes",
        );
        c.check(
            !self.artifact_hashes.is_empty(),
            "artifact_hashes",
            "a model version has at least one artifact",
        );
        c.check(
            self.artifact_hashes.len() <= MAX_MAP_ENTRIES,
            "artifact_hashes",
            format!("at most {MAX_MAP_ENTRIES} artifacts"),
        );
        for (file, hash) in &self.artifact_hashes {
            c.name(&format!("artifact_hashes.{file}"), file);
            c.blake3_hex(&format!("artifact_hashes.{file}"), hash);
        }
        self.lineage.check(&mut c, self.version);
        c.finish()
    }
}

/// A movable name for one version of a model: `latest`, `production`, `canary`, ….
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelAlias {
    pub model: String,
    pub alias: String,
    pub version: u64,
}

impl ModelAlias {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        c.name("model", &self.model);
        c.name("alias", &self.alias);
        c.check(
            self.version >= 1,
            "version",
            "must name a model version (versions start at 1)",
        );
        c.finish()
    }
}

/// Share of a deployment's traffic that goes to one model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrafficSplit {
    pub version: u64,
    /// Percent of requests, 0–100; the splits of a deployment sum to 100.
    pub percent: u8,
}

/// A served model: versions, traffic split, replicas, batching and caching.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub name: String,
    pub model: String,
    pub traffic: Vec<TrafficSplit>,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Largest dynamic batch.
    pub max_batch_size: u32,
    /// Longest a request waits for its batch to fill, in milliseconds.
    pub max_batch_wait_ms: u32,
    /// Most requests one replica takes at once; routers send more elsewhere or refuse (429).
    pub max_inflight: u32,
    /// Whether deterministic responses are cached.
    pub cache: bool,
    /// What each replica reserves on its node. Replicas are placed only where this fits next to
    /// the other deployments' replicas, and they run in the inference priority class: tasks of
    /// lower classes on that node are preempted to make room.
    pub resources: crate::jobs::Resources,
}

impl DeploymentRecord {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        c.name("name", &self.name);
        c.name("model", &self.model);
        c.check(
            !self.traffic.is_empty(),
            "traffic",
            "at least one model version must take traffic",
        );
        let total: u32 = self.traffic.iter().map(|t| u32::from(t.percent)).sum();
        c.check(
            self.traffic.is_empty() || total == 100,
            "traffic",
            format!("percents must sum to 100, sum to {total}"),
        );
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in self.traffic.iter().enumerate() {
            c.check(
                t.version >= 1,
                format!("traffic[{i}].version"),
                "versions start at 1",
            );
            c.check(
                seen.insert(t.version),
                format!("traffic[{i}].version"),
                format!("version {} appears twice", t.version),
            );
            c.check(
                t.percent <= 100,
                format!("traffic[{i}].percent"),
                "must be at most 100",
            );
        }
        c.check(self.max_replicas >= 1, "max_replicas", "must be at least 1");
        c.check(
            self.min_replicas <= self.max_replicas,
            "min_replicas",
            "must not exceed max_replicas",
        );
        c.check(
            self.max_batch_size >= 1,
            "max_batch_size",
            "must be at least 1",
        );
        c.check(
            self.max_batch_wait_ms <= 60_000,
            "max_batch_wait_ms",
            "must be at most 60000",
        );
        c.check(self.max_inflight >= 1, "max_inflight", "must be at least 1");
        c.check(
            self.resources.cores >= 1,
            "resources.cores",
            "a replica needs at least 1 core",
        );
        c.check(
            self.resources.ram_bytes >= 1 << 20,
            "resources.ram_bytes",
            "a replica needs at least 1 MiB",
        );
        c.finish()
    }
}

/// A job as the catalog holds it: the spec, who owns it and in which epoch, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub spec: JobSpec,
    /// The node whose coordinator drives the job.
    pub owner: NodeId,
    /// Raised by each takeover; writes of an older epoch lose to the new owner's.
    pub epoch: u64,
    pub status: JobStatus,
    /// Milliseconds since the Unix epoch.
    pub submitted_at_ms: u64,
    /// Milliseconds since the Unix epoch of the write that set `status` (a later write that
    /// repeats an earlier status does not move it).
    pub updated_at_ms: u64,
}

impl JobRecord {
    /// Checks every field, including the spec's (prefixed `spec.`).
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        c.name("id", &self.id.0);
        c.check(!self.owner.0.is_empty(), "owner", "must be a node id");
        c.check(self.epoch >= 1, "epoch", "epochs start at 1");
        c.check(
            self.updated_at_ms >= self.submitted_at_ms,
            "updated_at_ms",
            "must not be before submitted_at_ms",
        );
        if let Err(FieldErrors(errors)) = self.spec.validate() {
            let mut inner = Checker::new();
            for e in errors {
                inner.push(e.field, e.message);
            }
            c.nested("spec", inner);
        }
        c.finish()
    }
}

/// A node removed from the cluster at run time. The cluster key is shared, so a member is
/// removed by its id: every node that holds this record closes and refuses the node's
/// connections and shows it as left. Evictions are never deleted (see [`Entry::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EvictionRecord {
    /// The evicted node.
    pub node: NodeId,
    /// The node whose API accepted the eviction.
    pub evicted_by: NodeId,
    /// Milliseconds since the Unix epoch.
    pub evicted_at_ms: u64,
}

impl EvictionRecord {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        c.name("node", &self.node.0);
        c.check(
            !self.evicted_by.0.is_empty(),
            "evicted_by",
            "must be a node id",
        );
        c.check(
            self.node != self.evicted_by,
            "evicted_by",
            "a node cannot evict itself",
        );
        c.finish()
    }
}

/// A last-writer-wins catalog record (everything but jobs, which merge by [`JobEntry`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Record {
    Dataset(DatasetRecord),
    Model(ModelVersion),
    Alias(ModelAlias),
    Deployment(DeploymentRecord),
    Eviction(EvictionRecord),
}

impl Record {
    /// The key the record lives under.
    pub fn key(&self) -> CatalogKey {
        match self {
            Record::Dataset(d) => CatalogKey::dataset(&d.name, d.version),
            Record::Model(m) => CatalogKey::model(&m.name, m.version),
            Record::Alias(a) => CatalogKey::alias(&a.model, &a.alias),
            Record::Deployment(d) => CatalogKey::deployment(&d.name),
            Record::Eviction(e) => CatalogKey::eviction(&e.node),
        }
    }

    /// Checks every field of the record.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        match self {
            Record::Dataset(d) => d.validate(),
            Record::Model(m) => m.validate(),
            Record::Alias(a) => a.validate(),
            Record::Deployment(d) => d.validate(),
            Record::Eviction(e) => e.validate(),
        }
    }
}

#[cfg(test)]
mod tests;
