//! Distributed training in one process: two `ParamServer` shards and three `Trainer`s train a
//! logistic regression (analytic gradient) on a generated data set, in sync, async and ssp
//! modes; sync follows a single-process run; a trainer killed mid-epoch loses no sample.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actors::data::record::Record;
use flotilla_actors::store::{Column, Durability, Store};
use flotilla_actors::training::assignment::permutation;
use flotilla_actors::training::checkpoint::{self, Manifest};
use flotilla_actors::training::client::{LocalParams, ParamClient};
use flotilla_actors::training::dispatch::{self, Dispatch, LocalDispatch};
use flotilla_actors::training::elastic::{self, Role, Why};
use flotilla_actors::training::ledger::Ledger;
use flotilla_actors::training::optim::{FlatOptimizer, LrPlan, SgdMomentum};
use flotilla_actors::training::param_server;
use flotilla_actors::training::param_server::core::{Shard, Snapshot};
use flotilla_actors::training::trainer::{self, GradientSource, Outcome};
use flotilla_actors::training::{partition, Result};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::training::{Consistency, LrSchedule, Precision, WorkerId};
use flotilla_protocol::NodeId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::timeout;

const DIM: usize = 8;
const RECORDS: u64 = 600;
const GLOBAL: u32 = 30;
const EPOCHS: u32 = 2;
const SEED: u64 = 17;
const SHARDS: usize = 2;
const DEADLINE: Duration = Duration::from_secs(120);

/// Logistic regression: parameters are `DIM` weights then a bias; a record's text is its
/// features separated by spaces, its label 0 or 1.
struct Logistic {
    /// Simulates a slower device.
    delay: Duration,
}

fn features(r: &Record) -> (Vec<f32>, f32) {
    let x = r
        .field("text")
        .unwrap()
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    let y = r.field("label").unwrap().parse().unwrap();
    (x, y)
}

fn loss_and_grad(params: &[f32], batch: &[Record]) -> (Vec<f32>, f32) {
    let mut grad = [0.0f64; DIM + 1];
    let mut loss = 0.0f64;
    for r in batch {
        let (x, y) = features(r);
        let z: f64 = x
            .iter()
            .zip(params)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum::<f64>()
            + f64::from(params[DIM]);
        let p = 1.0 / (1.0 + (-z).exp());
        let y = f64::from(y);
        loss -= y * p.max(1e-12).ln() + (1.0 - y) * (1.0 - p).max(1e-12).ln();
        for (g, xi) in grad.iter_mut().zip(&x) {
            *g += (p - y) * f64::from(*xi);
        }
        grad[DIM] += p - y;
    }
    let n = batch.len().max(1) as f64;
    (
        grad.iter().map(|g| (g / n) as f32).collect(),
        (loss / n) as f32,
    )
}

impl GradientSource for Logistic {
    fn compute(
        &self,
        params: &[f32],
        batch: &[Record],
    ) -> std::result::Result<(Vec<f32>, f32, usize), String> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let (g, l) = loss_and_grad(params, batch);
        Ok((g, l, batch.len()))
    }
}

fn dataset() -> Vec<Record> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let truth: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-2.0..2.0)).collect();
    (0..RECORDS)
        .map(|i| {
            let x: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let z: f32 = x.iter().zip(&truth).map(|(a, b)| a * b).sum::<f32>() + 0.3;
            let noise: f32 = rng.gen_range(-0.3..0.3);
            let text = x
                .iter()
                .map(|v| format!("{v}"))
                .collect::<Vec<_>>()
                .join(" ");
            Record::labelled(i, text, if z + noise > 0.0 { "1" } else { "0" })
        })
        .collect()
}

fn initial() -> Vec<f32> {
    [0.0; DIM + 1].to_vec()
}

fn lr() -> LrPlan {
    LrPlan {
        peak: 0.5,
        warmup: 5,
        total: u64::from(EPOCHS) * RECORDS.div_ceil(u64::from(GLOBAL)),
        decay: LrSchedule::Cosine,
    }
}

fn optimizer(n: usize) -> SgdMomentum {
    SgdMomentum::new(n, 0.9, 0.0)
}

struct Job {
    params: Arc<LocalParams>,
    dispatch: Arc<LocalDispatch>,
    trainers: BTreeMap<WorkerId, (trainer::Handle, oneshot::Receiver<Outcome>)>,
    consistency: Consistency,
    precision: Precision,
    max_steps: Option<u64>,
}

impl Job {
    async fn start(consistency: Consistency, precision: Precision, workers: u32) -> Result<Job> {
        Self::start_with(consistency, precision, workers, None, None).await
    }

    /// A job that stops at `max_steps`, or one resumed from a checkpoint.
    async fn start_with(
        consistency: Consistency,
        precision: Precision,
        workers: u32,
        max_steps: Option<u64>,
        resume: Option<(Manifest, Vec<Snapshot>)>,
    ) -> Result<Job> {
        let init = initial();
        let mut handles = Vec::new();
        for (i, r) in partition::ranges(init.len(), SHARDS)
            .into_iter()
            .enumerate()
        {
            let shard = Shard::new(
                param_server::core::Config {
                    shard: i as u32,
                    consistency,
                    max_consecutive_nonfinite: 3,
                    lr: lr(),
                },
                init[r.clone()].to_vec(),
                Box::new(optimizer(r.len())),
            );
            let (h, _) =
                param_server::Handle::spawn(shard, param_server::Config::default()).await?;
            if let Some((_, snaps)) = &resume {
                h.restore(snaps[i].clone()).await?;
            }
            handles.push(h);
        }
        let params = Arc::new(LocalParams::new(handles, init.len()));
        let records = Arc::new(dataset());
        let cfg = dispatch::Config {
            records: RECORDS,
            seed: SEED,
            epochs: Some(EPOCHS),
            global_batch: Some(GLOBAL),
            per_device_batch: GLOBAL / 3,
            consistency,
            elastic: elastic::Config {
                workers_min: 1,
                workers_max: 4,
                below_min_timeout: Duration::from_secs(60),
            },
            speed_alpha: 0.5,
            series_capacity: 1000,
            keep_ledger: true,
        };
        let dispatch = Arc::new(match resume {
            Some((m, _)) => LocalDispatch::resume(cfg, records, m.assignment)?,
            None => LocalDispatch::new(cfg, records)?,
        });
        let mut job = Job {
            params,
            dispatch,
            trainers: BTreeMap::new(),
            consistency,
            precision,
            max_steps,
        };
        for w in 0..workers {
            // Worker 2 is three times slower than the others.
            let delay = Duration::from_millis(if w == 2 { 3 } else { 1 });
            job.add(WorkerId(w), delay).await?;
        }
        Ok(job)
    }

    async fn add(&mut self, w: WorkerId, delay: Duration) -> Result<()> {
        assert_eq!(
            self.dispatch.admit(self.params.as_ref(), w).await?,
            Role::Worker
        );
        let (h, rx, _) = trainer::Handle::spawn(
            trainer::Config {
                worker: w,
                sync: self.consistency == Consistency::Sync,
                precision: self.precision,
                clip_norm: None,
                max_steps: self.max_steps,
                lr: lr(),
                idle_wait: Duration::from_millis(2),
            },
            Arc::new(Logistic { delay }),
            self.params.clone() as Arc<dyn ParamClient>,
            self.dispatch.clone() as Arc<dyn Dispatch>,
        )
        .await?;
        self.trainers.insert(w, (h, rx));
        Ok(())
    }

    async fn kill(&mut self, w: WorkerId) -> Result<()> {
        let (h, _) = self.trainers.remove(&w).unwrap();
        h.kill();
        self.dispatch
            .depart(self.params.as_ref(), w, Why::Died)
            .await?;
        Ok(())
    }

    async fn finish(self) -> (Vec<f32>, Vec<Outcome>) {
        let (params, outcomes, ledger) = self.finish_part().await;
        ledger.verify_exactly_once(EPOCHS, RECORDS).unwrap();
        (params, outcomes)
    }

    /// Waits for every trainer; the final parameters, outcomes and the samples consumed.
    async fn finish_part(self) -> (Vec<f32>, Vec<Outcome>, Ledger) {
        let mut outcomes = Vec::new();
        for (w, (_, rx)) in self.trainers {
            let o = timeout(DEADLINE, rx)
                .await
                .unwrap_or_else(|_| panic!("{w} did not finish in time"))
                .unwrap_or_else(|_| panic!("{w} stopped without an outcome"));
            outcomes.push(o);
        }
        let ledger = self
            .dispatch
            .inspect(|c| c.ledger().cloned())
            .unwrap()
            .unwrap();
        (
            self.params.snapshot_params().await.unwrap(),
            outcomes,
            ledger,
        )
    }
}

fn full_loss(params: &[f32]) -> f32 {
    loss_and_grad(params, &dataset()).1
}

fn assert_learned(params: &[f32], what: &str) {
    let (before, after) = (full_loss(&initial()), full_loss(params));
    println!("{what}: loss {before:.4} -> {after:.4}");
    assert!(after < 0.6 * before, "{what}: loss {before} -> {after}");
}

/// The same training in one process: each step is the next `GLOBAL` records of the epoch's
/// permutation (the last step of an epoch is shorter), one optimizer update per step.
fn single_process() -> Vec<f32> {
    let data = dataset();
    let mut params = initial();
    let mut opt = optimizer(params.len());
    let mut update = 0;
    for e in 0..EPOCHS {
        for chunk in permutation(RECORDS, SEED, e).chunks(GLOBAL as usize) {
            let batch: Vec<Record> = chunk.iter().map(|&i| data[i as usize].clone()).collect();
            let (g, _) = loss_and_grad(&params, &batch);
            opt.step(&mut params, &g, lr().lr_at(update)).unwrap();
            update += 1;
        }
    }
    params
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_training_follows_a_single_process_run() {
    let job = Job::start(Consistency::Sync, Precision::F32, 3)
        .await
        .unwrap();
    let dispatch = job.dispatch.clone();
    let shard0 = job.params.handle(0).unwrap().clone();
    let (params, outcomes) = job.finish().await;
    for o in &outcomes {
        assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
    }
    let steps = u64::from(EPOCHS) * RECORDS.div_ceil(u64::from(GLOBAL));
    let stats = shard0.stats().await.unwrap();
    assert_eq!(stats.updates, steps, "one update per global batch");
    let reference = single_process();
    let diff = params
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("sync vs single process: max |Δparam| = {diff:e} over {steps} steps");
    // Only the order of float additions differs (per-worker means, then their weighted mean).
    assert!(
        diff < 1e-4,
        "distributed sync drifted from the single-process run by {diff}"
    );
    assert_learned(&params, "sync");

    // Live metrics: one record per step with every worker's share and time.
    // Steps in which every worker was idle (the data was done while a last lease was being
    // acknowledged) carry no samples.
    let series: Vec<_> = dispatch::latest(&dispatch, None)
        .unwrap()
        .into_iter()
        .filter(|r| r.samples > 0)
        .collect();
    assert!(series.len() as u64 >= steps - 2, "{} records", series.len());
    let mid = &series[series.len() / 2];
    assert_eq!(mid.samples, GLOBAL);
    assert_eq!(mid.workers.iter().map(|w| w.share).sum::<u32>(), GLOBAL);
    assert!(mid.lr > 0.0 && mid.grad_norm > 0.0 && mid.samples_per_s > 0.0);
    assert!(series.first().unwrap().loss > series.last().unwrap().loss);
    // The slow worker ends with a smaller share than the fast ones.
    let shares = dispatch
        .inspect(|c| c.series().latest().cloned())
        .unwrap()
        .unwrap();
    println!("last step shares: {:?}", shares.workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_training_with_half_precision_gradients_learns() {
    let job = Job::start(Consistency::Async, Precision::F16, 3)
        .await
        .unwrap();
    let shard0 = job.params.handle(0).unwrap().clone();
    let (params, outcomes) = job.finish().await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{outcomes:?}"
    );
    let stats = shard0.stats().await.unwrap();
    println!("async: {stats:?}");
    assert!(stats.updates >= 40, "{stats:?}");
    assert_learned(&params, "async");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssp_training_learns() {
    let job = Job::start(Consistency::Ssp(2), Precision::Bf16, 3)
        .await
        .unwrap();
    let shard1 = job.params.handle(1).unwrap().clone();
    let (params, outcomes) = job.finish().await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{outcomes:?}"
    );
    println!("ssp: {:?}", shard1.stats().await.unwrap());
    assert_learned(&params, "ssp");
}

/// Waits until the ledger holds at least `n` samples.
async fn wait_for_samples(d: &LocalDispatch, n: u64) {
    timeout(DEADLINE, async {
        loop {
            let total = d.inspect(|c| c.ledger().map_or(0, |l| l.total())).unwrap();
            if total >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("training made no progress");
}

async fn kill_mid_epoch(consistency: Consistency) {
    let mut job = Job::start(consistency, Precision::F32, 3).await.unwrap();
    // Mid-way through the first epoch.
    wait_for_samples(&job.dispatch, RECORDS / 3).await;
    job.kill(WorkerId(1)).await.unwrap();
    // A new worker joins mid-run; the others are not restarted.
    wait_for_samples(&job.dispatch, RECORDS / 2).await;
    job.add(WorkerId(3), Duration::from_millis(1))
        .await
        .unwrap();
    let (params, outcomes) = job.finish().await;
    assert_eq!(outcomes.len(), 3);
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{outcomes:?}"
    );
    assert_learned(&params, &format!("{consistency:?} with a killed worker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_sync_trainer_mid_epoch_loses_and_repeats_nothing() {
    kill_mid_epoch(Consistency::Sync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_an_ssp_trainer_mid_epoch_loses_and_repeats_nothing() {
    kill_mid_epoch(Consistency::Ssp(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_trainer_leaves_and_the_others_finish() {
    let mut job = Job::start(Consistency::Sync, Precision::F32, 3)
        .await
        .unwrap();
    wait_for_samples(&job.dispatch, RECORDS / 4).await;
    let (h, rx) = job.trainers.remove(&WorkerId(0)).unwrap();
    h.drain(DEADLINE).await.unwrap();
    let o = timeout(DEADLINE, rx).await.unwrap().unwrap();
    assert!(
        matches!(o, Outcome::Drained { steps, .. } if steps > 0),
        "{o:?}"
    );
    let (params, outcomes) = job.finish().await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{outcomes:?}"
    );
    assert_learned(&params, "sync with a drained worker");
}

/// Rows by (column name, key).
type Rows = BTreeMap<(&'static str, Vec<u8>), Vec<u8>>;

#[derive(Default)]
struct MemStore(Mutex<Rows>);

impl Store for MemStore {
    fn get(&self, col: Column, key: &[u8]) -> flotilla_actors::Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&(col.name(), key.to_vec()))
            .cloned())
    }
    fn put(&self, col: Column, key: &[u8], v: &[u8], _: Durability) -> flotilla_actors::Result<()> {
        self.0
            .lock()
            .unwrap()
            .insert((col.name(), key.to_vec()), v.to_vec());
        Ok(())
    }
    fn delete(&self, col: Column, key: &[u8], _: Durability) -> flotilla_actors::Result<()> {
        self.0.lock().unwrap().remove(&(col.name(), key.to_vec()));
        Ok(())
    }
    fn scan_prefix(
        &self,
        col: Column,
        prefix: &[u8],
        limit: usize,
    ) -> flotilla_actors::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|((c, k), _)| *c == col.name() && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
    fn flush(&self) -> flotilla_actors::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_resumed_from_a_checkpoint_ends_where_an_uninterrupted_one_does() {
    const AT: u64 = 13; // mid-way through the first epoch
    let job = Job::start_with(Consistency::Sync, Precision::F32, 3, Some(AT), None)
        .await
        .unwrap();
    let (params, dispatch) = (job.params.clone(), job.dispatch.clone());
    let (_, outcomes, before) = job.finish_part().await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{outcomes:?}"
    );
    let snaps = params.snapshots().await.unwrap();
    let versions: Vec<u64> = snaps.iter().map(|s| s.version).collect();
    assert_eq!(versions, vec![AT; SHARDS]);
    let cp = dispatch.inspect(|c| c.checkpoint(AT)).unwrap();
    assert_eq!((cp.epoch, cp.cursor), (0, AT * u64::from(GLOBAL)));
    let store = MemStore::default();
    let job_id = JobId("job-resume".into());
    let nodes: Vec<NodeId> = (0..4).map(|i| NodeId(format!("n{i}"))).collect();
    assert!(checkpoint::due(AT, AT, None));
    let (manifest, blobs) = checkpoint::build(&job_id, AT, SEED, cp, &snaps, &nodes).unwrap();
    checkpoint::write(&store, &manifest, &blobs).unwrap();

    // Every actor is gone; a new set starts from the checkpoint.
    for h in params.handles() {
        h.stop();
    }
    let restored = checkpoint::latest_valid(&store, &job_id).unwrap().unwrap();
    assert_eq!(restored.0, manifest);
    let job = Job::start_with(Consistency::Sync, Precision::F32, 3, None, Some(restored))
        .await
        .unwrap();
    let (params, outcomes, after) = job.finish_part().await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{outcomes:?}"
    );
    let mut all = before;
    all.merge(&after);
    all.verify_exactly_once(EPOCHS, RECORDS).unwrap();
    let reference = single_process();
    let diff = params
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("resumed vs single process: max |Δparam| = {diff:e}");
    assert!(diff < 1e-4, "resumed run drifted by {diff}");
}
