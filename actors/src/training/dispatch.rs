//! The coordinator's side of a training job: which samples each worker gets and how many
//! (assignment + batch shares), who is a worker (elasticity), and the live metrics.
//!
//! [`Core`] is pure; [`LocalDispatch`] wraps it for one process and implements [`Dispatch`],
//! the trait a trainer talks to (the node implements it over `/flotilla/actors/1` calls too).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flotilla_protocol::training::{Consistency, StepRecord, WorkerId, WorkerReport};

use super::assignment::{self, Assignment, Lease, Next};
use super::client::{self, ParamClient};
use super::elastic::{self, Effect, Elastic, Role, Why};
use super::error::{Error, Result};
use super::ledger::Ledger;
use super::metrics::{Aggregator, Series};
use super::shares::Shares;
use crate::clock::{Millis, MonotonicClock};
use crate::data::record::Record;

/// What a worker is given to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Train on these records; acknowledge the lease once every shard accepted the gradient.
    Batch { lease: Lease, records: Vec<Record> },
    /// Nothing now (other leases are outstanding): push an empty contribution and ask again.
    Idle,
    /// The job's data is done.
    Done,
}

/// How a trainer reaches its job's coordinator.
#[async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// The next batch for `worker`; `step` is the parameter version it pulled (sync mode).
    async fn next_batch(&self, worker: WorkerId, step: Option<u64>) -> Result<Work>;
    /// Every shard accepted the gradient of `lease` (pushed for `step` in sync mode).
    async fn ack(&self, worker: WorkerId, lease: u64, step: Option<u64>) -> Result<bool>;
    /// The gradient of the worker's lease was discarded: serve its samples again.
    async fn give_back(&self, worker: WorkerId) -> Result<()>;
    /// The worker's metrics for one step.
    async fn report(&self, report: WorkerReport) -> Result<()>;
    /// The worker leaves of its own accord (data done, drained, or stopped by an error).
    /// True when it still held a lease, which is given back: the worker must then have the
    /// shards discard its held gradient.
    async fn leave(&self, worker: WorkerId) -> Result<bool>;
}

/// A job's coordinator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Records in the dataset version.
    pub records: u64,
    pub seed: u64,
    /// `None`: until the servers reach `max_steps`.
    pub epochs: Option<u32>,
    /// Fixed global batch; when `None`, `per_device_batch` times the workers.
    pub global_batch: Option<u32>,
    pub per_device_batch: u32,
    pub consistency: Consistency,
    pub elastic: elastic::Config,
    /// Weight of a new throughput measurement in the smoothed speed; 0 keeps shares equal.
    pub speed_alpha: f64,
    /// Step records kept for the live view.
    pub series_capacity: usize,
    /// Keep a ledger of consumed samples (tests, audits).
    pub keep_ledger: bool,
    /// Sync mode: keep the assignment state of every step that is a multiple of this (0:
    /// never), taken when the step's first request arrives, for the checkpoint of that step.
    pub save_every: u64,
}

/// What the shell does after a departure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// Whether the shards must discard the worker's held gradient (its lease was not
    /// acknowledged, so its samples are served again).
    pub drop_pending: bool,
    /// Samples given back.
    pub returned: usize,
    pub effects: Vec<Effect>,
}

/// The coordinator's pure state for one job.
#[derive(Debug, Clone)]
pub struct Core {
    cfg: Config,
    assignment: Assignment,
    shares: Shares,
    elastic: Elastic,
    aggregator: Aggregator,
    series: Series,
    /// Sync: the shares fixed for one step, so that a throughput report arriving between two
    /// workers' requests does not change the step's split (the step's leases then cover
    /// exactly its budget).
    frozen: Option<(u64, BTreeMap<WorkerId, u32>)>,
    /// Standbys promoted to workers, for the shell to join to the shards and start.
    promoted: Vec<WorkerId>,
    /// The assignment state kept for the latest checkpoint step.
    saved: Option<(u64, assignment::Checkpoint)>,
    /// Async and ssp: no new leases while a checkpoint waits for the outstanding ones.
    paused: bool,
}

impl Core {
    /// A job starting at `now`, or resuming from a checkpoint's assignment.
    pub fn new(cfg: Config, now: Millis, resume: Option<assignment::Checkpoint>) -> Self {
        let mut a = Assignment::resume(
            cfg.records,
            cfg.seed,
            cfg.epochs,
            resume.unwrap_or_default(),
        );
        if cfg.keep_ledger {
            a = a.with_ledger();
        }
        Self {
            assignment: a,
            shares: Shares::new(
                cfg.global_batch.unwrap_or(cfg.per_device_batch),
                cfg.speed_alpha,
            ),
            elastic: Elastic::new(cfg.elastic, now),
            aggregator: Aggregator::new(64),
            series: Series::new(cfg.series_capacity),
            frozen: None,
            promoted: Vec::new(),
            saved: None,
            paused: false,
            cfg,
        }
    }

    fn is_sync(&self) -> bool {
        self.cfg.consistency == Consistency::Sync
    }

    fn resize(&mut self) {
        if self.cfg.global_batch.is_none() {
            let n = self.elastic.workers().len().max(1) as u32;
            self.shares
                .set_global(self.cfg.per_device_batch.saturating_mul(n));
        }
    }

    /// A node offers to work.
    pub fn join(&mut self, now: Millis, worker: WorkerId) -> Role {
        let role = self.elastic.join(now, worker);
        if role == Role::Worker {
            self.shares.add(worker);
            self.resize();
        }
        role
    }

    /// A worker leaves (drained, done, or dead).
    pub fn leave(&mut self, now: Millis, worker: WorkerId, why: Why) -> Departure {
        let returned = self.assignment.give_back(worker);
        self.shares.remove(worker);
        let effects = self.elastic.leave(now, worker, why);
        for e in &effects {
            if let Effect::Promote(w) = e {
                self.shares.add(*w);
                self.promoted.push(*w);
            }
        }
        self.resize();
        if self.elastic.workers().is_empty() {
            // Nobody is left to complete the open steps.
            for rec in self.aggregator.flush() {
                self.series.push(rec);
            }
        }
        Departure {
            drop_pending: returned > 0,
            returned,
            effects,
        }
    }

    /// Checks the below-minimum timer.
    pub fn tick(&mut self, now: Millis) -> Option<Effect> {
        self.elastic.tick(now)
    }

    /// Standbys promoted since the last call.
    pub fn take_promoted(&mut self) -> Vec<WorkerId> {
        std::mem::take(&mut self.promoted)
    }

    /// The next lease for `worker`.
    pub fn next(&mut self, worker: WorkerId, step: Option<u64>) -> Result<Next> {
        if let Some(reason) = self.elastic.failure() {
            return Err(Error::Failed(reason.to_string()));
        }
        if !self.elastic.workers().contains(&worker) {
            return Err(Error::UnknownWorker(worker));
        }
        let step = if self.is_sync() { step } else { None };
        if self.paused && step.is_none() {
            return Ok(Next::Idle);
        }
        if let Some(s) = step {
            let due = self.cfg.save_every > 0 && s > 0 && s.is_multiple_of(self.cfg.save_every);
            if due && self.saved.as_ref().is_none_or(|(v, _)| *v != s) {
                // Before any lease of step `s`: exactly what the parameters at `s` lack.
                self.saved = Some((s, self.assignment.checkpoint(Some(s))));
            }
        }
        let want = match step {
            Some(s) => {
                if self.frozen.as_ref().is_none_or(|(f, _)| *f != s) {
                    self.frozen = Some((s, self.shares.shares()));
                }
                self.frozen
                    .as_ref()
                    .and_then(|(_, m)| m.get(&worker).copied())
            }
            None => self.shares.shares().get(&worker).copied(),
        };
        // A worker promoted mid-step has no share in the frozen split: one sample.
        let want = want.unwrap_or(1);
        Ok(self
            .assignment
            .next(worker, want, step, self.shares.global()))
    }

    /// A lease is done.
    pub fn ack(&mut self, worker: WorkerId, lease: u64, step: Option<u64>) -> bool {
        let step = if self.is_sync() { step } else { None };
        self.assignment.ack(worker, lease, step)
    }

    /// A lease's gradient was discarded.
    pub fn give_back(&mut self, worker: WorkerId) {
        self.assignment.give_back(worker);
    }

    /// A worker's metrics: feeds its throughput to the share allocator and the step record.
    pub fn report(&mut self, r: WorkerReport) {
        self.shares
            .observe(r.worker, r.samples, r.compute_ms / 1000.0);
        let workers = self.elastic.workers().len();
        for rec in self.aggregator.add(r, workers) {
            self.series.push(rec);
        }
    }

    /// Closes the steps still waiting for reports into the series (the run ended). A step can
    /// stay open when a worker admitted after it began was counted among its reporters.
    pub fn flush_reports(&mut self) {
        for rec in self.aggregator.flush() {
            self.series.push(rec);
        }
    }

    /// The live series.
    pub fn series(&self) -> &Series {
        &self.series
    }

    /// The ledger, when kept.
    pub fn ledger(&self) -> Option<&Ledger> {
        self.assignment.ledger()
    }

    /// The current shares, for display.
    pub fn shares(&self) -> BTreeMap<WorkerId, u32> {
        self.shares.shares()
    }

    /// The assignment state for a checkpoint of parameters at `version`: in sync mode the
    /// one kept when step `version` began (or, when none was kept, the current one, which is
    /// right only while no worker has asked for a later step); in async and ssp the current
    /// one, counting acknowledged samples as done.
    pub fn checkpoint(&self, version: u64) -> assignment::Checkpoint {
        match &self.saved {
            Some((v, cp)) if *v == version && self.is_sync() => cp.clone(),
            _ => self
                .assignment
                .checkpoint(self.is_sync().then_some(version)),
        }
    }

    /// Async and ssp: while paused every request is answered `Idle`, so the outstanding leases
    /// drain and the shards hold exactly the acknowledged samples (a consistent checkpoint).
    /// Sync steps are checkpointed at their boundaries instead and are never paused.
    pub fn pause(&mut self, on: bool) {
        self.paused = on && !self.is_sync();
    }

    /// Leases handed out and not yet acknowledged or given back.
    pub fn outstanding(&self) -> usize {
        self.assignment.outstanding()
    }

    /// Leases acknowledged so far.
    pub fn acks(&self) -> u64 {
        self.assignment.acks()
    }

    /// Sync mode: the step whose assignment state is kept for a checkpoint (the latest multiple
    /// of `save_every` that began), if any.
    pub fn saved_step(&self) -> Option<u64> {
        self.saved.as_ref().map(|(v, _)| *v)
    }

    /// Why the job failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.elastic.failure()
    }
}

/// The coordinator in one process: the core behind a mutex, the dataset in memory.
#[derive(Debug)]
pub struct LocalDispatch {
    core: Mutex<Core>,
    records: Arc<Vec<Record>>,
    clock: MonotonicClock,
}

impl LocalDispatch {
    /// A coordinator over `records` (index `i` of the assignment is `records[i]`).
    pub fn new(cfg: Config, records: Arc<Vec<Record>>) -> Result<Self> {
        Self::build(cfg, records, None)
    }

    /// A coordinator continuing from a checkpoint's assignment state.
    pub fn resume(
        cfg: Config,
        records: Arc<Vec<Record>>,
        checkpoint: assignment::Checkpoint,
    ) -> Result<Self> {
        Self::build(cfg, records, Some(checkpoint))
    }

    fn build(
        cfg: Config,
        records: Arc<Vec<Record>>,
        checkpoint: Option<assignment::Checkpoint>,
    ) -> Result<Self> {
        if cfg.records != records.len() as u64 {
            return Err(Error::Length {
                what: "dataset",
                expected: cfg.records as usize,
                got: records.len(),
            });
        }
        let clock = MonotonicClock::default();
        Ok(Self {
            core: Mutex::new(Core::new(cfg, clock.now(), checkpoint)),
            records,
            clock,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Core) -> T) -> Result<T> {
        let mut core = self
            .core
            .lock()
            .map_err(|_| Error::Failed("coordinator state poisoned".into()))?;
        Ok(f(&mut core))
    }

    /// Closes the steps still waiting for reports (see [`Core::flush_reports`]).
    pub fn flush_reports(&self) -> Result<()> {
        self.with(Core::flush_reports)
    }

    /// Pauses or resumes handing out leases (async and ssp; see [`Core::pause`]).
    pub fn pause(&self, on: bool) -> Result<()> {
        self.with(|c| c.pause(on))
    }

    /// Reads the core (series, ledger, shares).
    pub fn inspect<T>(&self, f: impl FnOnce(&Core) -> T) -> Result<T> {
        self.with(|c| f(c))
    }

    /// Admits a worker: as a worker, it is joined to every shard before it starts.
    pub async fn admit(&self, params: &dyn ParamClient, worker: WorkerId) -> Result<Role> {
        let now = self.clock.now();
        let role = self.with(|c| c.join(now, worker))?;
        if role == Role::Worker {
            client::join_all(params, worker).await?;
        }
        Ok(role)
    }

    /// Removes a worker (dead, or drained by the coordinator): its lease goes back to the
    /// pool, the shards stop waiting for it. A standby promoted in its place is picked up
    /// with [`LocalDispatch::promote`].
    pub async fn depart(
        &self,
        params: &dyn ParamClient,
        worker: WorkerId,
        why: Why,
    ) -> Result<Departure> {
        let now = self.clock.now();
        let d = self.with(|c| c.leave(now, worker, why))?;
        client::leave_all(params, worker, d.drop_pending).await?;
        Ok(d)
    }

    /// Joins the standbys promoted since the last call to every shard and returns them: the
    /// caller starts their trainers.
    pub async fn promote(&self, params: &dyn ParamClient) -> Result<Vec<WorkerId>> {
        let promoted = self.with(Core::take_promoted)?;
        for w in &promoted {
            client::join_all(params, *w).await?;
        }
        Ok(promoted)
    }

    /// Checks the below-minimum timer (the coordinator calls this periodically); once the
    /// job has failed, every trainer's next request gets the reason.
    pub fn tick(&self) -> Result<Option<Effect>> {
        let now = self.clock.now();
        self.with(|c| c.tick(now))
    }
}

#[async_trait]
impl Dispatch for LocalDispatch {
    async fn next_batch(&self, worker: WorkerId, step: Option<u64>) -> Result<Work> {
        let next = self.with(|c| c.next(worker, step))??;
        Ok(match next {
            Next::Batch(lease) => {
                let records = lease
                    .indices
                    .iter()
                    .filter_map(|&i| self.records.get(i as usize).cloned())
                    .collect();
                Work::Batch { lease, records }
            }
            Next::Idle => Work::Idle,
            Next::Done => Work::Done,
        })
    }

    async fn ack(&self, worker: WorkerId, lease: u64, step: Option<u64>) -> Result<bool> {
        self.with(|c| c.ack(worker, lease, step))
    }

    async fn give_back(&self, worker: WorkerId) -> Result<()> {
        self.with(|c| c.give_back(worker))
    }

    async fn report(&self, report: WorkerReport) -> Result<()> {
        self.with(|c| c.report(report))
    }

    async fn leave(&self, worker: WorkerId) -> Result<bool> {
        let now = self.clock.now();
        self.with(|c| c.leave(now, worker, Why::Drained).drop_pending)
    }
}

/// The newest step records (a convenience for live views).
pub fn latest(d: &LocalDispatch, after: Option<u64>) -> Result<Vec<StepRecord>> {
    d.inspect(|c| c.series().since(after))
}
