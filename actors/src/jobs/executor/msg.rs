//! Messages of the `Executor` actor.

use flotilla_protocol::jobs::{JobId, JobKind, Priority, Resources, RunningTask};
use flotilla_protocol::services::jobs::{LedgerEntry, StartAnswer, TaskOutcome};
use flotilla_protocol::NodeId;
use ractor::RpcReplyPort;

use crate::jobs::ledger::TaskKey;

/// A job's head as this node's catalog holds it: who owns it at which epoch, its class, and
/// whether it is still unfinished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobHead {
    pub owner: NodeId,
    pub epoch: u64,
    pub priority: Priority,
    pub unfinished: bool,
}

/// The peer behind a remote cancel or preemption, and the head of the job it acts for (the
/// task's own job for a cancel, the preempting job for a preemption), if the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCaller {
    pub from: NodeId,
    pub head: Option<JobHead>,
}

/// What the `Executor` accepts. Callers use [`super::Handle`].
#[derive(Debug)]
pub enum Msg {
    /// Start a task (or re-attach, or refuse an old epoch); the answer comes after the ledger
    /// entry is on disk.
    Start {
        key: TaskKey,
        owner: NodeId,
        epoch: u64,
        attempt: u32,
        kind: JobKind,
        priority: Priority,
        resources: Resources,
        reply: RpcReplyPort<crate::Result<StartAnswer>>,
    },
    /// Stop a running task for a higher priority class: it ends as failed with `reason`.
    /// `remote` is set when a peer asks; it must own an unfinished job of a higher class.
    Preempt {
        key: TaskKey,
        reason: String,
        remote: Option<RemoteCaller>,
        reply: RpcReplyPort<crate::Result<bool>>,
    },
    /// Reserve capacity for work that is not a task (a serving replica) in the inference
    /// class, preempting lower-class tasks until everything fits in `capacity`; `None` releases.
    /// Replies with the preempted tasks.
    Reserve {
        holder: String,
        resources: Option<Resources>,
        capacity: Resources,
        reply: RpcReplyPort<crate::Result<Vec<RunningTask>>>,
    },
    /// The tasks running here, and the reservations.
    Usage {
        reply: RpcReplyPort<Vec<RunningTask>>,
    },
    /// Every execution this node started (of `job`, if given), from the run log.
    Runs {
        job: Option<JobId>,
        reply: RpcReplyPort<crate::Result<Vec<super::Execution>>>,
    },
    /// Cancel a task; replies whether it was running. `remote` is set when a peer asks; it
    /// must be the task's owner, or the job's current owner at `epoch` by the catalog.
    Cancel {
        key: TaskKey,
        epoch: u64,
        remote: Option<RemoteCaller>,
        reply: RpcReplyPort<crate::Result<bool>>,
    },
    /// Every ledger entry of a job, for a new owner's survey.
    Survey {
        job: JobId,
        reply: RpcReplyPort<Vec<(u32, LedgerEntry)>>,
    },
    /// A task's work ended (sent by the task itself).
    WorkDone {
        key: TaskKey,
        attempt: u32,
        outcome: TaskOutcome,
    },
    /// Jobs whose every task here ended at or before `cutoff_ms` (compaction candidates).
    EndedBefore {
        cutoff_ms: u64,
        reply: RpcReplyPort<Vec<JobId>>,
    },
    /// Forget `jobs` (ledger and run-log rows) that still ended at or before `cutoff_ms`;
    /// replies how many were forgotten.
    Forget {
        jobs: Vec<JobId>,
        cutoff_ms: u64,
        reply: RpcReplyPort<crate::Result<usize>>,
    },
}
