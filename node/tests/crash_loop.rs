//! SIGKILL crash loop on the real binary: a `flotilla up` child takes catalog writes and data
//! uploads from a client until it is killed with SIGKILL at a random moment; it is started
//! again on the same data dir, and every write it acknowledged must be there — the catalog
//! and the shard store save before they answer. Iterations: `FLOTILLA_CRASH_ITERATIONS`
//! (default 50), the seed of the kill times `FLOTILLA_CRASH_SEED` (printed, to reproduce).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::json;

const START_DEADLINE: Duration = Duration::from_secs(60);

fn flotilla() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOTILLA_") {
            c.env_remove(k);
        }
    }
    c.env("FLOTILLA_LOG", "error");
    c
}

/// A started daemon and its API address.
struct Daemon {
    child: Child,
    api: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(data_dir: &std::path::Path) -> Daemon {
    let mut c = flotilla();
    c.args(["up", "--data-dir", data_dir.to_str().unwrap()])
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .args(["--mdns", "false"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let api = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("the daemon's api line");
            if let Some(url) = line.trim().strip_prefix("api:") {
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return url.trim().to_string();
            }
        }
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let ready = client
            .get(format!("{api}/health/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Daemon { child, api }
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
