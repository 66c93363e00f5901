//! The typed API of the `Executor`; every call has a deadline.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::jobs::{JobId, JobKind, Priority, Resources, RunningTask};
use flotilla_protocol::services::jobs::{LedgerEntry, StartAnswer};
use flotilla_protocol::NodeId;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;

use super::actor::{Args, Executor};
use super::msg::{Msg, RemoteCaller};
use super::{Execution, Finished, TaskRunner};
use crate::jobs::ledger::TaskKey;
use crate::store::Store;
use crate::{Error, Result};

const ACTOR: &str = "executor";

/// A start request, as a job's owner sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub job: JobId,
    pub task: u32,
    pub owner: NodeId,
    pub epoch: u64,
    pub attempt: u32,
    pub kind: JobKind,
    pub priority: Priority,
    pub resources: Resources,
}

/// Says why this node takes no new tasks now (it is shutting down, its store failed), or
/// `None` when it takes them.
pub type Gate = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// A cloneable handle to a running `Executor`.
#[derive(Clone)]
pub struct Handle {
    actor: ActorRef<Msg>,
    deadline: Duration,
    /// Consulted before every start; see [`Handle::with_gate`].
    gate: Option<Gate>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("actor", &self.actor)
            .field("deadline", &self.deadline)
            .field("gated", &self.gate.is_some())
            .finish()
    }
}

fn answer<T>(
    r: std::result::Result<CallResult<T>, ractor::MessagingErr<Msg>>,
    deadline: Duration,
) -> Result<T> {
    match r {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(Error::Timeout {
            actor: ACTOR,
            deadline,
        }),
        Ok(CallResult::SenderError) | Err(_) => Err(Error::ActorGone { actor: ACTOR }),
    }
}

impl Handle {
    /// Spawns the executor, restoring its ledger from `store`. Finished tasks are reported on
    /// the returned channel (capacity `report_capacity`).
    pub async fn spawn(
        store: Arc<dyn Store>,
        runner: Arc<dyn TaskRunner>,
        report_capacity: usize,
    ) -> Result<(
        Handle,
        mpsc::Receiver<Finished>,
        tokio::task::JoinHandle<()>,
    )> {
        let (finished, reports) = mpsc::channel(report_capacity.max(1));
        let (actor, join) = Actor::spawn(
            None,
            Executor,
            Args {
                store,
                runner,
                finished,
            },
        )
        .await
        .map_err(|e| Error::Store(format!("executor failed to start: {e}")))?;
        Ok((
            Handle {
                actor,
                deadline: Duration::from_secs(10),
                gate: None,
            },
            reports,
            join,
        ))
    }

    /// This handle, refusing every start while `gate` gives a reason (starts from the local
    /// job manager and from peers both go through it). Running tasks are not affected.
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Starts (or re-attaches to, or refuses) a task. While the gate gives a reason the start
    /// is refused with it ([`Error::Forbidden`]) and nothing is written.
    pub async fn start(&self, start: Start) -> Result<StartAnswer> {
        if let Some(reason) = self.gate.as_ref().and_then(|g| g()) {
            return Err(Error::Forbidden(format!(
                "this node takes no new tasks: {reason}"
            )));
        }
        let Start {
            job,
            task,
            owner,
            epoch,
            attempt,
            kind,
            priority,
            resources,
        } = start;
        let key = TaskKey { job, task };
        let r = self
            .actor
            .call(
                |reply| Msg::Start {
                    key,
                    owner,
                    epoch,
                    attempt,
                    kind,
                    priority,
                    resources,
                    reply,
                },
                Some(self.deadline),
            )
            .await;
        answer(r, self.deadline)?
    }

    /// Stops a running task for a higher priority class; whether it was running.
    pub async fn preempt(&self, job: JobId, task: u32, reason: String) -> Result<bool> {
        self.preempt_as(job, task, reason, None).await
    }

    /// [`Handle::preempt`] asked by a peer: refused unless `remote` owns an unfinished job of a
    /// higher class than the task's.
    pub async fn preempt_as(
        &self,
        job: JobId,
        task: u32,
        reason: String,
        remote: Option<RemoteCaller>,
    ) -> Result<bool> {
        let key = TaskKey { job, task };
        let r = self
            .actor
            .call(
                |reply| Msg::Preempt {
                    key,
                    reason,
                    remote,
                    reply,
                },
                Some(self.deadline),
            )
            .await;
        answer(r, self.deadline)?
    }

    /// Reserves `resources` for `holder` (a serving replica) in the inference class, or
    /// releases its reservation with `None`; lower-class tasks are preempted until what is
    /// reserved fits in `capacity`. Returns the tasks preempted.
    pub async fn reserve(
        &self,
        holder: String,
        resources: Option<Resources>,
        capacity: Resources,
    ) -> Result<Vec<RunningTask>> {
        let r = self
            .actor
            .call(
                |reply| Msg::Reserve {
                    holder,
                    resources,
                    capacity,
                    reply,
                },
                Some(self.deadline),
            )
            .await;
        answer(r, self.deadline)?
    }

    /// The tasks running on this node and the reservations.
    pub async fn usage(&self) -> Result<Vec<RunningTask>> {
        let r = self
            .actor
            .call(|reply| Msg::Usage { reply }, Some(self.deadline))
            .await;
        answer(r, self.deadline)
    }

    /// Every execution this node started (of `job`, if given).
    pub async fn runs(&self, job: Option<JobId>) -> Result<Vec<Execution>> {
        let r = self
            .actor
            .call(|reply| Msg::Runs { job, reply }, Some(self.deadline))
            .await;
        answer(r, self.deadline)?
    }

    /// Cancels a task; whether it was running.
    pub async fn cancel(&self, job: JobId, task: u32, epoch: u64) -> Result<bool> {
        self.cancel_as(job, task, epoch, None).await
    }

    /// [`Handle::cancel`] asked by a peer: refused unless `remote` owns the task, or owns its
    /// job at `epoch` by the catalog.
    pub async fn cancel_as(
        &self,
        job: JobId,
        task: u32,
        epoch: u64,
        remote: Option<RemoteCaller>,
    ) -> Result<bool> {
        let key = TaskKey { job, task };
        let r = self
            .actor
            .call(
                |reply| Msg::Cancel {
                    key,
                    epoch,
                    remote,
                    reply,
                },
                Some(self.deadline),
            )
            .await;
        answer(r, self.deadline)?
    }

    /// The ledger entries of `job` on this node.
    pub async fn survey(&self, job: JobId) -> Result<Vec<(u32, LedgerEntry)>> {
        let r = self
            .actor
            .call(|reply| Msg::Survey { job, reply }, Some(self.deadline))
            .await;
        answer(r, self.deadline)
    }

    /// Jobs whose every task here ended at or before `cutoff_ms`.
    pub async fn ended_before(&self, cutoff_ms: u64) -> Result<Vec<JobId>> {
        let r = self
            .actor
            .call(
                |reply| Msg::EndedBefore { cutoff_ms, reply },
                Some(self.deadline),
            )
            .await;
        answer(r, self.deadline)
    }

    /// Forgets `jobs` that still ended at or before `cutoff_ms`: their ledger and run-log rows
    /// are deleted. Returns how many were forgotten. See [`crate::jobs::compaction`].
    pub async fn forget(&self, jobs: Vec<JobId>, cutoff_ms: u64) -> Result<usize> {
        let r = self
            .actor
            .call(
                |reply| Msg::Forget {
                    jobs,
                    cutoff_ms,
                    reply,
                },
                Some(self.deadline),
            )
            .await;
        answer(r, self.deadline)?
    }

    /// Stops the actor.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
