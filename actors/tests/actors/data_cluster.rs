//! Upload, placement, export and re-replication over simulated holders (in-memory stores and
//! `DataShard` actors, calls through the wire codec): Banking77 round-trips exactly through 3
//! holders, a killed holder's shards are copied back to the replication factor from live
//! holders, and bad input leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use crate::data_common::mem::{Cluster, DEADLINE};
use flotilla_actors::data::error::Error;
use flotilla_actors::data::export::export_all;
use flotilla_actors::data::ingest::{parse_all, write_csv, Format, OnError, Options};
use flotilla_actors::data::record::Record;
use flotilla_actors::data::replication::{self, DEFAULT_REPLICATION};
use flotilla_actors::data::upload::{upload, Plan, ShardBuilder};
use flotilla_actors::data::{survey, version};
use flotilla_protocol::services::data::{RequestBody, ShardId};
use flotilla_protocol::NodeId;

fn plan(dataset: &str, alive: Vec<NodeId>, per_shard: usize) -> Plan {
    Plan {
        dataset: dataset.into(),
        version: 1,
        records_per_shard: per_shard,
        bytes_per_shard: 1 << 20,
        replication: DEFAULT_REPLICATION,
        alive,
        chunk_bytes: 16 * 1024,
        call_deadline: DEADLINE,
        source: "banking77-train.csv".into(),
        created_at_ms: 1,
    }
}

fn banking_opts() -> Options {
    let mut o = Options::new(Format::Csv);
    o.label_field = Some("category".into());
    o
}

#[test]
fn the_builder_cuts_by_records_and_by_bytes() {
    let rs: Vec<Record> = (0..25).map(|i| Record::text(i, "x".repeat(90))).collect();
    let mut b = ShardBuilder::new("d", 1, 10, 1 << 20).unwrap();
    let mut sizes: Vec<u64> = rs
        .iter()
        .flat_map(|r| b.push(r.clone()))
        .map(|s| s.meta.records)
        .collect();
    let (last, built) = b.finish();
    sizes.extend(last.map(|s| s.meta.records));
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(built.records, 25);
    // 110 encoded bytes a record: a 500-byte limit holds 4 (8 + 4 × 110 = 448).
    let mut b = ShardBuilder::new("d", 1, 1000, 500).unwrap();
    let mut shards: Vec<_> = rs.iter().flat_map(|r| b.push(r.clone())).collect();
    shards.extend(b.finish().0);
    assert!(
        shards.iter().all(|s| s.meta.bytes <= 500),
        "{:?}",
        shards.iter().map(|s| s.meta.bytes).collect::<Vec<_>>()
    );
    assert_eq!(shards.iter().map(|s| s.meta.records).sum::<u64>(), 25);
    assert_eq!(shards[0].meta.records, 4);
    // Indices are consecutive and each hash is the catalog hash of its records.
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s.meta.id, ShardId::new("d", 1, i as u32));
    }
    // A record bigger than the limit gets a shard of its own.
    let mut b = ShardBuilder::new("d", 1, 1000, 500).unwrap();
    assert!(b.push(Record::text(0, "small")).is_empty());
    let cut = b.push(Record::text(1, "y".repeat(2000)));
    assert_eq!(
        cut.iter().map(|s| s.meta.records).collect::<Vec<_>>(),
        vec![1, 1]
    );
    assert!(ShardBuilder::new("d", 1, 0, 500).is_err());
}

#[tokio::test]
async fn banking77_round_trips_through_three_holders_in_upload_order() {
    let cluster = Cluster::start(3, 16 * 1024).await;
    let alive = cluster.alive();
    let file = std::fs::read(crate::data_common::shared("banking77-train.csv")).unwrap();
    let (want, _) = parse_all(&file[..], banking_opts()).unwrap();
    assert_eq!(want.len(), 10_003);

    let up = upload(
        &file[..],
        banking_opts(),
        &plan("bank", alive.clone(), 1000),
        &*cluster,
    )
    .await
    .unwrap();
    let rec = &up.record;
    rec.validate().unwrap();
    assert_eq!(rec.record_count, 10_003);
    assert_eq!(rec.shard_hashes.len(), 11);
    assert_eq!(up.report.malformed, 0);
    assert_eq!(rec.lineage.operation, "upload");
    assert_eq!(rec.lineage.parameters["format"], "csv");
    let fields: Vec<&str> = rec.schema.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(fields, vec!["label", "text"]);

    // Every shard on exactly two holders, the ones rendezvous placement picks, and the shards
    // spread over all three nodes.
    let held = cluster.holders("bank", 1).await;
    assert_eq!(held.len(), 11);
    for (i, hs) in &held {
        let mut want_h = replication::replicas(&ShardId::new("bank", 1, *i), &alive, 2);
        want_h.sort();
        assert_eq!(hs, &want_h, "shard {i}");
    }
    for n in &alive {
        assert!(held.values().any(|h| h.contains(n)), "{n} holds nothing");
    }
    for (i, hs) in &up.placement {
        let mut hs = hs.clone();
        hs.sort();
        assert_eq!(
            hs, held[i],
            "the placement the upload reports is where the shards are"
        );
    }

    let got = export_all(&*cluster, rec, &held, &alive, DEADLINE)
        .await
        .unwrap();
    assert_eq!(
        got, want,
        "export must return the uploaded records in order"
    );
    // And as CSV it parses back to the same texts and labels.
    let mut csv = Vec::new();
    write_csv(&got, &mut csv, true).unwrap();
    let mut o = Options::new(Format::Csv);
    o.label_field = Some("label".into());
    let (again, _) = parse_all(&csv[..], o).unwrap();
    assert_eq!(again, want);
}

#[tokio::test]
async fn a_killed_holder_is_replaced_from_live_holders_and_export_still_works() {
    let cluster = Cluster::start(4, 4096).await;
    let alive = cluster.alive();
    let text: String = (0..3000)
        .map(|i| format!("line {i} of the corpus\n"))
        .collect();
    let up = upload(
        text.as_bytes(),
        Options::new(Format::Text),
        &plan("lines", alive.clone(), 100),
        &*cluster,
    )
    .await
    .unwrap();
    let want = parse_all(text.as_bytes(), Options::new(Format::Text))
        .unwrap()
        .0;
    let victim = alive[1].clone();
    cluster.kill(&victim);
    let alive = cluster.alive();
    let by_id = |h: &BTreeMap<u32, Vec<NodeId>>| -> BTreeMap<ShardId, Vec<NodeId>> {
        h.iter()
            .map(|(i, n)| (ShardId::new("lines", 1, *i), n.clone()))
            .collect()
    };
    let mut holders = by_id(&up.placement);
    let p = replication::plan(&holders, &alive, 2);
    let lost_replicas = holders.values().filter(|h| h.contains(&victim)).count();
    assert!(lost_replicas > 0);
    assert_eq!(p.copies.len(), lost_replicas);
    for c in &p.copies {
        assert_ne!(c.source, victim, "a dead source was chosen");
    }
    let failed = survey::execute(&*cluster, &p.copies, DEADLINE).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(cluster.count("CopyFrom"), p.copies.len() as u64);
    replication::apply(&mut holders, &p.copies);
    assert!(replication::plan(&holders, &alive, 2).copies.is_empty());
    // The copies really are on the targets' stores, and a survey of the live nodes finds the
    // repaired holders map.
    let now = cluster.holders("lines", 1).await;
    let surveyed = survey::survey(&*cluster, &alive, "lines", 1, DEADLINE).await;
    assert_eq!(by_id(&surveyed), {
        let mut h = holders.clone();
        h.values_mut().for_each(|v| {
            v.retain(|n| *n != victim);
            v.sort();
        });
        h
    });
    for (id, hs) in &holders {
        for h in hs.iter().filter(|h| **h != victim) {
            assert!(now[&id.index].contains(h), "{id} not on {h}");
        }
    }
    let placement: BTreeMap<u32, Vec<NodeId>> =
        holders.iter().map(|(k, v)| (k.index, v.clone())).collect();
    let got = export_all(&*cluster, &up.record, &placement, &alive, DEADLINE)
        .await
        .unwrap();
    assert_eq!(got, want);
    // Kill a second node: after the repair every shard had two live holders, so every shard
    // still has one and the export is still exact.
    cluster.kill(&alive[0]);
    let alive2 = cluster.alive();
    let got = export_all(&*cluster, &up.record, &placement, &alive2, DEADLINE)
        .await
        .unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn copying_a_corrupt_replica_is_refused() {
    let cluster = Cluster::start(3, 4096).await;
    let ids = cluster.ids();
    let up = upload(
        "a\nb\nc\n".as_bytes(),
        Options::new(Format::Text),
        &plan("tiny", vec![ids[0].clone()], 10),
        &*cluster,
    )
    .await
    .unwrap();
    assert_eq!(up.placement[&0], vec![ids[0].clone()]);
    // Corrupt the only copy on disk, then ask another node to copy it.
    let store = &cluster.node(&ids[0]).store;
    let (k, mut v) = store
        .rows(flotilla_actors::store::Column::Shards)
        .into_iter()
        .find(|(k, _)| k.starts_with(b"c/"))
        .unwrap();
    let last = v.len() - 1;
    v[last] ^= 1;
    store.poke(flotilla_actors::store::Column::Shards, &k, v);
    let body = RequestBody::CopyFrom {
        shard: ShardId::new("tiny", 1, 0),
        source: ids[0].clone(),
    };
    let e = flotilla_actors::data::peers::DataPeers::call(&*cluster, &ids[1], body, DEADLINE)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt") && e.contains("tiny@1#0"), "{e}");
    assert!(cluster.holders("tiny", 1).await[&0] == vec![ids[0].clone()]);
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_leaves_no_shards() {
    let cluster = Cluster::start(3, 4096).await;
    let alive = cluster.alive();
    // Not UTF-8 after a few full shards.
    let mut bytes: Vec<u8> = (0..500)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    bytes.extend_from_slice(b"bad \xff byte\n");
    let e = upload(
        &bytes[..],
        Options::new(Format::Text),
        &plan("t", alive.clone(), 50),
        &*cluster,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::NotUtf8 { line: 501, .. }), "{e}");
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    assert!(
        cluster.holders("t", 1).await.is_empty(),
        "shards of a failed upload remain"
    );

    // Malformed JSON lines: skipped and reported by line, or fatal under `fail`.
    let jsonl = "{\"text\":\"a\"}\n{oops\n{\"text\":\"b\"}\n[]\n";
    let up = upload(
        jsonl.as_bytes(),
        Options::new(Format::Jsonl),
        &plan("j", alive.clone(), 50),
        &*cluster,
    )
    .await
    .unwrap();
    assert_eq!(up.record.record_count, 2);
    assert_eq!(
        up.report.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![2, 4]
    );
    assert_eq!(up.record.lineage.parameters["malformed"], "2");
    let mut o = Options::new(Format::Jsonl);
    o.on_error = OnError::Fail;
    let e = upload(jsonl.as_bytes(), o, &plan("k", alive.clone(), 1), &*cluster)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2"), "{e}");
    assert!(cluster.holders("k", 1).await.is_empty());
    // A missing column names it and the columns there are.
    let mut o = Options::new(Format::Csv);
    o.text_field = "body".into();
    let e = upload(
        "text,label\na,b\n".as_bytes(),
        o,
        &plan("c", alive, 1),
        &*cluster,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("`body`") && e.contains("text, label"), "{e}");
    // The upload lineage reads back as one step.
    assert_eq!(version::steps(&up.record.lineage)[0].operation, "upload");
}

#[tokio::test]
async fn records_too_long_for_one_frame_come_back_in_several_pages() {
    let cluster = Cluster::start(1, 1 << 20).await;
    // Ten 3 MB records: 30 MB in one shard, more than one 16 MiB frame holds.
    let rs: Vec<Record> = (0..10)
        .map(|i| Record::text(i, format!("{i}").repeat(3_000_000)))
        .collect();
    let mut p = plan("big", cluster.alive(), 100);
    p.bytes_per_shard = 64 << 20;
    p.chunk_bytes = 1 << 20;
    let (built, placement) =
        flotilla_actors::data::upload::upload_records(rs.iter().cloned().map(Ok), &p, &*cluster)
            .await
            .unwrap();
    assert_eq!(built.shards.len(), 1);
    let rec = flotilla_actors::data::upload::version_record(&p, &built, BTreeMap::new()).unwrap();
    let got = export_all(&*cluster, &rec, &placement, &cluster.alive(), DEADLINE)
        .await
        .unwrap();
    assert_eq!(got, rs);
    assert!(
        cluster.count("ReadRange") >= 2,
        "{}",
        cluster.count("ReadRange")
    );
}
