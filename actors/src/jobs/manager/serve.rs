//! Answers to jobs requests from peers: an owner's requests to this node's executor, and
//! executing nodes' reports to this node's job manager.
//!
//! `from` is the authenticated peer that sent the request: a start must come from the owner it
//! names, and a report is attributed to its sender, so no node can act for another.

use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::services::jobs::{RequestBody, ResponseBody};
use flotilla_protocol::NodeId;

use super::Handle;
use crate::jobs::executor;

fn remote(kind: RemoteErrorKind, e: impl ToString) -> RemoteError {
    RemoteError {
        kind,
        message: e.to_string(),
    }
}

fn unavailable(e: crate::Error) -> RemoteError {
    remote(RemoteErrorKind::Unavailable, e)
}

/// The answer to `body` from `from`.
pub async fn answer(
    from: &NodeId,
    body: RequestBody,
    executor: &executor::Handle,
    manager: &Handle,
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
        RequestBody::CancelTask { job, task, epoch } => executor
            .cancel(job, task, epoch)
            .await
            .map(|was_running| ResponseBody::Cancelled { was_running })
            .map_err(|e| match e {
                crate::Error::Peer { reason, .. } => remote(RemoteErrorKind::BadRequest, reason),
                e => unavailable(e),
            }),
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
        RequestBody::PreemptTask { job, task, reason } => executor
            .preempt(job, task, format!("{reason} (requested by {from})"))
            .await
            .map(|was_running| ResponseBody::Cancelled { was_running })
            .map_err(unavailable),
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
