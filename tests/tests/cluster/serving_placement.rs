//! Where replicas go: only to nodes whose advertised capacity holds their reservation next to
//! the replicas already there, with a reason when a deployment is short; and, in the inference
//! priority class, a replica preempts a lower-class job that holds the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);
const CORPUS: &str = "replicas go where there is room, and nowhere else. ";

async fn get(cluster: &TestCluster, i: usize, path: &str) -> Value {
    let url = format!("{}{path}", cluster.node(i).api_url());
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn send(
    cluster: &TestCluster,
    i: usize,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let url = format!("{}{path}", cluster.node(i).api_url());
    let client = reqwest::Client::new();
    let req = match method {
        "DELETE" => client.delete(url),
        _ => client.post(url).json(body),
    };
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

async fn started(n: usize) -> TestCluster {
    let cluster = TestCluster::start(n).await.unwrap();
    wait_until(DEADLINE, "membership to converge", || cluster.converged())
        .await
        .unwrap();
    cluster
}

/// The cores node `i` advertises (every in-process node reports the machine's).
async fn cores(cluster: &TestCluster, i: usize) -> u32 {
    let me = cluster.node(i).node_id();
    let view = cluster.view(i).await.unwrap();
    view.iter().find(|m| m.info.id == me).unwrap().info.cores
}

/// Registers a tiny character GPT through node 0.
async fn register_gpt(cluster: &TestCluster, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    flotilla_node::models::toy::create_char_gpt(dir, &CORPUS.repeat(4), 10, 7).unwrap();
    let (code, v) = send(
        cluster,
        0,
        "POST",
        "/api/v1/models",
        &json!({"name": "tiny", "path": dir}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
}

async fn deployment(cluster: &TestCluster, i: usize, name: &str) -> Option<Value> {
    get(cluster, i, "/api/v1/deployments")
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
}

/// Local replicas of `name` over the running nodes.
async fn running_replicas(cluster: &TestCluster, name: &str) -> usize {
    let mut n = 0;
    for i in cluster.running() {
        let v = get(cluster, i, "/api/v1/serving").await;
        n += v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["deployment"] == name)
            .count();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_go_where_there_is_room_and_a_short_deployment_says_why() {
    let cluster = started(3).await;
    let dir = tempfile::tempdir().unwrap();
    register_gpt(&cluster, dir.path()).await;
    let all = cores(&cluster, 0).await;

    // Three replicas that each take a whole node: one per node.
    let (code, v) = send(
        &cluster,
        0,
        "POST",
        "/api/v1/deployments",
        &json!({"name": "whole", "model": "tiny", "replicas": 3, "cores": all, "memory_mib": 64}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["cores"], all);
    wait_until(DEADLINE, "3 replicas of whole", || async {
        running_replicas(&cluster, "whole").await == 3
    })
    .await
    .unwrap();

    // Nothing is left for another deployment: it is placed nowhere and says why, on every node.
    let (code, _) = send(
        &cluster,
        0,
        "POST",
        "/api/v1/deployments",
        &json!({"name": "late", "model": "tiny", "replicas": 1, "cores": 1, "memory_mib": 64}),
    )
    .await;
    assert_eq!(code, 201);
    wait_until(DEADLINE, "every node to report late as pending", || async {
        for i in 0..3 {
            let Some(d) = deployment(&cluster, i, "late").await else {
                return false;
            };
            let pending = d["pending"].as_str().unwrap_or_default();
            if !pending.contains("placed 0 of 1") || !d["placed_on"].as_array().unwrap().is_empty()
            {
                return false;
            }
        }
        true
    })
    .await
    .unwrap();
    assert_eq!(running_replicas(&cluster, "late").await, 0);

    // Undeploying the big one frees the nodes: the late deployment gets its replica.
    let (code, _) = send(
        &cluster,
        1,
        "DELETE",
        "/api/v1/deployments/whole",
        &json!({}),
    )
    .await;
    assert_eq!(code, 200);
    wait_until(DEADLINE, "late to be placed once room is free", || async {
        running_replicas(&cluster, "late").await == 1
            && running_replicas(&cluster, "whole").await == 0
            && deployment(&cluster, 2, "late").await.is_some_and(|d| {
                d["pending"].is_null() && d["placed_on"].as_array().unwrap().len() == 1
            })
    })
    .await
    .unwrap();

    // A replica bigger than any node never runs anywhere, and the reason names the need.
    let (code, _) = send(
        &cluster,
        0,
        "POST",
        "/api/v1/deployments",
        &json!({"name": "huge", "model": "tiny", "cores": all + 1}),
    )
    .await;
    assert_eq!(code, 201);
    wait_until(DEADLINE, "huge to be reported short", || async {
        deployment(&cluster, 0, "huge").await.is_some_and(|d| {
            d["pending"]
                .as_str()
                .is_some_and(|p| p.contains(&format!("needs {} cores", all + 1)))
        })
    })
    .await
    .unwrap();
    assert_eq!(running_replicas(&cluster, "huge").await, 0);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_preempts_a_batch_job_holding_its_node() {
    let cluster = started(1).await;
    let all = cores(&cluster, 0).await;
    let dir = tempfile::tempdir().unwrap();
    register_gpt(&cluster, dir.path()).await;

    // A long batch job holding every core of the only node.
    let (code, v) = send(
        &cluster,
        0,
        "POST",
        "/api/v1/jobs",
        &json!({
            "kind": "benchmark",
            "idempotency_key": "hog",
            "resources": { "cores": all, "ram_mib": 64 },
            "benchmark": { "peers": 1, "matrix_size": 256, "iterations": 100000 },
        }),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let job = v["job"]["id"].as_str().unwrap().to_string();
    wait_until(DEADLINE, "the batch job to run", || async {
        get(&cluster, 0, &format!("/api/v1/jobs/{job}")).await["job"]["status"] == "running"
    })
    .await
    .unwrap();

    // A one-core replica: the node is full of batch work, so that work is preempted.
    let (code, _) = send(
        &cluster,
        0,
        "POST",
        "/api/v1/deployments",
        &json!({"name": "urgent", "model": "tiny", "cores": 1, "memory_mib": 64}),
    )
    .await;
    assert_eq!(code, 201);
    wait_until(DEADLINE, "the replica to run", || async {
        running_replicas(&cluster, "urgent").await == 1
    })
    .await
    .unwrap();
    wait_until(DEADLINE, "the batch task to be preempted", || async {
        let ev = get(&cluster, 0, &format!("/api/v1/jobs/{job}/events")).await;
        ev["events"].as_array().is_some_and(|es| {
            es.iter().any(|e| {
                e["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("replica of deployment urgent"))
            })
        })
    })
    .await
    .unwrap();

    // The replica answers, and the executor reports its reservation to job placement.
    let (code, v) = send(
        &cluster,
        0,
        "POST",
        "/v1/completions",
        &json!({"model": "urgent", "prompt": "replicas", "max_tokens": 4, "temperature": 0}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let _ = send(
        &cluster,
        0,
        "POST",
        &format!("/api/v1/jobs/{job}/cancel"),
        &json!({}),
    )
    .await;
    cluster.shutdown().await.unwrap();
}
