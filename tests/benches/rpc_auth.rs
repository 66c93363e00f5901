//! What the mesh's authorisation and the catalog's seals cost on the peer RPCs they guard,
//! measured against the same work without them, in the same process:
//!
//! - **catalog writes**: `N` catalog writes on node 0 of a 3-node cluster, one after another,
//!   each sealed on write and verified by both peers when gossip brings it, until every node
//!   holds them all: writes per second end to end and the p50/p99 of a write's
//!   acknowledgement. Baseline: a fresh cluster in the same process with seals turned off
//!   (`catalog::keys::baseline`, a switch only test builds have).
//! - **catalog catch-up**: a fourth node joins empty and fetches every entry by anti-entropy,
//!   verifying each seal: seconds until it holds them all, with and without seals.
//! - **jobs RPC**: node 1 asks node 0 `M` times, one after another, to cancel a task of a job
//!   node 1 owns, which node 0 authorises (the catalog's owner and epoch of the job) before its
//!   executor answers; baseline: the same number of `Survey` requests for the same job, the
//!   same round trip to the same executor with no authorisation. Throughput and p50/p99.
//!
//! Each ratio is "with ÷ without" throughput (1.0 = free). The order alternates over rounds so
//! both sides see the same machine.
//!
//! Run: `cargo bench -p flotilla-tests --bench rpc_auth --profile dev` (`-- quick`: fewer
//! writes and calls, one round).

// A benchmark reports on stdout and may panic on a broken setup.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flotilla_actors::catalog::keys::baseline;
use flotilla_protocol::catalog::{CatalogKey, ModelAlias, Record};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::jobs::RequestBody;
use flotilla_tests::{wait_until, TestCluster};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(300);
const CALL: Duration = Duration::from_secs(10);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One side's numbers.
#[derive(Default)]
struct Side {
    writes_per_s: Vec<f64>,
    write_p50: Vec<Duration>,
    write_p99: Vec<Duration>,
    catch_up_s: Vec<f64>,
    calls_per_s: Vec<f64>,
    call_p50: Vec<Duration>,
    call_p99: Vec<Duration>,
}

async fn cluster(n: usize) -> TestCluster {
    let c = TestCluster::start_with(
        n,
        Some(Box::new(|_, c| {
            c.catalog_sync_interval = Duration::from_millis(200);
        })),
    )
    .await
    .unwrap();
    wait_until(DEADLINE, "convergence", || c.converged())
        .await
        .unwrap();
    c
}

fn alias(i: usize) -> Record {
    Record::Alias(ModelAlias {
        model: format!("model-{i}"),
        alias: "prod".into(),
        version: 1,
    })
}

async fn holds_all(cluster: &TestCluster, node: usize, n: usize) -> bool {
    let listed = cluster
        .node(node)
        .catalog
        .list(Some(flotilla_protocol::catalog::RecordKind::ModelAlias))
        .await
        .unwrap_or_default();
    listed.len() >= n
}

/// Catalog writes then catch-up, on a fresh cluster.
async fn catalog_round(writes: usize, side: &mut Side) {
    let mut cluster = cluster(3).await;
    let mut acks = Vec::with_capacity(writes);
    let start = Instant::now();
    for i in 0..writes {
        let t = Instant::now();
        cluster.node(0).catalog.put(alias(i)).await.unwrap();
        acks.push(t.elapsed());
    }
    for node in 0..3 {
        wait_until(DEADLINE, "every write on every node", || {
            holds_all(&cluster, node, writes)
        })
        .await
        .unwrap();
    }
    let took = start.elapsed();
    acks.sort();
    side.writes_per_s.push(writes as f64 / took.as_secs_f64());
    side.write_p50.push(percentile(&acks, 0.5));
    side.write_p99.push(percentile(&acks, 0.99));

    let start = Instant::now();
    let fresh = cluster.add_node().await.unwrap();
    wait_until(DEADLINE, "the new node to catch up", || {
        holds_all(&cluster, fresh, writes)
    })
    .await
    .unwrap();
    side.catch_up_s.push(start.elapsed().as_secs_f64());
    cluster.shutdown().await.unwrap();
}

/// `calls` cancels (authorised) or surveys (not) from node 1 to node 0.
async fn jobs_round(
    cluster: &TestCluster,
    job: &JobId,
    epoch: u64,
    calls: usize,
    cancel: bool,
) -> (f64, Duration, Duration) {
    let to = cluster.node(0).node_id();
    let mesh = &cluster.node(1).mesh;
    let mut lat = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let body = if cancel {
            RequestBody::CancelTask {
                job: job.clone(),
                task: 7,
                epoch,
            }
        } else {
            RequestBody::Survey { job: job.clone() }
        };
        let t = Instant::now();
        flotilla_actors::mesh::Mesh::jobs(mesh, &to, body, CALL)
            .await
            .unwrap();
        lat.push(t.elapsed());
    }
    let took = start.elapsed();
    lat.sort();
    (
        calls as f64 / took.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_d(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (writes, calls, rounds) = if quick { (100, 200, 1) } else { (500, 2000, 3) };
    println!("catalog: {writes} writes on a 3-node cluster, then a 4th node catching up; jobs: {calls} calls; {rounds} round(s)");

    let (mut sealed, mut plain) = (Side::default(), Side::default());
    for round in 0..rounds {
        for seals_on in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            baseline::set_seals_off(!seals_on);
            catalog_round(writes, if seals_on { &mut sealed } else { &mut plain }).await;
        }
    }
    baseline::set_seals_off(false);

    // Jobs: a real job owned by node 1, so node 0's catalog has its owner and epoch.
    let cluster = cluster(2).await;
    let submitted: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", cluster.node(1).api_url()))
        .json(&json!({
            "kind": "benchmark", "preferred_nodes": [cluster.node(1).node_id().to_string()],
            "benchmark": { "peers": 1, "matrix_size": 32, "iterations": 1 }
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = JobId(submitted["job"]["id"].as_str().unwrap().to_string());
    let key = CatalogKey::job(&job);
    wait_until(DEADLINE, "node 0 to know the job", || async {
        cluster
            .node(0)
            .catalog
            .get(key.clone())
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await
    .unwrap();
    let epoch = match cluster.node(0).catalog.get(key).await.unwrap() {
        Some(flotilla_protocol::catalog::Entry::Job(e)) => e.record.epoch,
        other => panic!("{other:?}"),
    };
    // Warm the connection and both paths.
    jobs_round(&cluster, &job, epoch, 20, true).await;
    jobs_round(&cluster, &job, epoch, 20, false).await;
    for round in 0..rounds {
        for authorised in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let (rate, p50, p99) = jobs_round(&cluster, &job, epoch, calls, authorised).await;
            let side = if authorised { &mut sealed } else { &mut plain };
            side.calls_per_s.push(rate);
            side.call_p50.push(p50);
            side.call_p99.push(p99);
        }
    }
    cluster.shutdown().await.unwrap();

    let write_ratio = median(sealed.writes_per_s.clone()) / median(plain.writes_per_s.clone());
    println!(
        "catalog writes, sealed:   {:8.1} writes/s   ack p50 {:6.2} ms  p99 {:6.2} ms",
        median(sealed.writes_per_s.clone()),
        ms(median_d(sealed.write_p50.clone())),
        ms(median_d(sealed.write_p99.clone()))
    );
    println!(
        "catalog writes, unsealed: {:8.1} writes/s   ack p50 {:6.2} ms  p99 {:6.2} ms",
        median(plain.writes_per_s.clone()),
        ms(median_d(plain.write_p50.clone())),
        ms(median_d(plain.write_p99.clone()))
    );
    println!("catalog writes ratio (sealed / unsealed throughput): {write_ratio:.3}");
    let catch_up_ratio = median(plain.catch_up_s.clone()) / median(sealed.catch_up_s.clone());
    println!(
        "catalog catch-up of {writes} entries: sealed {:.2} s, unsealed {:.2} s; ratio {:.3}",
        median(sealed.catch_up_s.clone()),
        median(plain.catch_up_s.clone()),
        catch_up_ratio
    );
    let call_ratio = median(sealed.calls_per_s.clone()) / median(plain.calls_per_s.clone());
    println!(
        "jobs RPC, authorised cancel: {:8.1} calls/s   p50 {:6.3} ms  p99 {:6.3} ms",
        median(sealed.calls_per_s.clone()),
        ms(median_d(sealed.call_p50.clone())),
        ms(median_d(sealed.call_p99.clone()))
    );
    println!(
        "jobs RPC, survey (no check): {:8.1} calls/s   p50 {:6.3} ms  p99 {:6.3} ms",
        median(plain.calls_per_s.clone()),
        ms(median_d(plain.call_p50.clone())),
        ms(median_d(plain.call_p99.clone()))
    );
    println!("jobs RPC ratio (authorised / unchecked throughput): {call_ratio:.3}");
}
