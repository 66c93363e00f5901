//! Messages of the `Executor` actor.

use flotilla_protocol::jobs::{JobId, JobKind, Priority, Resources, RunningTask};
use flotilla_protocol::services::jobs::{LedgerEntry, StartAnswer, TaskOutcome};
use flotilla_protocol::NodeId;
use ractor::RpcReplyPort;

use crate::jobs::ledger::TaskKey;

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
    Preempt {
        key: TaskKey,
        reason: String,
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
    /// Cancel a task; replies whether it was running.
    Cancel {
        key: TaskKey,
        epoch: u64,
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
}
