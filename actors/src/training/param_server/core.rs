//! One parameter-server shard as a pure state machine: its range of the flat parameter vector,
//! the optimizer state for that range, and the aggregation rule of the job's mode.
//!
//! - **sync** (BSP): a gradient for step `t` waits until every active worker has pushed one for
//!   `t`; then the sample-weighted mean is applied once and the shard moves to `t + 1`. A worker
//!   that leaves is dropped from the barrier, and its held gradient is discarded or kept as the
//!   coordinator says (discarded when its samples were not acknowledged, so they are served
//!   again), so a departure never deadlocks a step. A pull for "after `t`" is ready once the
//!   shard is past `t`.
//! - **async**: every gradient is applied when it arrives; its staleness (versions between the
//!   one it was computed at and now) is tracked.
//! - **ssp(s)**: gradients are applied as in async, but a worker's pull is held while it has
//!   pushed more than `s` gradients more than the slowest active worker.
//!
//! Clipping by global norm in sync mode is done here, on the step's mean gradient, so a step
//! is the same whichever way its batch was split across workers (clipping each worker's part
//! would not be). The norm spans every shard: when the barrier completes, the shard holds the
//! mean and answers pulls with its partial squared norm ([`Readiness::NeedsNorm`]); a trainer
//! that has every shard's partial (or the norm another trainer already sent) sends the global
//! norm with [`Shard::finish`], the shard applies the clipped mean and moves on. Every trainer
//! computes the same norm from the same partials, so the first `finish` wins and later ones
//! are no-ops. In async and ssp modes each gradient is its own step and trainers clip it.
//!
//! A gradient with samples but a non-finite value (or, in sync, a step with any such gradient)
//! is skipped and counted; `max_consecutive_nonfinite` skips in a row fail the job. A
//! contribution with zero samples (a worker with no data this step) takes part in barriers and
//! clocks but changes nothing.
//!
//! The actor shell holds pulls that are not ready and re-asks [`Shard::pull_ready`] after every
//! push, join or leave.

use std::collections::BTreeMap;

use flotilla_protocol::services::training::PushOutcome;
use flotilla_protocol::training::{Consistency, GradPayload, WorkerId};
use serde::{Deserialize, Serialize};

use crate::training::error::{Error, Result};
use crate::training::optim::{ClipConfig, FlatOptimizer, GradClipper, LrPlan};

/// What a shard is configured with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub shard: u32,
    pub consistency: Consistency,
    /// Non-finite steps in a row that fail the job (at least 1).
    pub max_consecutive_nonfinite: u32,
    pub lr: LrPlan,
    /// Sync mode: snapshot the shard each time its version reaches a multiple of this (0:
    /// never), so every shard of a job keeps its state at exactly the checkpoint's step while
    /// training goes on.
    pub save_every: u64,
    /// Sync mode: clip each step's mean gradient by its global L2 norm, to a fixed or an
    /// adaptive threshold (see the module docs). Ignored in async and ssp modes, where trainers
    /// clip.
    pub clip: Option<ClipConfig>,
}

/// Whether a pull may be answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Readiness {
    /// Not yet (the sync barrier or the staleness bound).
    Wait,
    /// Now, with the parameters.
    Ready,
    /// Sync with clipping: step `step`'s mean gradient waits for the global norm; this shard's
    /// part of the squared norm is `partial_sq`.
    NeedsNorm { step: u64, partial_sq: f64 },
}

/// A sync step's mean gradient waiting for the global norm.
#[derive(Debug, Clone)]
struct AwaitingNorm {
    step: u64,
    mean: Vec<f32>,
    partial_sq: f64,
}

/// A gradient held for a sync step.
#[derive(Debug, Clone)]
struct Held {
    samples: u32,
    finite: bool,
    grad: Vec<f32>,
}

/// A shard's counters, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Steps (sync) or gradients (async, ssp) taken, skipped ones included.
    pub version: u64,
    /// Optimizer updates applied.
    pub updates: u64,
    /// Steps or gradients skipped as non-finite.
    pub skipped: u64,
    pub consecutive_nonfinite: u32,
    /// Largest staleness of an applied gradient.
    pub max_staleness: u64,
    pub workers: usize,
    /// Sync gradients held for the current step.
    pub held: usize,
}

/// What a checkpoint keeps of a shard. Held sync gradients are not kept: a checkpoint at
/// version `v` counts only samples of steps before `v` as done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub shard: u32,
    pub version: u64,
    pub updates: u64,
    #[serde(with = "flotilla_protocol::floats")]
    pub params: Vec<f32>,
    #[serde(with = "serde_bytes")]
    pub optimizer: Vec<u8>,
    pub clocks: Vec<(WorkerId, u64)>,
}

/// One parameter-server shard.
pub struct Shard {
    cfg: Config,
    params: Vec<f32>,
    opt: Box<dyn FlatOptimizer>,
    version: u64,
    updates: u64,
    /// Active workers and their clocks (gradients pushed).
    clocks: BTreeMap<WorkerId, u64>,
    held: BTreeMap<WorkerId, Held>,
    skipped: u64,
    consecutive_nonfinite: u32,
    max_staleness: u64,
    failed: Option<String>,
    /// The latest automatic snapshot (sync mode, every `save_every` steps).
    saved: Option<Snapshot>,
    awaiting: Option<AwaitingNorm>,
    /// The global norm of the last step clipped here (sync with clipping).
    last_norm: Option<f32>,
    /// The step's clipping (sync with clipping): every shard of a job sees the same global
    /// norms in the same order, so adaptive thresholds agree across shards.
    clipper: Option<GradClipper>,
    /// Why `cfg.clip` could not be used; the shard stays failed, even after a restore.
    bad_clip: Option<String>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("cfg", &self.cfg)
            .field("len", &self.params.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Shard {
    /// A shard starting from `params` (its range of the initial vector) at version 0.
    pub fn new(cfg: Config, params: Vec<f32>, opt: Box<dyn FlatOptimizer>) -> Self {
        let (clipper, bad_clip) = match cfg.clip.map(GradClipper::new).transpose() {
            Ok(clipper) => (clipper, None),
            Err(e) => (None, Some(format!("shard {}: clipping: {e}", cfg.shard))),
        };
        Self {
            cfg,
            params,
            opt,
            version: 0,
            updates: 0,
            clocks: BTreeMap::new(),
            held: BTreeMap::new(),
            skipped: 0,
            consecutive_nonfinite: 0,
            max_staleness: 0,
            failed: bad_clip.clone(),
            saved: None,
            awaiting: None,
            last_norm: None,
            clipper,
            bad_clip,
        }
    }

    /// The shard's parameters.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Steps or gradients taken so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The global gradient norm of the step that produced the current version, when this
    /// shard clips (sync mode with clipping); trainers pass it on to shards still waiting.
    pub fn last_norm(&self) -> Option<f32> {
        self.last_norm
    }

    /// Why the job failed here, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats {
            version: self.version,
            updates: self.updates,
            skipped: self.skipped,
            consecutive_nonfinite: self.consecutive_nonfinite,
            max_staleness: self.max_staleness,
            workers: self.clocks.len(),
            held: self.held.len(),
        }
    }

    fn check_alive(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(Error::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Counts `worker` among the active workers. In ssp its clock starts at the slowest
    /// active worker's, so a newcomer neither holds the others back nor runs ahead. Joining
    /// twice changes nothing.
    pub fn join(&mut self, worker: WorkerId) -> Result<()> {
        self.check_alive()?;
        let start = self.clocks.values().copied().min().unwrap_or(0);
        self.clocks.entry(worker).or_insert(start);
        Ok(())
    }

    /// Stops counting `worker`. In sync mode its held gradient is discarded when
    /// `drop_pending`, and the step completes if every remaining worker has pushed; the
    /// outcome of that completion is returned.
    pub fn leave(&mut self, worker: WorkerId, drop_pending: bool) -> Option<PushOutcome> {
        self.clocks.remove(&worker);
        if drop_pending {
            self.held.remove(&worker);
        }
        if self.cfg.consistency == Consistency::Sync && self.failed.is_none() {
            self.try_complete()
        } else {
            None
        }
    }

    /// Whether `worker`'s pull may be answered now. `after` is the version of the worker's
    /// last gradient (none for its first pull).
    pub fn pull_ready(&self, worker: WorkerId, after: Option<u64>) -> Result<Readiness> {
        self.check_alive()?;
        let Some(&clock) = self.clocks.get(&worker) else {
            return Err(Error::UnknownWorker(worker));
        };
        if let Some(a) = &self.awaiting {
            return Ok(Readiness::NeedsNorm {
                step: a.step,
                partial_sq: a.partial_sq,
            });
        }
        let ready = match self.cfg.consistency {
            Consistency::Sync => after.is_none_or(|a| self.version > a),
            Consistency::Async => true,
            Consistency::Ssp(s) => {
                let slowest = self.clocks.values().copied().min().unwrap_or(clock);
                clock <= slowest + u64::from(s)
            }
        };
        Ok(if ready {
            Readiness::Ready
        } else {
            Readiness::Wait
        })
    }

    /// Sync with clipping: the global gradient norm of step `step`. The held mean is scaled
    /// down to the clipper's threshold (fixed, or adaptive: the same on every shard, which all
    /// see the same norms) when the norm exceeds it and applied, and the shard moves to `step + 1`.
    /// A step already finished is a no-op (another trainer sent the same norm first); a
    /// non-finite norm skips the step.
    pub fn finish(&mut self, step: u64, norm: f32) -> Result<()> {
        self.check_alive()?;
        let Some(a) = self.awaiting.take_if(|a| a.step == step) else {
            if step < self.version {
                return Ok(());
            }
            return Err(Error::Ahead {
                step,
                current: self.version,
            });
        };
        self.version += 1;
        self.last_norm = Some(norm);
        if !norm.is_finite() || norm < 0.0 {
            self.skip();
        } else {
            let mut mean = a.mean;
            if let Some(clipper) = self.clipper.as_mut() {
                clipper.clip_with_norm(&mut mean, f64::from(norm));
            }
            // A failed update fails the shard; pulls then report it.
            let _ = self.apply(&mean);
        }
        self.after_step();
        Ok(())
    }

    /// Which shard of the job's parameters this is.
    pub fn index(&self) -> u32 {
        self.cfg.shard
    }

    /// Values `offset..offset + len` of the range.
    pub fn range(&self, offset: u64, len: u64) -> Result<&[f32]> {
        let bad = || Error::Range {
            offset,
            len,
            size: self.params.len(),
        };
        let start = usize::try_from(offset).map_err(|_| bad())?;
        let end = start
            .checked_add(usize::try_from(len).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        self.params.get(start..end).ok_or_else(bad)
    }

    /// A gradient from `worker`, computed at version `step` from `samples` samples. With zero
    /// samples the payload may be empty.
    pub fn push(
        &mut self,
        worker: WorkerId,
        step: u64,
        samples: u32,
        grad: &GradPayload,
    ) -> Result<PushOutcome> {
        self.check_alive()?;
        if !self.clocks.contains_key(&worker) {
            return Err(Error::UnknownWorker(worker));
        }
        if step > self.version {
            return Err(Error::Ahead {
                step,
                current: self.version,
            });
        }
        let finite = samples == 0 || grad.is_finite();
        let grad = if samples == 0 {
            Vec::new()
        } else {
            let g = grad.decode().ok_or(Error::Malformed)?;
            if g.len() != self.params.len() {
                return Err(Error::Length {
                    what: "gradient",
                    expected: self.params.len(),
                    got: g.len(),
                });
            }
            g
        };
        match self.cfg.consistency {
            Consistency::Sync => self.push_sync(worker, step, samples, finite, grad),
            Consistency::Async | Consistency::Ssp(_) => {
                self.push_async(worker, step, samples, finite, &grad)
            }
        }
    }

    fn push_sync(
        &mut self,
        worker: WorkerId,
        step: u64,
        samples: u32,
        finite: bool,
        grad: Vec<f32>,
    ) -> Result<PushOutcome> {
        if step < self.version || self.awaiting.is_some() {
            // Past the step, or its barrier already closed: the samples are served again.
            return Ok(PushOutcome::Stale {
                current: self.version,
            });
        }
        if self.held.contains_key(&worker) {
            return Err(Error::DuplicatePush { worker, step });
        }
        self.held.insert(
            worker,
            Held {
                samples,
                finite,
                grad,
            },
        );
        if let Some(c) = self.clocks.get_mut(&worker) {
            *c += 1;
        }
        Ok(self.try_complete().unwrap_or(PushOutcome::Pending))
    }

    /// Completes the sync step when every active worker has pushed.
    fn try_complete(&mut self) -> Option<PushOutcome> {
        if self.held.is_empty() || !self.clocks.keys().all(|w| self.held.contains_key(w)) {
            return None;
        }
        let held = std::mem::take(&mut self.held);
        let outcome = self.complete(&held);
        if !matches!(outcome, PushOutcome::Pending) {
            self.after_step();
        }
        Some(outcome)
    }

    /// Bookkeeping once the shard moved to a new sync version: the automatic snapshot.
    fn after_step(&mut self) {
        if self.failed.is_none()
            && self.cfg.save_every > 0
            && self.version.is_multiple_of(self.cfg.save_every)
        {
            self.saved = Some(self.snapshot());
        }
    }

    /// Applies (or skips) a completed sync step and moves to the next version; with clipping,
    /// holds the mean for the global norm instead and answers `Pending`.
    fn complete(&mut self, held: &BTreeMap<WorkerId, Held>) -> PushOutcome {
        if held.values().any(|h| h.samples > 0 && !h.finite) {
            self.version += 1;
            return self.skip();
        }
        let total: u64 = held.values().map(|h| u64::from(h.samples)).sum();
        if total > 0 {
            // The sample-weighted mean of per-worker mean gradients is the mean gradient of
            // the step's whole batch, as a single process would compute it.
            let mut mean = vec![0.0f32; self.params.len()];
            for h in held.values().filter(|h| h.samples > 0) {
                let w = h.samples as f32 / total as f32;
                for (m, g) in mean.iter_mut().zip(&h.grad) {
                    *m += w * g;
                }
            }
            if self.clipper.is_some() {
                let partial_sq = mean.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
                self.awaiting = Some(AwaitingNorm {
                    step: self.version,
                    mean,
                    partial_sq,
                });
                return PushOutcome::Pending;
            }
            self.version += 1;
            if let Err(outcome) = self.apply(&mean) {
                return outcome;
            }
        } else {
            self.version += 1;
        }
        PushOutcome::Applied {
            version: self.version,
            staleness: 0,
        }
    }

    fn push_async(
        &mut self,
        worker: WorkerId,
        step: u64,
        samples: u32,
        finite: bool,
        grad: &[f32],
    ) -> Result<PushOutcome> {
        if let Some(c) = self.clocks.get_mut(&worker) {
            *c += 1;
        }
        let staleness = self.version - step;
        if samples == 0 {
            return Ok(PushOutcome::Applied {
                version: self.version,
                staleness,
            });
        }
        self.version += 1;
        if !finite {
            return Ok(self.skip());
        }
        if let Err(outcome) = self.apply(grad) {
            return Ok(outcome);
        }
        self.max_staleness = self.max_staleness.max(staleness);
        Ok(PushOutcome::Applied {
            version: self.version,
            staleness,
        })
    }

    /// One optimizer update; on failure the job fails and the skip outcome is returned.
    fn apply(&mut self, grad: &[f32]) -> std::result::Result<(), PushOutcome> {
        let lr = self.cfg.lr.lr_at(self.updates);
        if let Err(e) = self.opt.step(&mut self.params, grad, lr) {
            self.failed = Some(format!("shard {}: optimizer: {e}", self.cfg.shard));
            return Err(PushOutcome::Skipped {
                consecutive: self.consecutive_nonfinite,
            });
        }
        self.updates += 1;
        self.consecutive_nonfinite = 0;
        Ok(())
    }

    fn skip(&mut self) -> PushOutcome {
        self.skipped += 1;
        self.consecutive_nonfinite += 1;
        if self.consecutive_nonfinite >= self.cfg.max_consecutive_nonfinite.max(1) {
            self.failed = Some(format!(
                "shard {}: {} steps in a row had a non-finite loss or gradient (limit {}); \
                 lower the learning rate or enable gradient clipping",
                self.cfg.shard, self.consecutive_nonfinite, self.cfg.max_consecutive_nonfinite
            ));
        }
        PushOutcome::Skipped {
            consecutive: self.consecutive_nonfinite,
        }
    }

    /// The state a checkpoint keeps.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            shard: self.cfg.shard,
            version: self.version,
            updates: self.updates,
            params: self.params.clone(),
            optimizer: self.opt.save_state(),
            clocks: self.clocks.iter().map(|(w, c)| (*w, *c)).collect(),
        }
    }

    /// The state at version `step` for a checkpoint: the automatic snapshot taken there, or
    /// the current state when the shard is at `step`.
    pub fn snapshot_at(&self, step: u64) -> Result<Snapshot> {
        match &self.saved {
            Some(s) if s.version == step => Ok(s.clone()),
            _ if self.version == step => Ok(self.snapshot()),
            // Async and ssp checkpoints are taken with the workers quiesced: the state as it
            // stands, whatever its version (the checkpoint's `step` is then only its key).
            _ if self.cfg.consistency != Consistency::Sync => Ok(self.snapshot()),
            _ => Err(Error::Checkpoint(format!(
                "shard {} is at step {} and holds no snapshot of step {step}",
                self.cfg.shard, self.version
            ))),
        }
    }

    /// Replaces the state with a snapshot of the same range; held gradients are discarded
    /// (their samples were not done at the snapshot) and a failure is cleared.
    pub fn restore(&mut self, s: Snapshot) -> Result<()> {
        if s.params.len() != self.params.len() {
            return Err(Error::Length {
                what: "snapshot",
                expected: self.params.len(),
                got: s.params.len(),
            });
        }
        self.opt
            .load_state(&s.optimizer)
            .map_err(Error::Checkpoint)?;
        self.params = s.params;
        self.version = s.version;
        self.updates = s.updates;
        self.clocks = s.clocks.into_iter().collect();
        self.held.clear();
        self.awaiting = None;
        self.last_norm = None;
        self.consecutive_nonfinite = 0;
        self.failed = self.bad_clip.clone();
        Ok(())
    }
}
