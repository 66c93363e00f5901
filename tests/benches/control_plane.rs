//! Control-plane benchmarks: submit → running latency of jobs, owner failover time, catalog
//! convergence of 1,000 entries across 10 nodes, and gossip bytes per second per idle node.
//!
//! Run: `cargo bench -p flotilla-tests --bench control_plane --profile dev`
//! (`-- quick` for fewer rounds, 500 catalog entries on 5 nodes and a shorter idle window; or
//! name one of `submit`, `failover`, `catalog`, `idle`).

// A benchmark reports on stdout and may panic on a broken setup.
#![allow(
    clippy::print_stdout,
    clippy::print_literal,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_node::config::NodeConfig;
use flotilla_protocol::catalog::{CatalogKey, Entry, Lineage, ModelVersion, Record};
use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn status_at(cluster: &TestCluster, i: usize, id: &str) -> Option<Value> {
    let key = CatalogKey {
        kind: flotilla_protocol::catalog::RecordKind::Job,
        name: id.to_string(),
        version: 0,
    };
    match cluster.node(i).catalog.get(key).await.ok()? {
        Some(Entry::Job(e)) => Some(json!({
            "status": e.record.status.to_string(),
            "owner": e.record.owner.to_string(),
            "epoch": e.record.epoch,
        })),
        _ => None,
    }
}

async fn submit(cluster: &TestCluster, i: usize, spec: &Value) -> anyhow::Result<String> {
    let url = format!("{}/api/v1/jobs", cluster.node(i).api_url());
    let resp = reqwest::Client::new().post(url).json(spec).send().await?;
    anyhow::ensure!(resp.status().is_success(), "submit: {}", resp.text().await?);
    let v: Value = resp.json().await?;
    Ok(v["job"]["id"].as_str().unwrap_or_default().to_string())
}

async fn started(
    n: usize,
    customize: Option<flotilla_tests::Customize>,
) -> anyhow::Result<TestCluster> {
    let cluster = TestCluster::start_with(n, customize).await?;
    wait_until(DEADLINE, "convergence", || cluster.converged()).await?;
    Ok(cluster)
}

async fn bench_submit(rounds: usize) -> anyhow::Result<()> {
    let cluster = started(4, None).await?;
    let (mut to_running, mut to_done) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let spec = json!({
            "kind": "benchmark",
            "benchmark": { "peers": 3, "matrix_size": 32, "iterations": 1 },
            "resources": { "cores": 1, "ram_mib": 16 },
        });
        let owner = r % 4;
        let t0 = Instant::now();
        let id = submit(&cluster, owner, &spec).await?;
        let mut running = None;
        loop {
            let s = status_at(&cluster, owner, &id).await;
            let status = s
                .as_ref()
                .map(|s| s["status"].as_str().unwrap_or("").to_string());
            match status.as_deref() {
                Some("running") if running.is_none() => running = Some(t0.elapsed()),
                Some("succeeded") => {
                    to_running.push(running.unwrap_or(t0.elapsed()));
                    to_done.push(t0.elapsed());
                    break;
                }
                Some("failed" | "cancelled") => anyhow::bail!("job {id} ended {status:?}"),
                _ => {}
            }
            anyhow::ensure!(t0.elapsed() < DEADLINE, "job {id} never finished");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    to_running.sort();
    to_done.sort();
    println!(
        "submit→running  {rounds} jobs of 3 tasks on 4 nodes: p50 {:>8.2?} p99 {:>8.2?}; submit→succeeded p50 {:>8.2?} p99 {:>8.2?}",
        percentile(&to_running, 0.5),
        percentile(&to_running, 0.99),
        percentile(&to_done, 0.5),
        percentile(&to_done, 0.99),
    );
    cluster.shutdown().await
}

async fn bench_failover(rounds: usize) -> anyhow::Result<()> {
    // Dead nodes stay in the majority count (until `forget_after`), so a cluster that loses
    // `rounds` owners needs more than twice as many nodes to keep failing over.
    let mut cluster = started(2 * rounds + 2, None).await?;
    let dead_after = cluster.node(0).config().membership.dead_after;
    let mut takeovers = Vec::new();
    let mut finishes = Vec::new();
    for r in 0..rounds {
        let alive = cluster.running();
        let owner = alive[alive.len() - 1];
        let others: Vec<String> = alive[..alive.len() - 1]
            .iter()
            .take(2)
            .map(|i| cluster.node(*i).node_id().to_string())
            .collect();
        let spec = json!({
            "kind": "benchmark",
            "idempotency_key": format!("failover-{r}"),
            "preferred_nodes": others,
            "benchmark": { "peers": 2, "matrix_size": 128, "iterations": 200 },
            "resources": { "cores": 1, "ram_mib": 16 },
        });
        let id = submit(&cluster, owner, &spec).await?;
        let watcher = alive[0];
        wait_until(DEADLINE, "running", || async {
            status_at(&cluster, watcher, &id)
                .await
                .is_some_and(|s| s["status"] == "running")
        })
        .await?;
        let old = cluster.node(owner).node_id().to_string();
        let t0 = Instant::now();
        cluster.kill(owner).await;
        wait_until(DEADLINE, "takeover", || async {
            status_at(&cluster, watcher, &id)
                .await
                .is_some_and(|s| s["owner"] != old.as_str())
        })
        .await?;
        takeovers.push(t0.elapsed());
        wait_until(DEADLINE, "success", || async {
            status_at(&cluster, watcher, &id)
                .await
                .is_some_and(|s| s["status"] == "succeeded")
        })
        .await?;
        finishes.push(t0.elapsed());
    }
    takeovers.sort();
    println!(
        "owner failover  {rounds} kills (dead_after {dead_after:?}): takeover recorded min {:>8.2?} median {:>8.2?} max {:>8.2?}; job succeeded after kill median {:>8.2?}",
        takeovers[0],
        percentile(&takeovers, 0.5),
        takeovers[takeovers.len() - 1],
        percentile(&{ let mut f = finishes.clone(); f.sort(); f }, 0.5),
    );
    cluster.shutdown().await
}

fn model(name: &str, version: u64) -> Record {
    let now = flotilla_actors::clock::wall_ms();
    Record::Model(ModelVersion {
        name: name.into(),
        version,
        metadata: BTreeMap::from([("note".to_string(), "benchmark entry".to_string())]),
        artifact_hashes: BTreeMap::from([(
            "weights.safetensors".to_string(),
            blake3::hash(format!("{name}@{version}").as_bytes())
                .to_hex()
                .to_string(),
        )]),
        lineage: Lineage {
            parent_version: None,
            operation: "upload".into(),
            parameters: BTreeMap::new(),
        },
        created_at_ms: now,
    })
}

async fn bench_catalog(nodes: usize, entries: usize) -> anyhow::Result<()> {
    // A 1 s heartbeat keeps 10 in-process nodes on two cores from starving each other.
    let cluster = started(
        nodes,
        Some(Box::new(|_, c: &mut NodeConfig| {
            c.membership.heartbeat_interval = Duration::from_secs(1);
            c.membership.suspect_after = Duration::from_secs(4);
            c.membership.dead_after = Duration::from_secs(10);
        })),
    )
    .await?;
    let t0 = Instant::now();
    let writes = (0..nodes).map(|i| {
        let cluster = &cluster;
        async move {
            for k in 0..entries / nodes {
                cluster
                    .node(i)
                    .catalog
                    .put(model(&format!("m{i}-{k}"), 1))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(writes).await {
        r?;
    }
    let written = t0.elapsed();
    if std::env::var_os("FLOTILLA_BENCH_TRACE").is_some() {
        for _ in 0..20 {
            let mut counts = Vec::new();
            for i in 0..nodes {
                let s = cluster.node(i).catalog.stats().await?;
                counts.push((s.entries, s.gossip_dropped));
            }
            eprintln!(
                "{:>6.2?} entries, gossip dropped per node: {counts:?}",
                t0.elapsed()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let digests = || async {
        let mut first = None;
        for i in 0..nodes {
            let Ok(d) = cluster.node(i).catalog.digest().await else {
                return false;
            };
            let Ok(stats) = cluster.node(i).catalog.stats().await else {
                return false;
            };
            if stats.entries < entries {
                return false;
            }
            match &first {
                None => first = Some(d),
                Some(f) if *f != d => return false,
                Some(_) => {}
            }
        }
        true
    };
    wait_until(DEADLINE, "identical replicas", digests).await?;
    println!(
        "catalog         {entries} entries written at {nodes} nodes ({} per node) in {written:>8.2?}; every replica identical {:>8.2?} after the first write",
        entries / nodes,
        t0.elapsed()
    );
    cluster.shutdown().await
}

/// Sum of a node's libp2p bandwidth counter in one direction, from `/metrics`.
async fn bytes(cluster: &TestCluster, i: usize, direction: &str) -> anyhow::Result<f64> {
    let url = format!("{}/metrics", cluster.node(i).api_url());
    let text = reqwest::get(url).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("libp2p_bandwidth_bytes_total") && l.contains(direction))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn bench_idle(
    nodes: usize,
    window: Duration,
    label: &str,
    beat: Duration,
) -> anyhow::Result<()> {
    let cluster = started(
        nodes,
        Some(Box::new(move |_, c: &mut NodeConfig| {
            c.membership.heartbeat_interval = beat;
            c.membership.suspect_after = beat * 4;
            c.membership.dead_after = beat * 10;
            c.catalog_sync_interval = Duration::from_secs(5);
        })),
    )
    .await?;
    // Let start-up traffic (identify, DHT bootstrap, first anti-entropy) settle.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut before = Vec::new();
    for i in 0..nodes {
        before.push(bytes(&cluster, i, "Outbound").await?);
    }
    tokio::time::sleep(window).await;
    let mut rates = Vec::new();
    for (i, b) in before.iter().enumerate() {
        rates.push((bytes(&cluster, i, "Outbound").await? - b) / window.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    println!(
        "idle gossip     {nodes} nodes, {label} (heartbeat {beat:?}, anti-entropy 5 s): sent per node mean {:.0} B/s (min {:.0}, max {:.0}) over {window:?}",
        mean,
        rates[0],
        rates[rates.len() - 1]
    );
    cluster.shutdown().await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let quick = args.iter().any(|a| a == "quick");
    let only: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "quick")
        .collect();
    let run = |name: &str| only.is_empty() || only.contains(&name);
    if run("submit") {
        bench_submit(if quick { 5 } else { 20 }).await?;
    }
    if run("failover") {
        bench_failover(if quick { 1 } else { 3 }).await?;
    }
    if run("catalog") {
        if quick {
            bench_catalog(5, 500).await?;
        } else {
            bench_catalog(10, 1000).await?;
        }
    }
    if run("idle") {
        let window = Duration::from_secs(if quick { 5 } else { 30 });
        bench_idle(5, window, "default timings", Duration::from_secs(1)).await?;
    }
    Ok(())
}
