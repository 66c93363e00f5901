//! What a training run keeps across the loss of a parameter-server shard's host or of its
//! coordinator's node: periodic checkpoints while it trains ([`Saver`]), the detection of a
//! lost shard host ([`lost_shard_host`]), shards restored from a checkpoint
//! ([`restore_shards`]), and the history of the parts of the run before a restore
//! ([`History`]), which the final ledger and loss curve are built from.
//!
//! A run's checkpoints are keyed by its *lineage* (derived from the catalog job), its actors by
//! its *attempt*. A coordinator started again for the same catalog job (its node died and the
//! job's owner placed the task elsewhere) finds the lineage's checkpoints, stops what is left
//! of the attempt that wrote them, and goes on from the newest one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_actors::training::checkpoint::{self, Manifest, RunState};
use flotilla_actors::training::client::ParamClient;
use flotilla_actors::training::dispatch::LocalDispatch;
use flotilla_actors::training::ledger::Ledger;
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::control;
use flotilla_protocol::training::StepRecord;
use flotilla_protocol::NodeId;
use serde_json::{json, Value};

use super::checkpoints::{self, SaveArgs};
use super::job::TrainContext;
use flotilla_actors::training::coordinator::params::{shard_actor, RemoteParams};
use flotilla_protocol::training::ShardArgs;

/// How long a shard host has to answer a ping before it counts as lost.
const PING: Duration = Duration::from_secs(2);

/// The parts of a run before each restore: what the final report is built from besides the
/// current part's dispatch.
#[derive(Debug, Default)]
pub(super) struct History {
    /// Samples consumed by the steps before the checkpoint each restore went back to.
    pub ledger: Ledger,
    /// Step records before that checkpoint.
    pub series: Vec<StepRecord>,
    /// `(worker, node, reason)` of trainers that left before the end.
    pub departed: Vec<(u32, String, String)>,
    /// `(worker, node)` of trainers started after the beginning.
    pub joined: Vec<(u32, String)>,
    /// One entry a restore: the lost host, the checkpoint step and the time it took.
    pub restores: Vec<Value>,
    /// The next worker id to hand out (ids are never reused within a run).
    pub next_worker: u32,
}

impl History {
    /// The history of a run resumed from a checkpoint another coordinator wrote.
    pub fn resumed(state: &RunState) -> Self {
        Self {
            ledger: Ledger::from_steps(&state.ledger),
            series: state.series.clone(),
            ..Self::default()
        }
    }

    /// Goes back to the ledger and step records a checkpoint kept (the departures, joins and
    /// restores stay).
    pub fn rewind_to(&mut self, state: &RunState) {
        self.ledger = Ledger::from_steps(&state.ledger);
        self.series = state.series.clone();
    }

    /// The whole run's ledger and step records before step `step`: the earlier parts and
    /// what `d` did. `None` when `d` cannot be read.
    pub fn upto(&self, d: &LocalDispatch, step: u64) -> Option<(Ledger, Vec<StepRecord>)> {
        let (ledger, series) = d
            .inspect(|c| {
                (
                    c.ledger().map(|l| l.before_step(step)),
                    c.series()
                        .since(None)
                        .into_iter()
                        .filter(|r| r.step < step)
                        .collect::<Vec<_>>(),
                )
            })
            .ok()?;
        let mut whole = self.ledger.before_step(step);
        if let Some(l) = ledger {
            whole.merge(&l);
        }
        let mut all: Vec<StepRecord> = self
            .series
            .iter()
            .filter(|r| r.step < step)
            .cloned()
            .collect();
        all.extend(series);
        Some((whole, all))
    }

    /// Keeps what `d` did before step `step` (the checkpoint the run goes back to).
    pub fn absorb(&mut self, d: &LocalDispatch, step: u64) {
        if let Some((ledger, series)) = self.upto(d, step) {
            self.ledger = ledger;
            self.series = series;
        }
    }
}

/// One checkpoint written during the run.
#[derive(Debug, Clone)]
pub(super) struct Saved {
    pub step: u64,
    pub holders: Vec<NodeId>,
    pub bytes: u64,
    pub seconds: f64,
}

impl Saved {
    pub fn to_json(&self) -> Value {
        json!({
            "step": self.step,
            "holders": self.holders.iter().map(|h| h.0.clone()).collect::<Vec<_>>(),
            "bytes": self.bytes,
            "seconds": self.seconds,
        })
    }
}

/// Takes a checkpoint each time a sync run passes a multiple of `save_every`.
#[derive(Debug)]
pub(super) struct Saver {
    pub every: u64,
    pub seed: u64,
    /// The run's lineage: what its checkpoints are kept under.
    pub lineage: JobId,
    /// The catalog job the run belongs to (holders check its coordinator).
    pub catalog_job: JobId,
    /// This attempt (recorded so that a later one can stop its leftovers).
    pub attempt: JobId,
    /// The run's global batch (recorded so that a resumed run keeps it).
    pub global_batch: u32,
    /// Sync runs checkpoint at step boundaries; async and ssp ones quiesce their workers.
    pub sync: bool,
    /// Async and ssp: the key of the checkpoint the current part of the run started from.
    pub base: u64,
    /// Every checkpoint taken, for the report.
    pub saved: Vec<Saved>,
    /// The step of the newest checkpoint of the current part of the run.
    pub last: u64,
}

impl Saver {
    /// The run went back to checkpoint `step`: later multiples are due again.
    pub fn rewind(&mut self, step: u64) {
        self.last = step;
        self.base = step;
    }

    /// Saves a checkpoint when one is due. A failure is logged and the run goes on: the next
    /// one tries again.
    ///
    /// - Sync: the latest multiple of `save_every` the run began, once (the shards and the
    ///   dispatch kept their state of that step).
    /// - Async and ssp: once `save_every` more leases were acknowledged. New leases stop; once
    ///   the outstanding ones are in, the shards write their state as it stands and leases
    ///   resume, so the checkpoint holds exactly the acknowledged samples. Its key is
    ///   `base` + the leases acknowledged, which grows across restores.
    ///
    /// `last` (the node is shutting down): an async or ssp run saves if any lease was
    /// acknowledged since its last checkpoint; a sync run saves the newest step its shards kept,
    /// if it was not saved yet (sync shards keep only multiples of `save_every`).
    pub async fn maybe_save(
        &mut self,
        ctx: &TrainContext,
        params: &RemoteParams,
        d: &LocalDispatch,
        history: &History,
        log: impl Fn(String),
        last: bool,
    ) {
        if self.every == 0 {
            return;
        }
        let started = Instant::now();
        let taken = if self.sync {
            self.take_sync(params, d, history).await
        } else {
            self.take_quiesced(params, d, history, last).await
        };
        let (step, shards, assignment, (ledger, series)) = match taken {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                log(format!("checkpoint not taken: {e}"));
                return;
            }
        };
        let alive = ctx.data.alive().await;
        let job = &self.lineage;
        let args = SaveArgs {
            catalog_job: &self.catalog_job,
            job,
            step,
            seed: self.seed,
            assignment,
            run: RunState {
                attempt: self.attempt.0.clone(),
                ledger: ledger.steps().to_vec(),
                series,
                global_batch: self.global_batch,
            },
            alive: &alive,
        };
        match checkpoints::save(&ctx.mesh, params, args, shards).await {
            Ok(m) => {
                let saved = Saved {
                    step,
                    holders: m.holders.clone(),
                    bytes: m.shards.iter().map(|s| s.bytes).sum(),
                    seconds: started.elapsed().as_secs_f64(),
                };
                log(format!(
                    "checkpoint {step} saved on {} ({} bytes, {:.2} s)",
                    saved
                        .holders
                        .iter()
                        .map(|h| h.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    saved.bytes,
                    saved.seconds
                ));
                self.saved.push(saved);
                self.last = step;
            }
            Err(e) => {
                tracing::warn!(job = %job.as_str(), step, error = %e, "checkpoint not saved");
                log(format!("checkpoint {step} not saved: {e}"));
            }
        }
    }

    /// A sync checkpoint's parts, when a multiple of `every` was begun since the last one.
    async fn take_sync(
        &self,
        params: &RemoteParams,
        d: &LocalDispatch,
        history: &History,
    ) -> Result<Option<Taken>, String> {
        let Some(step) = d.inspect(|c| c.saved_step()).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if step <= self.last {
            return Ok(None);
        }
        let assignment = d
            .inspect(|c| c.checkpoint(step))
            .map_err(|e| e.to_string())?;
        let run = history
            .upto(d, step)
            .ok_or("the coordinator's state is unreadable")?;
        let shards = checkpoints::save_shards(params, step).await?;
        Ok(Some((step, shards, assignment, run)))
    }

    /// An async or ssp checkpoint's parts, taken with the workers quiesced, when `every` more
    /// leases were acknowledged since the last one (with `last`, when any was).
    async fn take_quiesced(
        &self,
        params: &RemoteParams,
        d: &LocalDispatch,
        history: &History,
        last: bool,
    ) -> Result<Option<Taken>, String> {
        let e = |e: flotilla_actors::training::error::Error| e.to_string();
        let acks = d.inspect(|c| c.acks()).map_err(e)?;
        let due = if last {
            self.base + acks > self.last
        } else {
            self.base + acks >= self.last + self.every
        };
        if !due {
            return Ok(None);
        }
        d.pause(true).map_err(e)?;
        let deadline = Instant::now() + QUIESCE;
        let drained = loop {
            if d.inspect(|c| c.outstanding()).map_err(e)? == 0 {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let parts = async {
            if !drained {
                return Err(format!(
                    "leases still outstanding after {} s",
                    QUIESCE.as_secs()
                ));
            }
            let (acks, assignment) = d.inspect(|c| (c.acks(), c.checkpoint(0))).map_err(e)?;
            let step = self.base + acks;
            let run = history
                .upto(d, u64::MAX)
                .ok_or("the coordinator's state is unreadable")?;
            let shards = checkpoints::save_shards(params, step).await?;
            Ok(Some((step, shards, assignment, run)))
        }
        .await;
        d.pause(false).map_err(e)?;
        parts
    }
}

/// What a checkpoint is built from: its step (key), the shards' blobs, the assignment state,
/// and the run's ledger and step records before it.
type Taken = (
    u64,
    Vec<flotilla_actors::training::checkpoint::ShardEntry>,
    flotilla_actors::training::assignment::Checkpoint,
    (Ledger, Vec<StepRecord>),
);

/// How long an async or ssp checkpoint waits for the outstanding leases.
const QUIESCE: Duration = Duration::from_secs(30);

/// The first shard host that is gone: not alive in the membership view, or not answering a
/// ping. This node is never lost to itself.
pub(super) async fn lost_shard_host(ctx: &TrainContext, hosts: &[NodeId]) -> Option<NodeId> {
    let alive = ctx.data.alive().await;
    for host in hosts {
        if *host == ctx.data.me {
            continue;
        }
        if !alive.contains(host) {
            return Some(host.clone());
        }
        if ctx
            .mesh
            .control(host, control::RequestBody::Ping, PING)
            .await
            .is_err()
        {
            return Some(host.clone());
        }
    }
    None
}

/// The alive nodes that answer a ping, in the membership view's order: a node that died but is
/// not yet declared dead gets no shard.
pub(super) async fn reachable(ctx: &TrainContext) -> Vec<NodeId> {
    let alive = ctx.data.alive().await;
    let pings = alive.iter().map(|n| async move {
        *n == ctx.data.me
            || ctx
                .mesh
                .control(n, control::RequestBody::Ping, PING)
                .await
                .is_ok()
    });
    let answers = futures::future::join_all(pings).await;
    alive
        .into_iter()
        .zip(answers)
        .filter_map(|(n, ok)| ok.then_some(n))
        .collect()
}

/// Spawns every shard of checkpoint `manifest` (read from `holder`) on `hosts` under attempt
/// `attempt`'s names, from `template`'s settings, and restores each from its blob. The workers
/// the checkpoint counted are gone: each shard's barrier waits for new ones.
pub(super) async fn restore_shards(
    ctx: &TrainContext,
    catalog_job: &JobId,
    attempt: &JobId,
    template: &ShardArgs,
    holder: &NodeId,
    manifest: &Manifest,
    hosts: &[NodeId],
) -> Result<Arc<RemoteParams>, String> {
    let blobs = checkpoints::stage_blobs(&ctx.mesh, catalog_job, holder, manifest, hosts).await?;
    let mut args = Vec::with_capacity(blobs.len());
    let mut old_workers = BTreeSet::new();
    for (i, blob) in blobs.iter().enumerate() {
        let snap = checkpoint::decode_snapshot(blob).map_err(|e| e.to_string())?;
        old_workers.extend(snap.clocks.iter().map(|(w, _)| *w));
        args.push(template.for_shard(i as u32, snap.params));
    }
    let total = manifest.total_params as usize;
    let params = super::job::spawn_shards(ctx, attempt, hosts, args, total).await?;
    for (i, e) in manifest.shards.iter().enumerate() {
        params
            .restore(i as u32, manifest.step, e.blake3.clone())
            .await
            .map_err(|e| e.to_string())?;
        for w in &old_workers {
            params
                .leave(i as u32, *w, true)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(params)
}

/// Stops the parameter-server shards an earlier attempt left on `nodes` (best effort: a shard
/// that is gone already, or never ran there, is not an error). Its trainers end by themselves
/// once their coordinator is unreachable.
pub(super) async fn stop_leftovers(
    ctx: &TrainContext,
    attempt: &str,
    shards: usize,
    nodes: &[NodeId],
) {
    let attempt = JobId(attempt.to_string());
    for node in nodes {
        for i in 0..shards {
            let actor: flotilla_actors::remote::RemoteActor<(), ()> =
                flotilla_actors::remote::RemoteActor::new(
                    ctx.mesh.clone(),
                    node.clone(),
                    &shard_actor(&attempt, i as u32),
                    PING,
                );
            let _ = actor.stop().await;
        }
    }
}
