use super::*;
use crate::hlc::Hlc;
use crate::jobs::{AntiAffinity, JobKind, Priority, Resources};

fn hex(b: u8) -> String {
    format!("{b:02x}").repeat(32)
}

fn lineage(parent: Option<u64>) -> Lineage {
    Lineage {
        parent_version: parent,
        operation: "normalise".into(),
        parameters: BTreeMap::from([("form".into(), "NFKC".into())]),
    }
}

fn dataset() -> DatasetRecord {
    DatasetRecord {
        name: "reviews".into(),
        version: 2,
        schema: vec![SchemaField {
            name: "text".into(),
            field_type: FieldType::Text,
            nullable: false,
        }],
        record_count: 10,
        shard_hashes: vec![hex(1), hex(2)],
        lineage: lineage(Some(1)),
        created_at_ms: 5,
    }
}

fn job(status: JobStatus, epoch: u64, owner: &str) -> JobRecord {
    JobRecord {
        id: JobId::from("job-1"),
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
        submitted_at_ms: 1,
        updated_at_ms: 1,
    }
}

fn at(p: u64, n: &str) -> Hlc {
    Hlc {
        physical_ms: p,
        logical: 0,
        node: n.into(),
    }
}

#[test]
fn valid_records_pass() {
    dataset().validate().unwrap();
    let m = ModelVersion {
        name: "gpt-small".into(),
        version: 1,
        metadata: BTreeMap::from([("arch".into(), "decoder".into())]),
        artifact_hashes: BTreeMap::from([("model.safetensors".into(), hex(3))]),
        lineage: lineage(None),
        created_at_ms: 0,
    };
    m.validate().unwrap();
    // A record naming a node's local folder is refused, wherever it comes from.
    let mut with_path = m.clone();
    with_path
        .metadata
        .insert("serving.path".into(), "/var/lib/flotilla".into());
    let errors = with_path.validate().unwrap_err();
    assert!(
        errors.0.iter().any(|e| e.field == "metadata.serving.path"),
        "{errors:?}"
    );
    ModelAlias {
        model: "gpt-small".into(),
        alias: "production".into(),
        version: 1,
    }
    .validate()
    .unwrap();
    job(JobStatus::Pending, 1, "n1").validate().unwrap();
}

#[test]
fn dataset_errors_name_their_fields() {
    let mut d = dataset();
    d.version = 0;
    d.shard_hashes[1] = "nothex".into();
    d.schema.push(d.schema[0].clone());
    d.lineage.parent_version = Some(5);
    d.lineage.operation = String::new();
    let e = d.validate().unwrap_err();
    for f in [
        "version",
        "shard_hashes[1]",
        "schema[1].name",
        "lineage.parent_version",
        "lineage.operation",
    ] {
        assert!(e.mentions(f), "{f} missing from {e}");
    }
    assert!(!e.mentions("shard_hashes[0]"));
}

#[test]
fn deployment_traffic_must_sum_to_100() {
    let mut d = DeploymentRecord {
        name: "chat".into(),
        model: "gpt-small".into(),
        traffic: vec![
            TrafficSplit {
                version: 1,
                percent: 90,
            },
            TrafficSplit {
                version: 2,
                percent: 10,
            },
        ],
        min_replicas: 1,
        max_replicas: 3,
        max_batch_size: 8,
        max_batch_wait_ms: 5,
        max_inflight: 32,
        cache: true,
        resources: crate::jobs::Resources {
            cores: 1,
            ram_bytes: 256 << 20,
            gpus: 0,
        },
    };
    d.validate().unwrap();
    d.traffic[1].percent = 20;
    d.min_replicas = 4;
    let e = d.validate().unwrap_err();
    assert!(e.mentions("traffic") && e.mentions("min_replicas"), "{e}");
}

#[test]
fn job_record_spec_errors_are_prefixed() {
    let mut j = job(JobStatus::Running, 0, "");
    j.spec.tasks = 0;
    let e = j.validate().unwrap_err();
    assert!(
        e.mentions("epoch") && e.mentions("owner") && e.mentions("spec.tasks"),
        "{e}"
    );
}

#[test]
fn keys_validate_and_sort_by_kind_name_version_in_the_store() {
    assert!(CatalogKey::alias("m", "latest").validate().is_ok());
    assert!(CatalogKey {
        kind: RecordKind::ModelAlias,
        name: "m".into(),
        version: 0
    }
    .validate()
    .is_err());
    assert!(CatalogKey::dataset("d", 0)
        .validate()
        .unwrap_err()
        .mentions("version"));
    assert!(CatalogKey {
        kind: RecordKind::Job,
        name: "j".into(),
        version: 3
    }
    .validate()
    .is_err());
    let a = CatalogKey::dataset("d", 2).store_key();
    let b = CatalogKey::dataset("d", 10).store_key();
    assert!(a < b, "versions sort numerically");
    assert!(a.starts_with(&[RecordKind::Dataset.tag()]));
    assert_eq!(CatalogKey::model("m", 3).to_string(), "model/m@3");
    for k in [
        CatalogKey::dataset("d", 7),
        CatalogKey::alias("m", "prod"),
        CatalogKey::job(&JobId::from("j")),
    ] {
        assert_eq!(CatalogKey::from_store_key(&k.store_key()), Some(k));
    }
    assert_eq!(CatalogKey::from_store_key(b"d"), None);
    assert_eq!(
        CatalogKey::from_store_key(b"zname\0\0\0\0\0\0\0\0\x01"),
        None
    );
}

#[test]
fn later_write_wins_and_a_later_delete_beats_an_earlier_write() {
    let mut e = Entry::write(at(10, "a"), Record::Dataset(dataset()));
    assert!(!e.merge(Entry::tombstone(at(5, "b"))));
    assert!(!e.is_tombstone());
    assert!(e.merge(Entry::tombstone(at(11, "b"))));
    assert!(e.is_tombstone());
    // Same physical time: the node id breaks the tie, on every replica alike.
    let mut x = Entry::write(at(20, "a"), Record::Dataset(dataset()));
    let y = Entry::tombstone(at(20, "b"));
    let mut y2 = y.clone();
    x.merge(y.clone());
    y2.merge(Entry::write(at(20, "a"), Record::Dataset(dataset())));
    assert_eq!(x, y2);
}

#[test]
fn job_head_is_fenced_by_epoch_and_status_only_moves_forward() {
    // The old owner (epoch 1) writes later by the clock, but the new owner's epoch 2 head wins.
    let mut e = Entry::job(at(10, "new"), job(JobStatus::Running, 2, "new"));
    assert!(e.merge(Entry::job(
        at(99, "old"),
        job(JobStatus::Succeeded, 1, "old")
    )));
    let Entry::Job(j) = &e else {
        panic!("job entry expected")
    };
    assert_eq!((j.record.owner.as_str(), j.record.epoch), ("new", 2));
    // The old owner's terminal observation still counts: terminal states absorb.
    assert_eq!(j.record.status, JobStatus::Succeeded);
    // A later head write that carries a stale status moves the head, not the status.
    assert!(e.merge(Entry::job(
        at(200, "new"),
        job(JobStatus::Running, 2, "new")
    )));
    assert_eq!(e.hlc(), &at(200, "new"));
    let Entry::Job(j) = &e else {
        panic!("job entry expected")
    };
    assert_eq!(j.record.status, JobStatus::Succeeded);
}

#[test]
fn entries_must_match_their_key() {
    let d = Entry::write(at(1, "a"), Record::Dataset(dataset()));
    assert!(d.validate(&CatalogKey::dataset("reviews", 2)).is_ok());
    assert!(d
        .validate(&CatalogKey::dataset("reviews", 3))
        .unwrap_err()
        .mentions("value"));
    let t = Entry::tombstone(at(1, "a"));
    assert!(t.validate(&CatalogKey::job(&JobId::from("job-1"))).is_err());
    let j = Entry::job(at(1, "a"), job(JobStatus::Pending, 1, "a"));
    assert!(j.validate(&CatalogKey::job(&JobId::from("job-1"))).is_ok());
    assert!(j
        .validate(&CatalogKey::job(&JobId::from("job-2")))
        .unwrap_err()
        .mentions("record.id"));
    let mut bad = dataset();
    bad.shard_hashes[0] = "x".into();
    let e = Entry::write(at(1, ""), Record::Dataset(bad))
        .validate(&CatalogKey::dataset("reviews", 2))
        .unwrap_err();
    assert!(
        e.mentions("hlc.node") && e.mentions("value.shard_hashes[0]"),
        "{e}"
    );
}

#[test]
fn evictions_name_a_node_and_are_never_deleted() {
    let node = NodeId::from("12D3KooWEvicted");
    let record = EvictionRecord {
        node: node.clone(),
        evicted_by: NodeId::from("12D3KooWAdmin"),
        evicted_at_ms: 7,
    };
    let key = CatalogKey::eviction(&node);
    assert_eq!(Record::Eviction(record.clone()).key(), key);
    assert_eq!(
        CatalogKey::from_store_key(&key.store_key()),
        Some(key.clone())
    );
    assert_eq!(key.to_string(), "eviction/12D3KooWEvicted");
    let e = Entry::write(at(1, "12D3KooWAdmin"), Record::Eviction(record.clone()));
    assert!(e.validate(&key).is_ok());
    // An eviction claims the node that wrote it, never another.
    let e = Entry::write(at(1, "a"), Record::Eviction(record.clone()));
    assert!(e.validate(&key).unwrap_err().mentions("value.evicted_by"));
    // A tombstone would readmit the node wherever it is merged: refused like a job delete.
    assert!(Entry::tombstone(at(2, "a"))
        .validate(&key)
        .unwrap_err()
        .mentions("value"));
    let own = EvictionRecord {
        evicted_by: node.clone(),
        ..record.clone()
    };
    assert!(own.validate().unwrap_err().mentions("evicted_by"));
    let bad = EvictionRecord {
        node: NodeId::from("not/a node"),
        ..record
    };
    assert!(bad.validate().unwrap_err().mentions("node"));
}
