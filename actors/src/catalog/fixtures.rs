//! Records and replicas shared by the catalog's tests.

use std::collections::BTreeMap;

use flotilla_protocol::catalog::{
    CatalogKey, DatasetRecord, DeploymentRecord, Entry, FieldType, JobRecord, Lineage, ModelAlias,
    Record, SchemaField, TrafficSplit,
};
use flotilla_protocol::jobs::{
    AntiAffinity, JobId, JobKind, JobSpec, JobStatus, Priority, Resources,
};

use super::core::{Catalog, Config};

/// Wall time of the property tests, in ms: later than every generated timestamp.
pub(crate) const WALL: u64 = 1_000_000;

pub(crate) fn hex(b: u8) -> String {
    format!("{b:02x}").repeat(32)
}

pub(crate) fn dataset(name: &str, version: u64, records: u64, shard: u8) -> Record {
    Record::Dataset(DatasetRecord {
        name: name.into(),
        version,
        schema: vec![SchemaField {
            name: "text".into(),
            field_type: FieldType::Text,
            nullable: false,
        }],
        record_count: records,
        shard_hashes: vec![hex(shard)],
        lineage: Lineage {
            parent_version: (version > 1).then(|| version - 1),
            operation: "upload".into(),
            parameters: BTreeMap::new(),
        },
        created_at_ms: 1,
    })
}

pub(crate) fn alias(name: &str, version: u64) -> Record {
    Record::Alias(ModelAlias {
        model: "m".into(),
        alias: name.into(),
        version,
    })
}

pub(crate) fn deployment(replicas: u32) -> Record {
    Record::Deployment(DeploymentRecord {
        name: "web".into(),
        model: "m".into(),
        traffic: vec![TrafficSplit {
            version: 1,
            percent: 100,
        }],
        min_replicas: 1,
        max_replicas: replicas,
        max_batch_size: 4,
        max_batch_wait_ms: 5,
        max_inflight: 32,
        cache: false,
        resources: Resources {
            cores: 1,
            ram_bytes: 256 << 20,
            gpus: 0,
        },
    })
}

pub(crate) fn job(id: &str, epoch: u64, owner: &str, status: JobStatus, updated: u64) -> JobRecord {
    JobRecord {
        id: JobId::from(id),
        spec: JobSpec {
            kind: JobKind::Benchmark {
                peers: 1,
                matrix_size: 64,
                iterations: 1,
            },
            priority: Priority::Batch,
            resources: Resources {
                cores: 1,
                ram_bytes: 1 << 20,
                gpus: 0,
            },
            tasks: 1,
            anti_affinity: AntiAffinity::None,
            preferred_nodes: vec![],
            idempotency_key: None,
        },
        owner: owner.into(),
        epoch,
        status,
        submitted_at_ms: 0,
        updated_at_ms: updated,
    }
}

pub(crate) fn replica(node: &str) -> Catalog {
    Catalog::new(Config::default(), super::Keys::from_seed(node))
}

pub(crate) fn state(c: &Catalog) -> Vec<(CatalogKey, Entry)> {
    c.entries().map(|(k, e)| (k.clone(), e.clone())).collect()
}

/// The id of the test node named `name` (a real peer id, from keys derived from the name).
pub(crate) fn node(name: &str) -> flotilla_protocol::NodeId {
    super::Keys::from_seed(name).me().clone()
}

/// `entry` under `key` with every part written by the test node `name` sealed by it.
pub(crate) fn sealed(name: &str, key: &CatalogKey, mut entry: Entry) -> Entry {
    super::Keys::from_seed(name).seal(key, &mut entry);
    entry
}
