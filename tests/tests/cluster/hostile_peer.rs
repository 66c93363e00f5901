//! A hostile member of the mesh: node 2 of a 3-node cluster speaks the wire protocols directly
//! (its own catalog, its mesh's jobs, serving and data services) and asks for what it does
//! not own. Every request is refused where it lands, and the work it aimed at goes on:
//!
//! - no file of another node can be read: not through a model record naming a folder (refused
//!   by every catalog), not by a blob hash of the node's identity key (only registered,
//!   catalog-listed blobs are served), not by a path given as a hash;
//! - a running task is neither cancelled (even at epoch `u64::MAX`) nor preempted by a peer
//!   that does not own it or a higher-class job, and a finished job is not started again (even
//!   by its owner, even after the worker's ledger forgot it);
//! - a start asking for more memory than the node or its reservation allows is refused, and
//!   the process's memory stays flat;
//! - a live dataset's shards are not deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_actors::data::peers::DataPeers;
use flotilla_actors::mesh::Mesh;
use flotilla_protocol::catalog::{Lineage, ModelVersion, Record};
use flotilla_protocol::jobs::{JobId, JobKind, Priority, Resources};
use flotilla_protocol::services::control::RemoteErrorKind;
use flotilla_protocol::services::{data, jobs, serving};
use flotilla_protocol::{NodeId, RequestId};
use flotilla_tests::training::{banking_subset, upload_csv};
use flotilla_tests::{rss_kib, wait_until, TestCluster};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);
const CALL: Duration = Duration::from_secs(15);

fn forged_model(hash: &str, with_path: Option<&std::path::Path>) -> ModelVersion {
    let mut metadata = BTreeMap::from([
        ("serving.kind".to_string(), "generation".to_string()),
        ("serving.context_length".to_string(), "64".to_string()),
    ]);
    if let Some(p) = with_path {
        metadata.insert("serving.path".into(), p.to_string_lossy().to_string());
    }
    ModelVersion {
        name: "innocent".into(),
        version: 1,
        metadata,
        artifact_hashes: BTreeMap::from([("identity.key".to_string(), hash.to_string())]),
        lineage: Lineage {
            parent_version: None,
            operation: "upload".into(),
            parameters: BTreeMap::new(),
        },
        created_at_ms: 1,
    }
}

async fn serving_call(
    cluster: &TestCluster,
    from: usize,
    to: usize,
    body: serving::RequestBody,
) -> Result<serving::ResponseBody, serving::ServingError> {
    let target = flotilla_node::models::files::artifacts_endpoint(&cluster.node(to).node_id().0);
    let request = serving::Request {
        id: RequestId(7),
        body,
    };
    let response = cluster
        .node(from)
        .serving
        .files
        .transport
        .call(&target, request, CALL)
        .await?;
    response.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cannot_read_files_or_touch_work_and_data_it_does_not_own() {
    let cluster = TestCluster::start(3).await.unwrap();
    wait_until(DEADLINE, "convergence", || cluster.converged())
        .await
        .unwrap();
    let (victim, worker, hostile) = (0, 1, 2);
    let victim_dir = cluster.node(victim).config().data_dir.clone();

    // 1. Files. A record naming the victim's folder is refused by the catalog itself.
    let key = std::fs::read(victim_dir.join("identity.key")).unwrap();
    let key_hash = blake3::hash(&key).to_hex().to_string();
    let err = cluster
        .node(hostile)
        .catalog
        .put(Record::Model(forged_model(&key_hash, Some(&victim_dir))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("serving.path"), "{err}");
    // A record listing the key's hash as an artifact is a valid record and spreads...
    cluster
        .node(hostile)
        .catalog
        .put(Record::Model(forged_model(&key_hash, None)))
        .await
        .unwrap();
    wait_until(
        DEADLINE,
        "the forged record to reach the victim",
        || async {
            cluster
                .node(victim)
                .catalog
                .get(flotilla_protocol::catalog::CatalogKey::model("innocent", 1))
                .await
                .unwrap()
                .is_some()
        },
    )
    .await
    .unwrap();
    // ...but the victim serves blobs only from its artifact store, where its key never is.
    let asked = serving_call(
        &cluster,
        hostile,
        victim,
        serving::RequestBody::FetchBlob {
            blob: key_hash.clone(),
            offset: 0,
            len: 1 << 20,
        },
    )
    .await;
    let e = asked.unwrap_err();
    assert_eq!(e.kind, serving::ErrorKind::NotFound, "{e:?}");
    let held = serving_call(
        &cluster,
        hostile,
        victim,
        serving::RequestBody::HeldBlobs {
            blobs: vec![key_hash.clone()],
        },
    )
    .await
    .unwrap();
    assert_eq!(held, serving::ResponseBody::HeldBlobs(vec![]));
    // A path in place of a hash names nothing.
    for blob in ["../identity.key", "/etc/passwd", "identity.key"] {
        let r = serving_call(
            &cluster,
            hostile,
            victim,
            serving::RequestBody::FetchBlob {
                blob: blob.into(),
                offset: 0,
                len: 64,
            },
        )
        .await;
        assert!(r.is_err(), "{blob}: {r:?}");
    }
    // Deploying the forged version loads nothing anywhere: no node holds such a blob.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/deployments",
            cluster.node(victim).api_url()
        ))
        .json(&json!({"name": "bait", "model": "innocent", "replicas": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        assert!(cluster.node(i).serving.local.get("bait").is_none());
        let blobs = cluster.node(i).config().data_dir.join("artifacts/blobs");
        assert!(!blobs.join(&key_hash).exists(), "node {i} fetched the key");
    }

    // 2. Work. The victim owns a long benchmark with one task on every node.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", cluster.node(victim).api_url()))
        .json(&json!({
            "kind": "benchmark", "anti_affinity": "one-per-node",
            "benchmark": { "peers": 3, "matrix_size": 96, "iterations": 100000 }
        }))
        .send()
        .await
        .unwrap();
    let submitted: serde_json::Value = resp.json().await.unwrap();
    let job = JobId(submitted["job"]["id"].as_str().unwrap().to_string());
    let running_on = |i: usize| {
        let (cluster, job) = (&cluster, job.clone());
        async move {
            cluster
                .node(i)
                .executor
                .usage()
                .await
                .unwrap()
                .into_iter()
                .find(|t| t.job == job)
                .map(|t| t.task)
        }
    };
    wait_until(DEADLINE, "the benchmark task on the worker", || async {
        running_on(worker).await.is_some()
    })
    .await
    .unwrap();
    let task = running_on(worker).await.unwrap();
    let worker_id = cluster.node(worker).node_id();
    let mesh = &cluster.node(hostile).mesh;
    let cancel = jobs::RequestBody::CancelTask {
        job: job.clone(),
        task,
        epoch: u64::MAX,
    };
    let e = mesh.jobs(&worker_id, cancel, CALL).await.unwrap_err();
    assert!(e.to_string().contains("does not own"), "{e}");
    for by in [job.clone(), JobId("job-made-up".into())] {
        let preempt = jobs::RequestBody::PreemptTask {
            job: job.clone(),
            task,
            by,
            reason: "make room".into(),
        };
        let e = mesh.jobs(&worker_id, preempt, CALL).await.unwrap_err();
        assert!(e.to_string().contains("preempting job"), "{e}");
    }
    assert_eq!(running_on(worker).await, Some(task), "the task still runs");

    // 3. A start beyond the node's memory, or beyond the reservation it states, is refused.
    let before = rss_kib();
    for (matrix_size, ram_bytes) in [(200_000u32, 512u64 << 30), (8192, 256 << 20)] {
        let start = jobs::RequestBody::StartTask {
            job: JobId("job-greedy".into()),
            task: 0,
            owner: cluster.node(hostile).node_id(),
            epoch: 1,
            attempt: 1,
            kind: JobKind::Benchmark {
                peers: 1,
                matrix_size,
                iterations: 1,
            },
            priority: Priority::Batch,
            resources: Resources {
                cores: 1,
                ram_bytes,
                gpus: 0,
            },
        };
        let e = mesh.jobs(&worker_id, start, CALL).await.unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 200, "RSS grew by {grown_mib} MiB");

    // The owner's own cancel still works.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/jobs/{}/cancel",
            cluster.node(victim).api_url(),
            job.0
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    wait_until(DEADLINE, "the benchmark to stop", || async {
        running_on(worker).await.is_none()
    })
    .await
    .unwrap();

    // A finished job never starts again, not even when its own owner asks, and not once its
    // tasks have been compacted out of the worker's ledger.
    let head = || async {
        match cluster
            .node(worker)
            .catalog
            .get(flotilla_protocol::catalog::CatalogKey::job(&job))
            .await
            .unwrap()
        {
            Some(flotilla_protocol::catalog::Entry::Job(e)) => Some(e.record),
            _ => None,
        }
    };
    wait_until(
        DEADLINE,
        "the worker's catalog to learn the cancel",
        || async {
            head()
                .await
                .is_some_and(|r| r.status == flotilla_protocol::JobStatus::Cancelled)
        },
    )
    .await
    .unwrap();
    let record = head().await.unwrap();
    let restart = jobs::RequestBody::StartTask {
        job: job.clone(),
        task,
        owner: cluster.node(victim).node_id(),
        epoch: record.epoch,
        attempt: 1_000,
        kind: record.spec.kind.clone(),
        priority: record.spec.priority,
        resources: record.spec.resources,
    };
    let owner_mesh = &cluster.node(victim).mesh;
    let e = owner_mesh
        .jobs(&worker_id, restart.clone(), CALL)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("has finished"), "{e}");
    let forgotten = flotilla_actors::jobs::compaction::compact_ledger(
        &cluster.node(worker).executor,
        &cluster.node(worker).catalog,
        Duration::ZERO,
        flotilla_actors::clock::wall_ms() + 1,
    )
    .await
    .unwrap();
    assert!(forgotten >= 1, "the cancelled job left the worker's ledger");
    assert!(cluster
        .node(worker)
        .executor
        .survey(job.clone())
        .await
        .unwrap()
        .is_empty());
    let e = owner_mesh
        .jobs(&worker_id, restart, CALL)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("has finished"), "{e}");
    assert_eq!(running_on(worker).await, None, "nothing ran again");

    // 4. Data. A live dataset's shards are not deleted at a peer's request.
    upload_csv(&cluster, victim, "secrets", banking_subset(2, 10), "").await;
    let holders: Vec<NodeId> = (0..3).map(|i| cluster.node(i).node_id()).collect();
    for h in &holders {
        let body = data::RequestBody::DeleteVersion {
            dataset: "secrets".into(),
            version: 1,
        };
        match cluster.node(hostile).data.peers.call(h, body, CALL).await {
            Err(flotilla_actors::data::Error::Remote { error, .. }) => {
                assert_eq!(error.kind, RemoteErrorKind::Forbidden, "{error:?}")
            }
            other if *h == cluster.node(hostile).node_id() => {
                // Its own store is its own business.
                let _ = other;
            }
            other => panic!("{h}: {other:?}"),
        }
    }
    let export = reqwest::get(format!(
        "{}/api/v1/data/secrets/1/export",
        cluster.node(victim).api_url()
    ))
    .await
    .unwrap();
    assert_eq!(export.status().as_u16(), 200);
    assert_eq!(export.text().await.unwrap().lines().count(), 20);

    cluster.shutdown().await.unwrap();
}

/// A web page cannot reach a loopback API: a rebinding page's `Host` and a cross-site
/// `Origin` are refused, while tools that speak to loopback get their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_api_refuses_rebound_hosts_and_cross_site_origins() {
    let cluster = TestCluster::start(1).await.unwrap();
    let url = format!("{}/api/v1/cluster", cluster.node(0).api_url());
    let client = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(client.get(&url).send().await.unwrap()), 200);
    let rebound = client
        .get(&url)
        .header("host", "evil.example:7080")
        .send()
        .await
        .unwrap();
    assert_eq!(status(rebound), 403);
    let cross_site = client
        .get(&url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(status(cross_site), 403);
    let same_machine = client
        .get(&url)
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(status(same_machine), 200);
    cluster.shutdown().await.unwrap();
}
