//! The training reader over the mesh: three readers of an uploaded Banking77 version see every
//! record exactly once in a seeded order, and a reader resumed from its cursor continues where
//! it stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_node::data::reader::VersionReader;
use flotilla_tests::{wait_until, TestCluster};

/// As the binary bundles it.
const BANKING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../node/data/banking77-train.csv"
);

async fn read_all(r: &mut VersionReader) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Some(rec) = r.next().await.unwrap() {
        ids.push(rec.id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_readers_see_every_record_once_and_a_cursor_resumes() {
    let cluster = TestCluster::start(3).await.unwrap();
    wait_until(Duration::from_secs(60), "convergence", || {
        cluster.converged()
    })
    .await
    .unwrap();
    let url = format!(
        "{}/api/v1/data?name=bank&format=csv&text_field=text&label_field=category&records_per_shard=1500",
        cluster.node(1).api_url()
    );
    let resp = reqwest::Client::new()
        .post(url)
        .body(std::fs::read(BANKING).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let data = cluster.node(0).data.clone();
    wait_until(Duration::from_secs(60), "the version at node 0", || async {
        data.get("bank", Some(1)).await.is_ok()
    })
    .await
    .unwrap();

    let mut all = Vec::new();
    let mut counts = Vec::new();
    for me in 0..3 {
        let mut r = VersionReader::open(&data, "bank", 1, 5, 3, me, None)
            .await
            .unwrap();
        let ids = read_all(&mut r).await;
        counts.push(ids.len());
        all.extend(ids);
    }
    assert_eq!(all.len(), 10_003);
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), 10_003, "every record exactly once");
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "{counts:?}"
    );
    // A shuffled order, not the upload order, and another seed gives another order.
    let mut r = VersionReader::open(&data, "bank", 1, 5, 1, 0, None)
        .await
        .unwrap();
    let seeded = read_all(&mut r).await;
    let mut upload_order = seeded.clone();
    upload_order.sort_unstable();
    assert_ne!(seeded, upload_order);
    let mut other = VersionReader::open(&data, "bank", 1, 6, 1, 0, None)
        .await
        .unwrap();
    assert_ne!(read_all(&mut other).await, seeded);

    // Stop reader 1 of 3 part-way, resume from its cursor: the same continuation.
    let mut first = VersionReader::open(&data, "bank", 1, 5, 3, 1, None)
        .await
        .unwrap();
    let mut head = Vec::new();
    for _ in 0..1_234 {
        head.push(first.next().await.unwrap().unwrap().id);
    }
    let cursor = first.cursor();
    let rest = read_all(&mut first).await;
    let mut resumed = VersionReader::open(&data, "bank", 1, 5, 3, 1, Some(cursor))
        .await
        .unwrap();
    assert_eq!(resumed.remaining(), rest.len() as u64);
    assert_eq!(read_all(&mut resumed).await, rest);
    assert!(VersionReader::open(&data, "nope", 1, 5, 3, 0, None)
        .await
        .is_err());
    cluster.shutdown().await.unwrap();
}
