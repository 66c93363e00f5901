//! Fine-tuning a Hugging Face BERT folder (all-MiniLM-L6-v2) with a new classification head on
//! a 3-node cluster, briefly: the run starts from the folder's weights on every shard, learns
//! (loss down on a fixed sample), registers the fine-tuned classifier, which deploys and
//! answers `/api/v1/classify`. The full Banking77 fine-tune is the `finetune_minilm` benchmark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flotilla_tests::training::{banking_subset, classify, get_json, train, upload_csv, MINILM};
use flotilla_tests::{wait_until, TestCluster};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minilm_folder_is_fine_tuned_on_the_mesh_and_serves_as_a_classifier() {
    let cluster = TestCluster::start(3).await.unwrap();
    wait_until(Duration::from_secs(60), "convergence", || {
        cluster.converged()
    })
    .await
    .unwrap();
    upload_csv(&cluster, 0, "bank3", banking_subset(3, 16), "").await;
    let spec = json!({
        "kind": "train",
        "train": {
            "model": { "hf_folder": MINILM },
            "dataset": { "name": "bank3@1", "text_field": "text", "label_field": "label",
                         "eval_fraction": 0.0 },
            "args": { "per_device_batch": 8, "global_batch": 12, "epochs": 1,
                      "learning_rate": 0.0003, "warmup_steps": 0, "seed": 7 },
            "cluster": { "workers_min": 1, "workers_max": 3, "ps_shards": 3, "mode": "sync" },
            "output": { "model": "minilm-bank3" }
        }
    });
    let r = train(&cluster, 0, &spec, DEADLINE).await;
    eprintln!(
        "MiniLM on the mesh: loss {} -> {}, {} samples in {} s, curve {}",
        r["loss_before"], r["loss_after"], r["samples"], r["train_seconds"], r["curve"]
    );
    assert_eq!(r["workers"], 3);
    assert_eq!(r["ledger_exact"], true, "{}", r["ledger"]);
    let (before, after) = (
        r["loss_before"].as_f64().unwrap(),
        r["loss_after"].as_f64().unwrap(),
    );
    // A fresh 3-way head starts near ln 3 ≈ 1.10; four steps move it clearly.
    assert!(after < before * 0.9, "{before} -> {after}");
    let model = r["model"].as_str().unwrap().to_string();
    let (name, version) = model.split_once('@').unwrap();
    assert_eq!(name, "minilm-bank3");

    // The fine-tuned classifier deploys like any model and answers through another node.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/deployments", cluster.node(0).api_url()))
        .json(&json!({ "name": "intents", "model": name, "replicas": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let texts = [
        "I still have not received my new card".to_string(),
        "How do I top up by card?".to_string(),
    ];
    wait_until(Duration::from_secs(180), "a classification", || async {
        classify(&cluster, 2, "intents", &texts, 3).await.0 == 200
    })
    .await
    .unwrap();
    let (_, answer) = classify(&cluster, 2, "intents", &texts, 3).await;
    eprintln!("classify: {answer}");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["labels"].as_array().unwrap().len(), 3);
    let registered = get_json(
        &cluster,
        0,
        &format!("/api/v1/catalog/models/{name}/{version}"),
    )
    .await;
    // The folder was registered by the node that took the submission, and the run
    // fine-tuned that version: the lineage names it, not a path.
    assert_eq!(
        registered["value"]["Model"]["lineage"]["parameters"]["parent_model"],
        "hf.all-MiniLM-L6-v2@1",
        "{registered}"
    );
    let base = get_json(&cluster, 1, "/api/v1/catalog/models/hf.all-MiniLM-L6-v2/1").await;
    assert_eq!(
        base["value"]["Model"]["lineage"]["parameters"]["source"], "hf_folder",
        "{base}"
    );
    cluster.shutdown().await.unwrap();
}
