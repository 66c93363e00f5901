//! A `train` job on a 3-node cluster: a dataset uploaded to one node, the job submitted to
//! another; its coordinator spawns parameter-server shards and one trainer per node as remote
//! actors, trains a small transformer classifier on the kernels in sync mode, and reports a
//! lower loss.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

/// Beside the repository, as the project ships it.
const BANKING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/banking77-train.csv"
);

/// 100 records of each of the first 5 labels, as CSV.
fn subset() -> Vec<u8> {
    let mut reader = csv::Reader::from_path(BANKING).unwrap();
    let mut per_label: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["text", "category"]).unwrap();
    for row in reader.records() {
        let row = row.unwrap();
        if per_label.len() == 5 && !per_label.contains_key(&row[1]) {
            continue;
        }
        let n = per_label.entry(row[1].to_string()).or_default();
        if *n < 100 {
            *n += 1;
            out.write_record([&row[0], &row[1]]).unwrap();
        }
    }
    out.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_train_job_runs_shards_and_trainers_across_the_cluster() {
    let cluster = TestCluster::start(3).await.unwrap();
    wait_until(Duration::from_secs(60), "convergence", || {
        cluster.converged()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let up = http
        .post(format!(
            "{}/api/v1/data?name=bank5&format=csv&text_field=text&label_field=category&records_per_shard=200",
            cluster.node(1).api_url()
        ))
        .body(subset())
        .send()
        .await
        .unwrap();
    assert_eq!(up.status().as_u16(), 201, "{}", up.text().await.unwrap());
    wait_until(Duration::from_secs(60), "the dataset at node 0", || async {
        cluster.node(0).data.get("bank5", Some(1)).await.is_ok()
    })
    .await
    .unwrap();

    let spec = json!({
        "kind": "train",
        "train": {
            "model": { "new": {
                "architecture": "classifier", "vocab_size": 128, "hidden_size": 32,
                "layers": 1, "heads": 2, "max_seq_len": 48, "num_labels": 5
            }},
            "dataset": { "name": "bank5@1", "text_field": "text", "label_field": "label" },
            "args": {
                "per_device_batch": 10, "global_batch": 30, "epochs": 2,
                "learning_rate": 0.003, "warmup_steps": 3, "schedule": "cosine", "seed": 7
            },
            "cluster": { "workers_min": 1, "workers_max": 3, "ps_shards": 2, "mode": "sync" }
        }
    });
    let resp = http
        .post(format!("{}/api/v1/jobs", cluster.node(0).api_url()))
        .json(&spec)
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code, 201, "{v}");
    let id = v["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["job"]["kind"], "train");

    let show = |i: usize| {
        let (http, url) = (
            http.clone(),
            format!("{}/api/v1/jobs/{id}", cluster.node(i).api_url()),
        );
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    wait_until(
        Duration::from_secs(300),
        "the training job to finish",
        || async {
            let s = show(2).await;
            matches!(
                s["job"]["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        },
    )
    .await
    .unwrap();
    let s = show(0).await;
    assert_eq!(s["job"]["status"], "succeeded", "{s}");
    let result: Value =
        serde_json::from_str(s["detail"]["tasks"][0]["result"].as_str().unwrap()).unwrap();
    eprintln!("train job result: {result}");
    assert_eq!(result["records"], 500);
    assert_eq!(result["workers"], 3);
    assert_eq!(
        result["samples"], 1000,
        "every record once in each of 2 epochs"
    );
    let (before, after) = (
        result["loss_before"].as_f64().unwrap(),
        result["loss_after"].as_f64().unwrap(),
    );
    assert!(after < before * 0.9, "{before} -> {after}");

    // A spec with mistakes is refused before anything runs, field by field.
    let bad = json!({ "kind": "train", "train": { "dataset": { "name": "no-version" },
        "cluster": { "workers_min": 4, "workers_max": 2 } } });
    let resp = http
        .post(format!("{}/api/v1/jobs", cluster.node(0).api_url()))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let e: Value = resp.json().await.unwrap();
    let fields: Vec<&str> = e["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.iter().any(|f| f.starts_with("train.dataset")),
        "{fields:?}"
    );
    assert!(
        fields.iter().any(|f| f.starts_with("train.cluster")),
        "{fields:?}"
    );
    cluster.shutdown().await.unwrap();
}
