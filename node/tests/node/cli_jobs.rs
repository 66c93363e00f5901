//! `flotilla jobs` and `flotilla job submit|show|logs|cancel` against a running node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::common::{flotilla_at, one_node, run, text, NO_ARGS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_show_list_and_cancel_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    let url = node.api_url();

    // A spec with mistakes is refused, every field named, exit code 1.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "kind = \"benchmark\"\npriority = \"asap\"\n[benchmark]\npeers = 0\n",
    )
    .unwrap();
    let out = run(flotilla_at(&url), &["job", "submit", bad.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("400") && err.contains("priority") && err.contains("benchmark.peers"),
        "{err}"
    );

    let good = dir.path().join("bench.toml");
    std::fs::write(
        &good,
        "kind = \"benchmark\"\nidempotency_key = \"cli-1\"\n[benchmark]\npeers = 1\nmatrix_size = 64\niterations = 2\n",
    )
    .unwrap();
    let out = run(
        flotilla_at(&url),
        &["--output", "json", "job", "submit", good.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["job"]["id"].as_str().unwrap().to_string();

    // `logs --follow` returns once the job has finished, having printed its events.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        run(flotilla_at(&url), &["job", "logs", &id, "--follow"]),
    )
    .await
    .expect("logs --follow ends when the job does");
    let logs = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(logs.contains("submitted with 1 tasks"), "{logs}");
    assert!(logs.contains("task 0 succeeded on"), "{logs}");
    assert!(
        logs.trim_end().ends_with(&format!("job {id} succeeded")),
        "{logs}"
    );

    let out = run(flotilla_at(&url), &["jobs"]).await;
    let table = text(&out.stdout);
    assert!(
        table.starts_with("ID") && table.contains(&id) && table.contains("succeeded"),
        "{table}"
    );

    let out = run(flotilla_at(&url), &["job", "show", &id]).await;
    let shown = text(&out.stdout);
    assert!(
        shown.contains("TASK") && shown.contains("gflops"),
        "{shown}"
    );

    let out = run(flotilla_at(&url), &["job", "cancel", &id]).await;
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("already finished"),
        "{}",
        text(&out.stdout)
    );

    let started = Instant::now();
    let out = run(flotilla_at(&url), &["job", "show", "job-unknown"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(30));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_converges_and_runs_a_benchmark_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = flotilla_at("http://127.0.0.1:1");
    c.args(["demo", "--output", "json", "--dir"])
        .arg(dir.path());
    let out = tokio::time::timeout(Duration::from_secs(300), run(c, NO_ARGS))
        .await
        .expect("the demo finishes");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = v["cluster"]["members"].as_array().unwrap();
    assert_eq!(members.iter().filter(|m| m["state"] == "Alive").count(), 3);
    assert_eq!(v["job"]["job"]["status"], "succeeded");
    let tasks = v["job"]["detail"]["tasks"].as_array().unwrap();
    let mut nodes: Vec<&str> = tasks.iter().map(|t| t["node"].as_str().unwrap()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "one task on each node: {tasks:?}");
    // The intent classifier trained on every node was registered, deployed and classified.
    let trained = &v["trained"];
    assert_eq!(trained["result"]["model"], "demo-intent-classifier@1");
    assert_eq!(trained["result"]["workers"], 3);
    assert_eq!(trained["model"]["kind"], "classifier");
    let accuracy = trained["result"]["accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.4,
        "held-out accuracy {accuracy} (chance is 1 in 6)"
    );
    assert_eq!(trained["classified"].as_array().unwrap().len(), 3);
    // The demo's trained model answered through the OpenAI-compatible endpoint.
    assert_eq!(v["chat"]["object"], "chat.completion");
    assert_eq!(v["chat"]["usage"]["completion_tokens"], 24);
    assert!(text(&out.stderr).contains("all nodes stopped gracefully"));
}
