//! Helpers shared by the training tests and benchmark: a Banking77 sample uploaded as a
//! dataset, `train` jobs submitted over HTTP, and their results once they end.

// Test harness: a broken setup is a failed test, said where it happens.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::{wait_until, TestCluster};

/// Banking77's training split, as the binary bundles it.
pub const BANKING77: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../node/data/banking77-train.csv"
);

/// all-MiniLM-L6-v2 in Hugging Face layout, as `tests/fixtures/fetch.sh` fetches it.
pub const MINILM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/models/all-MiniLM-L6-v2"
);

/// The first `labels` intents of Banking77 with `per_label` queries each, as CSV with the
/// header `text,category`.
pub fn banking_subset(labels: usize, per_label: usize) -> Vec<u8> {
    let mut reader = csv::Reader::from_path(crate::shared("data/banking77-train.csv"))
        .expect("the bundled Banking77 file");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["text", "category"]).expect("csv");
    for row in reader.records() {
        let row = row.expect("a Banking77 row");
        if counts.len() == labels && !counts.contains_key(&row[1]) {
            continue;
        }
        let n = counts.entry(row[1].to_string()).or_default();
        if *n < per_label {
            *n += 1;
            out.write_record([&row[0], &row[1]]).expect("csv");
        }
    }
    out.into_inner().expect("csv")
}

/// Uploads `csv` (text + category columns) to node `i` as dataset `name@1`; `query` adds
/// upload parameters (`&records_per_shard=100`).
pub async fn upload_csv(cluster: &TestCluster, i: usize, name: &str, csv: Vec<u8>, query: &str) {
    let up = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/data?name={name}&format=csv&text_field=text&label_field=category{query}",
            cluster.node(i).api_url()
        ))
        .body(csv)
        .send()
        .await
        .expect("the upload request");
    let code = up.status().as_u16();
    assert_eq!(code, 201, "{}", up.text().await.unwrap_or_default());
}

/// `GET` of `path` on node `i`, as JSON.
pub async fn get_json(cluster: &TestCluster, i: usize, path: &str) -> Value {
    reqwest::get(format!("{}{path}", cluster.node(i).api_url()))
        .await
        .expect("the request")
        .json()
        .await
        .expect("a JSON answer")
}

/// The events of job `id` as node `i` holds them: `(at_ms, text)`, oldest first.
pub async fn events(cluster: &TestCluster, i: usize, id: &str) -> Vec<(u64, String)> {
    get_json(cluster, i, &format!("/api/v1/jobs/{id}/events")).await["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| Some((e["at_ms"].as_u64()?, e["text"].as_str()?.to_string())))
        .collect()
}

/// The index of the node running job `id`'s coordinator task, as node 0 sees the job.
pub async fn coordinator_index(cluster: &TestCluster, id: &str) -> usize {
    let job = get_json(cluster, 0, &format!("/api/v1/jobs/{id}")).await;
    let node = job["detail"]["tasks"][0]["node"]
        .as_str()
        .expect("the job's task is placed");
    index_of(cluster, node).expect("the coordinator is a node of the cluster")
}

/// The index of the node whose id is `node`.
pub fn index_of(cluster: &TestCluster, node: &str) -> Option<usize> {
    (0..cluster.len()).find(|i| cluster.node(*i).node_id().to_string() == node)
}

/// `POST /api/v1/classify` of `texts` to deployment `model` through node `i`: the status and
/// the JSON answer.
pub async fn classify(
    cluster: &TestCluster,
    i: usize,
    model: &str,
    texts: &[String],
    top_k: usize,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/classify", cluster.node(i).api_url()))
        .json(&serde_json::json!({ "model": model, "input": texts, "top_k": top_k }))
        .send()
        .await
        .expect("the classify request");
    (
        r.status().as_u16(),
        r.json::<Value>().await.unwrap_or(Value::Null),
    )
}

/// Submits the job `spec` to node `i`; its id.
pub async fn submit_job(cluster: &TestCluster, i: usize, spec: &Value) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", cluster.node(i).api_url()))
        .json(spec)
        .send()
        .await
        .expect("the submission");
    let code = resp.status().as_u16();
    let v: Value = resp.json().await.expect("a JSON answer");
    assert_eq!(code, 201, "{v}");
    v["job"]["id"].as_str().expect("a job id").to_string()
}

/// Waits up to `deadline` for job `id` to end as node `i` sees it, checks that it succeeded and
/// returns its first task's result.
pub async fn job_result(cluster: &TestCluster, i: usize, id: &str, deadline: Duration) -> Value {
    let path = format!("/api/v1/jobs/{id}");
    wait_until(deadline, "the job to end", || async {
        matches!(
            get_json(cluster, i, &path).await["job"]["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    })
    .await
    .expect("the job ends");
    let s = get_json(cluster, i, &path).await;
    assert_eq!(s["job"]["status"], "succeeded", "{s}");
    serde_json::from_str(
        s["detail"]["tasks"][0]["result"]
            .as_str()
            .expect("a result"),
    )
    .expect("a JSON result")
}

/// Submits `spec` to node `i` and returns its result once it succeeded.
pub async fn train(cluster: &TestCluster, i: usize, spec: &Value, deadline: Duration) -> Value {
    let id = submit_job(cluster, i, spec).await;
    job_result(cluster, i, &id, deadline).await
}
