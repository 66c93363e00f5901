//! Tasks and actors that keep the tracing context they were started in.
//!
//! `tokio::spawn` starts a task with no span, so an event logged in it would not say which
//! node, job or actor it belongs to. Every task of the project is started with [`spawn`], which
//! carries the current span into the task; every actor handles its messages inside the span
//! [`actor_span`] made when it was spawned. The node runs inside a `node{node=…}` span, a
//! training run's actors inside `job{job=…}`, a deployment's inside `deployment{…}`, so a line
//! logged by an actor reads, for instance,
//! `node{node=12D3…}:job{job=4f1c…}:actor{role="trainer"}: …`.

use std::future::Future;

use tracing::Instrument;

/// `tokio::spawn`, keeping the current span.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.in_current_span())
}

/// The span an actor with this `role` handles its messages in: a child of the current span
/// (the node's, and the job's where there is one), so the actor's log lines carry its role,
/// node and job. `shard` names the part of the job it holds, if any.
pub fn actor_span(role: &'static str, shard: Option<u64>) -> tracing::Span {
    match shard {
        Some(shard) => tracing::info_span!("actor", role, shard),
        None => tracing::info_span!("actor", role),
    }
}
