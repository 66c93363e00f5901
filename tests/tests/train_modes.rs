//! Consistency modes on a 3-node cluster: with the same seed and global batch, the distributed
//! sync run starts on the single-worker run's curve and ends within a stated tolerance of it;
//! async and bounded staleness (SSP) runs converge too. The curves are printed for the record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(300);
/// Beside the repository, as the project ships it.
const BANKING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/banking77-train.csv"
);
/// The distributed sync run's mean loss over its last quarter of steps must be within this
/// relative gap of the single-worker run's. The curves start identical (same samples, same
/// parameters) but do not stay identical step for step (measured mean gap over all steps about
/// 5%): padding is ruled out (the node's gradient tests), the cause is still open.
const SYNC_FINAL_GAP: f64 = 0.15;

/// 60 records of each of the first 4 labels, as CSV.
fn subset() -> Vec<u8> {
    let mut reader = csv::Reader::from_path(BANKING).unwrap();
    let mut per_label: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["text", "category"]).unwrap();
    for row in reader.records() {
        let row = row.unwrap();
        if per_label.len() == 4 && !per_label.contains_key(&row[1]) {
            continue;
        }
        let n = per_label.entry(row[1].to_string()).or_default();
        if *n < 60 {
            *n += 1;
            out.write_record([&row[0], &row[1]]).unwrap();
        }
    }
    out.into_inner().unwrap()
}

fn spec(mode: &str, staleness: Option<u32>, workers: u32) -> Value {
    // Stale gradients make async and SSP less stable than sync at the same rate.
    let lr = if mode == "sync" { 0.003 } else { 0.0015 };
    let mut cluster =
        json!({ "workers_min": 1, "workers_max": workers, "ps_shards": 2, "mode": mode });
    if let Some(s) = staleness {
        cluster["staleness"] = json!(s);
    }
    json!({
        "kind": "train",
        "train": {
            "model": { "new": {
                "architecture": "classifier", "vocab_size": 128, "hidden_size": 32,
                "layers": 1, "heads": 2, "max_seq_len": 48, "num_labels": 4
            }},
            "dataset": { "name": "bank4@1", "text_field": "text", "label_field": "label",
                         "eval_fraction": 0.0 },
            "args": {
                "per_device_batch": 4, "global_batch": 12, "epochs": 3,
                "learning_rate": lr, "warmup_steps": 2, "schedule": "cosine", "seed": 5
            },
            "cluster": cluster
        }
    })
}

async fn train(cluster: &TestCluster, spec: &Value) -> Value {
    let http = reqwest::Client::new();
    let base = cluster.node(0).api_url();
    let resp = http
        .post(format!("{base}/api/v1/jobs"))
        .json(spec)
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code, 201, "{v}");
    let id = v["job"]["id"].as_str().unwrap().to_string();
    let show = || async {
        http.get(format!("{base}/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    wait_until(DEADLINE, "the job to end", || async {
        matches!(
            show().await["job"]["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    })
    .await
    .unwrap();
    let s = show().await;
    assert_eq!(s["job"]["status"], "succeeded", "{s}");
    serde_json::from_str(s["detail"]["tasks"][0]["result"].as_str().unwrap()).unwrap()
}

fn curve(r: &Value) -> Vec<(u64, f64)> {
    r["curve"]
        .as_array()
        .unwrap()
        .iter()
        // A step closed only by workers without samples has no loss (null).
        .filter_map(|p| Some((p[0].as_u64()?, p[1].as_f64()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_follows_the_single_worker_curve_and_async_and_ssp_converge() {
    let cluster = TestCluster::start(3).await.unwrap();
    wait_until(Duration::from_secs(60), "convergence", || {
        cluster.converged()
    })
    .await
    .unwrap();
    let up = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/data?name=bank4&format=csv&text_field=text&label_field=category",
            cluster.node(0).api_url()
        ))
        .body(subset())
        .send()
        .await
        .unwrap();
    assert_eq!(up.status().as_u16(), 201, "{}", up.text().await.unwrap());

    let single = train(&cluster, &spec("sync", None, 1)).await;
    let distributed = train(&cluster, &spec("sync", None, 3)).await;
    assert_eq!(single["workers"], 1);
    assert_eq!(distributed["workers"], 3);
    let (a, b) = (curve(&single), curve(&distributed));
    eprintln!("sync, 1 worker:  {a:?}");
    eprintln!("sync, 3 workers: {b:?}");
    assert!(a.len() >= 20 && b.len() >= 20, "{a:?} {b:?}");
    assert!(
        (a[0].1 - b[0].1).abs() < 1e-5,
        "the first step sees the same samples"
    );
    let tail = |c: &[(u64, f64)]| {
        let t = &c[c.len() * 3 / 4..];
        t.iter().map(|p| p.1).sum::<f64>() / t.len() as f64
    };
    let (ta, tb) = (tail(&a), tail(&b));
    let gap = (ta - tb).abs() / ta;
    eprintln!("sync last-quarter mean loss: 1 worker {ta:.4}, 3 workers {tb:.4} (gap {gap:.3})");
    assert!(gap <= SYNC_FINAL_GAP, "1 worker {ta}, 3 workers {tb}");
    assert!(ta < a[0].1 && tb < b[0].1, "both runs learn");

    for (mode, staleness) in [("ssp", Some(2)), ("async", None)] {
        let r = train(&cluster, &spec(mode, staleness, 3)).await;
        eprintln!(
            "{mode}: loss {} -> {}; curve {:?}",
            r["loss_before"],
            r["loss_after"],
            curve(&r)
        );
        assert_eq!(r["ledger_exact"], true, "{mode}: {}", r["ledger"]);
        let (before, after) = (
            r["loss_before"].as_f64().unwrap(),
            r["loss_after"].as_f64().unwrap(),
        );
        assert!(
            after < before * 0.95,
            "{mode} did not converge: {before} -> {after}"
        );
    }
    cluster.shutdown().await.unwrap();
}
