//! The typed API of the `Executor`; every call has a deadline.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::jobs::{JobId, JobKind, Priority, Resources, RunningTask};
use flotilla_protocol::services::jobs::{LedgerEntry, StartAnswer};
use flotilla_protocol::NodeId;
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
            Executor {
                span: crate::task::actor_span("executor", None),
            },
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
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Start {
            key,
            owner,
            epoch,
            attempt,
            kind,
            priority,
            resources,
            reply,
        })
        .await?
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
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Preempt {
            key,
            reason,
            remote,
            reply,
        })
        .await?
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
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Reserve {
            holder,
            resources,
            capacity,
            reply,
        })
        .await?
    }

    /// The tasks running on this node and the reservations.
    pub async fn usage(&self) -> Result<Vec<RunningTask>> {
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Usage {
            reply,
        })
        .await
    }

    /// Every execution this node started (of `job`, if given).
    pub async fn runs(&self, job: Option<JobId>) -> Result<Vec<Execution>> {
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Runs {
            job,
            reply,
        })
        .await?
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
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Cancel {
            key,
            epoch,
            remote,
            reply,
        })
        .await?
    }

    /// The ledger entries of `job` on this node.
    pub async fn survey(&self, job: JobId) -> Result<Vec<(u32, LedgerEntry)>> {
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Survey {
            job,
            reply,
        })
        .await
    }

    /// Jobs whose every task here ended at or before `cutoff_ms`.
    pub async fn ended_before(&self, cutoff_ms: u64) -> Result<Vec<JobId>> {
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| {
            Msg::EndedBefore { cutoff_ms, reply }
        })
        .await
    }

    /// Forgets `jobs` that still ended at or before `cutoff_ms`: their ledger and run-log rows
    /// are deleted. Returns how many were forgotten. See [`crate::jobs::compaction`].
    pub async fn forget(&self, jobs: Vec<JobId>, cutoff_ms: u64) -> Result<usize> {
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Forget {
            jobs,
            cutoff_ms,
            reply,
        })
        .await?
    }

    /// Stops the actor.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
