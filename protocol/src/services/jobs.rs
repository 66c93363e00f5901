//! The jobs service: a job's owner asks executing nodes to start, cancel and report tasks; a
//! new owner surveys the nodes' task ledgers after a takeover.

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, RequestId};
use crate::jobs::{JobId, JobKind, Priority, Resources, RunningTask};
use crate::services::control::RemoteError;

/// Stream protocol name.
pub const PROTOCOL: &str = "/flotilla/jobs/1";
/// Name used in errors and metrics.
pub const SERVICE: &str = "jobs";
/// Largest request or response: a survey of a job's tasks with their results.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// Finished; the payload is the task's result (JSON text).
    Succeeded(String),
    /// Failed with a reason.
    Failed(String),
    /// Stopped because the job was cancelled.
    Cancelled,
}

/// An executing node's record of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Highest owner epoch seen for this task.
    pub epoch: u64,
    /// The attempt that runs (or ran) here.
    pub attempt: u32,
    /// `None` while running.
    pub outcome: Option<TaskOutcome>,
}

/// An executing node's answer to a start request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StartAnswer {
    /// Started now.
    Started,
    /// Already running here; not started again.
    AlreadyRunning,
    /// Already finished here, with this outcome.
    AlreadyFinished(TaskOutcome),
    /// The request's owner epoch is older than `current`: refused.
    Fenced { current: u64 },
}

/// A jobs request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub body: RequestBody,
}

/// What a jobs request asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Run task `task` of `job` (owner `owner` at `epoch`), attempt `attempt`. The priority
    /// class and resources are kept by the executing node so later placements can see what it
    /// holds (and what a higher class may preempt).
    StartTask {
        job: JobId,
        task: u32,
        owner: NodeId,
        epoch: u64,
        attempt: u32,
        kind: JobKind,
        priority: Priority,
        resources: Resources,
    },
    /// Stop task `task` of `job`.
    CancelTask { job: JobId, task: u32, epoch: u64 },
    /// Every ledger entry this node holds for `job`.
    Survey { job: JobId },
    /// An executing node reports a finished task to the job's owner.
    TaskFinished {
        job: JobId,
        task: u32,
        attempt: u32,
        outcome: TaskOutcome,
    },
    /// Stop task `task` of `job` to make room for job `by` of a higher priority class, which
    /// the sender owns; it ends as failed with `reason`, so its owner re-places it when
    /// capacity returns.
    PreemptTask {
        job: JobId,
        task: u32,
        by: JobId,
        reason: String,
    },
    /// What this node knows of `job`: its tasks (if it drives the job) and its event log.
    Detail { job: JobId },
    /// The tasks running on this node, with their priority classes and resources.
    Usage,
}

/// One task of a job as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub task: u32,
    /// Where it runs or ran; `None` while unplaced.
    pub node: Option<NodeId>,
    pub attempt: u32,
    /// `unplaced`, `starting`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// The result (JSON text) of a succeeded task, or the reason of a failed one.
    pub result: Option<String>,
}

/// One line of a job's event log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobEvent {
    /// Milliseconds since the Unix epoch on the recording node.
    pub at_ms: u64,
    /// The node that recorded it (the owner at the time).
    pub node: NodeId,
    pub text: String,
}

/// What one node knows of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    /// The tasks, when this node drives (or drove to the end) the job; empty otherwise.
    pub tasks: Vec<TaskView>,
    /// The events this node recorded, oldest first.
    pub events: Vec<JobEvent>,
}

/// A jobs response; `id` echoes the request's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: RequestId,
    pub body: std::result::Result<ResponseBody, RemoteError>,
}

/// The answer to a [`RequestBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseBody {
    Start(StartAnswer),
    /// Whether the task was running when the cancel arrived.
    Cancelled {
        was_running: bool,
    },
    Survey(Vec<(u32, LedgerEntry)>),
    Ack,
    Detail(JobDetail),
    Usage(Vec<RunningTask>),
}

request_response_codec!();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let req = Request {
            id: RequestId(3),
            body: RequestBody::StartTask {
                job: JobId("j".into()),
                task: 2,
                owner: NodeId::from("o"),
                epoch: 4,
                attempt: 1,
                kind: JobKind::Benchmark {
                    peers: 2,
                    matrix_size: 64,
                    iterations: 3,
                },
                priority: Priority::Batch,
                resources: Resources {
                    cores: 1,
                    ram_bytes: 1 << 20,
                    gpus: 0,
                },
            },
        };
        assert_eq!(decode_request(&encode_request(&req).unwrap()).unwrap(), req);
        let resp = Response {
            id: RequestId(3),
            body: Ok(ResponseBody::Survey(vec![(
                1,
                LedgerEntry {
                    epoch: 2,
                    attempt: 0,
                    outcome: Some(TaskOutcome::Succeeded("{}".into())),
                },
            )])),
        };
        assert_eq!(
            decode_response(&encode_response(&resp).unwrap()).unwrap(),
            resp
        );
        assert!(decode_request(&[0xff; 16]).is_err());
    }
}
