//! Ingest on the real data files in the repository (node/data, tests/data): Banking77 CSV (10,003 records, 77 labels, CSV round
//! trip), the SGD JSONL pairs and Tiny Shakespeare as plain text; parsing from a stream that
//! hands out a few bytes at a time; sharding and placement of the result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Read;

use flotilla_actors::data::ingest::{parse_all, write_csv, Format, Ingest, Options};
use flotilla_actors::data::record::{place_shards, shard_records, Sharder, LABEL, TEXT};
use flotilla_protocol::NodeId;

/// A reader that returns at most 7 bytes a call: parsing must not depend on read sizes.
struct Trickle<R>(R);

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn banking77_has_10003_records_77_labels_and_round_trips_through_csv() {
    let records = crate::data_common::banking77();
    assert_eq!(records.len(), 10_003);
    let labels: BTreeSet<&str> = records.iter().map(|r| r.fields[LABEL].as_str()).collect();
    assert_eq!(labels.len(), 77);
    let categories: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(crate::data_common::shared("banking77-categories.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(labels, categories.iter().map(String::as_str).collect());
    // Ids are the data-row positions.
    assert!(records.iter().enumerate().all(|(i, r)| r.id == i as u64));

    let mut out = Vec::new();
    write_csv(&records, &mut out, true).unwrap();
    let mut o = Options::new(Format::Csv);
    o.label_field = Some(LABEL.into());
    let (back, rep) = parse_all(&out[..], o).unwrap();
    assert_eq!(rep.malformed, 0);
    assert_eq!(back, records, "record-for-record");
}

#[test]
fn parsing_does_not_depend_on_read_sizes() {
    let path = crate::data_common::shared("banking77-train.csv");
    let mut o = Options::new(Format::Csv);
    o.label_field = Some("category".into());
    let trickled: Vec<_> = Ingest::new(Trickle(std::fs::File::open(&path).unwrap()), o)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(trickled, crate::data_common::banking77());
}

#[test]
fn sgd_jsonl_and_shakespeare_text() {
    let mut o = Options::new(Format::Jsonl);
    o.text_field = "prompt".into();
    o.label_field = Some("service".into());
    let f = std::fs::File::open(crate::data_common::shared("sgd-service-pairs.jsonl")).unwrap();
    let (rs, rep) = parse_all(f, o).unwrap();
    assert_eq!((rs.len(), rep.malformed), (11_215, 0));
    let services: BTreeSet<&str> = rs.iter().map(|r| r.fields[LABEL].as_str()).collect();
    // The data README names six services, but the file holds no Weather_1 pairs.
    assert_eq!(
        services,
        [
            "Banks_1",
            "Flights_1",
            "Hotels_2",
            "Restaurants_1",
            "RentalCars_1"
        ]
        .into()
    );

    let raw = std::fs::read_to_string(crate::data_common::shared("tinyshakespeare.txt")).unwrap();
    let non_empty = raw.lines().filter(|l| !l.trim().is_empty()).count();
    let (rs, _) = parse_all(raw.as_bytes(), Options::new(Format::Text)).unwrap();
    assert_eq!(rs.len(), non_empty);
    assert_eq!(rs[0].fields[TEXT], raw.lines().next().unwrap());
}

#[test]
fn banking77_shards_hash_and_place() {
    let records = crate::data_common::banking77();
    let shards = shard_records(records.clone(), 1000).unwrap();
    assert_eq!(shards.len(), 11);
    assert_eq!(shards[10].records.len(), 3);
    let hashes: BTreeSet<&str> = shards.iter().map(|s| s.hash.as_str()).collect();
    assert_eq!(hashes.len(), 11);
    // Streaming sharding gives the same shards.
    let mut s = Sharder::new(1000).unwrap();
    let mut streamed = Vec::new();
    for r in records {
        streamed.extend(s.push(r));
    }
    streamed.extend(s.finish());
    assert_eq!(streamed, shards);
    let nodes: Vec<NodeId> = (0..4).map(|i| NodeId(format!("12D3KooWNode{i}"))).collect();
    let placed = place_shards("banking77", 1, shards.len() as u32, &nodes, 2);
    assert!(placed.values().all(|h| h.len() == 2 && h[0] != h[1]));
}
