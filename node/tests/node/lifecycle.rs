//! The daemon's life on the real binary: SIGTERM during a training run (a last, complete
//! checkpoint, no new work taken, exit 0 within the grace period), and the systemd
//! notifications (`READY=1`, `WATCHDOG=1`, `STOPPING=1` on `NOTIFY_SOCKET`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use flotilla_actors::training::checkpoint;
use flotilla_protocol::jobs::JobId;
use serde_json::json;

use crate::common::{event_texts, eventually, start, submit, tiny_csv, upload};

/// The grace period the tests give; the process must be gone within it plus [`MARGIN`]
/// (the leave announcement, the store flush).
const GRACE: Duration = Duration::from_secs(20);
const MARGIN: Duration = Duration::from_secs(15);

/// A small async run that would go on for minutes, checkpointing only when it is stopped
/// (`save_every` far beyond what it reaches), so a checkpoint found afterwards is the
/// shutdown's.
fn long_run(dataset: &str) -> serde_json::Value {
    json!({
        "kind": "train",
        "train": {
            "model": { "new": {
                "architecture": "classifier", "vocab_size": 128, "hidden_size": 32,
                "layers": 1, "heads": 2, "max_seq_len": 32, "num_labels": 3
            }},
            "dataset": { "name": dataset, "text_field": "text", "label_field": "label" },
            "args": {
                "per_device_batch": 4, "epochs": 500, "learning_rate": 0.003,
                "save_every": 1_000_000, "seed": 3
            },
            "cluster": { "workers_min": 1, "workers_max": 1, "ps_shards": 1, "mode": "async" }
        }
    })
}

/// The id checkpoints of catalog job `job` are kept under (`train::job::run`'s lineage).
fn lineage(job: &str) -> JobId {
    JobId(format!(
        "train-{}",
        &blake3::hash(job.as_bytes()).to_hex()[..16]
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_the_training_run_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    // Slowed trainers: the run is still going when the signal comes.
    std::fs::write(&config, "[node]\ntrain_slowdown = 20.0\n").unwrap();
    let global = ["--config", config.to_str().unwrap()];
    // Two nodes: a checkpoint is written to two holders (`checkpoint::REPLICAS`), so a node
    // alone cannot save one.
    let first = start(
        &dir.path().join("a"),
        &global,
        &["--open", "--shutdown-grace", "20s"],
        &[],
    )
    .await;
    let second = start(
        &dir.path().join("b"),
        &global,
        &["--open", "--shutdown-grace", "20s", "--join", &first.join],
        &[],
    )
    .await;
    let formed = eventually(Duration::from_secs(60), || {
        let api = first.api.clone();
        async move {
            crate::common::get_json(&api, "/api/v1/cluster").await["counts"]["Alive"].as_u64()
                == Some(2)
        }
    })
    .await;
    assert!(formed, "the two nodes never saw each other");
    upload(&first.api, "tiny", tiny_csv(60)).await;
    let id = submit(&first.api, &long_run("tiny@1")).await;
    let api = first.api.clone();
    let stepping = eventually(Duration::from_secs(120), || {
        let (api, id) = (api.clone(), id.clone());
        async move {
            event_texts(&api, &id)
                .await
                .iter()
                .filter(|t| t.starts_with("step "))
                .count()
                >= 2
        }
    })
    .await;
    assert!(
        stepping,
        "the run never reported steps: {:?}",
        event_texts(&first.api, &id).await
    );
    // The node whose executor runs the job's task coordinates the run: that one is stopped.
    let runs_it = |api: String, id: String| async move {
        crate::common::get_json(&api, &format!("/api/v1/executions?job={id}")).await["running"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    };
    let (mut daemon, other, data_dir) = if runs_it(first.api.clone(), id.clone()).await {
        (first, second, dir.path().join("a"))
    } else {
        assert!(
            runs_it(second.api.clone(), id.clone()).await,
            "neither node runs the job"
        );
        (second, first, dir.path().join("b"))
    };

    let signalled = Instant::now();
    daemon.signal("TERM");
    // The signal is in once the node says it is shutting down (or has closed its server):
    // signals are delivered asynchronously, so a request sent at once may come first.
    let api = daemon.api.clone();
    let draining = eventually(Duration::from_secs(10), || {
        let api = api.clone();
        async move {
            match reqwest::Client::new()
                .get(format!("{api}/health/status"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(r) => r.text().await.unwrap_or_default().contains("shutting_down"),
                Err(_) => true,
            }
        }
    })
    .await;
    assert!(draining, "the node never said it was shutting down");
    // Nothing new is taken once the signal is in: a refusal, or no answer at all once the
    // server has closed — never a new job.
    let late = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", daemon.api))
        .timeout(Duration::from_secs(5))
        .json(&long_run("tiny@1"))
        .send()
        .await;
    if let Ok(r) = late {
        let code = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(code, 503, "a submission after SIGTERM: {body}");
        assert!(body.contains("shutting_down"), "{body}");
    }
    let status = daemon.wait_exit(GRACE + MARGIN).await;
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM"));
    assert!(status.success(), "exit status {status:?}");
    let lines: Vec<String> = daemon.lines.try_iter().collect();
    assert!(
        lines.iter().any(|l| l.contains("node stopped")),
        "{lines:?}"
    );

    // The checkpoint the shutdown wrote is in the store and whole: every blob is there and
    // matches the manifest's hash.
    let store = flotilla_node::store::RocksStore::open(&data_dir.join("db")).unwrap();
    let (manifest, _) = checkpoint::latest_valid(&store, &lineage(&id))
        .unwrap()
        .expect("a complete checkpoint of the run");
    assert!(manifest.step > 0, "{manifest:?}");
    drop(store);

    // Restarted, the node shows the run's events: the checkpoint saved on the way down, and
    // the attempt ended saying which checkpoint a new attempt resumes from.
    let daemon = start(&data_dir, &[], &["--open", "--join", &other.join], &[]).await;
    let saved = format!("checkpoint {} saved", manifest.step);
    let stopped = format!("the run stopped at checkpoint {}", manifest.step);
    // The attempt's end reaches the job's owner as a task report (delivered again after the
    // restart if the owner was the node that stopped), so it may take a moment.
    let told = eventually(Duration::from_secs(60), || {
        let (api, id, saved, stopped) = (
            daemon.api.clone(),
            id.clone(),
            saved.clone(),
            stopped.clone(),
        );
        async move {
            let texts = event_texts(&api, &id).await;
            texts.iter().any(|t| t.contains(&saved)) && texts.iter().any(|t| t.contains(&stopped))
        }
    })
    .await;
    let texts = event_texts(&daemon.api, &id).await;
    assert!(told, "{texts:?}");
}

/// Receives datagrams on `rx` until one equals `want`, at most `limit`; everything received.
fn wait_for(rx: &UnixDatagram, want: &str, limit: Duration) -> (bool, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = rx.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return (true, seen);
            }
        }
    }
    (false, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let rx = UnixDatagram::bind(&socket).unwrap();
    let mut daemon = start(
        &dir.path().join("node"),
        &[],
        &["--open"],
        &[
            ("NOTIFY_SOCKET", socket.to_str().unwrap()),
            // A watchdog ping every second.
            ("WATCHDOG_USEC", "2000000"),
        ],
    )
    .await;
    let rx = std::sync::Arc::new(rx);
    let recv = |want: &'static str, limit: Duration| {
        let rx = rx.clone();
        tokio::task::spawn_blocking(move || wait_for(&rx, want, limit))
    };
    // `start` returns once the node answers ready: READY=1 was sent before that.
    let (ready, seen) = recv("READY=1", Duration::from_secs(10)).await.unwrap();
    assert!(ready, "{seen:?}");
    let (watchdog, seen) = recv("WATCHDOG=1", Duration::from_secs(10)).await.unwrap();
    assert!(watchdog, "{seen:?}");
    daemon.signal("TERM");
    let (stopping, seen) = recv("STOPPING=1", Duration::from_secs(10)).await.unwrap();
    assert!(stopping, "{seen:?}");
    let status = daemon
        .wait_exit(GRACE + MARGIN)
        .await
        .expect("the daemon exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(
        &dir.path().join("node"),
        &[],
        &["--open", "--shutdown-grace", "60s"],
        &[],
    )
    .await;
    // An upload whose body never completes: the graceful shutdown waits for it (up to the
    // grace period).
    let addr = daemon.api.trim_start_matches("http://").to_string();
    let mut upload = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        upload,
        "POST /api/v1/data?name=slow&format=jsonl&text_field=text HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Length: 100000\r\n\r\n{{\"text\": \"one\"}}\n"
    )
    .unwrap();
    upload.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.signal("TERM");
    assert!(
        daemon.wait_exit(Duration::from_secs(3)).await.is_none(),
        "the first signal waits for the request in flight"
    );
    let second = Instant::now();
    daemon.signal("INT");
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the second signal ends the process");
    assert_eq!(
        status.code(),
        Some(130),
        "{status:?} after {:?}",
        second.elapsed()
    );
    drop(upload);
}
