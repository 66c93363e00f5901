//! The `JobManager`: the node's side of the jobs control plane.
//!
//! It owns the coordinators of the jobs this node drives and performs their effects — placing
//! tasks (with the usage every alive node reports), starting and cancelling them on executing
//! nodes through the [`Mesh`](crate::mesh::Mesh), surveying ledgers after a takeover, recording
//! status in the catalog and events in the store. Every `tick` it decides, per job in the
//! catalog, whether this node drives, follows, takes over or waits
//! ([`ownership::decide`](super::ownership::decide)), and forwards a cancel that any node
//! recorded in the catalog to the tasks of the jobs it drives.
//!
//! Split-brain guard: a node that does not see a strict majority of the known (not `left`)
//! members alive neither takes jobs over nor re-places tasks of nodes it believes dead. A node
//! cut off by a partition thus cannot start a second copy of work the majority side carries on,
//! and once the partition heals the higher epoch in the catalog fences it.
//!
//! - [`msg`]: its messages; [`actor`]: the shell; [`handle`]: the typed API.
//! - [`serve`]: answers to jobs requests from peers (executor work and reports to owners).
//! - [`forward`]: delivers the executor's finished-task reports to the tasks' owners.
//! - `events`: the event log and final results kept in the store.

pub mod actor;
pub mod events;
pub mod forward;
pub mod handle;
pub mod msg;
pub mod serve;

use std::time::Duration;

use flotilla_protocol::catalog::JobRecord;
use flotilla_protocol::jobs::{JobId, JobStatus};
use flotilla_protocol::validation::FieldErrors;

use crate::placement::Preemption;

pub use handle::Handle;

/// Settings of a node's `JobManager`.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often ownership, start timeouts, lost nodes and recorded cancels are checked.
    pub tick: Duration,
    /// No takeover before this long after start: a fresh node has not yet heard every owner.
    pub settle: Duration,
    /// Deadline of each request to a peer.
    pub rpc_deadline: Duration,
    /// Limits of each coordinator.
    pub coordinator: crate::jobs::coordinator::Config,
    /// Report deliveries to an owner tried at most this many times.
    pub report_attempts: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            settle: Duration::from_secs(3),
            rpc_deadline: Duration::from_secs(10),
            coordinator: crate::jobs::coordinator::Config::default(),
            report_attempts: 8,
        }
    }
}

/// A submission's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub record: JobRecord,
    /// False when the idempotency key named a job that already existed.
    pub created: bool,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The spec has invalid fields.
    #[error("invalid job spec: {0}")]
    Invalid(FieldErrors),
    /// The job could not be recorded.
    #[error("{0}")]
    Internal(String),
}

/// A cancel's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The cancel is recorded; the owner stops the tasks.
    Cancelled,
    /// The job had already finished with this status: nothing to do.
    AlreadyFinished(JobStatus),
    /// No such job.
    NotFound,
}

/// Stops a lower-priority task so a higher class can run. The one hook today
/// ([`actor::StopHook`]) stops it at once, for every kind: no kind takes a checkpoint before it
/// is preempted.
#[async_trait::async_trait]
pub trait PreemptionHook: Send + Sync + 'static {
    /// Preempts `victim` for job `by`.
    async fn preempt(&self, victim: &Preemption, by: &JobId) -> crate::Result<()>;
}
