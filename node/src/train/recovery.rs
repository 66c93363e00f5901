//! What a training run keeps across the loss of a parameter-server shard's host: periodic
//! checkpoints while it trains ([`Saver`]), the detection of a lost shard host
//! ([`lost_shard_host`]), and the history of the parts of the run before a restore
//! ([`History`]), which the final ledger and loss curve are built from.

use std::time::{Duration, Instant};

use flotilla_actors::training::dispatch::LocalDispatch;
use flotilla_actors::training::ledger::Ledger;
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::control;
use flotilla_protocol::training::StepRecord;
use flotilla_protocol::NodeId;
use serde_json::{json, Value};

use super::checkpoints::{self, SaveArgs};
use super::job::TrainContext;
use super::remote::RemoteParams;

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
    /// Keeps what `d` did before step `step` (the checkpoint the run goes back to).
    pub fn absorb(&mut self, d: &LocalDispatch, step: u64) {
        let part = d.inspect(|c| {
            (
                c.ledger().map(|l| l.before_step(step)),
                c.series()
                    .since(None)
                    .into_iter()
                    .filter(|r| r.step < step)
                    .collect::<Vec<_>>(),
            )
        });
        if let Ok((ledger, series)) = part {
            if let Some(l) = ledger {
                self.ledger.merge(&l);
            }
            self.series.retain(|r| r.step < step);
            self.series.extend(series);
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
    /// Every checkpoint taken, for the report.
    pub saved: Vec<Saved>,
    /// The step of the newest checkpoint of the current part of the run.
    pub last: u64,
}

impl Saver {
    /// The run went back to checkpoint `step`: later multiples are due again.
    pub fn rewind(&mut self, step: u64) {
        self.last = step;
    }

    /// Saves the checkpoint of the latest multiple of `save_every` the run began, once. A
    /// failure is logged and the run goes on: the next multiple tries again.
    pub async fn maybe_save(
        &mut self,
        ctx: &TrainContext,
        job: &JobId,
        params: &RemoteParams,
        d: &LocalDispatch,
        log: impl Fn(String),
    ) {
        if self.every == 0 {
            return;
        }
        let Ok(Some(step)) = d.inspect(|c| c.saved_step()) else {
            return;
        };
        if step <= self.last {
            return;
        }
        let Ok(assignment) = d.inspect(|c| c.checkpoint(step)) else {
            return;
        };
        let alive = ctx.data.alive().await;
        let started = Instant::now();
        let args = SaveArgs {
            job,
            step,
            seed: self.seed,
            assignment,
            alive: &alive,
        };
        match checkpoints::save(&ctx.mesh, params, args).await {
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
}

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
