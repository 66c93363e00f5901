//! `flotilla train SPEC.toml` against a running node: a dataset uploaded with the CLI, a
//! classifier trained with progress shown, the model registered and listed; specs with
//! mistakes fail with the field named, locally or by the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use crate::common::{one_node, run_at, text};

/// As the binary bundles it.
const BANKING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/banking77-train.csv");

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// 40 queries of each of the first 3 intents.
fn sample(dir: &std::path::Path) -> std::path::PathBuf {
    let mut reader = csv::Reader::from_path(BANKING).unwrap();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["text", "category"]).unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for row in reader.records() {
        let row = row.unwrap();
        if counts.len() == 3 && !counts.contains_key(&row[1]) {
            continue;
        }
        let n = counts.entry(row[1].to_string()).or_default();
        if *n < 40 {
            *n += 1;
            out.write_record([&row[0], &row[1]]).unwrap();
        }
    }
    let path = dir.join("sample.csv");
    std::fs::write(&path, out.into_inner().unwrap()).unwrap();
    path
}

const SPEC: &str = r#"
[model.new]
architecture = "classifier"
vocab_size = 128
hidden_size = 32
layers = 1
heads = 2
max_seq_len = 48
num_labels = 3

[dataset]
name = "DATASET"
text_field = "text"
label_field = "label"

[args]
per_device_batch = 12
epochs = 2
learning_rate = LR

[cluster]
workers_min = 1
workers_max = 1
ps_shards = 1

[output]
model = "intents"
"#;

fn spec(dir: &std::path::Path, name: &str, dataset: &str, lr: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, SPEC.replace("DATASET", dataset).replace("LR", lr)).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_a_classifier_from_a_spec_file() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    let url = node.api_url();
    let data = sample(dir.path());
    let out = run_at(
        &url,
        args(&[
            "data",
            "upload",
            data.to_str().unwrap(),
            "--name",
            "bank3",
            "--format",
            "csv",
            "--label-field",
            "category",
        ]),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let good = spec(dir.path(), "good.toml", "bank3@1", "0.003");
    let out = run_at(&url, args(&["train", &good])).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains("training job job-"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("] ") && l.contains("step ") && l.contains(" loss ")),
        "a progress line: {stdout}"
    );
    assert!(stdout.contains("registered intents@1"), "{stdout}");
    assert!(stdout.contains("held-out accuracy"), "{stdout}");

    let out = run_at(&url, args(&["--output", "json", "models"])).await;
    let models: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        models
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "intents" && m["version"] == 1 && m["kind"] == "classifier"),
        "{models}"
    );

    // A mistake the spec shows by itself: refused locally, naming the field.
    let bad = spec(dir.path(), "bad-lr.toml", "bank3@1", "-1.0");
    let out = run_at(&url, args(&["train", &bad])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("args.learning_rate"),
        "{}",
        text(&out.stderr)
    );

    // A dataset the cluster does not have: refused by the node, naming it.
    let missing = spec(dir.path(), "missing.toml", "bank9@1", "0.003");
    let out = run_at(&url, args(&["train", &missing])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("train.dataset.name") && err.contains("bank9@1"),
        "{err}"
    );
    node.shutdown().await.unwrap();
}
