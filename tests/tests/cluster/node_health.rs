//! A store that fails writes (a full disk, injected with `RocksStore::inject_write_fault`)
//! makes its node unhealthy: the reason shows in its health endpoint and in its heartbeat as
//! the other nodes see it, it refuses new work (HTTP writes, task starts) naming the reason,
//! placement leaves it out, and it keeps answering reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flotilla_actors::jobs::executor::handle::Start;
use flotilla_protocol::jobs::{JobId, JobKind, Priority, Resources};
use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);
const DISK_FULL: &str = "IO error: No space left on device (injected)";

async fn call(method: reqwest::Method, url: String, body: Option<Vec<u8>>) -> (u16, String) {
    let mut r = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(10));
    if let Some(b) = body {
        r = r.body(b).header("content-type", "application/json");
    }
    let r = r.send().await.expect("the request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_store_makes_the_node_unhealthy_and_refuse_new_work() {
    let cluster = TestCluster::start(2).await.unwrap();
    wait_until(DEADLINE, "membership to converge", || cluster.converged())
        .await
        .unwrap();
    let sick = cluster.node(0);
    let url = sick.api_url();
    let model = |v: u64| {
        serde_json::to_vec(&json!({
            "artifact_hashes": { "weights": blake3::hash(&v.to_le_bytes()).to_hex().to_string() },
            "created_at_ms": v
        }))
        .unwrap()
    };
    let (code, body) = call(
        reqwest::Method::PUT,
        format!("{url}/api/v1/catalog/models/m/1"),
        Some(model(1)),
    )
    .await;
    assert!(code < 300, "{code} {body}");

    // The disk fills up: the next write fails, is reported, and is not applied.
    sick.store().inject_write_fault(Some(DISK_FULL.into()));
    let (code, body) = call(
        reqwest::Method::PUT,
        format!("{url}/api/v1/catalog/models/m/2"),
        Some(model(2)),
    )
    .await;
    assert_eq!(code, 503, "{body}");
    let (code, _) = call(
        reqwest::Method::GET,
        format!("{url}/api/v1/catalog/models/m/2"),
        None,
    )
    .await;
    assert_eq!(code, 404, "a write the store refused is not served");

    // Health says so, naming the reason.
    let (code, body) = call(reqwest::Method::GET, format!("{url}/health/status"), None).await;
    assert_eq!(code, 503, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert!(
        health["unhealthy"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{health}"
    );
    let (code, body) = call(reqwest::Method::GET, format!("{url}/health/ready"), None).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("No space left on device"), "{body}");

    // New work is refused with the reason: submissions, uploads, catalog writes.
    let job = serde_json::to_vec(&json!({
        "kind": "benchmark",
        "resources": { "cores": 1, "ram_mib": 64 },
        "benchmark": { "peers": 1, "matrix_size": 32, "iterations": 1 },
    }))
    .unwrap();
    for (method, path, body) in [
        (reqwest::Method::POST, "/api/v1/jobs", job.clone()),
        (
            reqwest::Method::POST,
            "/api/v1/data?name=d&format=jsonl&text_field=text",
            b"{\"text\": \"x\"}\n".to_vec(),
        ),
        (reqwest::Method::PUT, "/api/v1/catalog/models/m/3", model(3)),
    ] {
        let (code, text) = call(method, format!("{url}{path}"), Some(body)).await;
        assert_eq!(code, 503, "{path}: {text}");
        assert!(
            text.contains("unhealthy") && text.contains("No space left on device"),
            "{path}: {text}"
        );
    }
    // Reads still work.
    let (code, body) = call(reqwest::Method::GET, format!("{url}/api/v1/catalog"), None).await;
    assert_eq!(code, 200, "{body}");

    // The executor refuses task starts, from its own manager or a peer alike.
    let refused = sick
        .executor
        .start(Start {
            job: JobId::from("job-refused"),
            task: 0,
            owner: cluster.node(1).node_id(),
            epoch: 1,
            attempt: 0,
            kind: JobKind::Benchmark {
                peers: 1,
                matrix_size: 32,
                iterations: 1,
            },
            priority: Priority::Batch,
            resources: Resources::default(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("No space left on device"), "{refused}");

    // The other node hears it in the heartbeat, and places work elsewhere even when the job
    // prefers the sick node.
    let sick_id = sick.node_id().to_string();
    let other = cluster.node(1).api_url();
    wait_until(DEADLINE, "the unhealthy reason in gossip", || async {
        let (_, body) = call(
            reqwest::Method::GET,
            format!("{other}/api/v1/cluster"),
            None,
        )
        .await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["members"].as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m["info"]["id"] == sick_id.as_str()
                    && m["info"]["unhealthy"]
                        .as_str()
                        .is_some_and(|r| r.contains("No space left on device"))
            })
        })
    })
    .await
    .unwrap();
    let preferring_sick = serde_json::to_vec(&json!({
        "kind": "benchmark",
        "preferred_nodes": [sick_id],
        "resources": { "cores": 1, "ram_mib": 64 },
        "benchmark": { "peers": 1, "matrix_size": 32, "iterations": 1 },
    }))
    .unwrap();
    let (code, body) = call(
        reqwest::Method::POST,
        format!("{other}/api/v1/jobs"),
        Some(preferring_sick),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(DEADLINE, "the job to succeed", || async {
        let (_, body) = call(
            reqwest::Method::GET,
            format!("{other}/api/v1/jobs/{id}"),
            None,
        )
        .await;
        serde_json::from_str::<Value>(&body).is_ok_and(|v| v["job"]["status"] == "succeeded")
    })
    .await
    .unwrap();
    let (_, body) = call(
        reqwest::Method::GET,
        format!("{other}/api/v1/jobs/{id}"),
        None,
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(v["detail"]["tasks"][0]["node"], sick_id.as_str(), "{v}");

    sick.store().inject_write_fault(None);
    cluster.shutdown().await.unwrap();
}
