//! Serving benchmarks, side by side in one process, with ratios:
//!
//! 1. embeddings (all-MiniLM-L6-v2) with dynamic batching (max batch 16) vs batch size 1, same
//!    model on the same node: throughput and p50/p99 latency;
//! 2. cache hit vs miss latency through the router;
//! 3. router overhead: the router (cache off) vs calling the local replica in process;
//! 4. generated tokens/s with continuous batching (16 sequences per step) vs one sequence at a
//!    time, on the tiny character GPT.
//!
//! Each replica reserves a core and every in-process node advertises this machine's cores, so
//! the cluster has as many nodes as the four replicas need (two on a 2-core machine); each
//! measurement calls the replica, or the router, of the node that runs the deployment.
//!
//! Run: `cargo bench -p flotilla-tests --bench serving --profile dev` (`-- quick` for fewer
//! requests).

// A benchmark reports on stdout and may panic on a broken setup.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flotilla_actors::serving::replica::Backend;
use flotilla_actors::serving::router::RouteRequest;
use flotilla_protocol::services::serving::Endpoint;
use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(300);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn post(api: &str, path: &str, body: &Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{api}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{path}: {}",
        r.text().await.unwrap()
    );
    r.json().await.unwrap()
}

/// Latencies of `n` requests sent `concurrency` at a time, and the wall time of all.
async fn run<F, Fut>(n: usize, concurrency: usize, f: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(concurrency) {
        let calls = chunk.iter().map(|i| {
            let t = Instant::now();
            let fut = f(*i);
            async move {
                fut.await;
                t.elapsed()
            }
        });
        lat.extend(futures::future::join_all(calls).await);
    }
    let wall = start.elapsed();
    lat.sort();
    (lat, wall)
}

fn report(name: &str, lat: &[Duration], wall: Duration) -> f64 {
    let qps = lat.len() as f64 / wall.as_secs_f64();
    println!(
        "{name:<34} {:>9.1} req/s   p50 {:>8.2?}   p99 {:>8.2?}",
        qps,
        percentile(lat, 0.5),
        percentile(lat, 0.99)
    );
    qps
}

fn request(
    deployment: &str,
    hash: &str,
    endpoint: Endpoint,
    body: Value,
    cache: bool,
) -> RouteRequest {
    let bytes = serde_json::to_vec(&body).unwrap();
    let key = cache.then(|| flotilla_protocol::openai::CacheKey(*blake3::hash(&bytes).as_bytes()));
    RouteRequest {
        deployment: deployment.to_string(),
        model_hash: hash.to_string(),
        endpoint,
        body: bytes.into(),
        cache_key: key,
        deadline: Duration::from_secs(120),
    }
}

/// The benchmark's deployments, one replica each: (name, model, max batch, max wait ms).
const DEPLOYMENTS: [(&str, &str, u32, u32); 4] = [
    ("emb16", "minilm", 16, 5),
    ("emb1", "minilm", 1, 0),
    ("gen16", "gpt", 16, 0),
    ("gen1", "gpt", 1, 0),
];

/// The index of the node running `deployment`'s replica, once it runs and that node's router
/// sends to it.
fn host(cluster: &TestCluster, deployment: &str) -> Option<usize> {
    cluster.running().into_iter().find(|i| {
        let serving = &cluster.node(*i).serving;
        serving.local.get(deployment).is_some()
            && serving
                .deployment(deployment)
                .is_some_and(|d| !d.ready.is_empty())
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 1 } else { 4 };
    // Each replica reserves one core of its node, and every in-process node advertises this
    // machine's cores: the cluster has as many nodes as it takes to hold the four replicas.
    // All of them share this machine, so every comparison below is on the same hardware; each
    // one calls a replica in the process of the node that runs it, or that node's router.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let nodes = DEPLOYMENTS.len().div_ceil(cores).max(1);
    let cluster = TestCluster::start(nodes).await.unwrap();
    wait_until(DEADLINE, "convergence", || cluster.converged())
        .await
        .unwrap();
    let api = cluster.node(0).api_url();
    let dir = tempfile::tempdir().unwrap();
    let gpt_dir = dir.path().join("gpt");
    std::fs::create_dir_all(&gpt_dir).unwrap();
    flotilla_node::models::toy::create_char_gpt(
        &gpt_dir,
        &"the quick brown fox jumps over the lazy dog. ".repeat(8),
        20,
        1,
    )
    .unwrap();
    let minilm = flotilla_tests::shared("models/all-MiniLM-L6-v2");
    let bert = post(
        &api,
        "/api/v1/models",
        &json!({"name": "minilm", "path": minilm}),
    )
    .await;
    let gpt = post(
        &api,
        "/api/v1/models",
        &json!({"name": "gpt", "path": gpt_dir}),
    )
    .await;
    let (bert, gpt) = (
        bert["hash"].as_str().unwrap().to_string(),
        gpt["hash"].as_str().unwrap().to_string(),
    );
    for (name, model, batch, wait) in DEPLOYMENTS {
        post(
            &api,
            "/api/v1/deployments",
            &json!({"name": name, "model": model, "max_batch": batch, "max_wait_ms": wait, "cores": 1}),
        )
        .await;
    }
    wait_until(DEADLINE, "4 ready replicas", || async {
        DEPLOYMENTS
            .iter()
            .all(|(name, ..)| host(&cluster, name).is_some())
    })
    .await
    .unwrap();
    let on = |name: &str| &cluster.node(host(&cluster, name).unwrap()).serving;
    println!(
        "{nodes} node(s) advertising {cores} cores each, one 1-core replica per deployment: {}",
        DEPLOYMENTS
            .iter()
            .map(|(name, ..)| format!("{name} on node {}", host(&cluster, name).unwrap()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let texts: Vec<String> = (0..512)
        .map(|i| format!("sentence number {i} about a small boat in a flotilla"))
        .collect();

    println!("== 1. dynamic batching vs batch size 1 (MiniLM embeddings, 16 concurrent)");
    let n = 64 * scale;
    let mut qps = Vec::new();
    for name in ["emb16", "emb1"] {
        let local = on(name).local.clone();
        let (lat, wall) = run(n, 16, |i| {
            let body = serde_json::to_vec(&json!({"model": name, "input": texts[i % texts.len()]}))
                .unwrap();
            let local = local.clone();
            let bert = bert.clone();
            async move {
                local
                    .infer(name, &bert, Endpoint::Embeddings, &body)
                    .await
                    .unwrap();
            }
        })
        .await;
        qps.push(report(name, &lat, wall));
    }
    println!("   batching speed-up: {:.2}x QPS", qps[0] / qps[1]);

    println!("== 2. cache hit vs miss (router, embeddings, one at a time)");
    let n2 = 16 * scale;
    let router = on("emb16").router.clone();
    let (miss, wall_m) = run(n2, 1, |i| {
        let r = request(
            "emb16",
            &bert,
            Endpoint::Embeddings,
            json!({"model": "emb16", "input": format!("miss {i}")}),
            true,
        );
        let router = router.clone();
        async move {
            router.infer(r).await.unwrap();
        }
    })
    .await;
    let (hit, wall_h) = run(n2, 1, |i| {
        let r = request(
            "emb16",
            &bert,
            Endpoint::Embeddings,
            json!({"model": "emb16", "input": format!("miss {i}")}),
            true,
        );
        let router = router.clone();
        async move {
            router.infer(r).await.unwrap();
        }
    })
    .await;
    report("miss", &miss, wall_m);
    report("hit", &hit, wall_h);
    println!(
        "   hit is {:.0}x faster at p50",
        percentile(&miss, 0.5).as_secs_f64() / percentile(&hit, 0.5).as_secs_f64().max(1e-9)
    );

    println!("== 3. router (cache off) vs in-process replica call (gen1, 4 tokens, greedy)");
    let n3 = 64 * scale;
    let (local, router) = (on("gen1").local.clone(), on("gen1").router.clone());
    let body = |i: usize| json!({"model": "gen1", "prompt": format!("p{i}"), "max_tokens": 4, "temperature": 0});
    let (direct, wall_d) = run(n3, 1, |i| {
        let b = serde_json::to_vec(&body(i)).unwrap();
        let local = local.clone();
        let gpt = gpt.clone();
        async move {
            local
                .infer("gen1", &gpt, Endpoint::Completions, &b)
                .await
                .unwrap();
        }
    })
    .await;
    let (routed, wall_r) = run(n3, 1, |i| {
        let r = request("gen1", &gpt, Endpoint::Completions, body(i), false);
        let router = router.clone();
        async move {
            router.infer(r).await.unwrap();
        }
    })
    .await;
    report("in process", &direct, wall_d);
    report("router", &routed, wall_r);
    println!(
        "   router overhead at p50: {:.1} µs ({:.2}x)",
        (percentile(&routed, 0.5).as_secs_f64() - percentile(&direct, 0.5).as_secs_f64()) * 1e6,
        percentile(&routed, 0.5).as_secs_f64() / percentile(&direct, 0.5).as_secs_f64()
    );

    let n4 = 16 * scale;
    println!("== 4. continuous batching vs one sequence at a time ({n4} sequences x 40 tokens, 8 at once)");
    let mut tps = Vec::new();
    for name in ["gen16", "gen1"] {
        let local = on(name).local.clone();
        let before = local.get(name).unwrap().engine_stats().unwrap().1;
        let (_, wall) = run(n4, 8, |i| {
            let b = serde_json::to_vec(
                &json!({"model": name, "prompt": format!("s{i}"), "max_tokens": 40, "seed": i}),
            )
            .unwrap();
            let local = local.clone();
            let gpt = gpt.clone();
            async move {
                local
                    .infer(name, &gpt, Endpoint::Completions, &b)
                    .await
                    .unwrap();
            }
        })
        .await;
        let tokens = local.get(name).unwrap().engine_stats().unwrap().1 - before;
        let rate = tokens as f64 / wall.as_secs_f64();
        println!("{name:<34} {rate:>9.0} tokens/s ({tokens} tokens in {wall:.2?})");
        tps.push(rate);
    }
    println!(
        "   continuous batching speed-up: {:.2}x tokens/s",
        tps[0] / tps[1]
    );
    drop(cluster);
}
