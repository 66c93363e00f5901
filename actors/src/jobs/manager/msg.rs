//! Messages of the `JobManager`.

use std::collections::BTreeMap;

use flotilla_protocol::jobs::{JobId, JobSpec};
use flotilla_protocol::services::jobs::{JobDetail, LedgerEntry, StartAnswer, TaskOutcome};
use flotilla_protocol::NodeId;
use ractor::RpcReplyPort;

use super::{CancelOutcome, SubmitError, Submitted};

/// What the `JobManager` accepts. Callers use [`super::Handle`].
#[derive(Debug)]
pub enum Msg {
    /// Validate, record and start driving a job; replies once it is on disk.
    Submit {
        spec: JobSpec,
        reply: RpcReplyPort<Result<Submitted, SubmitError>>,
    },
    /// Record a cancel in the catalog (and act on it here if this node drives the job).
    Cancel {
        job: JobId,
        reply: RpcReplyPort<crate::Result<CancelOutcome>>,
    },
    /// What this node knows of a job: tasks if it drives it (or drove it to the end), events.
    Detail {
        job: JobId,
        reply: RpcReplyPort<crate::Result<JobDetail>>,
    },
    /// An executing node reports a finished task.
    TaskFinished {
        job: JobId,
        task: u32,
        node: NodeId,
        attempt: u32,
        outcome: TaskOutcome,
    },
    /// A start request was answered (or failed: `Err` with the reason).
    StartAnswered {
        job: JobId,
        epoch: u64,
        task: u32,
        node: NodeId,
        attempt: u32,
        answer: Result<StartAnswer, String>,
    },
    /// A placement was computed for `tasks` (in the same order), or failed.
    Placed {
        job: JobId,
        epoch: u64,
        tasks: Vec<u32>,
        result: Result<Vec<NodeId>, String>,
    },
    /// A takeover's survey of the alive nodes' ledgers.
    Surveyed {
        job: JobId,
        epoch: u64,
        found: BTreeMap<NodeId, Vec<(u32, LedgerEntry)>>,
    },
    /// Periodic work: ownership, timeouts, lost nodes, recorded cancels.
    Tick,
}
