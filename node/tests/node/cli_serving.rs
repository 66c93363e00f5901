//! `flotilla models`, `deploy`, `deployments` and `undeploy` against a running node, then a
//! completion through its OpenAI-compatible endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flotilla_node::cli::demo::local_node_config;
use flotilla_node::RunningNode;

use crate::common::{one_node, run_at, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_deploy_answer_and_undeploy() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    let url = node.api_url();
    let ck = dir.path().join("gpt");
    let corpus = "hello world, the mesh answers every node. ".repeat(8);
    flotilla_node::models::toy::create_char_gpt(&ck, &corpus, 10, 3).unwrap();

    let out = run_at(
        &url,
        &["models", "register", "--name", "tiny", ck.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("tiny@1"),
        "{}",
        text(&out.stdout)
    );
    let out = run_at(&url, &["--output", "json", "models"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["kind"], "generation");

    let out = run_at(&url, &["deploy", "tiny@7", "--name", "t"]).await;
    assert_eq!(out.status.code(), Some(1), "an unknown version is refused");
    let out = run_at(
        &url,
        &[
            "deploy",
            "tiny@1",
            "--name",
            "t",
            "--max-batch",
            "4",
            "--max-wait",
            "2ms",
            "--max-inflight",
            "3",
            "--cache",
            "off",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The reconciler starts the replica; then the OpenAI endpoint answers.
    let client = reqwest::Client::new();
    let start = Instant::now();
    let answer = loop {
        let r = client
            .post(format!("{url}/v1/completions"))
            .json(&serde_json::json!({"model": "t", "prompt": "hello", "max_tokens": 5, "seed": 1}))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never answered: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer["usage"]["completion_tokens"], 5);

    let out = run_at(&url, &["--output", "json", "deployments"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "t");
    assert_eq!(v[0]["max_wait_ms"], 2);
    assert_eq!(v[0]["cache"], false);
    assert_eq!(v[0]["max_inflight"], 3);

    let out = run_at(&url, &["undeploy", "t"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_at(&url, &["undeploy", "t"]).await;
    assert_eq!(out.status.code(), Some(1), "undeploying twice is an error");
    node.shutdown().await.unwrap();
}

/// With an API token configured, the OpenAI routes take it the way OpenAI clients send their
/// API key (`Authorization: Bearer …`) and refuse requests without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_routes_take_the_api_token_as_the_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-for-tests\n").unwrap();
    let mut config = local_node_config(dir.path().join("a"), vec![]);
    config.api_token_file = Some(token_file);
    let node = RunningNode::start(config).await.unwrap();
    let url = format!("{}/v1/models", node.api_url());
    let client = reqwest::Client::new();
    let without = client.get(&url).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let wrong = client.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let with = client
        .get(&url)
        .bearer_auth("s3cret-token-for-tests")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    let v: serde_json::Value = with.json().await.unwrap();
    assert_eq!(v["object"], "list");
    node.shutdown().await.unwrap();
}
