//! A `train` job on a 3-node cluster: a dataset uploaded to one node, the job submitted to
//! another; its coordinator spawns parameter-server shards and one trainer per node as remote
//! actors, trains a small transformer classifier on the kernels in sync mode, reports a lower
//! loss and held-out metrics, and registers the model, which then deploys and classifies
//! through `/api/v1/classify` on any node. Specs naming what does not exist are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flotilla_tests::training::{banking_subset, classify, upload_csv};
use flotilla_tests::{wait_until, TestCluster};

/// 100 records of each of the first 5 labels, as CSV.
fn subset() -> Vec<u8> {
    banking_subset(5, 100)
}
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_train_job_runs_shards_and_trainers_across_the_cluster() {
    let cluster = TestCluster::start(3).await.unwrap();
    wait_until(Duration::from_secs(60), "convergence", || {
        cluster.converged()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    upload_csv(&cluster, 1, "bank5", subset(), "&records_per_shard=200").await;
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
    let (records, held_out) = (
        result["records"].as_u64().unwrap(),
        result["eval_records"].as_u64().unwrap(),
    );
    assert_eq!(records + held_out, 500);
    assert!(
        (25..=75).contains(&held_out),
        "about 10% held out: {held_out}"
    );
    assert_eq!(result["workers"], 3);
    assert_eq!(
        result["samples"].as_u64().unwrap(),
        2 * records,
        "every training record once in each of 2 epochs"
    );
    let accuracy = result["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{result}");
    assert_eq!(result["model"], "bank5-classifier@1");

    // Live metrics: progress lines in the job's events, gauges in the coordinator's /metrics.
    let events: Value = http
        .get(format!(
            "{}/api/v1/jobs/{id}/events",
            cluster.node(1).api_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let steps: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["text"].as_str())
        .filter(|t| t.starts_with("step ") && t.contains(" loss ") && t.contains(" grad_norm "))
        .collect();
    assert!(!steps.is_empty(), "{events}");
    assert!(
        steps.last().unwrap().contains("samples/s | worker"),
        "{steps:?}"
    );
    let mut exported = false;
    for i in 0..3 {
        let text = http
            .get(format!("{}/metrics", cluster.node(i).api_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        exported |= text
            .lines()
            .any(|l| l.starts_with(&format!("flotilla_train_loss{{job=\"{id}\"}}")))
            && text.contains("flotilla_train_worker_batch_share{");
    }
    assert!(exported, "no node exports the job's training gauges");
    let (before, after) = (
        result["loss_before"].as_f64().unwrap(),
        result["loss_after"].as_f64().unwrap(),
    );
    assert!(after < before * 0.9, "{before} -> {after}");

    // The model is registered (every node learns it by gossip) with its metrics and lineage.
    wait_until(Duration::from_secs(60), "the model at node 2", || async {
        let models: Value = http
            .get(format!("{}/api/v1/models", cluster.node(2).api_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        models.as_array().unwrap().iter().any(|m| {
            m["name"] == "bank5-classifier" && m["version"] == 1 && m["kind"] == "classifier"
        })
    })
    .await
    .unwrap();

    // Deployed, it classifies through any node; on training texts it beats chance (1 in 5).
    let resp = http
        .post(format!("{}/api/v1/deployments", cluster.node(2).api_url()))
        .json(&json!({"name": "intents", "model": "bank5-classifier", "replicas": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    let csv_bytes = subset();
    let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
    for (i, row) in reader.records().enumerate() {
        let row = row.unwrap();
        if i % 5 == 0 {
            texts.push(row[0].to_string());
            labels.push(row[1].to_string());
        }
    }
    wait_until(Duration::from_secs(120), "a classification", || async {
        classify(&cluster, 1, "intents", &texts, 3).await.0 == 200
    })
    .await
    .unwrap();
    let (_, answer) = classify(&cluster, 1, "intents", &texts, 3).await;
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), texts.len());
    assert_eq!(data[0]["labels"].as_array().unwrap().len(), 3);
    let right = data
        .iter()
        .zip(&labels)
        .filter(|(d, l)| d["label"].as_str() == Some(l.as_str()))
        .count();
    eprintln!(
        "served classifier: {right} of {} training texts right",
        texts.len()
    );
    assert!(right * 10 > texts.len() * 3, "{right} of {}", texts.len());

    // Fine-tuning the registered version, through another node: it starts exactly where the
    // first run ended (the same loss on the same sample), and its lineage names the parent.
    let mut tuned = spec.clone();
    tuned["train"]["model"] = json!({ "registered": "bank5-classifier@1" });
    tuned["train"]["args"]["epochs"] = json!(1);
    tuned["train"]["output"] = json!({ "model": "bank5-tuned" });
    let second =
        flotilla_tests::training::train(&cluster, 1, &tuned, Duration::from_secs(300)).await;
    eprintln!("fine-tune of the registered version: {second}");
    let start = second["loss_before"].as_f64().unwrap();
    assert!(
        (start - after).abs() <= 1e-5 * after.max(1.0),
        "the fine-tune starts at {start}, the parent ended at {after}"
    );
    assert_eq!(second["model"], "bank5-tuned@1");
    let child =
        flotilla_tests::training::get_json(&cluster, 1, "/api/v1/catalog/models/bank5-tuned/1")
            .await;
    assert_eq!(
        child["value"]["Model"]["lineage"]["parameters"]["parent_model"], "bank5-classifier@1",
        "{child}"
    );
    // Other labels (3 of the 5 intents): the encoder carries on under a new 3-way head.
    upload_csv(&cluster, 2, "bank3", banking_subset(3, 60), "").await;
    let mut narrower = tuned.clone();
    narrower["train"]["dataset"]["name"] = json!("bank3@1");
    narrower["train"]["output"] = json!({ "model": "bank3-tuned" });
    let third =
        flotilla_tests::training::train(&cluster, 2, &narrower, Duration::from_secs(300)).await;
    assert_eq!(third["model"], "bank3-tuned@1");
    assert!(
        third["loss_after"].as_f64().unwrap() < third["loss_before"].as_f64().unwrap(),
        "{third}"
    );
    // A version that does not exist is refused at submission, naming it.
    let mut missing = tuned.clone();
    missing["train"]["model"] = json!({ "registered": "bank5-classifier@9" });
    let resp = http
        .post(format!("{}/api/v1/jobs", cluster.node(0).api_url()))
        .json(&missing)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let e = resp.text().await.unwrap();
    assert!(
        e.contains("train.model.registered") && e.contains("no model version bank5-classifier@9"),
        "{e}"
    );

    // A model source the coordinator cannot train yet is refused at submission, saying so.
    let mut decoder = spec.clone();
    decoder["train"]["model"]["new"]["architecture"] = json!("decoder");
    decoder["train"]["model"]["new"]
        .as_object_mut()
        .unwrap()
        .remove("num_labels");
    let resp = http
        .post(format!("{}/api/v1/jobs", cluster.node(2).api_url()))
        .json(&decoder)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let e: Value = resp.json().await.unwrap();
    assert!(
        e.to_string().contains("train.model.new.architecture"),
        "{e}"
    );

    // Specs naming a dataset or a field that does not exist are refused, naming it.
    for (dataset, text_field, field, needle) in [
        (
            "bank9@1",
            "text",
            "train.dataset.name",
            "no dataset bank9@1",
        ),
        (
            "bank5@1",
            "body",
            "train.dataset.text_field",
            "no field \"body\"",
        ),
    ] {
        let mut wrong = spec.clone();
        wrong["train"]["dataset"]["name"] = json!(dataset);
        wrong["train"]["dataset"]["text_field"] = json!(text_field);
        let resp = http
            .post(format!("{}/api/v1/jobs", cluster.node(2).api_url()))
            .json(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let e: Value = resp.json().await.unwrap();
        let hit = e["error"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == field)
            .unwrap_or_else(|| panic!("{field} not named: {e}"));
        assert!(hit["message"].as_str().unwrap().contains(needle), "{e}");
    }

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
