//! The harness: a logistic regression with an analytic gradient, a generated data set, and a
//! job of `ParamServer` shards and `Trainer`s in this process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::training::{Consistency, LrSchedule, Precision, WorkerId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::data::record::Record;
use crate::training::assignment::permutation;
use crate::training::checkpoint::Manifest;
use crate::training::client::{LocalParams, ParamClient};
use crate::training::dispatch::{self, Dispatch, LocalDispatch};
use crate::training::elastic::{self, Role, Why};
use crate::training::ledger::Ledger;
use crate::training::optim::{ClipConfig, FlatOptimizer, LrPlan, ShardOptimizer};
use crate::training::param_server;
use crate::training::param_server::core::{Shard, Snapshot};
use crate::training::trainer::{self, GradientSource, Outcome};
use crate::training::{partition, Result};

pub const DIM: usize = 8;
pub const RECORDS: u64 = 600;
pub const GLOBAL: u32 = 30;
pub const EPOCHS: u32 = 2;
pub const SEED: u64 = 17;
pub const SHARDS: usize = 2;
pub const DEADLINE: Duration = Duration::from_secs(120);
/// Sync runs keep their state every this many steps: step 26 is early in the second epoch
/// (and the last multiple before the end, so it is the state kept when a run ends).
pub const SAVE_EVERY: u64 = 26;

/// Logistic regression: parameters are `DIM` weights then a bias; a record's text is its
/// features separated by spaces, its label 0 or 1.
pub struct Logistic {
    /// Compute time per sample, to simulate devices of different speeds.
    pub delay: Duration,
}

pub fn features(r: &Record) -> (Vec<f32>, f32) {
    let x = r
        .field("text")
        .unwrap()
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    let y = r.field("label").unwrap().parse().unwrap();
    (x, y)
}

pub fn loss_and_grad(params: &[f32], batch: &[Record]) -> (Vec<f32>, f32) {
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
            std::thread::sleep(self.delay * batch.len() as u32);
        }
        let (g, l) = loss_and_grad(params, batch);
        Ok((g, l, batch.len()))
    }
}

pub fn dataset() -> Vec<Record> {
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

pub fn initial() -> Vec<f32> {
    [0.0; DIM + 1].to_vec()
}

pub fn lr() -> LrPlan {
    LrPlan {
        peak: 0.5,
        warmup: 5,
        total: u64::from(EPOCHS) * RECORDS.div_ceil(u64::from(GLOBAL)),
        decay: LrSchedule::Cosine,
    }
}

pub fn optimizer(n: usize) -> ShardOptimizer {
    ShardOptimizer::sgd(n, 0.9, 0.0).unwrap()
}

pub struct Job {
    pub params: Arc<LocalParams>,
    pub dispatch: Arc<LocalDispatch>,
    pub trainers: BTreeMap<WorkerId, (trainer::Handle, oneshot::Receiver<Outcome>)>,
    consistency: Consistency,
    precision: Precision,
    max_steps: Option<u64>,
    /// The trainers' clipping (async and ssp) for workers added from now on.
    pub trainer_clip: Option<ClipConfig>,
}

impl Job {
    pub async fn start(
        consistency: Consistency,
        precision: Precision,
        workers: u32,
    ) -> Result<Job> {
        Self::start_with(consistency, precision, workers, None, None).await
    }

    /// A job that stops at `max_steps`, or one resumed from a checkpoint.
    pub async fn start_with(
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
                    save_every: SAVE_EVERY,
                    clip: None,
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
            save_every: SAVE_EVERY,
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
            trainer_clip: None,
        };
        for w in 0..workers {
            // Worker 2 is three times slower than the others.
            let delay = Duration::from_micros(if w == 2 { 300 } else { 100 });
            job.add(WorkerId(w), delay).await?;
        }
        Ok(job)
    }

    pub async fn add(&mut self, w: WorkerId, delay: Duration) -> Result<()> {
        assert_eq!(
            self.dispatch.admit(self.params.as_ref(), w).await?,
            Role::Worker
        );
        let (h, rx, _) = trainer::Handle::spawn(
            trainer::Config {
                worker: w,
                sync: self.consistency == Consistency::Sync,
                precision: self.precision,
                clip: self.trainer_clip,
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

    pub async fn kill(&mut self, w: WorkerId) -> Result<()> {
        let (h, _) = self.trainers.remove(&w).unwrap();
        h.kill();
        self.dispatch
            .depart(self.params.as_ref(), w, Why::Died)
            .await?;
        Ok(())
    }

    pub async fn finish(self) -> (Vec<f32>, Vec<Outcome>) {
        let (params, outcomes, ledger) = self.finish_part().await;
        ledger.verify_exactly_once(EPOCHS, RECORDS).unwrap();
        (params, outcomes)
    }

    /// Waits for every trainer; the final parameters, outcomes and the samples consumed.
    pub async fn finish_part(self) -> (Vec<f32>, Vec<Outcome>, Ledger) {
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

pub fn full_loss(params: &[f32]) -> f32 {
    loss_and_grad(params, &dataset()).1
}

pub fn assert_learned(params: &[f32], what: &str) {
    let (before, after) = (full_loss(&initial()), full_loss(params));
    println!("{what}: loss {before:.4} -> {after:.4}");
    assert!(after < 0.6 * before, "{what}: loss {before} -> {after}");
}

/// The same training in one process: each step is the next `GLOBAL` records of the epoch's
/// permutation (the last step of an epoch is shorter), one optimizer update per step.
pub fn single_process() -> Vec<f32> {
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

/// Waits until the ledger holds at least `n` samples.
pub async fn wait_for_samples(d: &LocalDispatch, n: u64) {
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
