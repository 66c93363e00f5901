//! Jobs on real in-process clusters: a job submitted to one node runs on others and every node
//! lists it; the owner's death hands the job over and no task runs twice; a partitioned owner
//! is fenced after the heal; the HTTP API answers bad input with clear errors.
//!
//! "No task runs twice" is checked against every node's run log (`GET /api/v1/executions`),
//! which each executor appends to, durably, before it starts any work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(90);

async fn get(cluster: &TestCluster, i: usize, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", cluster.node(i).api_url());
    let resp = reqwest::get(&url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(cluster: &TestCluster, i: usize, path: &str, body: &Value) -> (u16, Value) {
    post_raw(cluster, i, path, serde_json::to_vec(body).unwrap()).await
}

async fn post_raw(cluster: &TestCluster, i: usize, path: &str, body: Vec<u8>) -> (u16, Value) {
    let url = format!("{}{path}", cluster.node(i).api_url());
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The job as node `i` sees it, if it knows it.
async fn job_at(cluster: &TestCluster, i: usize, id: &str) -> Option<Value> {
    let (code, v) = get(cluster, i, "/api/v1/jobs").await;
    assert_eq!(code, 200);
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .cloned()
}

async fn status_at(cluster: &TestCluster, i: usize, id: &str) -> String {
    job_at(cluster, i, id)
        .await
        .map(|j| j["status"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Executions of `job` started on the given nodes, by task.
async fn executions(
    cluster: &TestCluster,
    nodes: &[usize],
    job: &str,
) -> BTreeMap<u64, Vec<Value>> {
    let mut by_task: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for &i in nodes {
        let (code, v) = get(cluster, i, &format!("/api/v1/executions?job={job}")).await;
        assert_eq!(code, 200);
        for e in v["executions"].as_array().unwrap() {
            let mut e = e.clone();
            e["on"] = json!(cluster.node(i).node_id().to_string());
            by_task
                .entry(e["task"].as_u64().unwrap())
                .or_default()
                .push(e);
        }
    }
    by_task
}

fn ids(cluster: &TestCluster, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|i| cluster.node(*i).node_id().to_string())
        .collect()
}

/// Iterations of an `n`×`n` matmul that keep one task of a benchmark busy for about `secs`
/// on node `i`, from the compute score its start-up probe measured (GFLOP/s).
async fn iterations_for(cluster: &TestCluster, i: usize, n: u64, secs: f64) -> u64 {
    let view = cluster.view(i).await.unwrap();
    let me = cluster.node(i).node_id();
    let gflops = view
        .iter()
        .find(|m| m.info.id == me)
        .map(|m| m.info.compute_score)
        .unwrap()
        .max(0.5);
    let per_iter = 2.0 * (n * n * n) as f64 / 1e9;
    ((secs * gflops / per_iter).ceil() as u64).clamp(1, 100_000)
}

fn benchmark(peers: u32, matrix: u64, iterations: u64, preferred: &[String], key: &str) -> Value {
    json!({
        "kind": "benchmark",
        "idempotency_key": key,
        "preferred_nodes": preferred,
        "resources": { "cores": 1, "ram_mib": 64 },
        "benchmark": { "peers": peers, "matrix_size": matrix, "iterations": iterations },
    })
}

async fn started_cluster(n: usize) -> TestCluster {
    let cluster = TestCluster::start(n).await.unwrap();
    wait_until(DEADLINE, "membership to converge", || cluster.converged())
        .await
        .unwrap();
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_submitted_to_node_3_of_4_runs_on_the_others_and_every_node_lists_it() {
    let cluster = started_cluster(4).await;
    let others = ids(&cluster, &[0, 1, 3]);
    let spec = benchmark(3, 64, 3, &others, "first-benchmark");
    let (code, v) = post(&cluster, 2, "/api/v1/jobs", &spec).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["created"], true);
    let id = v["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["job"]["owner"], cluster.node(2).node_id().to_string());

    wait_until(DEADLINE, "the job to succeed on every node", || async {
        for i in 0..4 {
            if status_at(&cluster, i, &id).await != "succeeded" {
                return false;
            }
        }
        true
    })
    .await
    .unwrap();

    // Every task ran once, on a node other than the one it was submitted to, and reported a
    // real measurement.
    let (code, show) = get(&cluster, 0, &format!("/api/v1/jobs/{id}")).await;
    assert_eq!(code, 200, "{show}");
    assert!(show["owner_unreachable"].is_null(), "{show}");
    let tasks = show["detail"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3, "{show}");
    let mut used = Vec::new();
    for t in tasks {
        assert_eq!(t["state"], "succeeded", "{show}");
        let node = t["node"].as_str().unwrap().to_string();
        assert!(
            others.contains(&node),
            "task placed on the submitting node: {show}"
        );
        let result: Value = serde_json::from_str(t["result"].as_str().unwrap()).unwrap();
        assert_eq!(result["node"], node.as_str());
        assert!(result["gflops"].as_f64().unwrap() > 0.0);
        used.push(node);
    }
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "one task per peer");
    let runs = executions(&cluster, &[0, 1, 2, 3], &id).await;
    assert_eq!(runs.len(), 3);
    assert!(runs.values().all(|r| r.len() == 1), "{runs:?}");

    // The events name what happened, in order.
    let (_, ev) = get(&cluster, 1, &format!("/api/v1/jobs/{id}/events")).await;
    let texts: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(texts[0].starts_with("submitted with 3 tasks"), "{texts:?}");
    assert_eq!(
        texts.iter().filter(|t| t.contains("succeeded on")).count(),
        3,
        "{texts:?}"
    );

    // Resubmitting with the same idempotency key, to another node, is the same job.
    let (code, again) = post(&cluster, 0, "/api/v1/jobs", &spec).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(
        (again["created"].clone(), again["job"]["id"].clone()),
        (json!(false), json!(id))
    );

    // Cancelling a finished job is a no-op that says so.
    let (code, c) = post(
        &cluster,
        3,
        &format!("/api/v1/jobs/{id}/cancel"),
        &json!({}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(c["cancelled"], false);
    assert!(
        c["message"].as_str().unwrap().contains("already finished"),
        "{c}"
    );
    assert_eq!(status_at(&cluster, 3, &id).await, "succeeded");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_submissions_get_clear_errors_and_cancel_stops_a_running_job() {
    let cluster = started_cluster(2).await;
    // Every bad field is named.
    let bad = json!({
        "kind": "benchmark",
        "priority": "urgent",
        "resources": { "cores": 0 },
        "benchmark": { "peers": 0, "matrix_size": 99999 },
    });
    let (code, v) = post(&cluster, 0, "/api/v1/jobs", &bad).await;
    assert_eq!(code, 400, "{v}");
    let fields: Vec<&str> = v["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for f in [
        "priority",
        "resources.cores",
        "benchmark.peers",
        "benchmark.matrix_size",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    let (code, v) = post(&cluster, 0, "/api/v1/jobs", &json!({"kind": "compile"})).await;
    assert_eq!(code, 400);
    assert_eq!(v["error"]["fields"][0]["field"], "kind");
    let (code, v) = post(&cluster, 0, "/api/v1/jobs", &json!({"kind": "train"})).await;
    assert_eq!(code, 400);
    assert_eq!(v["error"]["fields"][0]["field"], "train", "{v}");
    let (code, v) = post_raw(&cluster, 0, "/api/v1/jobs", b"{not json".to_vec()).await;
    assert_eq!((code, v["error"]["code"].as_str()), (400, Some("invalid")));
    // Oversized.
    let huge = json!({ "kind": "benchmark", "idempotency_key": "x".repeat(100_000) });
    let (code, _) = post(&cluster, 0, "/api/v1/jobs", &huge).await;
    assert_eq!(code, 413);
    // Unknown ids.
    for path in [
        "/api/v1/jobs/job-nope",
        "/api/v1/jobs/job-nope/events",
        "/api/v1/jobs/..%2F",
    ] {
        let (code, v) = get(&cluster, 1, path).await;
        assert_eq!(code, 404, "{path}: {v}");
    }
    let (code, _) = post(&cluster, 1, "/api/v1/jobs/job-nope/cancel", &json!({})).await;
    assert_eq!(code, 404);

    // A long job, cancelled through the node that does not own it.
    let iterations = iterations_for(&cluster, 0, 256, 30.0).await;
    let spec = benchmark(2, 256, iterations, &[], "to-cancel");
    let (code, v) = post(&cluster, 0, "/api/v1/jobs", &spec).await;
    assert_eq!(code, 201, "{v}");
    let id = v["job"]["id"].as_str().unwrap().to_string();
    wait_until(DEADLINE, "the job to run", || async {
        status_at(&cluster, 1, &id).await == "running"
    })
    .await
    .unwrap();
    let (code, c) = post(
        &cluster,
        1,
        &format!("/api/v1/jobs/{id}/cancel"),
        &json!({}),
    )
    .await;
    assert_eq!((code, c["cancelled"].clone()), (200, json!(true)), "{c}");
    // The owner stops the tasks: each node's ledger shows them cancelled, long before they
    // could have finished.
    wait_until(Duration::from_secs(20), "the tasks to stop", || async {
        let (_, show) = get(&cluster, 0, &format!("/api/v1/jobs/{id}")).await;
        show["detail"]["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["state"] == "cancelled"))
    })
    .await
    .unwrap();
    for i in 0..2 {
        assert_eq!(status_at(&cluster, i, &id).await, "cancelled");
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_owner_mid_job_hands_it_over_and_no_task_runs_twice() {
    let mut cluster = started_cluster(4).await;
    let others = ids(&cluster, &[0, 1, 3]);
    let iterations = iterations_for(&cluster, 0, 256, 8.0).await;
    let spec = benchmark(3, 256, iterations, &others, "survive-the-owner");
    let (code, v) = post(&cluster, 2, "/api/v1/jobs", &spec).await;
    assert_eq!(code, 201, "{v}");
    let id = v["job"]["id"].as_str().unwrap().to_string();
    let old_owner = cluster.node(2).node_id().to_string();
    wait_until(DEADLINE, "the job to run", || async {
        status_at(&cluster, 0, &id).await == "running"
    })
    .await
    .unwrap();
    assert_eq!(
        status_at(&cluster, 2, &id).await,
        "running",
        "killed mid-job"
    );
    let killed_at = Instant::now();
    cluster.kill(2).await;

    wait_until(DEADLINE, "another node to take the job over", || async {
        job_at(&cluster, 0, &id)
            .await
            .is_some_and(|j| j["owner"] != old_owner.as_str() && j["epoch"].as_u64() >= Some(2))
    })
    .await
    .unwrap();
    let takeover = killed_at.elapsed();
    eprintln!("takeover recorded {takeover:?} after the kill");
    // The bound: the failure detector's dead_after (3 s), one manager tick (250 ms) and a
    // catalog write and its gossip; 15 s leaves room for a loaded machine.
    assert!(
        takeover < Duration::from_secs(15),
        "takeover took {takeover:?}"
    );
    wait_until(DEADLINE, "the job to succeed on the survivors", || async {
        for i in [0, 1, 3] {
            if status_at(&cluster, i, &id).await != "succeeded" {
                return false;
            }
        }
        true
    })
    .await
    .unwrap();
    let runs = executions(&cluster, &[0, 1, 3], &id).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    for (task, r) in &runs {
        assert_eq!(r.len(), 1, "task {task} ran {} times: {r:?}", r.len());
    }
    let j = job_at(&cluster, 1, &id).await.unwrap();
    let new_owner = j["owner"].as_str().unwrap();
    let (_, show) = get(&cluster, 3, &format!("/api/v1/jobs/{id}")).await;
    assert!(
        show["detail"]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "succeeded" && t["result"].is_string()),
        "{show}"
    );
    let (_, ev) = get(&cluster, 0, &format!("/api/v1/jobs/{id}/events")).await;
    assert!(
        ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"] == new_owner
                && e["text"]
                    .as_str()
                    .unwrap()
                    .contains("is gone; driving at epoch 2")),
        "{ev}"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_owner_is_fenced_and_every_node_ends_with_the_same_status() {
    let cluster = started_cluster(4).await;
    let others = ids(&cluster, &[0, 1, 3]);
    let iterations = iterations_for(&cluster, 0, 256, 6.0).await;
    let spec = benchmark(3, 256, iterations, &others, "split-brain");
    let (code, v) = post(&cluster, 2, "/api/v1/jobs", &spec).await;
    assert_eq!(code, 201, "{v}");
    let id = v["job"]["id"].as_str().unwrap().to_string();
    let old_owner = cluster.node(2).node_id();
    wait_until(DEADLINE, "the job to run", || async {
        status_at(&cluster, 0, &id).await == "running"
    })
    .await
    .unwrap();

    // Cut node 2 off from everyone, both ways.
    cluster.partition(&[&[2], &[0, 1, 3]]).await.unwrap();
    wait_until(
        DEADLINE,
        "the majority to take the job over and finish it",
        || async {
            job_at(&cluster, 0, &id).await.is_some_and(|j| {
                j["owner"] != old_owner.to_string().as_str() && j["status"] == "succeeded"
            })
        },
    )
    .await
    .unwrap();
    // Cut off, the old owner saw no majority: it never re-placed the tasks on itself.
    assert_ne!(status_at(&cluster, 2, &id).await, "succeeded");

    cluster.heal().await.unwrap();
    wait_until(
        DEADLINE,
        "every node to agree on the final record",
        || async {
            let mut seen = Vec::new();
            for i in 0..4 {
                match job_at(&cluster, i, &id).await {
                    Some(j) => {
                        seen.push((j["status"].clone(), j["owner"].clone(), j["epoch"].clone()))
                    }
                    None => return false,
                }
            }
            seen.windows(2).all(|w| w[0] == w[1]) && seen[0].0 == "succeeded"
        },
    )
    .await
    .unwrap();
    let runs = executions(&cluster, &[0, 1, 2, 3], &id).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    for (task, r) in &runs {
        assert_eq!(r.len(), 1, "task {task} ran {} times: {r:?}", r.len());
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_higher_priority_job_preempts_a_lower_one_when_capacity_is_short() {
    let cluster = started_cluster(1).await;
    let me = cluster.node(0).node_id();
    let cores = cluster
        .view(0)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.info.id == me)
        .unwrap()
        .info
        .cores;
    // A batch job holding every core of the only node, for a long time.
    let iterations = iterations_for(&cluster, 0, 256, 60.0).await;
    let mut batch = benchmark(1, 256, iterations, &[], "long-batch");
    batch["resources"]["cores"] = json!(cores);
    let (code, v) = post(&cluster, 0, "/api/v1/jobs", &batch).await;
    assert_eq!(code, 201, "{v}");
    let batch_id = v["job"]["id"].as_str().unwrap().to_string();
    wait_until(DEADLINE, "the batch job to run", || async {
        status_at(&cluster, 0, &batch_id).await == "running"
    })
    .await
    .unwrap();

    // An inference-class job needing the same cores: placement preempts the batch task.
    let mut urgent = benchmark(1, 32, 1, &[], "urgent");
    urgent["resources"]["cores"] = json!(cores);
    urgent["priority"] = json!("inference");
    let (code, v) = post(&cluster, 0, "/api/v1/jobs", &urgent).await;
    assert_eq!(code, 201, "{v}");
    let urgent_id = v["job"]["id"].as_str().unwrap().to_string();
    wait_until(DEADLINE, "the urgent job to succeed", || async {
        status_at(&cluster, 0, &urgent_id).await == "succeeded"
    })
    .await
    .unwrap();
    let (_, ev) = get(&cluster, 0, &format!("/api/v1/jobs/{batch_id}/events")).await;
    let texts: Vec<String> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("task 0 failed") && t.contains("preempted by job")),
        "{texts:?}"
    );
    // The preempted task was stopped: it is not running under its first attempt any more.
    let runs = executions(&cluster, &[0], &batch_id).await;
    assert!(runs[&0].iter().any(|r| r["attempt"] == 0), "{runs:?}");
    let (_, c) = post(
        &cluster,
        0,
        &format!("/api/v1/jobs/{batch_id}/cancel"),
        &json!({}),
    )
    .await;
    assert!(c["message"].is_string());
    cluster.shutdown().await.unwrap();
}
