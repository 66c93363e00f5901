//! Cluster-wide dedup on 5,000 records built from Banking77 texts with planted exact and near
//! duplicates: near-dedup precision and recall against exact-Jaccard ground truth, exact dedup
//! removing exactly the planted copies, and identical results on 1, 3 or 7 shards.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test prints its seed and the measured precision and recall.
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;

use flotilla_actors::data::ops::dedup::{
    dedup_key_text, exact_dedup, jaccard, near_dedup, shingle_hashes, NearParams,
};
use flotilla_actors::data::record::{Record, TEXT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data_common::corpus::corpus;

/// Splits records into `n` shards by a seeded random assignment.
fn split(records: &[Record], n: usize, seed: u64) -> Vec<Vec<Record>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut shards = vec![Vec::new(); n];
    for r in records {
        shards[rng.gen_range(0..n)].push(r.clone());
    }
    shards
}

fn ids(shards: &[Vec<Record>]) -> BTreeSet<u64> {
    shards.iter().flatten().map(|r| r.id).collect()
}

#[test]
fn exact_dedup_removes_exactly_the_planted_copies_on_any_sharding() {
    let c = corpus();
    let mut results = Vec::new();
    for n in [1, 3, 7] {
        let t = std::time::Instant::now();
        let (kept, removed) = exact_dedup(split(&c.records, n, n as u64), TEXT).unwrap();
        println!("exact dedup on {n} shards: {:?}", t.elapsed());
        assert_eq!(removed, c.exact_copies.len() as u64, "{n} shards");
        results.push(ids(&kept));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
    // Every kept key is distinct, and every text's key is still represented.
    let kept: Vec<&Record> = c
        .records
        .iter()
        .filter(|r| results[0].contains(&r.id))
        .collect();
    let keys: BTreeSet<String> = kept
        .iter()
        .map(|r| dedup_key_text(&r.fields[TEXT]))
        .collect();
    assert_eq!(keys.len(), kept.len());
    let all: BTreeSet<String> = c
        .records
        .iter()
        .map(|r| dedup_key_text(&r.fields[TEXT]))
        .collect();
    assert_eq!(keys, all);
    // For each key the smallest id survived.
    let mut smallest = std::collections::BTreeMap::new();
    for r in &c.records {
        let e = smallest
            .entry(dedup_key_text(&r.fields[TEXT]))
            .or_insert(r.id);
        *e = (*e).min(r.id);
    }
    let want: BTreeSet<u64> = smallest.into_values().collect();
    assert_eq!(results[0], want);
}

#[test]
fn near_dedup_precision_recall_and_shard_independence() {
    let c = corpus();
    // Exact copies are exact dedup's job; near dedup is measured on the rest.
    let records: Vec<Record> = c
        .records
        .iter()
        .filter(|r| !c.exact_copies.contains(&r.id))
        .cloned()
        .collect();
    let params = NearParams::default();
    let t = std::time::Instant::now();
    let (kept1, res1) = near_dedup(split(&records, 1, 1), &params).unwrap();
    println!("near dedup of {} records: {:?}", records.len(), t.elapsed());

    // Ground truth: every pair with exact Jaccard ≥ threshold.
    let sets: Vec<(u64, Vec<u64>)> = records
        .iter()
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
    let found: BTreeSet<(u64, u64)> = res1.pairs.iter().copied().collect();
    let hits = found.intersection(&truth).count() as f64;
    let precision = hits / found.len() as f64;
    let recall = hits / truth.len() as f64;
    println!(
        "pairs: truth {}, found {}, precision {precision:.4}, recall {recall:.4}; clusters {}, removed {}",
        truth.len(), found.len(), res1.clusters.len(), res1.removed.len()
    );
    assert!(
        truth.len() >= 500,
        "too few true pairs ({}) to measure",
        truth.len()
    );
    assert!(precision >= 0.95, "precision {precision}");
    assert!(recall >= 0.95, "recall {recall}");

    for n in [3, 7] {
        let (kept, res) = near_dedup(split(&records, n, 100 + n as u64), &params).unwrap();
        assert_eq!(res, res1, "{n} shards");
        assert_eq!(ids(&kept), ids(&kept1), "{n} shards");
    }
}
