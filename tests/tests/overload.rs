//! Overload on a real in-process cluster: 40 times what one replica takes at once is refused
//! with 429 and `retry-after`, the router counts the refusals, service recovers within 5 s, and
//! the process's resident memory stays bounded. A binary of its own, because it measures this
//! process's memory: no other test's cluster may grow it meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_tests::serving::{cluster3, deploy, get, post, register, tiny_gpt, wait_ready};
use flotilla_tests::{rss_kib, wait_until};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster3().await;
    let v1 = register(&cluster, "tiny-gpt", &tiny_gpt(&dir.path().join("v1"), 1)).await;
    deploy(
        &cluster,
        json!({"name": "small", "model": "tiny-gpt", "replicas": 1, "max_batch": 1}),
    )
    .await;
    wait_ready(&cluster, "small", &v1, 1).await;

    // Resident memory before, at the peak of (sampled every 100 ms) and after the overload.
    let before = rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = rss_kib();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                peak = peak.max(rss_kib());
            }
            peak
        })
    };

    // One replica takes 4 requests at once; send 40 times that.
    let client = reqwest::Client::new();
    let api = cluster.node(1).api_url();
    let calls = (0..160).map(|i| {
        client
            .post(format!("{api}/v1/completions"))
            .json(&json!({"model": "small", "prompt": format!("p{i}"), "max_tokens": 50}))
            .send()
    });
    let mut ok = 0;
    let mut refused = 0;
    for r in futures::future::join_all(calls).await {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                let v: Value = r.json().await.unwrap();
                assert!(v["error"]["message"].is_string());
                refused += 1;
            }
            other => panic!("unexpected status {other}: {}", r.text().await.unwrap()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap().max(rss_kib());
    println!("{ok} answered, {refused} refused");
    assert!(refused > 0 && ok > 0);
    // Node 1's router counted the refusals under the deployment.
    let (_, stats) = get(&cluster, 1, "/api/v1/serving").await;
    assert_eq!(
        stats["by_deployment"]["small"]["rejected"].as_u64(),
        Some(refused),
        "{stats}"
    );
    // Load stopped: answered again within 5 s.
    wait_until(
        Duration::from_secs(5),
        "recovery after overload",
        || async {
            let (code, _) = post(
                &cluster,
                1,
                "/v1/completions",
                &json!({"model": "small", "prompt": "again", "max_tokens": 5}),
            )
            .await;
            code == 200
        },
    )
    .await
    .unwrap();
    let after = rss_kib();
    eprintln!(
        "resident memory: {} MiB before the overload, {} MiB at its peak, {} MiB after recovery",
        before / 1024,
        peak / 1024,
        after / 1024
    );
    // What the overload may hold at once: 160 requests of ~100 bytes and their 50-token
    // answers; refused ones are answered at once, and the rest wait in bounded queues (the
    // replica's 4 places, the router's max_outstanding) rather than piling up. Per connection,
    // hyper's and reqwest's buffers and the tasks' futures are tens of KiB on each side, so
    // 160 connections cost a few tens of MiB at most; the allocator's per-thread arenas add
    // some more. 256 MiB is several times all of that, and far below what an unbounded queue
    // of copies would take under sustained load.
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 256,
        "resident memory grew by {growth_mib} MiB during the overload ({} → {} MiB)",
        before / 1024,
        peak / 1024
    );
    cluster.shutdown().await.unwrap();
}
