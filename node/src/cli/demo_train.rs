//! The demo's training step: a sample of the bundled Banking77 data set (customer-service
//! queries labelled with intents) is uploaded as a dataset, a small transformer classifier is
//! trained on it by every node of the cluster (a `train` job: parameter-server shards and one
//! trainer per node), the registered model is shown, deployed, and asked to classify queries
//! through `/api/v1/classify`.

use std::collections::BTreeMap;
use std::path::Path;

use super::client::Client;

/// Banking77's training split (CC BY 4.0, see `node/data/README.md`), compiled in so the demo
/// needs nothing beside the binary.
pub const BANKING77: &str = include_str!("../../data/banking77-train.csv");
/// Intents in the sample and queries per intent.
const INTENTS: usize = 6;
const PER_INTENT: usize = 80;

/// What the step shows at the end.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainedDemo {
    /// The training job's result: records, samples, losses, held-out metrics, the model.
    pub result: serde_json::Value,
    /// The registered model version as the API lists it.
    pub model: serde_json::Value,
    /// Each demo query with the label the deployed model gave it.
    pub classified: Vec<(String, String)>,
}

/// The first `INTENTS` intents of the CSV text `csv` with `PER_INTENT` queries each, as CSV
/// with the header `text,category`.
fn sample(csv: &str) -> anyhow::Result<String> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["text", "category"])?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for row in reader.records() {
        let row = row?;
        let (text, label) = (&row[0], &row[1]);
        if counts.len() == INTENTS && !counts.contains_key(label) {
            continue;
        }
        let n = counts.entry(label.to_string()).or_default();
        if *n < PER_INTENT {
            *n += 1;
            out.write_record([text, label])?;
        }
    }
    Ok(String::from_utf8(out.into_inner()?)?)
}

/// Runs the step against the node at `api`, with `nodes` nodes in the cluster.
pub async fn run(
    client: &Client,
    api: &str,
    dir: &Path,
    nodes: usize,
) -> anyhow::Result<TrainedDemo> {
    let csv = BANKING77;
    let file = dir.join("banking77-sample.csv");
    std::fs::write(&file, sample(csv)?)?;
    let up = super::data_upload::post_file(
        api,
        None,
        "/api/v1/data?name=demo-intents&format=csv&text_field=text&label_field=category&records_per_shard=160",
        &file,
    )
    .await?;
    eprintln!(
        "uploaded demo-intents@{}: {} records of {INTENTS} intents from Banking77",
        up["record"]["version"], up["record"]["record_count"]
    );
    let version = up["record"]["version"].as_u64().unwrap_or(1);
    let spec = serde_json::json!({
        "model": { "new": {
            "architecture": "classifier", "vocab_size": 128, "hidden_size": 64,
            "layers": 1, "heads": 2, "max_seq_len": 64, "num_labels": INTENTS
        }},
        "dataset": {
            "name": format!("demo-intents@{version}"), "text_field": "text",
            "label_field": "label", "eval_fraction": 0.1
        },
        "args": {
            "per_device_batch": 16, "epochs": 10, "learning_rate": 0.003,
            "warmup_steps": 4, "schedule": "cosine", "seed": 7
        },
        "cluster": { "workers_min": 1, "workers_max": nodes, "ps_shards": nodes.min(2), "mode": "sync" },
        "output": { "model": "demo-intent-classifier" }
    });
    let submitted = super::train::submit(client, spec, None).await?;
    eprintln!(
        "submitted training job {} on {nodes} nodes",
        submitted.job.id
    );
    let result = super::train::outcome(client, &submitted.job.id).await?;
    eprintln!("{}", super::train::summary(&result));
    let at = result["model"].as_str().unwrap_or_default().to_string();
    let (name, v) = at.rsplit_once('@').unwrap_or((at.as_str(), "1"));
    let models: Vec<serde_json::Value> = client.get_json("/api/v1/models").await?;
    let model = models
        .into_iter()
        .find(|m| {
            m["name"] == name && m["version"].as_u64().map(|n| n.to_string()).as_deref() == Some(v)
        })
        .ok_or_else(|| anyhow::anyhow!("{at} is not listed by /api/v1/models"))?;
    let _: serde_json::Value = client
        .post_json(
            "/api/v1/deployments",
            &serde_json::json!({"name": "demo-intents", "model": name, "replicas": nodes.min(2)}),
        )
        .await?;
    let queries = [
        "my card still has not arrived, where is it?",
        "how do I link my new card to the app?",
        "why was I charged extra on my statement?",
    ];
    let http = reqwest::Client::new();
    let body = serde_json::json!({"model": "demo-intents", "input": queries});
    let answer: serde_json::Value = loop {
        let r = http
            .post(format!("{api}/api/v1/classify"))
            .json(&body)
            .send()
            .await?;
        if r.status().is_success() {
            break r.json().await?;
        }
        // 404/503 until a replica has loaded the model.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let classified = queries
        .iter()
        .zip(answer["data"].as_array().cloned().unwrap_or_default())
        .map(|(q, d)| {
            (
                q.to_string(),
                d["label"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    Ok(TrainedDemo {
        result,
        model,
        classified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_keeps_the_header_and_bounds_each_intent() {
        let s = sample(BANKING77).unwrap();
        let mut reader = csv::Reader::from_reader(s.as_bytes());
        assert_eq!(reader.headers().unwrap(), vec!["text", "category"]);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for row in reader.records() {
            *counts.entry(row.unwrap()[1].to_string()).or_default() += 1;
        }
        assert_eq!(counts.len(), INTENTS);
        assert!(counts.values().all(|n| *n == PER_INTENT), "{counts:?}");
    }
}
