//! Helpers for serving tests on a [`TestCluster`]: JSON over a node's HTTP API, a tiny trained
//! GPT to register, and waits for deployments to be placed and routed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{wait_until, TestCluster};

/// How long the serving helpers wait for a cluster to converge or a deployment to be ready.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The text the tiny GPTs are trained on.
pub const CORPUS: &str = "the quick brown fox jumps over the lazy dog. a cat sat on the mat. \
    flotilla serves models on every node of the mesh, and every node answers. ";

/// Node `i`'s API address followed by `path`.
pub fn url(cluster: &TestCluster, i: usize, path: &str) -> String {
    format!("{}{path}", cluster.node(i).api_url())
}

/// `GET path` on node `i`: the status and the JSON body (`null` if the body is not JSON).
#[allow(clippy::unwrap_used)]
pub async fn get(cluster: &TestCluster, i: usize, path: &str) -> (u16, Value) {
    let resp = reqwest::get(url(cluster, i, path)).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `POST path` on node `i` with `body` as it is, labelled JSON.
#[allow(clippy::unwrap_used)]
pub async fn post_raw(cluster: &TestCluster, i: usize, path: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url(cluster, i, path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `POST path` on node `i` with `body` as JSON.
#[allow(clippy::unwrap_used)]
pub async fn post(cluster: &TestCluster, i: usize, path: &str, body: &Value) -> (u16, Value) {
    post_raw(cluster, i, path, serde_json::to_vec(body).unwrap()).await
}

/// Writes a trained tiny character GPT checkpoint into `dir`.
#[allow(clippy::unwrap_used)]
pub fn tiny_gpt(dir: &Path, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    flotilla_node::models::toy::create_char_gpt(dir, &CORPUS.repeat(4), 20, seed).unwrap();
    dir.to_path_buf()
}

/// Registers a model folder through node 0; returns its version hash.
#[allow(clippy::unwrap_used)]
pub async fn register(cluster: &TestCluster, name: &str, path: &Path) -> String {
    let (code, v) = post(
        cluster,
        0,
        "/api/v1/models",
        &json!({"name": name, "path": path}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    v["hash"].as_str().unwrap().to_string()
}

/// Creates a deployment through node 0.
pub async fn deploy(cluster: &TestCluster, body: Value) {
    let (code, v) = post(cluster, 0, "/api/v1/deployments", &body).await;
    assert_eq!(code, 201, "{v}");
}

/// Replicas of `deployment` running `hash`, over every running node, and the sum of their
/// model executions.
#[allow(clippy::unwrap_used)]
pub async fn replicas(cluster: &TestCluster, deployment: &str, hash: &str) -> (usize, u64) {
    let (mut n, mut executions) = (0, 0);
    for i in cluster.running() {
        let (_, v) = get(cluster, i, "/api/v1/serving").await;
        for r in v["replicas"].as_array().cloned().unwrap_or_default() {
            if r["deployment"] == deployment && r["model_hash"] == hash {
                n += 1;
                executions += r["executions"].as_u64().unwrap();
            }
        }
    }
    (n, executions)
}

/// Waits until `want` replicas run `hash` and every running node routes `deployment` to it.
#[allow(clippy::unwrap_used)]
pub async fn wait_ready(cluster: &TestCluster, deployment: &str, hash: &str, want: usize) {
    wait_until(
        DEADLINE,
        &format!("{want} replicas of {deployment}"),
        || async {
            if replicas(cluster, deployment, hash).await.0 != want {
                return false;
            }
            for i in cluster.running() {
                let (_, v) = get(cluster, i, "/api/v1/deployments").await;
                let routed = v.as_array().cloned().unwrap_or_default().iter().any(|d| {
                    d["name"] == deployment
                        && d["serving_hash"] == hash
                        && d["placed_on"].as_array().map_or(0, Vec::len) == want
                        && d["ready_on"].as_array().map_or(0, Vec::len) == want
                });
                if !routed {
                    return false;
                }
            }
            true
        },
    )
    .await
    .unwrap();
}

/// Three nodes that see each other.
#[allow(clippy::unwrap_used)]
pub async fn cluster3() -> TestCluster {
    let cluster = TestCluster::start(3).await.unwrap();
    wait_until(DEADLINE, "3 nodes see each other", || cluster.converged())
        .await
        .unwrap();
    cluster
}
