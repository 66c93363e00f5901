//! The `Executor` actor: runs the tasks a job's owner asks this node to run, keeping the task
//! [`Ledger`](super::ledger::Ledger) durable so a task runs once per attempt even across owner
//! takeovers and restarts of this node.
//!
//! - [`msg`]: its messages; [`actor`]: the ractor shell; [`handle`]: the typed API.
//! - [`TaskRunner`]: the work itself, provided by the node (the compute probe for benchmark jobs).

pub mod actor;
pub mod handle;
pub mod msg;

use std::sync::atomic::AtomicBool;

use flotilla_protocol::jobs::{JobId, JobKind};
use flotilla_protocol::services::jobs::TaskOutcome;
use flotilla_protocol::NodeId;

pub use actor::Executor;
pub use handle::Handle;
pub use msg::{JobHead, RemoteCaller};

/// Does a task's work. Called on a blocking thread; `cancelled` turns true when the task is
/// cancelled, and long work should check it and return early.
pub trait TaskRunner: Send + Sync + 'static {
    /// Runs task `task` of job `job`, of `kind`; the result is JSON text, the error a reason.
    /// `job` lets long tasks log progress under the job (its events).
    fn run(
        &self,
        job: &JobId,
        kind: &JobKind,
        task: u32,
        cancelled: &AtomicBool,
    ) -> Result<String, String>;
}

/// One execution this node started: a row of its append-only run log. Each start of work
/// writes one before the work begins, so the log shows how often each task really ran.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Execution {
    pub job: JobId,
    pub task: u32,
    pub attempt: u32,
    pub epoch: u64,
    pub owner: NodeId,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

/// A task that ended here, to be reported to its job's owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub owner: NodeId,
    pub job: JobId,
    pub task: u32,
    pub attempt: u32,
    pub outcome: TaskOutcome,
}
