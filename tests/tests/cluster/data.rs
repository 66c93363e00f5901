//! Datasets on real in-process clusters over HTTP: Banking77 uploaded to three nodes keeps every
//! record on two holders and exports exactly; a killed holder's shards stay readable and get
//! their second replica back; exact and near dedup run as jobs through the cluster path and
//! find the planted duplicates; `show N@4` walks the lineage back to the upload; bad input is
//! refused with clear errors and leaves the parent untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_actors::data::ingest::{parse_all, Format, Options};
use flotilla_actors::data::ops::{self, Op};
use flotilla_protocol::catalog::{CatalogKey, Entry, RecordKind};
use flotilla_protocol::jobs::{
    AntiAffinity, DataOpsJob, JobKind, JobSpec, JobStatus, Priority, Resources,
};
use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);
/// As the binary bundles it.
const BANKING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../node/data/banking77-train.csv"
);

async fn started_cluster(n: usize) -> TestCluster {
    let cluster = TestCluster::start(n).await.unwrap();
    wait_until(DEADLINE, "membership to converge", || cluster.converged())
        .await
        .unwrap();
    cluster
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

async fn get(cluster: &TestCluster, i: usize, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", cluster.node(i).api_url());
    let resp = client().get(&url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn send(cluster: &TestCluster, i: usize, path: &str, body: Vec<u8>) -> (u16, Value) {
    let url = format!("{}{path}", cluster.node(i).api_url());
    let resp = client().post(&url).body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn ops(cluster: &TestCluster, i: usize, name: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/data/{name}/ops");
    send(cluster, i, &path, serde_json::to_vec(&body).unwrap()).await
}

/// The export of `name@v` from node `i` as its JSON lines.
async fn export(
    cluster: &TestCluster,
    i: usize,
    name: &str,
    v: u64,
) -> Vec<BTreeMap<String, String>> {
    let url = format!(
        "{}/api/v1/data/{name}/{v}/export",
        cluster.node(i).api_url()
    );
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until node `i`'s catalog replica has `name@v` (the catalog is eventually consistent:
/// a version written on one node reaches the others by gossip).
async fn visible(cluster: &TestCluster, i: usize, name: &str, v: u64) {
    let path = format!("/api/v1/data/{name}/{v}");
    wait_until(DEADLINE, "the version to reach the node", || async {
        get(cluster, i, &path).await.0 == 200
    })
    .await
    .unwrap();
}

/// Holders of each shard of `name@v` as node `i` surveys them.
async fn holders(cluster: &TestCluster, i: usize, name: &str, v: u64) -> Vec<Vec<String>> {
    let (code, show) = get(cluster, i, &format!("/api/v1/data/{name}/{v}")).await;
    assert_eq!(code, 200, "{show}");
    show["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["holders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn banking77_keeps_every_record_on_two_nodes_exports_exactly_and_survives_a_holder_kill() {
    let mut cluster = started_cluster(3).await;
    let file = std::fs::read(BANKING).unwrap();
    let q = "/api/v1/data?name=banking&format=csv&text_field=text&label_field=category\
             &records_per_shard=1000";
    let (code, up) = send(&cluster, 1, q, file.clone()).await;
    assert_eq!(code, 201, "{up}");
    assert_eq!(up["record"]["record_count"], 10_003);
    assert_eq!(up["report"]["malformed"], 0);
    assert_eq!(up["record"]["shard_hashes"].as_array().unwrap().len(), 11);

    // Every node learns the version from the catalog.
    for i in 0..3 {
        wait_until(DEADLINE, "the version to reach every node", || async {
            get(&cluster, i, "/api/v1/data/banking/1").await.0 == 200
        })
        .await
        .unwrap();
    }
    let placed = holders(&cluster, 0, "banking", 1).await;
    assert_eq!(placed.len(), 11);
    for (i, h) in placed.iter().enumerate() {
        assert!(h.len() >= 2, "shard {i} has holders {h:?}");
    }

    let mut opts = Options::new(Format::Csv);
    opts.label_field = Some("category".into());
    let (want, _) = parse_all(file.as_slice(), opts).unwrap();
    let want: Vec<BTreeMap<String, String>> = want.into_iter().map(|r| r.fields).collect();
    let got = export(&cluster, 2, "banking", 1).await;
    assert_eq!(got.len(), 10_003);
    assert_eq!(
        got, want,
        "export must round-trip the records in upload order"
    );

    // Kill a holder of shard 0 other than node 0, which we keep asking.
    let ids: Vec<String> = (0..3)
        .map(|i| cluster.node(i).node_id().to_string())
        .collect();
    let victim = (1..3).find(|i| placed[0].contains(&ids[*i])).unwrap();
    let dead = ids[victim].clone();
    cluster.kill(victim).await;
    let got = export(&cluster, 0, "banking", 1).await;
    assert_eq!(got, want, "reads complete from the surviving replicas");

    wait_until(
        DEADLINE,
        "the replication factor to be restored",
        || async {
            let hs = holders(&cluster, 0, "banking", 1).await;
            hs.iter()
                .all(|h| h.iter().filter(|n| **n != dead).count() >= 2)
        },
    )
    .await
    .unwrap();
    let got = export(&cluster, 0, "banking", 1).await;
    assert_eq!(got, want);
    cluster.shutdown().await.unwrap();
}

/// A small deterministic generator (xorshift), so the corpus is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// 5,000 records: 4,400 distinct texts of 20 words, 300 exact copies and 300 copies with one
/// word changed. Returns the JSONL, the exact copies' count and the near copies' texts.
fn corpus(seed: u64) -> (Vec<u8>, usize, BTreeSet<String>) {
    let mut rng = Rng(seed);
    let vocab: Vec<String> = (0..3000).map(|i| format!("w{i}x{}", i * 7 % 13)).collect();
    let mut base: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    while base.len() < 4400 {
        let mut words = BTreeSet::new();
        while words.len() < 20 {
            words.insert(rng.below(vocab.len()));
        }
        let text = words
            .iter()
            .map(|w| vocab[*w].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        if seen.insert(text.clone()) {
            base.push(text);
        }
    }
    let mut lines: Vec<String> = base.clone();
    for _ in 0..300 {
        lines.push(base[rng.below(base.len())].clone());
    }
    let mut near = BTreeSet::new();
    while near.len() < 300 {
        let src = &base[rng.below(base.len())];
        let mut words: Vec<&str> = src.split(' ').collect();
        let at = rng.below(words.len());
        let fresh = format!("changed{}", rng.next() % 1_000_000);
        words[at] = &fresh;
        let text = words.join(" ");
        if !seen.contains(&text) && near.insert(text.clone()) {
            lines.push(text);
        }
    }
    let mut out = Vec::new();
    for l in &lines {
        out.extend(serde_json::to_vec(&json!({ "text": l })).unwrap());
        out.push(b'\n');
    }
    (out, 300, near)
}

fn texts(rows: &[BTreeMap<String, String>]) -> Vec<String> {
    rows.iter().map(|r| r["text"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dedup_finds_planted_duplicates_and_show_walks_the_chain_back_to_the_upload() {
    let seed = 0x5eed_da7a;
    println!("corpus seed {seed:#x}");
    let cluster = started_cluster(3).await;
    let (jsonl, exact, near) = corpus(seed);
    // The same chain in one call on one machine: the cluster's result must not depend on how
    // the records are spread over shards and nodes.
    let (records, _) = parse_all(jsonl.as_slice(), Options::new(Format::Jsonl)).unwrap();
    let chain: Vec<Op> = serde_json::from_value(json!([
        { "op": "dedup-exact" },
        { "op": "dedup-near", "threshold": 0.8 }
    ]))
    .unwrap();
    let (local, _) = ops::apply_chain(records, &chain).unwrap();
    let local: BTreeSet<String> = local
        .into_iter()
        .map(|r| r.fields["text"].clone())
        .collect();
    let (code, up) = send(
        &cluster,
        0,
        "/api/v1/data?name=corpus&format=jsonl&records_per_shard=400",
        jsonl,
    )
    .await;
    assert_eq!(code, 201, "{up}");
    assert_eq!(up["record"]["record_count"], 5000);
    let v1 = texts(&export(&cluster, 0, "corpus", 1).await);

    visible(&cluster, 1, "corpus", 1).await;
    let (code, r) = ops(
        &cluster,
        1,
        "corpus",
        json!({ "wait": true, "ops": [{ "op": "dedup-exact" }] }),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["version"], 2);
    visible(&cluster, 2, "corpus", 2).await;
    let v2 = texts(&export(&cluster, 2, "corpus", 2).await);
    assert_eq!(
        v2.len(),
        v1.len() - exact,
        "exactly the planted copies are removed"
    );
    let v1_set: BTreeSet<&String> = v1.iter().collect();
    let v2_set: BTreeSet<&String> = v2.iter().collect();
    assert_eq!(v1_set, v2_set, "no distinct text is lost");

    let (code, r) = ops(
        &cluster,
        2,
        "corpus",
        json!({ "wait": true, "ops": [{ "op": "dedup-near", "threshold": 0.8 }] }),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    visible(&cluster, 0, "corpus", 3).await;
    let v3: BTreeSet<String> = texts(&export(&cluster, 0, "corpus", 3).await)
        .into_iter()
        .collect();
    let removed: BTreeSet<&String> = v2_set
        .iter()
        .copied()
        .filter(|t| !v3.contains(*t))
        .collect();
    assert_eq!(
        v3, local,
        "the cluster keeps what one call on one machine keeps"
    );
    let hit = removed.iter().filter(|t| near.contains(**t)).count() as f64;
    let precision = hit / removed.len().max(1) as f64;
    let recall = hit / near.len() as f64;
    println!(
        "near dedup: removed {}, precision {precision:.4}, recall {recall:.4}",
        removed.len()
    );
    assert!(
        precision >= 0.95 && recall >= 0.95,
        "P {precision} R {recall}"
    );

    let (code, r) = ops(
        &cluster,
        0,
        "corpus",
        json!({ "wait": true, "ops": [{ "op": "normalize" }, { "op": "pii" }] }),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["version"], 4);
    visible(&cluster, 1, "corpus", 4).await;
    let (code, show) = get(&cluster, 1, "/api/v1/data/corpus/4").await;
    assert_eq!(code, 200, "{show}");
    let chain: Vec<(u64, String)> = show["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["version"].as_u64().unwrap(),
                l["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        chain,
        vec![
            (4, "normalize.pii".to_string()),
            (3, "dedup-near".to_string()),
            (2, "dedup-exact".to_string()),
            (1, "upload".to_string()),
        ]
    );
    assert_eq!(show["lineage"][0]["steps"].as_array().unwrap().len(), 2);

    // An operation on a field the records lack is refused before any job; the parent stays.
    visible(&cluster, 0, "corpus", 4).await;
    let before = get(&cluster, 0, "/api/v1/data/corpus/4").await.1["record"].clone();
    let (code, r) = ops(
        &cluster,
        0,
        "corpus",
        json!({ "wait": true, "ops": [{ "op": "dedup-exact", "field": "body" }] }),
    )
    .await;
    assert_eq!(code, 400, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("body"),
        "{r}"
    );
    let (_, list) = get(&cluster, 0, "/api/v1/data").await;
    let corpus = list["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "corpus")
        .unwrap()
        .clone();
    assert_eq!(corpus["versions"], json!([1, 2, 3, 4]));
    assert_eq!(
        get(&cluster, 0, "/api/v1/data/corpus/4").await.1["record"],
        before
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_clear_errors() {
    let cluster = started_cluster(3).await;
    // Unknown dataset and version.
    assert_eq!(get(&cluster, 0, "/api/v1/data/nope").await.0, 404);
    assert_eq!(get(&cluster, 0, "/api/v1/data/nope/3/export").await.0, 404);

    // Malformed lines are counted with their line numbers and skipped...
    let body = b"{\"text\":\"one\"}\nnot json\n{\"text\":\"two\"}\n{\"other\":1}\n".to_vec();
    let (code, up) = send(
        &cluster,
        0,
        "/api/v1/data?name=lines&format=jsonl",
        body.clone(),
    )
    .await;
    assert_eq!(code, 201, "{up}");
    assert_eq!(up["record"]["record_count"], 2);
    assert_eq!(up["report"]["malformed"], 2);
    let lines: Vec<u64> = up["report"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 4]);
    assert_eq!(get(&cluster, 0, "/api/v1/data/lines/2").await.0, 404);
    // ...or fail the upload, which then leaves nothing behind.
    let (code, r) = send(
        &cluster,
        0,
        "/api/v1/data?name=strict&format=jsonl&on_error=fail",
        body,
    )
    .await;
    assert_eq!(code, 400, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("line 2"),
        "{r}"
    );
    assert_eq!(get(&cluster, 0, "/api/v1/data/strict").await.0, 404);

    // Not UTF-8.
    let (code, r) = send(
        &cluster,
        0,
        "/api/v1/data?name=latin&format=text",
        b"caf\xe9\n".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("UTF-8"),
        "{r}"
    );

    // A CSV without the named column, a bad format, a dataset that exists.
    let (code, r) = send(
        &cluster,
        0,
        "/api/v1/data?name=c&format=csv&text_field=body",
        b"text\nx\n".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("body"),
        "{r}"
    );
    let (code, _) = send(&cluster, 0, "/api/v1/data?name=c&format=xml", b"x".to_vec()).await;
    assert_eq!(code, 400);
    let (code, _) = send(
        &cluster,
        0,
        "/api/v1/data?name=lines&format=text",
        b"x\n".to_vec(),
    )
    .await;
    assert_eq!(code, 409);

    // Operations: unknown op, a version that does not exist.
    let (code, r) = ops(
        &cluster,
        0,
        "lines",
        json!({ "ops": [{ "op": "shuffle" }] }),
    )
    .await;
    assert_eq!(code, 400, "{r}");
    let (code, _) = ops(
        &cluster,
        0,
        "lines",
        json!({ "version": 7, "ops": [{ "op": "pii" }] }),
    )
    .await;
    assert_eq!(code, 404);

    // A job whose chain fails on the holders (submitted straight to the job manager, past the
    // HTTP check) fails: no new version, no output shard left anywhere, the parent as it was.
    let mut body = Vec::new();
    for i in 0..300 {
        body.extend(serde_json::to_vec(&json!({ "text": format!("row {i}") })).unwrap());
        body.push(b'\n');
    }
    let (code, up) = send(
        &cluster,
        0,
        "/api/v1/data?name=notes&records_per_shard=100",
        body,
    )
    .await;
    assert_eq!(code, 201, "{up}");
    for i in 0..3 {
        visible(&cluster, i, "notes", 1).await;
    }
    let before = get(&cluster, 0, "/api/v1/data/notes/1").await.1["record"].clone();
    let spec = JobSpec {
        kind: JobKind::DataOps(Box::new(DataOpsJob {
            dataset: "notes".into(),
            parent_version: 1,
            output_version: 2,
            ops_json: r#"[{"op":"normalize","field":"note"}]"#.into(),
        })),
        priority: Priority::Batch,
        resources: Resources {
            cores: 1,
            ram_bytes: 64 << 20,
            gpus: 0,
        },
        tasks: 1,
        anti_affinity: AntiAffinity::None,
        preferred_nodes: vec![],
        idempotency_key: None,
    };
    let job = cluster.node(1).jobs.submit(spec).await.unwrap().record.id;
    let key = CatalogKey {
        kind: RecordKind::Job,
        name: job.0.clone(),
        version: 0,
    };
    let status = || async {
        match cluster.node(1).catalog.get(key.clone()).await.unwrap() {
            Some(Entry::Job(e)) => Some(e.record.status),
            _ => None,
        }
    };
    wait_until(DEADLINE, "the job to end", || async {
        status().await.is_some_and(|s| s.is_terminal())
    })
    .await
    .unwrap();
    assert_eq!(status().await, Some(JobStatus::Failed));
    assert_eq!(get(&cluster, 0, "/api/v1/data/notes/2").await.0, 404);
    assert_eq!(
        get(&cluster, 2, "/api/v1/data/notes/1").await.1["record"],
        before
    );
    for i in 0..3 {
        let held = cluster
            .node(i)
            .data
            .peers
            .shards
            .list(Some("notes".into()))
            .await
            .unwrap();
        assert!(
            held.iter().all(|m| m.id.version == 1),
            "node {i} holds {held:?}"
        );
    }
    assert_eq!(export(&cluster, 1, "notes", 1).await.len(), 300);

    visible(&cluster, 1, "lines", 1).await;
    // Delete removes the dataset everywhere.
    let url = format!("{}/api/v1/data/lines", cluster.node(1).api_url());
    let resp = client().delete(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(get(&cluster, 1, "/api/v1/data/lines").await.0, 404);
    cluster.shutdown().await.unwrap();
}

/// SGD repeats many short prompts ("Thank you", …): near dedup finds thousands of clusters. The
/// job's result must still reach its owner (it lists a sample of the clusters, with totals), so
/// the job ends and keeps exactly what one call on one machine keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn near_dedup_with_thousands_of_clusters_finishes_and_matches_one_call() {
    let cluster = started_cluster(3).await;
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/sgd-service-pairs.jsonl"
    ))
    .unwrap();
    let mut o = Options::new(Format::Jsonl);
    o.text_field = "prompt".into();
    let (records, _) = parse_all(raw.as_slice(), o).unwrap();
    let near: Vec<Op> =
        serde_json::from_value(json!([{ "op": "dedup-near", "threshold": 0.8 }])).unwrap();
    let (local, _) = ops::apply_chain(records, &near).unwrap();
    let q = "/api/v1/data?name=sgd&format=jsonl&text_field=prompt&records_per_shard=2000";
    let (code, up) = send(&cluster, 0, q, raw).await;
    assert_eq!(code, 201, "{up}");
    visible(&cluster, 1, "sgd", 1).await;
    let (code, r) = ops(
        &cluster,
        1,
        "sgd",
        json!({ "wait": true, "wait_secs": 240, "ops": [{ "op": "dedup-near", "threshold": 0.8 }] }),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["result"]["records"], local.len() as u64);
    let near = &r["result"]["report"]["near"][0];
    assert!(near["clusters_total"].as_u64().unwrap() > 100, "{near}");
    assert!(near["clusters"].as_array().unwrap().len() <= 100);
    visible(&cluster, 2, "sgd", 2).await;
    let got: Vec<String> = texts(&export(&cluster, 2, "sgd", 2).await);
    let want: Vec<String> = local
        .into_iter()
        .map(|r| r.fields["text"].clone())
        .collect();
    assert_eq!(got, want);
    cluster.shutdown().await.unwrap();
}
