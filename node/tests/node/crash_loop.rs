//! SIGKILL crash loop on the real binary: a `flotilla up` child takes catalog writes and data
//! uploads from a client until it is killed with SIGKILL at a random moment; it is started
//! again on the same data dir, and every write it acknowledged must be there — the catalog
//! and the shard store save before they answer. Iterations: `FLOTILLA_CRASH_ITERATIONS`
//! (default 50), the seed of the kill times `FLOTILLA_CRASH_SEED` (printed, to reproduce).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use crate::common::Daemon;

use rand::{Rng, SeedableRng};
use serde_json::json;

/// A daemon on `data_dir` with the default (admitted) configuration.
async fn start(data_dir: &std::path::Path) -> Daemon {
    crate::common::start(data_dir, &[], &[], &[]).await
}

fn hex(seed: u64) -> String {
    blake3::hash(&seed.to_le_bytes()).to_hex().to_string()
}

/// What the daemon acknowledged before it died.
#[derive(Default)]
struct Acked {
    models: Vec<(String, u64)>,
    datasets: Vec<(String, usize)>,
}

/// Writes until the task is dropped; returns through `acked` what was acknowledged.
async fn write_until_killed(
    api: String,
    round: usize,
    acked: std::sync::Arc<std::sync::Mutex<Acked>>,
) {
    let client = reqwest::Client::new();
    for k in 1u64.. {
        let name = format!("crash-{round}");
        let body = json!({ "artifact_hashes": { "weights": hex(k) }, "created_at_ms": k });
        let put = client
            .put(format!("{api}/api/v1/catalog/models/{name}/{k}"))
            .json(&body)
            .send()
            .await;
        match put {
            Ok(r) if r.status().is_success() => acked.lock().unwrap().models.push((name, k)),
            _ => return, // the daemon is gone
        }
        if k % 4 == 0 {
            let data = format!("ds-{round}-{k}");
            let records: String = (0..10)
                .map(|i| format!("{{\"text\": \"row {i} of {k}\"}}\n"))
                .collect();
            let up = client
                .post(format!(
                    "{api}/api/v1/data?name={data}&format=jsonl&text_field=text"
                ))
                .body(records)
                .send()
                .await;
            match up {
                Ok(r) if r.status().as_u16() == 201 => {
                    acked.lock().unwrap().datasets.push((data, 10))
                }
                _ => return,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill() {
    let iterations: usize = std::env::var("FLOTILLA_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("FLOTILLA_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash loop: {iterations} iterations, FLOTILLA_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    let mut all = Acked::default();
    let mut last = Acked::default();
    let started = Instant::now();
    for round in 0..iterations {
        let daemon = start(&data_dir).await;
        // What the last round acknowledged just before its SIGKILL is there (everything is
        // checked again at the end).
        check(&daemon.api, &last, round, seed).await;
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Acked::default()));
        let writer = tokio::spawn(write_until_killed(daemon.api.clone(), round, acked.clone()));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..600))).await;
        // SIGKILL: no shutdown path runs, nothing is flushed on the way out.
        drop(daemon);
        let _ = tokio::time::timeout(Duration::from_secs(30), writer).await;
        let a = std::mem::take(&mut *acked.lock().unwrap());
        all.models.extend(a.models.iter().cloned());
        all.datasets.extend(a.datasets.iter().cloned());
        last = a;
    }
    let daemon = start(&data_dir).await;
    check(&daemon.api, &all, iterations, seed).await;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    eprintln!(
        "crash loop: {iterations} kills, {} catalog writes and {} uploads acknowledged and kept, \
         {:.1} iterations per minute",
        all.models.len(),
        all.datasets.len(),
        iterations as f64 / minutes
    );
}

/// GETs `url`, waiting out the API's rate limit (`429` with `Retry-After`) as a client should:
/// a check of thousands of entries outruns the default 1,000 requests per second.
async fn get(client: &reqwest::Client, url: String) -> reqwest::Response {
    for _ in 0..60 {
        let r = client.get(&url).send().await.unwrap();
        if r.status().as_u16() != 429 {
            return r;
        }
        let wait = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(wait.min(5))).await;
    }
    panic!("{url}: still rate limited after a minute");
}

async fn check(api: &str, acked: &Acked, round: usize, seed: u64) {
    let client = reqwest::Client::new();
    for (name, version) in &acked.models {
        let r = get(
            &client,
            format!("{api}/api/v1/catalog/models/{name}/{version}"),
        )
        .await;
        assert_eq!(
            r.status().as_u16(),
            200,
            "{name}@{version}, acknowledged before a SIGKILL, is missing after round {round} \
             (FLOTILLA_CRASH_SEED={seed})"
        );
    }
    for (name, records) in &acked.datasets {
        let r = get(&client, format!("{api}/api/v1/data/{name}/1/export")).await;
        assert_eq!(
            r.status().as_u16(),
            200,
            "dataset {name}, acknowledged before a SIGKILL, is missing after round {round} \
             (FLOTILLA_CRASH_SEED={seed})"
        );
        let text = r.text().await.unwrap();
        assert_eq!(
            text.lines().count(),
            *records,
            "dataset {name} lost records after round {round} (FLOTILLA_CRASH_SEED={seed})"
        );
    }
}
