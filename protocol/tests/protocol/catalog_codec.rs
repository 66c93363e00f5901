//! Property tests: catalog messages and stored entries round-trip through the codec, decoding
//! arbitrary bytes never panics, and the caps hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use flotilla_protocol::catalog::{
    CatalogKey, DatasetRecord, Entry, FieldType, Lineage, ModelAlias, Record, SchemaField,
};
use flotilla_protocol::jobs::{AntiAffinity, JobKind, Resources};
use flotilla_protocol::services::catalog::{
    self, BucketSummary, Delta, Digest, Message, Request, RequestBody, SyncReply,
};
use flotilla_protocol::{
    catalog::JobRecord, Hlc, JobId, JobSpec, JobStatus, NodeId, Priority, RequestId,
};
use proptest::prelude::*;

fn hlc() -> impl Strategy<Value = Hlc> {
    (any::<u64>(), any::<u32>(), "[a-z]{1,8}").prop_map(|(physical_ms, logical, n)| Hlc {
        physical_ms,
        logical,
        node: NodeId(n),
    })
}

fn dataset() -> impl Strategy<Value = Record> {
    (
        "[a-z]{1,10}",
        1u64..1000,
        0u64..1_000_000,
        prop::collection::vec("[0-9a-f]{64}", 0..4),
        "[a-z]{1,6}",
    )
        .prop_map(|(name, version, record_count, shard_hashes, field)| {
            Record::Dataset(DatasetRecord {
                name,
                version,
                schema: vec![SchemaField {
                    name: field,
                    field_type: FieldType::Json,
                    nullable: true,
                }],
                record_count,
                shard_hashes,
                lineage: Lineage {
                    parent_version: version.checked_sub(1).filter(|v| *v > 0),
                    operation: "upload".into(),
                    parameters: BTreeMap::from([("k".into(), "v".into())]),
                },
                created_at_ms: 7,
            })
        })
}

fn job() -> impl Strategy<Value = JobRecord> {
    ("[a-z]{1,10}", 1u32..8, any::<u64>(), 0usize..6).prop_map(|(id, tasks, epoch, status)| {
        JobRecord {
            id: JobId(id),
            spec: JobSpec {
                kind: JobKind::Benchmark {
                    peers: tasks,
                    matrix_size: 128,
                    iterations: 3,
                },
                priority: Priority::Training,
                resources: Resources {
                    cores: 1,
                    ram_bytes: 1 << 30,
                    gpus: 1,
                },
                tasks,
                anti_affinity: AntiAffinity::MaxPerNode(2),
                preferred_nodes: vec![NodeId("abc".into())],
                idempotency_key: Some("key".into()),
            },
            owner: NodeId("owner".into()),
            epoch,
            status: [
                JobStatus::Pending,
                JobStatus::Placing,
                JobStatus::Running,
                JobStatus::Succeeded,
                JobStatus::Failed,
                JobStatus::Cancelled,
            ][status],
            submitted_at_ms: 1,
            updated_at_ms: 2,
        }
    })
}

fn keyed_entry() -> impl Strategy<Value = (CatalogKey, Entry)> {
    prop_oneof![
        (hlc(), dataset()).prop_map(|(h, r)| (r.key(), Entry::write(h, r))),
        (hlc(), "[a-z]{1,5}", "[a-z]{1,5}", 1u64..9).prop_map(|(h, model, alias, version)| {
            let r = Record::Alias(ModelAlias {
                model,
                alias,
                version,
            });
            (r.key(), Entry::write(h, r))
        }),
        (hlc(), "[a-z]{1,5}").prop_map(|(h, n)| (CatalogKey::deployment(&n), Entry::tombstone(h))),
        (hlc(), job()).prop_map(|(h, j)| (CatalogKey::job(&j.id), Entry::job(h, j))),
    ]
}

proptest! {
    #[test]
    fn deltas_and_entries_round_trip(entries in prop::collection::vec(keyed_entry(), 0..20)) {
        for (_, e) in &entries {
            prop_assert_eq!(&catalog::decode_entry(&catalog::encode_entry(e).unwrap()).unwrap(), e);
        }
        let delta = Delta { entries };
        prop_assert_eq!(catalog::decode_entries(&catalog::encode_entries(&delta).unwrap()).unwrap(), delta.clone());
        let m = Message::Delta(delta.clone());
        prop_assert_eq!(catalog::decode_message(&catalog::encode_message(&m).unwrap()).unwrap(), m);
        let r = Request { id: RequestId(9), body: RequestBody::Push(delta) };
        prop_assert_eq!(catalog::decode_request(&catalog::encode_request(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn sync_messages_round_trip(hashes in prop::collection::vec(any::<[u8; 32]>(), catalog::DIGEST_BUCKETS), buckets in prop::collection::vec(any::<u16>(), 0..10)) {
        let digest = Digest { buckets: hashes.into_iter().map(|hash| BucketSummary { hash, count: 3 }).collect() };
        let r = Request { id: RequestId(1), body: RequestBody::Sync(digest) };
        let bytes = catalog::encode_request(&r).unwrap();
        prop_assert!(bytes.len() < 16 * 1024, "a digest is small: {} bytes", bytes.len());
        prop_assert_eq!(catalog::decode_request(&bytes).unwrap(), r);
        let resp = catalog::Response { id: RequestId(1), body: Ok(catalog::ResponseBody::Sync(SyncReply { buckets, delta: Delta::default() })) };
        prop_assert_eq!(catalog::decode_response(&catalog::encode_response(&resp).unwrap()).unwrap(), resp);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = catalog::decode_message(&bytes);
        let _ = catalog::decode_request(&bytes);
        let _ = catalog::decode_response(&bytes);
        let _ = catalog::decode_entry(&bytes);
    }
}

#[test]
fn an_oversized_entry_is_refused() {
    let mut shard_hashes = Vec::new();
    // 20,000 hashes of 65 bytes each: over the 1 MiB entry cap.
    shard_hashes.resize(20_000, "0".repeat(64));
    let r = Record::Dataset(DatasetRecord {
        name: "big".into(),
        version: 1,
        schema: vec![],
        record_count: 1,
        shard_hashes,
        lineage: Lineage {
            parent_version: None,
            operation: "upload".into(),
            parameters: BTreeMap::new(),
        },
        created_at_ms: 0,
    });
    let e = Entry::write(Hlc::zero(NodeId("a".into())), r);
    assert!(catalog::encode_entry(&e).is_err());
    assert!(catalog::encode_entries(&Delta {
        entries: vec![(CatalogKey::dataset("big", 1), e)]
    })
    .is_ok());
}
