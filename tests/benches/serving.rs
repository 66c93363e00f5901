//! Serving benchmarks, side by side in one process, with ratios:
//!
//! 1. embeddings (all-MiniLM-L6-v2) with dynamic batching (max batch 16) vs batch size 1, same
//!    model on the same node: throughput and p50/p99 latency;
//! 2. cache hit vs miss latency through the router;
//! 3. router overhead: the router (cache off) vs calling the local replica in process;
//! 4. generated tokens/s with continuous batching (16 sequences per step) vs one sequence at a
//!    time, on the tiny character GPT.
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
const MINILM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/models/all-MiniLM-L6-v2"
);

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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 1 } else { 4 };
    let cluster = TestCluster::start(1).await.unwrap();
    let node = cluster.node(0);
    let api = node.api_url();
    let dir = tempfile::tempdir().unwrap();
    let gpt_dir = dir.path().join("gpt");
    std::fs::create_dir_all(&gpt_dir).unwrap();
    flotilla_node::serve::gpt::create_char_gpt(
        &gpt_dir,
        &"the quick brown fox jumps over the lazy dog. ".repeat(8),
        20,
        1,
    )
    .unwrap();
    let bert = post(
        &api,
        "/api/v1/models",
        &json!({"name": "minilm", "path": MINILM}),
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
    for (name, model, batch, wait) in [
        ("emb16", "minilm", 16, 5),
        ("emb1", "minilm", 1, 0),
        ("gen16", "gpt", 16, 0),
        ("gen1", "gpt", 1, 0),
    ] {
        post(
            &api,
            "/api/v1/deployments",
            &json!({"name": name, "model": model, "max_batch": batch, "max_wait_ms": wait}),
        )
        .await;
    }
    wait_until(DEADLINE, "4 replicas", || async {
        node.serving.local.all().len() == 4
    })
    .await
    .unwrap();
    let local = node.serving.local.clone();
    let router = node.serving.router.clone();
    let texts: Vec<String> = (0..512)
        .map(|i| format!("sentence number {i} about a small boat in a flotilla"))
        .collect();

    println!("== 1. dynamic batching vs batch size 1 (MiniLM embeddings, 16 concurrent)");
    let n = 64 * scale;
    let mut qps = Vec::new();
    for name in ["emb16", "emb1"] {
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
