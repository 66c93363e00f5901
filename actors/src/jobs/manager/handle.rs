//! The typed API of the `JobManager`; every call has a deadline.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::jobs::{JobId, JobSpec};
use flotilla_protocol::services::jobs::{JobDetail, TaskOutcome};
use flotilla_protocol::NodeId;
use ractor::{Actor, ActorRef};

use super::actor::{Args, JobManager, StopHook};
use super::msg::Msg;
use super::{CancelOutcome, Config, SubmitError, Submitted};
use crate::jobs::executor;
use crate::mesh::Mesh;
use crate::store::Store;
use crate::{catalog, membership, Error, Result};

const ACTOR: &str = "job manager";

/// A cloneable handle to a running `JobManager`.
#[derive(Debug, Clone)]
pub struct Handle {
    actor: ActorRef<Msg>,
    deadline: Duration,
}

/// What the manager works with.
pub struct Parts {
    pub mesh: Arc<dyn Mesh>,
    pub catalog: catalog::Handle,
    pub membership: membership::Handle,
    pub executor: executor::Handle,
    pub store: Arc<dyn Store>,
}

impl Handle {
    /// Spawns the manager with the default preemption hook (stop at once).
    pub async fn spawn(
        config: Config,
        parts: Parts,
    ) -> Result<(Handle, tokio::task::JoinHandle<()>)> {
        let hook = Arc::new(StopHook {
            mesh: parts.mesh.clone(),
            executor: parts.executor.clone(),
            deadline: config.rpc_deadline,
        });
        let deadline = config.rpc_deadline + Duration::from_secs(5);
        let (actor, join) = Actor::spawn(
            None,
            JobManager {
                span: crate::task::actor_span("job_manager", None),
            },
            Args {
                config,
                mesh: parts.mesh,
                catalog: parts.catalog,
                membership: parts.membership,
                executor: parts.executor,
                store: parts.store,
                hook,
            },
        )
        .await
        .map_err(|e| Error::Store(format!("job manager failed to start: {e}")))?;
        Ok((Handle { actor, deadline }, join))
    }

    /// Validates, records and starts a job; returns once it is on disk here.
    pub async fn submit(&self, spec: JobSpec) -> std::result::Result<Submitted, SubmitError> {
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Submit {
            spec,
            reply,
        })
        .await
        .map_err(|e| SubmitError::Internal(e.to_string()))?
    }

    /// Cancels a job (a no-op for a finished one).
    pub async fn cancel(&self, job: JobId) -> Result<CancelOutcome> {
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Cancel {
            job,
            reply,
        })
        .await?
    }

    /// What this node knows of a job.
    pub async fn detail(&self, job: JobId) -> Result<JobDetail> {
        crate::call::call(&self.actor, ACTOR, self.deadline, |reply| Msg::Detail {
            job,
            reply,
        })
        .await?
    }

    /// Delivers an executing node's report of a finished task.
    pub fn task_finished(
        &self,
        job: JobId,
        task: u32,
        node: NodeId,
        attempt: u32,
        outcome: TaskOutcome,
    ) -> Result<()> {
        self.actor
            .cast(Msg::TaskFinished {
                job,
                task,
                node,
                attempt,
                outcome,
            })
            .map_err(|_| Error::ActorGone { actor: ACTOR })
    }

    /// Stops the actor.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
