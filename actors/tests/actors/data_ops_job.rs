//! Dataset operations as a cluster job over simulated holders: the output does not depend on
//! how many nodes hold the shards (1, 2 or 3), exact dedup removes exactly the planted copies,
//! near dedup reaches precision and recall ≥ 0.95, a failed job leaves the parent untouched
//! and nothing behind, and a version's lineage walks back to its upload.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};

use crate::data_common::corpus::corpus;
use crate::data_common::mem::{Cluster, DEADLINE};
use flotilla_actors::data::export::export_all;
use flotilla_actors::data::job::coordinator::{run, Outcome, Spec};
use flotilla_actors::data::ops::dedup::{dedup_key_text, jaccard, shingle_hashes, NearParams};
use flotilla_actors::data::ops::{pii, Detail, Op};
use flotilla_actors::data::record::{Record, TEXT};
use flotilla_actors::data::replication;
use flotilla_actors::data::upload::{upload_records, version_record, Plan};
use flotilla_actors::data::version;
use flotilla_protocol::catalog::DatasetRecord;
use flotilla_protocol::services::data::ShardId;

fn plan(dataset: &str, cluster: &Cluster, per_shard: usize) -> Plan {
    Plan {
        dataset: dataset.into(),
        version: 1,
        records_per_shard: per_shard,
        bytes_per_shard: 1 << 20,
        replication: 2,
        alive: cluster.alive(),
        chunk_bytes: 32 * 1024,
        call_deadline: DEADLINE,
        source: "generated".into(),
        created_at_ms: 1,
    }
}

async fn put(
    cluster: &Cluster,
    dataset: &str,
    records: &[Record],
    per_shard: usize,
) -> DatasetRecord {
    let p = plan(dataset, cluster, per_shard);
    let (built, _) = upload_records(records.iter().cloned().map(Ok), &p, cluster)
        .await
        .unwrap();
    version_record(&p, &built, BTreeMap::new()).unwrap()
}

async fn job(
    cluster: &Cluster,
    parent: &DatasetRecord,
    ops: Vec<Op>,
) -> flotilla_actors::data::Result<Outcome> {
    let spec = Spec {
        job: format!("job-{}-{}", parent.name, parent.version),
        parent: parent.clone(),
        output_version: parent.version + 1,
        ops,
        holders: cluster.holders(&parent.name, parent.version).await,
        alive: cluster.alive(),
        replication: 2,
        call_deadline: DEADLINE,
        max_in_flight: 4,
        created_at_ms: 2,
    };
    run(cluster, &spec).await
}

fn dedup_chain() -> Vec<Op> {
    serde_json::from_str(r#"[{"op":"dedup-exact"},{"op":"dedup-near"}]"#).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_is_the_same_on_1_2_and_3_holders_and_finds_the_planted_duplicates() {
    let c = corpus();
    let mut results = Vec::new();
    for n in [1usize, 2, 3] {
        let cluster = Cluster::start(n, 32 * 1024).await;
        let parent = put(&cluster, "dup", &c.records, 500).await;
        assert_eq!(parent.shard_hashes.len(), 10);
        let out = job(&cluster, &parent, dedup_chain()).await.unwrap();
        // Phase 1 ran once per shard and global op, phase 3 once per shard.
        assert_eq!(cluster.count("Summarize"), 20, "{n} holders");
        assert_eq!(cluster.count("Apply"), 10, "{n} holders");
        // Output shards sit exactly where placement puts them (the worker's extra copy is gone).
        let held = cluster.holders("dup", 2).await;
        for (i, hs) in &out.placement {
            let mut want = replication::replicas(&ShardId::new("dup", 2, *i), &cluster.alive(), 2);
            want.sort();
            let mut got = hs.clone();
            got.sort();
            assert_eq!(got, want);
            assert_eq!(held[i], want, "shard {i} on {n} holders");
        }
        let records = export_all(
            &*cluster,
            &out.record,
            &out.placement,
            &cluster.alive(),
            DEADLINE,
        )
        .await
        .unwrap();
        // The parent is untouched.
        let parent_back = export_all(
            &*cluster,
            &parent,
            &cluster.holders("dup", 1).await,
            &cluster.alive(),
            DEADLINE,
        )
        .await
        .unwrap();
        assert_eq!(parent_back, c.records);
        results.push((out, records));
    }
    let (out, records) = &results[0];
    for (o, r) in &results[1..] {
        assert_eq!(o.record, out.record);
        assert_eq!(o.report, out.report);
        assert_eq!(r, records);
    }
    let rec = &out.record;
    rec.validate().unwrap();
    assert_eq!(rec.lineage.parent_version, Some(1));
    assert_eq!(rec.lineage.operation, "dedup-exact.dedup-near");

    // Exact dedup removed exactly the planted copies, keeping the smallest id of each text.
    let l = &out.report.lineage;
    assert_eq!(
        (l[0].count_in, l[0].count_out),
        (5000, 5000 - c.exact_copies.len() as u64)
    );
    assert_eq!(
        out.report.details[0],
        Detail::DedupExact {
            removed: c.exact_copies.len() as u64
        }
    );
    let mut smallest = BTreeMap::new();
    for r in &c.records {
        let e = smallest
            .entry(dedup_key_text(&r.fields[TEXT]))
            .or_insert(r.id);
        *e = (*e).min(r.id);
    }
    let after_exact: BTreeSet<u64> = smallest.into_values().collect();
    let kept: BTreeSet<u64> = records.iter().map(|r| r.id).collect();
    assert!(kept.is_subset(&after_exact));

    // Near dedup against exact-Jaccard ground truth over what exact dedup kept.
    let near = &out.report.near[0];
    let params = NearParams::default();
    let sets: Vec<(u64, Vec<u64>)> = c
        .records
        .iter()
        .filter(|r| after_exact.contains(&r.id))
        .map(|r| (r.id, shingle_hashes(&r.fields[TEXT], params.shingle)))
        .collect();
    let mut truth = BTreeSet::new();
    for (i, (a, sa)) in sets.iter().enumerate() {
        for (b, sb) in &sets[i + 1..] {
            if jaccard(sa, sb) >= params.threshold {
                truth.insert(((*a).min(*b), (*a).max(*b)));
            }
        }
    }
    let found: BTreeSet<(u64, u64)> = near.pairs.iter().copied().collect();
    let hits = found.intersection(&truth).count() as f64;
    let (precision, recall) = (hits / found.len() as f64, hits / truth.len() as f64);
    println!(
        "near dedup over {} records: truth {} pairs, found {}, precision {precision:.4}, recall {recall:.4}, clusters {}, removed {}",
        sets.len(), truth.len(), found.len(), near.clusters_total, near.removed_total
    );
    assert!(truth.len() >= 500, "too few true pairs ({})", truth.len());
    assert!(precision >= 0.95, "precision {precision}");
    assert!(recall >= 0.95, "recall {recall}");
    assert_eq!(l[1].count_in - l[1].count_out, near.removed_total);
    assert_eq!(kept.len() as u64, rec.record_count);
    // Every cluster keeps exactly its smallest id.
    for cl in &near.clusters {
        assert!(kept.contains(&cl[0]));
        assert!(cl[1..].iter().all(|id| !kept.contains(id)));
    }
    // Upload order is kept: ids appear in the parent's order.
    let pos: BTreeMap<u64, usize> = c
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id, i))
        .collect();
    assert!(records.windows(2).all(|w| pos[&w[0].id] < pos[&w[1].id]));
}

fn with_pii(n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let t = match i % 4 {
                0 => format!("<p>mail me at user{i}@example.com</p>"),
                1 => format!("card 4111 1111 1111 1111 declined, ref {i}"),
                2 => "How   do I top up?".to_string(),
                _ => format!("plain question number {i}"),
            };
            Record::labelled(i, t, format!("l{}", i % 3))
        })
        .collect()
}

#[tokio::test]
async fn a_failed_operation_leaves_the_parent_untouched_and_no_output() {
    let cluster = Cluster::start(3, 4096).await;
    let mut rs = with_pii(400);
    // The last shard's records lack `label`: phase 3 fails there after earlier shards wrote.
    for r in &mut rs[350..] {
        r.fields.remove("label");
    }
    let parent = put(&cluster, "p", &rs, 50).await;
    let before = cluster.holders("p", 1).await;
    let ops: Vec<Op> = serde_json::from_str(r#"[{"op":"normalize","field":"label"}]"#).unwrap();
    let e = job(&cluster, &parent, ops).await.unwrap_err().to_string();
    assert!(e.contains("`label`") && e.contains("record 350"), "{e}");
    assert!(
        cluster.count("Apply") >= 2,
        "earlier shards were applied before the failure"
    );
    assert!(
        cluster.holders("p", 2).await.is_empty(),
        "output of a failed job remains"
    );
    assert_eq!(cluster.holders("p", 1).await, before);
    let back = export_all(&*cluster, &parent, &before, &cluster.alive(), DEADLINE)
        .await
        .unwrap();
    assert_eq!(back, rs);

    // A field missing everywhere fails in phase 1 with the field named.
    let ops: Vec<Op> = serde_json::from_str(r#"[{"op":"dedup-exact","field":"body"}]"#).unwrap();
    let e = job(&cluster, &parent, ops).await.unwrap_err().to_string();
    assert!(
        e.contains("`body`") && e.contains("available fields"),
        "{e}"
    );
    assert!(cluster.holders("p", 2).await.is_empty());
}

#[tokio::test]
async fn versions_chain_back_to_the_upload_with_counts_and_pii_reports() {
    let cluster = Cluster::start(2, 4096).await;
    let rs = with_pii(200);
    let v1 = put(&cluster, "bank", &rs, 64).await;
    let ops: Vec<Op> = serde_json::from_str(r#"[{"op":"normalize"},{"op":"pii"}]"#).unwrap();
    let v2 = job(&cluster, &v1, ops).await.unwrap();
    assert_eq!(
        v2.report.details[1],
        Detail::Pii([(pii::Kind::Email, 50), (pii::Kind::Card, 50)].into())
    );
    let ops: Vec<Op> = serde_json::from_str(
        r#"[{"op":"dedup-exact"},{"op":"split","label_field":"label","seed":3}]"#,
    )
    .unwrap();
    let v3 = job(&cluster, &v2.record, ops).await.unwrap();
    // "How do I top up?" 50 times, and 50 e-mail texts that masking made identical: 49 copies
    // of each go.
    assert_eq!(v3.report.lineage[0].count_out, 102);
    assert!(v3.record.schema.iter().any(|f| f.name == "split"));
    let catalog: BTreeMap<u64, DatasetRecord> = [v1.clone(), v2.record.clone(), v3.record.clone()]
        .into_iter()
        .map(|r| (r.version, r))
        .collect();
    let chain = version::chain("bank", 3, |_, v| catalog.get(&v).cloned()).unwrap();
    assert_eq!(
        chain.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    let steps = version::steps(&chain[0].lineage);
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.operation.as_str(), s.count_in, s.count_out))
            .collect::<Vec<_>>(),
        vec![
            ("dedup-exact", Some(200), Some(102)),
            ("split", Some(102), Some(102))
        ]
    );
    assert_eq!(steps[1].parameters["seed"], "3");
    assert_eq!(version::steps(&chain[2].lineage)[0].operation, "upload");
    // The split version exports with a part on every record and text masked.
    let out = export_all(
        &*cluster,
        &v3.record,
        &v3.placement,
        &cluster.alive(),
        DEADLINE,
    )
    .await
    .unwrap();
    assert_eq!(out.len(), 102);
    assert!(out
        .iter()
        .all(|r| ["train", "val", "test"].contains(&r.fields["split"].as_str())));
    assert!(out.iter().all(|r| !r.fields[TEXT].contains("@example.com")));
}

#[tokio::test]
async fn a_corrupt_replica_is_passed_over_for_the_next_holder() {
    let rs = with_pii(300);
    let ops: Vec<Op> = serde_json::from_str(r#"[{"op":"pii"},{"op":"dedup-exact"}]"#).unwrap();
    let clean = Cluster::start(3, 4096).await;
    let v1 = put(&clean, "c", &rs, 60).await;
    let want = job(&clean, &v1, ops.clone()).await.unwrap();

    let cluster = Cluster::start(3, 4096).await;
    let v1b = put(&cluster, "c", &rs, 60).await;
    assert_eq!(v1b, v1);
    // Corrupt shard 0 on the holder the coordinator asks first.
    let id = ShardId::new("c", 1, 0);
    let holders = cluster.holders("c", 1).await;
    let first = flotilla_actors::rendezvous::rank(&id.placement_key(), &holders[&0])[0].clone();
    let store = &cluster.node(&first).store;
    let key_prefix = {
        let mut k = b"c/c\0".to_vec();
        k.extend_from_slice(&1u64.to_be_bytes());
        k.extend_from_slice(&0u32.to_be_bytes());
        k
    };
    let (k, mut v) = store
        .rows(flotilla_actors::store::Column::Shards)
        .into_iter()
        .find(|(k, _)| k.starts_with(&key_prefix))
        .unwrap();
    v[10] ^= 0xff;
    store.poke(flotilla_actors::store::Column::Shards, &k, v);
    let got = job(&cluster, &v1b, ops).await.unwrap();
    assert_eq!(got.record, want.record);
    assert_eq!(got.report, want.report);
    // The corrupt holder was asked once and refused; the next holder answered.
    assert_eq!(cluster.count("Summarize"), clean.count("Summarize") + 1);
}
