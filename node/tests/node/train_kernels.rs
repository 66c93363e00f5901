//! Distributed sync training on the kernels, in one process: two parameter-server shards with
//! the kernels' AdamW and three trainers computing a transformer classifier's gradients on
//! Banking77 records follow a single-process run with the same seed and global batch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::data::record::Record;
use flotilla_actors::mesh::Mesh;
use flotilla_actors::remote::spawn_remote;
use flotilla_actors::training::assignment::permutation;
use flotilla_actors::training::client::{LocalParams, ParamClient};
use flotilla_actors::training::coordinator::dispatch::{dispatch_actor, DispatchEndpoint};
use flotilla_actors::training::coordinator::params::{
    optimizer_json, shard_actor, RemoteParams, PARAM_SERVER_ROLE,
};
use flotilla_actors::training::coordinator::trainers::{trainer_actor, TRAINER_ROLE};
use flotilla_actors::training::dispatch::{self, Dispatch, LocalDispatch};
use flotilla_actors::training::elastic::{self, Role, Why};
use flotilla_actors::training::optim::ShardOptimizer;
use flotilla_actors::training::optim::{FlatOptimizer, LrPlan};
use flotilla_actors::training::param_server::{self, core::Shard};
use flotilla_actors::training::partition;
use flotilla_actors::training::trainer::{self, GradientSource, Outcome};
use flotilla_kernels::models::config::{NormPlacement, Pooling};
use flotilla_kernels::models::encoder::EncoderConfig;
use flotilla_kernels::optim::{AdamWConfig, OptimizerConfig};
use flotilla_kernels::tokenize::CharTokenizer;
use flotilla_node::cli::demo::local_node_config;
use flotilla_node::models::build::{ModelArgs, TokenizerArgs};
use flotilla_node::models::gradient::ClassifierSource;
use flotilla_node::train::checkpoints::CHECKPOINT_STORE;
use flotilla_node::RunningNode;
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::control::RemoteError;
use flotilla_protocol::services::training::{RequestBody, ResponseBody};
use flotilla_protocol::training::{LrArgs, ShardArgs, TrainerArgs};

type Reply = Result<ResponseBody, RemoteError>;
use flotilla_protocol::training::{Consistency, LrSchedule, Precision, WorkerId};

const CLASSES: usize = 5;
const PER_CLASS: usize = 100;
const GLOBAL: u32 = 30;
const EPOCHS: u32 = 2;
const SEED: u64 = 7;

/// The first `PER_CLASS` records of each of the first `CLASSES` labels of Banking77's training set.
fn records() -> Vec<Record> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/banking77-train.csv");
    let mut reader =
        csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut per_label: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row.unwrap();
        let (text, label) = (row[0].to_string(), row[1].to_string());
        if per_label.len() == CLASSES && !per_label.contains_key(&label) {
            continue;
        }
        let n = per_label.entry(label.clone()).or_default();
        if *n < PER_CLASS {
            *n += 1;
            out.push(Record::labelled(out.len() as u64, text, label));
        }
    }
    assert_eq!(out.len(), CLASSES * PER_CLASS);
    out
}

/// The model, its tokenizer's vocabulary, the classes and the initial parameters.
struct Setup {
    cfg: EncoderConfig,
    chars: Vec<char>,
    classes: BTreeMap<String, u32>,
    init: Vec<f32>,
}

impl Setup {
    fn new(data: &[Record]) -> Setup {
        let corpus: String = data.iter().map(|r| r.field("text").unwrap()).collect();
        let tokenizer = CharTokenizer::from_corpus(&corpus).unwrap();
        let labels: BTreeSet<&str> = data.iter().map(|r| r.field("label").unwrap()).collect();
        let classes = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.to_string(), i as u32))
            .collect();
        let cfg = EncoderConfig {
            vocab: tokenizer.vocab_size(),
            context: 48,
            width: 32,
            heads: 2,
            layers: 1,
            ffn: 64,
            classes: CLASSES,
            pooling: Pooling::Mean,
            norm: NormPlacement::Pre,
        };
        let init = cfg.build(SEED).unwrap().params_flat();
        Setup {
            cfg,
            chars: tokenizer.chars().to_vec(),
            classes,
            init,
        }
    }

    fn source(&self) -> ClassifierSource {
        let tokenizer = CharTokenizer::from_chars(self.chars.clone()).unwrap();
        let encode = Box::new(move |t: &str| tokenizer.encode(t).map_err(|e| e.to_string()));
        ClassifierSource::new(
            self.cfg.transformer(),
            encode,
            self.classes.clone(),
            "text",
            "label",
        )
    }
}

fn source(data: &[Record]) -> (ClassifierSource, Vec<f32>) {
    let setup = Setup::new(data);
    (setup.source(), setup.init)
}

fn optimizer() -> OptimizerConfig {
    OptimizerConfig::AdamW(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    })
}

fn lr() -> LrPlan {
    let steps = u64::from(EPOCHS) * (CLASSES * PER_CLASS) as u64 / u64::from(GLOBAL);
    LrPlan {
        peak: 3e-3,
        warmup: 3,
        total: steps,
        decay: LrSchedule::Cosine,
    }
}

fn full_loss(src: &ClassifierSource, params: &[f32], data: &[Record]) -> f32 {
    src.compute(params, data).unwrap().1
}

/// The same training in one process: each step is the next `GLOBAL` records of the epoch's
/// permutation, one AdamW update per step.
fn single_process(src: &ClassifierSource, init: &[f32], data: &[Record]) -> (Vec<f32>, Vec<f32>) {
    let mut params = init.to_vec();
    let mut opt = ShardOptimizer::new(optimizer(), params.len()).unwrap();
    let mut losses = Vec::new();
    let mut step = 0;
    for e in 0..EPOCHS {
        for chunk in permutation(data.len() as u64, SEED, e).chunks(GLOBAL as usize) {
            let batch: Vec<Record> = chunk.iter().map(|&i| data[i as usize].clone()).collect();
            let (g, loss, _) = src.compute(&params, &batch).unwrap();
            losses.push(loss);
            opt.step(&mut params, &g, lr().lr_at(step)).unwrap();
            step += 1;
        }
    }
    (params, losses)
}

/// Three trainers on `params` with a local coordinator until the data is done; the ledger must
/// show every sample once per epoch.
fn dispatch_config(records: usize) -> dispatch::Config {
    dispatch::Config {
        records: records as u64,
        seed: SEED,
        epochs: Some(EPOCHS),
        global_batch: Some(GLOBAL),
        per_device_batch: GLOBAL / 3,
        consistency: Consistency::Sync,
        elastic: elastic::Config {
            workers_min: 1,
            workers_max: 3,
            below_min_timeout: Duration::from_secs(60),
        },
        speed_alpha: 0.5,
        series_capacity: 1000,
        keep_ledger: true,
        save_every: 0,
    }
}

async fn train(params: Arc<dyn ParamClient>, src: Arc<ClassifierSource>, data: &[Record]) {
    let d = Arc::new(
        LocalDispatch::new(
            dispatch::Config {
                records: data.len() as u64,
                seed: SEED,
                epochs: Some(EPOCHS),
                global_batch: Some(GLOBAL),
                per_device_batch: GLOBAL / 3,
                consistency: Consistency::Sync,
                elastic: elastic::Config {
                    workers_min: 1,
                    workers_max: 3,
                    below_min_timeout: Duration::from_secs(60),
                },
                // Equal shares: adaptive ones split each batch by measured speed, which
                // varies with the machine's load, and a different split sums the gradient in
                // a different float order (AdamW can carry that past the tolerance below).
                speed_alpha: 0.0,
                series_capacity: 1000,
                keep_ledger: true,
                save_every: 0,
            },
            Arc::new(data.to_vec()),
        )
        .unwrap(),
    );
    let mut outcomes = Vec::new();
    for w in 0..3 {
        assert_eq!(
            d.admit(params.as_ref(), WorkerId(w)).await.unwrap(),
            Role::Worker
        );
        let (_, rx, _) = trainer::Handle::spawn(
            trainer::Config {
                worker: WorkerId(w),
                sync: true,
                precision: Precision::F32,
                clip: None,
                max_steps: None,
                lr: lr(),
                idle_wait: Duration::from_millis(2),
            },
            src.clone() as Arc<dyn GradientSource>,
            params.clone(),
            d.clone() as Arc<dyn Dispatch>,
        )
        .await
        .unwrap();
        outcomes.push(rx);
    }
    for rx in outcomes {
        let o = tokio::time::timeout(Duration::from_secs(600), rx)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
    }
    let ledger = d.inspect(|c| c.ledger().cloned()).unwrap().unwrap();
    ledger
        .verify_exactly_once(EPOCHS, data.len() as u64)
        .unwrap();
}

/// The distributed result against the single-process run.
fn compare(what: &str, src: &ClassifierSource, init: &[f32], data: &[Record], distributed: &[f32]) {
    let (single, losses) = single_process(src, init, data);
    let (before, after_single, after_dist) = (
        full_loss(src, init, data),
        full_loss(src, &single, data),
        full_loss(src, distributed, data),
    );
    let max_diff = single
        .iter()
        .zip(distributed)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!(
        "{what}: loss on the {} records: {before:.4} at start, {after_single:.4} single-process, {after_dist:.4} distributed; largest parameter difference {max_diff:.2e}; single-process step losses {:?}",
        data.len(),
        losses.iter().step_by(5).map(|l| (l * 1000.0).round() / 1000.0).collect::<Vec<_>>()
    );
    assert!(
        after_single < before * 0.9,
        "the model did not learn: {before} -> {after_single}"
    );
    // The sync run averages the same gradients in a different float order; AdamW's
    // normalisation keeps the difference at rounding level.
    assert!(
        (after_dist - after_single).abs() < 1e-3 * after_single.max(1.0),
        "distributed {after_dist} vs single-process {after_single}"
    );
    assert!(max_diff < 1e-3, "parameters differ by {max_diff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_training_on_two_shards_and_three_trainers_follows_the_single_process_run() {
    let data = records();
    let (src, init) = source(&data);
    let src = Arc::new(src);

    let mut handles = Vec::new();
    for (i, r) in partition::ranges(init.len(), 2).into_iter().enumerate() {
        let shard = Shard::new(
            param_server::core::Config {
                shard: i as u32,
                consistency: Consistency::Sync,
                max_consecutive_nonfinite: 3,
                lr: lr(),
                save_every: 0,
                clip: None,
            },
            init[r.clone()].to_vec(),
            Box::new(ShardOptimizer::new(optimizer(), r.len()).unwrap()),
        );
        handles.push(
            param_server::Handle::spawn(shard, param_server::Config::default())
                .await
                .unwrap()
                .0,
        );
    }
    let params = Arc::new(LocalParams::new(handles, init.len()));
    train(params.clone() as Arc<dyn ParamClient>, src.clone(), &data).await;
    let distributed = params.snapshot_params().await.unwrap();
    compare("in process", &src, &init, &data, &distributed);
}

/// The same run with the two shards spawned on two other nodes as `param_server` actors and
/// reached over the mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_run_with_shards_on_other_nodes_over_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let a = RunningNode::start(local_node_config(dir.path().join("a"), vec![]))
        .await
        .unwrap();
    let join: Vec<String> = a.listen_addrs().iter().map(|x| x.to_string()).collect();
    let b = RunningNode::start(local_node_config(dir.path().join("b"), join.clone()))
        .await
        .unwrap();
    let c = RunningNode::start(local_node_config(dir.path().join("c"), join))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while a.connected_peers().await.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "nodes never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let data = records();
    let (src, init) = source(&data);
    let src = Arc::new(src);
    let job = JobId("job-train-mesh".into());
    let hosts = vec![b.node_id(), c.node_id()];
    let mesh: Arc<dyn Mesh> = Arc::new(a.mesh.clone());
    for (i, r) in partition::ranges(init.len(), 2).into_iter().enumerate() {
        let l = lr();
        let args = ShardArgs {
            job: job.clone(),
            shard: i as u32,
            consistency: Consistency::Sync,
            max_consecutive_nonfinite: 3,
            lr: LrArgs {
                peak: l.peak,
                warmup: l.warmup,
                total: l.total,
                decay: l.decay,
            },
            save_every: 0,
            clip_norm: None,
            adaptive_clip: None,
            optimizer_json: optimizer_json(&optimizer()),
            init: init[r].to_vec(),
        };
        spawn_remote::<_, RequestBody, Reply>(
            mesh.clone(),
            hosts[i].clone(),
            PARAM_SERVER_ROLE,
            &shard_actor(&job, i as u32),
            &args,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    // Besides each node's checkpoint store, b and c host one shard each.
    let hosted = |n: &RunningNode| -> Vec<String> {
        n.host
            .actors()
            .into_iter()
            .filter(|a| a != CHECKPOINT_STORE)
            .collect()
    };
    assert_eq!(hosted(&b), vec![shard_actor(&job, 0)]);
    assert_eq!(hosted(&c), vec![shard_actor(&job, 1)]);
    let params = Arc::new(RemoteParams::new(
        mesh.clone(),
        &job,
        &hosts,
        init.len(),
        Duration::from_secs(10),
        Duration::from_secs(120),
    ));
    train(params.clone() as Arc<dyn ParamClient>, src.clone(), &data).await;
    let mut distributed = Vec::new();
    // The final parameters, read over the mesh by a reader that joins only for that.
    let reader = WorkerId(99);
    for s in 0..2u32 {
        params.join(s, reader).await.unwrap();
        distributed.extend(params.pull(s, reader, None).await.unwrap().values);
        params.leave(s, reader, true).await.unwrap();
    }
    compare("over the mesh", &src, &init, &data, &distributed);
    for n in [c, b, a] {
        n.shutdown().await.unwrap();
    }
}

async fn nodes(dir: &std::path::Path, n: usize) -> Vec<RunningNode> {
    let first = RunningNode::start(local_node_config(dir.join("n0"), vec![]))
        .await
        .unwrap();
    let join: Vec<String> = first.listen_addrs().iter().map(|x| x.to_string()).collect();
    let mut all = vec![first];
    for i in 1..n {
        all.push(
            RunningNode::start(local_node_config(dir.join(format!("n{i}")), join.clone()))
                .await
                .unwrap(),
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = all[0].membership.view().await.unwrap();
        let alive = view
            .iter()
            .filter(|m| m.state == flotilla_protocol::MemberState::Alive)
            .count();
        if alive == n {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nodes never converged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Trainers spawned on three nodes reach the shards (on a fourth) and the coordinator over the
/// mesh; the node of one trainer is killed mid-epoch; its monitor reports the death, the
/// coordinator drops the worker, and the job completes with every sample seen once per epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trainers_on_three_nodes_survive_the_death_of_one_mid_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = nodes(dir.path(), 4).await;
    let ids: Vec<_> = all.iter().map(|n| n.node_id()).collect();
    let (coord, shard_host) = (0usize, 1usize);
    let data = records();
    let setup = Setup::new(&data);
    let job = JobId("job-train-workers".into());
    let mesh: Arc<dyn Mesh> = Arc::new(all[coord].mesh.clone());
    let l = lr();
    let lr_args = LrArgs {
        peak: l.peak,
        warmup: l.warmup,
        total: l.total,
        decay: l.decay,
    };
    for (i, r) in partition::ranges(setup.init.len(), 2)
        .into_iter()
        .enumerate()
    {
        let args = ShardArgs {
            job: job.clone(),
            shard: i as u32,
            consistency: Consistency::Sync,
            max_consecutive_nonfinite: 3,
            lr: lr_args,
            save_every: 0,
            clip_norm: None,
            adaptive_clip: None,
            optimizer_json: optimizer_json(&optimizer()),
            init: setup.init[r].to_vec(),
        };
        spawn_remote::<_, RequestBody, Reply>(
            mesh.clone(),
            ids[shard_host].clone(),
            PARAM_SERVER_ROLE,
            &shard_actor(&job, i as u32),
            &args,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let hosts = vec![ids[shard_host].clone(), ids[shard_host].clone()];
    let params = Arc::new(RemoteParams::new(
        mesh.clone(),
        &job,
        &hosts,
        setup.init.len(),
        Duration::from_secs(10),
        Duration::from_secs(120),
    ));
    let d =
        Arc::new(LocalDispatch::new(dispatch_config(data.len()), Arc::new(data.clone())).unwrap());
    all[coord]
        .host
        .register(&dispatch_actor(&job), Arc::new(DispatchEndpoint(d.clone())))
        .unwrap();

    let workers = [(0u32, 0usize), (1, 2), (2, 3)];
    let mut monitors = Vec::new();
    for (w, node) in workers {
        assert_eq!(
            d.admit(params.as_ref(), WorkerId(w)).await.unwrap(),
            Role::Worker
        );
        let args = TrainerArgs {
            job: job.clone(),
            worker: WorkerId(w),
            sync: true,
            precision: Precision::F32,
            clip_norm: None,
            adaptive_clip: None,
            lr: lr_args,
            model: ModelArgs {
                config_json: serde_json::to_string(&setup.cfg.transformer()).unwrap(),
                tokenizer: TokenizerArgs::Chars(setup.chars.clone()),
            }
            .to_bytes()
            .unwrap(),
            classes: setup.classes.clone(),
            text_field: "text".into(),
            label_field: "label".into(),
            total_params: setup.init.len() as u64,
            shard_hosts: hosts.clone(),
            coordinator: ids[coord].clone(),
            call_deadline_ms: 10_000,
            pull_deadline_ms: 120_000,
        };
        let name = trainer_actor(&job, WorkerId(w));
        spawn_remote::<_, (), ()>(
            mesh.clone(),
            ids[node].clone(),
            TRAINER_ROLE,
            &name,
            &args,
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("spawning trainer {w} on node {node}: {e}"));
        let rx = all[coord]
            .host
            .monitor(&all[coord].membership, &ids[node], &name)
            .await
            .unwrap();
        monitors.push((w, rx));
    }

    // Kill the node of worker 2 once the first epoch is under way.
    let samples = || d.inspect(|c| c.ledger().map_or(0, |l| l.total())).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while samples() < 120 {
        assert!(
            std::time::Instant::now() < deadline,
            "training made no progress"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let at_kill = samples();
    assert!(
        at_kill < data.len() as u64,
        "the kill must land mid-epoch ({at_kill} samples)"
    );
    all.remove(3).kill().await;
    let (_, mut rx) = monitors.pop().unwrap();
    let down = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the monitor reports the dead worker within 30 s")
        .unwrap();
    assert!(down.reason.contains("dead"), "{down:?}");
    d.depart(params.as_ref(), WorkerId(2), Why::Died)
        .await
        .unwrap();

    // The two survivors finish the job; each sample was seen once per epoch.
    for (w, mut rx) in monitors {
        let end = tokio::time::timeout(Duration::from_secs(300), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("trainer {w} never finished"))
            .unwrap();
        assert!(!end.reason.contains("failed"), "trainer {w}: {end:?}");
    }
    let ledger = d.inspect(|c| c.ledger().cloned()).unwrap().unwrap();
    ledger
        .verify_exactly_once(EPOCHS, data.len() as u64)
        .unwrap();
    let reader = WorkerId(99);
    let mut trained = Vec::new();
    for s in 0..2u32 {
        params.join(s, reader).await.unwrap();
        trained.extend(params.pull(s, reader, None).await.unwrap().values);
        params.leave(s, reader, true).await.unwrap();
    }
    let src = setup.source();
    let (before, after) = (
        full_loss(&src, &setup.init, &data),
        full_loss(&src, &trained, &data),
    );
    println!("with a worker killed after {at_kill} samples: loss {before:.4} -> {after:.4}");
    assert!(
        after < before * 0.9,
        "the model did not learn: {before} -> {after}"
    );
    all[coord].host.unregister(&dispatch_actor(&job));
    for n in all.into_iter().rev() {
        n.shutdown().await.unwrap();
    }
}
