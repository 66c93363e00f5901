//! Distributed training on an in-process 3-node cluster, each number next to its baseline from
//! the same run:
//!
//! - samples/s of a sync `train` job with 1, 2 and 3 workers (the same model and data, a fixed
//!   per-device batch), and the share of wall time lost to synchronisation: 1 − (wall-clock
//!   samples/s ÷ the samples/s of the slowest worker's compute alone, step by step);
//! - heterogeneity: with one of three trainers slowed to half speed (`train_slowdown = 2`), the
//!   samples/s of a sync job whose shares follow measured throughput vs one with equal shares;
//! - checkpoint time and its share of training time, and the recovery time after the node of
//!   a parameter-server shard is killed;
//! - elasticity: samples/s of a sync job on two nodes, and after a third node comes up and
//!   joins it (every trainer slowed 4x, so that the nodes sharing this machine's cores behave
//!   like machines of their own);
//! - parameter push + pull throughput between two nodes (a parameter-server shard on one,
//!   `RemoteParams` on the other: a pull of the shard and a push of a gradient of the same size
//!   per round) vs raw loopback TCP moving the same bytes both ways.
//!
//! Run: `cargo bench -p flotilla-tests --bench training --profile dev` (the dev profile
//! optimises the kernels; a release build would rebuild rocksdb). `-- join` runs only the
//! elasticity measurement, `-- push-pull` only the push + pull one. `-- quick` runs every
//! measurement smaller: 200 records of the 5 intents, one epoch per throughput job, shorter
//! checkpoint and join runs, 5 push + pull rounds.

// A benchmark reports on stdout and may panic on a broken setup.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_actors::mesh::Mesh;
use flotilla_actors::remote::spawn_remote;
use flotilla_actors::training::client::ParamClient;
use flotilla_actors::training::coordinator::params::{
    optimizer_json, shard_actor, RemoteParams, PARAM_SERVER_ROLE,
};
use flotilla_kernels::optim::{OptimizerConfig, SgdConfig};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::control::RemoteError;
use flotilla_protocol::services::training::{RequestBody, ResponseBody};
use flotilla_protocol::training::{Consistency, GradPayload, LrSchedule, WorkerId};
use flotilla_protocol::training::{LrArgs, ShardArgs};
use flotilla_tests::{training, wait_until, TestCluster};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(600);
/// Parameters moved per pull and per push (4 bytes each).
const PARAMS: usize = 500_000;

/// The sizes of the runs: the full benchmark's, or quick mode's (`-- quick`).
#[derive(Clone, Copy)]
struct Scale {
    /// Banking77 queries per intent in `bank5@1` (5 intents).
    per_label: usize,
    /// Epochs of the throughput and heterogeneity jobs.
    epochs: u32,
    /// Push + pull rounds measured.
    rounds: usize,
    /// Epochs of the checkpointing run and of the run whose shard node is killed.
    checkpoint_epochs: (u32, u32),
    /// Epochs of the join run, and the step after which the third node comes up.
    join_epochs: u32,
    join_after_step: u64,
}

const FULL: Scale = Scale {
    per_label: 100,
    epochs: 2,
    rounds: 20,
    checkpoint_epochs: (3, 4),
    join_epochs: 6,
    join_after_step: 40,
};

const QUICK: Scale = Scale {
    per_label: 40,
    epochs: 1,
    rounds: 5,
    // Long enough (about 2 s and 5 s here) for the once-a-second checkpoint tick to fire.
    checkpoint_epochs: (3, 8),
    join_epochs: 8,
    join_after_step: 15,
};

async fn train(cluster: &TestCluster, scale: Scale, workers: u32) -> Value {
    train_with(cluster, scale, workers, true).await
}

/// The benchmarks' sync job: a small classifier on `bank5@1`, nothing held out.
fn bank5_spec(workers: u32, per_device_batch: u32, epochs: u32) -> Value {
    json!({
        "kind": "train",
        "train": {
            "model": { "new": {
                "architecture": "classifier", "vocab_size": 128, "hidden_size": 64,
                "layers": 2, "heads": 4, "max_seq_len": 64, "num_labels": 5
            }},
            "dataset": { "name": "bank5@1", "text_field": "text", "label_field": "label",
                         "eval_fraction": 0.0 },
            "args": { "per_device_batch": per_device_batch, "epochs": epochs,
                      "learning_rate": 0.002, "seed": 3 },
            "cluster": { "workers_min": 1, "workers_max": workers, "ps_shards": 2, "mode": "sync" }
        }
    })
}

async fn train_with(cluster: &TestCluster, scale: Scale, workers: u32, adaptive: bool) -> Value {
    let mut spec = bank5_spec(workers, 16, scale.epochs);
    spec["train"]["cluster"]["adaptive_shares"] = json!(adaptive);
    training::train(cluster, 0, &spec, DEADLINE).await
}

/// A converged cluster of `n` nodes (customised by `customize`) holding `scale.per_label`
/// Banking77 records of each of 5 intents as `bank5@1`.
async fn bank5_cluster(
    n: usize,
    scale: Scale,
    customize: Option<flotilla_tests::Customize>,
) -> TestCluster {
    let cluster = TestCluster::start_with(n, customize).await.unwrap();
    wait_until(Duration::from_secs(60), "convergence", || {
        cluster.converged()
    })
    .await
    .unwrap();
    training::upload_csv(
        &cluster,
        0,
        "bank5",
        training::banking_subset(5, scale.per_label),
        "&records_per_shard=100",
    )
    .await;
    cluster
}

/// MB/s of `rounds` pulls and pushes of `PARAMS` floats between node 0 and a shard on node 1.
async fn push_pull(cluster: &TestCluster, rounds: usize) -> f64 {
    let job = JobId("bench-push-pull".into());
    let host = cluster.node(1).node_id();
    let mesh: Arc<dyn Mesh> = Arc::new(cluster.node(0).mesh.clone());
    let args = ShardArgs {
        job: job.clone(),
        shard: 0,
        consistency: Consistency::Async,
        max_consecutive_nonfinite: 3,
        lr: LrArgs {
            peak: 1e-6,
            warmup: 0,
            total: 1_000_000,
            decay: LrSchedule::Linear,
        },
        save_every: 0,
        clip_norm: None,
        adaptive_clip: None,
        optimizer_json: optimizer_json(&OptimizerConfig::Sgd(SgdConfig::default())),
        init: vec![0.5; PARAMS],
    };
    spawn_remote::<_, RequestBody, std::result::Result<ResponseBody, RemoteError>>(
        mesh.clone(),
        host.clone(),
        PARAM_SERVER_ROLE,
        &shard_actor(&job, 0),
        &args,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let params = RemoteParams::new(
        mesh,
        &job,
        &[host],
        PARAMS,
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    let w = WorkerId(0);
    params.join(0, w).await.unwrap();
    let grad = vec![0.001f32; PARAMS];
    // One warm-up round, then the measured ones.
    let mut version = None;
    let mut started = Instant::now();
    for round in 0..=rounds {
        if round == 1 {
            started = Instant::now(); // after the warm-up round
        }
        let p = params.pull(0, w, version).await.unwrap();
        assert_eq!(p.values.len(), PARAMS);
        params
            .push(0, w, p.version, 1, GradPayload::F32(grad.clone()))
            .await
            .unwrap();
        version = Some(p.version);
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes = rounds as f64 * 2.0 * (PARAMS * 4) as f64;
    bytes / secs / 1e6
}

/// MB/s of the same bytes over raw loopback TCP: send a buffer, get it back, per round.
async fn raw_tcp(rounds: usize) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = PARAMS * 4;
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; n];
        for _ in 0..=rounds {
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let out = vec![7u8; n];
    let mut back = vec![0u8; n];
    let started = Instant::now();
    for _ in 0..=rounds {
        s.write_all(&out).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    (rounds + 1) as f64 * 2.0 * n as f64 / secs / 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    // `-- push-pull` measures only the parameter push + pull path (for profiling it).
    // `-- join` measures only the throughput before and after a node joins a running job.
    // `-- checkpoints` measures only checkpoint time and recovery from a killed shard node.
    let scale = if std::env::args().any(|a| a == "quick") {
        QUICK
    } else {
        FULL
    };
    let rounds = scale.rounds;
    if std::env::args().any(|a| a == "join") {
        node_added(scale).await;
        return;
    }
    if std::env::args().any(|a| a == "checkpoints") {
        checkpoints_and_recovery(scale).await;
        return;
    }
    if std::env::args().any(|a| a == "push-pull") {
        let cluster = TestCluster::start(2).await.unwrap();
        wait_until(Duration::from_secs(60), "convergence", || {
            cluster.converged()
        })
        .await
        .unwrap();
        let mesh = push_pull(&cluster, rounds).await;
        let tcp = raw_tcp(rounds).await;
        println!(
            "parameter push + pull, {PARAMS} f32 each way per round, {rounds} rounds: {mesh:.1} MB/s over the mesh vs {tcp:.1} MB/s raw loopback TCP (ratio {:.3})",
            mesh / tcp
        );
        cluster.shutdown().await.unwrap();
        return;
    }
    let cluster = bank5_cluster(3, scale, None).await;

    println!(
        "sync training, {} Banking77 records x {} epoch(s), per-device batch 16, 2 shards:",
        5 * scale.per_label,
        scale.epochs
    );
    println!("workers  samples  wall s  samples/s  compute-only samples/s  sync overhead");
    let mut one = None;
    for workers in 1..=3u32 {
        let r = train(&cluster, scale, workers).await;
        let wall = r["samples_per_s"].as_f64().unwrap();
        let compute = r["compute_samples_per_s"].as_f64().unwrap_or(f64::NAN);
        let overhead = 1.0 - wall / compute;
        let base = *one.get_or_insert(wall);
        println!(
            "{workers:>7}  {:>7}  {:>6.2}  {wall:>9.1}  {compute:>22.1}  {:>12.1}%   ({:.2}x one worker)",
            r["samples"],
            r["train_seconds"].as_f64().unwrap(),
            overhead * 100.0,
            wall / base
        );
    }

    let mesh = push_pull(&cluster, rounds).await;
    cluster.shutdown().await.unwrap();

    // Heterogeneity: node 2's trainer runs at half speed.
    let slowed: flotilla_tests::Customize = Box::new(|i, c| {
        if i == 2 {
            c.train_slowdown = 2.0;
        }
    });
    let cluster = bank5_cluster(3, scale, Some(slowed)).await;
    let equal = train_with(&cluster, scale, 3, false).await["samples_per_s"]
        .as_f64()
        .unwrap();
    let adaptive = train_with(&cluster, scale, 3, true).await["samples_per_s"]
        .as_f64()
        .unwrap();
    println!();
    println!(
        "one of 3 trainers at half speed, sync: adaptive shares {adaptive:.1} samples/s vs equal shares {equal:.1} samples/s (ratio {:.2}; the target is 1.3, ideal 1.5-1.67)",
        adaptive / equal
    );
    let tcp = raw_tcp(rounds).await;
    println!();
    println!(
        "parameter push + pull, {PARAMS} f32 each way per round, {rounds} rounds: {mesh:.1} MB/s over the mesh vs {tcp:.1} MB/s raw loopback TCP (ratio {:.3})",
        mesh / tcp
    );
    cluster.shutdown().await.unwrap();
    checkpoints_and_recovery(scale).await;
    node_added(scale).await;
}

/// How long a trainer sleeps per unit of compute in [`node_added`]: every node of the
/// benchmark shares this machine's cores, so without it a joining node would bring no compute
/// of its own. At 4 each trainer computes a quarter of the time, as if on a machine of its own
/// a quarter as fast, and two of them leave the cores mostly idle.
const JOIN_SLOWDOWN: f64 = 4.0;

/// Samples/s of a sync job on two nodes, then after a third node comes up and joins it (the
/// same run; the rates come from the step events' timestamps).
async fn node_added(scale: Scale) {
    let slowed: flotilla_tests::Customize = Box::new(|_, c| c.train_slowdown = JOIN_SLOWDOWN);
    let mut cluster = bank5_cluster(2, scale, Some(slowed)).await;
    let spec = bank5_spec(3, 8, scale.join_epochs);
    let id = training::submit_job(&cluster, 0, &spec).await;
    // (at ms, step) of each progress event.
    let steps = |events: Vec<(u64, String)>| -> Vec<(u64, u64)> {
        events
            .into_iter()
            .filter_map(|(at, t)| {
                let n = t.strip_prefix("step ")?.split('/').next()?.parse().ok()?;
                Some((at, n))
            })
            .collect()
    };
    // A third of the run on two workers, then the node comes up.
    wait_until(DEADLINE, "a third of the run", || async {
        steps(training::events(&cluster, 0, &id).await)
            .last()
            .is_some_and(|(_, n)| *n >= scale.join_after_step)
    })
    .await
    .unwrap();
    let joined_ms = flotilla_actors::clock::wall_ms();
    cluster.add_node().await.unwrap();
    let owner = training::coordinator_index(&cluster, &id).await;
    let r = training::job_result(&cluster, owner, &id, DEADLINE).await;
    let events = training::events(&cluster, owner, &id).await;
    let events_at = |events: &[(u64, String)], prefix: &str| {
        events.iter().find(|e| e.1.starts_with(prefix)).map(|e| e.0)
    };
    let points = steps(events.clone());
    let global = r["samples"].as_f64().unwrap() / points.last().map_or(1, |p| p.1 + 1) as f64;
    // Steps per second over the points inside a window, times the samples of a step.
    let rate = |from: u64, to: u64| {
        let inside: Vec<&(u64, u64)> = points
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .collect();
        match (inside.first(), inside.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (b.1 - a.1) as f64 * global / ((b.0 - a.0) as f64 / 1000.0)
            }
            _ => f64::NAN,
        }
    };
    let first = points.first().map_or(0, |p| p.0);
    let before = rate(first, joined_ms);
    // After: from the moment the joined node's trainer started (it needs a few seconds to
    // come up, be seen and get one).
    let started = r["joined"][0]["worker"].as_u64().and_then(|w| {
        let text = format!("trainer {w} started on ");
        events_at(&events, &text)
    });
    let after = rate(started.unwrap_or(joined_ms + 5_000), u64::MAX);
    println!();
    println!(
        "a node added mid-job (sync, every trainer slowed {JOIN_SLOWDOWN}x to stand in for its own machine): {before:.1} samples/s on 2 workers, {after:.1} samples/s after the third joined (ratio {:.2}; ideal 1.5); joined: {}",
        after / before,
        r["joined"]
    );
    cluster.shutdown().await.unwrap();
}

/// Checkpoint time and its share of training time (a sync run checkpointing every 10 steps),
/// and the recovery after the node of a parameter-server shard is killed: from the kill to the
/// shards restored, and the restore alone.
async fn checkpoints_and_recovery(scale: Scale) {
    let mut cluster = bank5_cluster(3, scale, None).await;
    let mut spec = bank5_spec(3, 4, scale.checkpoint_epochs.0);
    spec["train"]["args"]["save_every"] = json!(10);
    spec["train"]["cluster"]["ps_shards"] = json!(3);
    let r = training::train(&cluster, 0, &spec, DEADLINE).await;
    let (ckpt, train_s) = (
        r["checkpoint_seconds"].as_f64().unwrap(),
        r["train_seconds"].as_f64().unwrap(),
    );
    let taken = r["checkpoints"].as_array().unwrap();
    println!();
    println!(
        "checkpoints: {} of {} bytes each in {ckpt:.3} s, {:.1} % of {train_s:.2} s of training (sync, 3 shards on 3 nodes, every 10 steps at most once a second)",
        taken.len(),
        taken.first().map_or(json!(0), |c| c["bytes"].clone()),
        100.0 * ckpt / train_s
    );

    // The same run; once a checkpoint exists, the node of a shard (not the owner, not the
    // coordinator) is killed.
    spec["train"]["args"]["epochs"] = json!(scale.checkpoint_epochs.1);
    let id = training::submit_job(&cluster, 0, &spec).await;
    // Checkpoints are taken on the coordinator's once-a-second progress tick, so a run that
    // ends within its first second may take none: stop waiting when the job ends, and say so.
    let saved = |events: &[(u64, String)]| events.iter().any(|e| e.1.contains(" saved on "));
    let ended = |events: &[(u64, String)]| {
        events.iter().any(|e| {
            e.1.starts_with("task ")
                && (e.1.contains(" succeeded on ") || e.1.contains(" attempts: "))
        })
    };
    wait_until(DEADLINE, "a checkpoint or the job's end", || async {
        let events = training::events(&cluster, 0, &id).await;
        saved(&events) || ended(&events)
    })
    .await
    .unwrap();
    let events = training::events(&cluster, 0, &id).await;
    assert!(
        saved(&events),
        "the run ended before its first checkpoint (make checkpoint_epochs.1 longer): {events:?}"
    );
    let owner = training::coordinator_index(&cluster, &id).await;
    let victim = (1..3).find(|i| *i != owner).unwrap();
    let killed_ms = flotilla_actors::clock::wall_ms();
    cluster.kill(victim).await;
    let r = training::job_result(&cluster, owner, &id, DEADLINE).await;
    let restored_ms = training::events(&cluster, owner, &id)
        .await
        .iter()
        .find(|e| e.1.contains("every shard restored"))
        .map(|e| e.0)
        .unwrap();
    let restore = &r["restores"][0];
    println!(
        "recovery after killing a shard's node: {:.2} s from the kill to every shard restored (the restore itself {:.3} s, from checkpoint {}); the run completed, ledger: {}",
        restored_ms.saturating_sub(killed_ms) as f64 / 1000.0,
        restore["seconds"].as_f64().unwrap_or(f64::NAN),
        restore["checkpoint"],
        r["ledger"]
    );
    cluster.shutdown().await.unwrap();
}
