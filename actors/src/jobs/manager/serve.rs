//! Answers to jobs requests from peers: an owner's requests to this node's executor, and
//! executing nodes' reports to this node's job manager.
//!
//! `from` is the authenticated peer that sent the request: a start must come from the owner it
//! names and be for a job the catalog does not record as finished, a report is attributed to its sender, a cancel must come from the task's owner (or
//! the job's current owner by the catalog), and a preemption from the owner of an unfinished
//! job of a higher class — so no node can act for another.
//!
//! Work a start asks for is checked against this node before it is accepted: a task needing
//! more cores, memory or GPUs than the node has, or a job whose own size is beyond what this
//! node allows, is refused rather than started.

use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::services::jobs::{RequestBody, ResponseBody};
use flotilla_protocol::NodeId;

use std::time::Duration;

use flotilla_protocol::catalog::{CatalogKey, Entry};
use flotilla_protocol::jobs::{JobId, JobStatus};

use super::Handle;
use crate::catalog;
use crate::jobs::executor::{self, JobHead, RemoteCaller};

/// How long a preemption waits for the preempting job's record to arrive by gossip (its owner
/// writes the record, then places its tasks at once).
const HEAD_WAIT: Duration = Duration::from_secs(3);

/// The catalog's head of `job`, waiting up to `wait` for it to appear.
async fn head(catalog: &catalog::Handle, job: &JobId, wait: Duration) -> Option<JobHead> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Ok(Some(Entry::Job(e))) = catalog.get(CatalogKey::job(job)).await {
            let r = e.record;
            return Some(JobHead {
                owner: r.owner,
                epoch: r.epoch,
                priority: r.spec.priority,
                unfinished: !matches!(
                    r.status,
                    JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
                ),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn refused(e: crate::Error) -> RemoteError {
    match e {
        crate::Error::Forbidden(reason) => remote(RemoteErrorKind::Forbidden, reason),
        crate::Error::Peer { reason, .. } => remote(RemoteErrorKind::BadRequest, reason),
        e => unavailable(e),
    }
}

fn remote(kind: RemoteErrorKind, e: impl ToString) -> RemoteError {
    RemoteError {
        kind,
        message: e.to_string(),
    }
}

fn unavailable(e: crate::Error) -> RemoteError {
    remote(RemoteErrorKind::Unavailable, e)
}

/// The answer to `body` from `from`; `limits` is what this node accepts to run.
pub async fn answer(
    from: &NodeId,
    body: RequestBody,
    executor: &executor::Handle,
    manager: &Handle,
    catalog: &catalog::Handle,
    limits: &dyn WorkLimits,
) -> Result<ResponseBody, RemoteError> {
    match body {
        RequestBody::StartTask {
            job,
            task,
            owner,
            epoch,
            attempt,
            kind,
            priority,
            resources,
        } => {
            if owner != *from {
                return Err(remote(
                    RemoteErrorKind::BadRequest,
                    format!("{from} cannot start tasks for owner {owner}"),
                ));
            }
            if let Err(why) = limits.check(&kind, &resources) {
                return Err(remote(
                    RemoteErrorKind::BadRequest,
                    format!("task {task} of {job} refused: {why}"),
                ));
            }
            // A finished job never runs again, even once its tasks left this node's ledger
            // (see `jobs::compaction`). A job not in the catalog yet is not refused: its owner
            // writes the record and places tasks at once, and gossip may still be on the way.
            if head(catalog, &job, Duration::ZERO)
                .await
                .is_some_and(|h| !h.unfinished)
            {
                return Err(remote(
                    RemoteErrorKind::Forbidden,
                    format!("task {task} of {job} refused: the job has finished"),
                ));
            }
            let start = executor::handle::Start {
                job,
                task,
                owner,
                epoch,
                attempt,
                kind,
                priority,
                resources,
            };
            executor
                .start(start)
                .await
                .map(ResponseBody::Start)
                .map_err(unavailable)
        }
        RequestBody::CancelTask { job, task, epoch } => {
            let caller = RemoteCaller {
                from: from.clone(),
                head: head(catalog, &job, Duration::ZERO).await,
            };
            executor
                .cancel_as(job, task, epoch, Some(caller))
                .await
                .map(|was_running| ResponseBody::Cancelled { was_running })
                .map_err(refused)
        }
        RequestBody::Survey { job } => executor
            .survey(job)
            .await
            .map(ResponseBody::Survey)
            .map_err(unavailable),
        RequestBody::TaskFinished {
            job,
            task,
            attempt,
            outcome,
        } => manager
            .task_finished(job, task, from.clone(), attempt, outcome)
            .map(|()| ResponseBody::Ack)
            .map_err(unavailable),
        RequestBody::PreemptTask {
            job,
            task,
            by,
            reason,
        } => {
            let caller = RemoteCaller {
                from: from.clone(),
                head: head(catalog, &by, HEAD_WAIT).await,
            };
            executor
                .preempt_as(
                    job,
                    task,
                    format!("{reason} (requested by {from})"),
                    Some(caller),
                )
                .await
                .map(|was_running| ResponseBody::Cancelled { was_running })
                .map_err(refused)
        }
        RequestBody::Detail { job } => manager
            .detail(job)
            .await
            .map(ResponseBody::Detail)
            .map_err(unavailable),
        RequestBody::Usage => executor
            .usage()
            .await
            .map(ResponseBody::Usage)
            .map_err(unavailable),
    }
}

/// What a node accepts to run for a peer, checked where the work runs.
pub trait WorkLimits: Send + Sync {
    /// Why a task of `kind` reserving `resources` may not start here, or `Ok`.
    fn check(
        &self,
        kind: &flotilla_protocol::jobs::JobKind,
        resources: &flotilla_protocol::jobs::Resources,
    ) -> Result<(), String>;
}

/// Accepts everything (tests of the protocol paths that are not about limits).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLimits;

impl WorkLimits for NoLimits {
    fn check(
        &self,
        _: &flotilla_protocol::jobs::JobKind,
        _: &flotilla_protocol::jobs::Resources,
    ) -> Result<(), String> {
        Ok(())
    }
}
