//! A node frozen with SIGSTOP for longer than `membership.dead_after` on a 3-node cluster of
//! real processes: the task it ran is re-placed elsewhere by the job's owner; once the node is
//! continued it must not act on that task any more — it fences it (ends it as failed, before
//! it completes) instead of finishing work that has moved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{eventually, get_json, start, submit};

const DEAD_AFTER: &str = "3s";
const DEADLINE: Duration = Duration::from_secs(240);

fn member_flags(join: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = [
        "--open",
        "--heartbeat-interval",
        "250ms",
        "--suspect-after",
        "1s",
        "--dead-after",
        DEAD_AFTER,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(j) = join {
        a.push("--join".into());
        a.push(j.into());
    }
    a
}

async fn alive_members(api: &str) -> usize {
    get_json(api, "/api/v1/cluster").await["counts"]["Alive"]
        .as_u64()
        .unwrap_or(0) as usize
}

/// This node's ledger entry of `task` of `job`, through its API.
async fn ledger_entry(api: &str, job: &str, task: u64) -> Option<Value> {
    let v = get_json(api, &format!("/api/v1/executions?job={job}")).await;
    v["ledger"]
        .as_array()?
        .iter()
        .find(|e| e["task"].as_u64() == Some(task))
        .cloned()
}

async fn running_here(api: &str, job: &str) -> usize {
    get_json(api, &format!("/api/v1/executions?job={job}")).await["running"]
        .as_array()
        .map_or(0, |r| r.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_dead_after_fences_the_task_that_moved() {
    let dir = tempfile::tempdir().unwrap();
    let flags_a = member_flags(None);
    let a = start(
        &dir.path().join("a"),
        &[],
        &flags_a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .await;
    let flags = member_flags(Some(&a.join));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let b = start(&dir.path().join("b"), &[], &flags, &[]).await;
    let c = start(&dir.path().join("c"), &[], &flags, &[]).await;
    for api in [&a.api, &b.api, &c.api] {
        let api = api.clone();
        assert!(
            eventually(DEADLINE, || {
                let api = api.clone();
                async move { alive_members(&api).await == 3 }
            })
            .await,
            "the cluster never formed"
        );
    }

    // A benchmark task long enough to outlive the freeze, submitted to A (its owner) and
    // placed on B. Its length follows B's measured compute rate: about 15 s of matmuls.
    let cluster = get_json(&a.api, "/api/v1/cluster").await;
    let gflops = cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["info"]["id"] == b.id.as_str())
        .and_then(|m| m["info"]["compute_score"].as_f64())
        .unwrap_or(1.0)
        .max(0.1);
    let matrix = 256u32;
    let per_iteration = 2.0 * f64::from(matrix).powi(3) / 1e9;
    let iterations = ((15.0 * gflops / per_iteration) as u32).clamp(50, 100_000);
    let spec = json!({
        "kind": "benchmark",
        "preferred_nodes": [b.id],
        "resources": { "cores": 1, "ram_mib": 64 },
        "benchmark": { "peers": 1, "matrix_size": matrix, "iterations": iterations },
    });
    let id = submit(&a.api, &spec).await;
    let started_on_b = eventually(DEADLINE, || {
        let (api, id) = (b.api.clone(), id.clone());
        async move { running_here(&api, &id).await == 1 }
    })
    .await;
    assert!(started_on_b, "the task never ran on B");

    // Frozen for twice `dead_after`: A declares B dead and re-places the task.
    b.signal("STOP");
    let moved = eventually(DEADLINE, || {
        let (api, id, b_id) = (a.api.clone(), id.clone(), b.id.clone());
        async move {
            let job = get_json(&api, &format!("/api/v1/jobs/{id}")).await;
            let task = &job["detail"]["tasks"][0];
            task["attempt"].as_u64().unwrap_or(0) >= 1
                && task["node"].as_str().is_some_and(|n| n != b_id)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    b.signal("CONT");
    assert!(
        moved,
        "the owner never re-placed the task of the frozen node"
    );

    // B does not finish the work that moved: its attempt ends as failed (fenced) and stops.
    let fenced = eventually(Duration::from_secs(60), || {
        let (api, id) = (b.api.clone(), id.clone());
        async move {
            ledger_entry(&api, &id, 0)
                .await
                .is_some_and(|e| !e["outcome"].is_null())
                && running_here(&api, &id).await == 0
        }
    })
    .await;
    let entry = ledger_entry(&b.api, &id, 0)
        .await
        .expect("B's ledger entry");
    assert!(fenced, "B still runs the task: {entry}");
    assert_eq!(entry["attempt"], 0, "{entry}");
    let outcome = entry["outcome"].to_string();
    assert!(
        outcome.contains("Failed") && outcome.contains("unresponsive"),
        "B's attempt must end fenced, not completed: {outcome}"
    );

    // The job ends once, with the result of the attempt that ran elsewhere.
    let path = format!("/api/v1/jobs/{id}");
    let ended = eventually(DEADLINE, || {
        let (api, path) = (a.api.clone(), path.clone());
        async move {
            matches!(
                get_json(&api, &path).await["job"]["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        }
    })
    .await;
    let job = get_json(&a.api, &path).await;
    assert!(ended, "the job never ended: {job}");
    assert_eq!(job["job"]["status"], "succeeded", "{job}");
    let task = &job["detail"]["tasks"][0];
    assert_ne!(task["node"], b.id.as_str(), "{job}");
    let result: Value = serde_json::from_str(task["result"].as_str().unwrap()).unwrap();
    assert_ne!(result["node"], b.id.as_str(), "{job}");

    // Every attempt ran exactly once, and B ran only the first.
    let mut attempts = Vec::new();
    for (node, api) in [("a", &a.api), ("b", &b.api), ("c", &c.api)] {
        let runs = get_json(api, &format!("/api/v1/executions?job={id}")).await;
        for r in runs["executions"].as_array().unwrap() {
            attempts.push((r["attempt"].as_u64().unwrap(), node));
        }
    }
    attempts.sort();
    let b_runs: Vec<_> = attempts.iter().filter(|(_, n)| *n == "b").collect();
    assert_eq!(b_runs, vec![&(0, "b")], "{attempts:?}");
    let mut distinct = attempts.iter().map(|(a, _)| *a).collect::<Vec<_>>();
    distinct.dedup();
    assert_eq!(distinct.len(), attempts.len(), "{attempts:?}");
}
