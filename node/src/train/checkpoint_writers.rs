//! Who may write checkpoints of a training run into a node's checkpoint store: only the run's
//! coordinator, i.e. the node its job's owner reports as running the job's task.
//!
//! A holder cannot see that from a write itself, so it asks: the catalog names the job's
//! current owner (and whether the job is still unfinished), and the owner's job detail names
//! the node its task runs on (a coordinator replaced after a failure is the new attempt's
//! node). A positive answer is remembered for [`CONFIRMED_FOR`], so a run's checkpoint costs
//! one question per holder, not one per blob.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_actors::catalog;
use flotilla_actors::jobs::manager;
use flotilla_actors::mesh::Mesh;
use flotilla_protocol::catalog::{CatalogKey, Entry};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::jobs::{JobDetail, RequestBody, ResponseBody};
use flotilla_protocol::NodeId;

/// How long a confirmed coordinator may write without being asked about again.
pub const CONFIRMED_FOR: Duration = Duration::from_secs(10);
/// How long the catalog may take to learn of a job a write names (its record is written
/// before its task starts, so this is only gossip's delay).
const RECORD_WAIT: Duration = Duration::from_secs(3);
/// Deadline of the question to the job's owner.
const ASK_OWNER: Duration = Duration::from_secs(10);

/// Decides whether a peer may write checkpoints of a job here.
#[async_trait::async_trait]
pub trait Writers: Send + Sync + 'static {
    /// `Ok` when `from` may write checkpoints of `job`; otherwise why not.
    async fn may_write(&self, from: &NodeId, job: &JobId) -> Result<(), String>;
}

/// The rule of the module docs, over this node's catalog, job manager and mesh.
pub struct RunCoordinators {
    pub me: NodeId,
    pub catalog: catalog::Handle,
    pub jobs: manager::Handle,
    pub mesh: Arc<dyn Mesh>,
    confirmed: Mutex<HashMap<(JobId, NodeId), Instant>>,
}

impl RunCoordinators {
    /// The rule over these parts.
    pub fn new(
        me: NodeId,
        catalog: catalog::Handle,
        jobs: manager::Handle,
        mesh: Arc<dyn Mesh>,
    ) -> Self {
        Self {
            me,
            catalog,
            jobs,
            mesh,
            confirmed: Mutex::new(HashMap::new()),
        }
    }

    fn recently_confirmed(&self, job: &JobId, from: &NodeId) -> bool {
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        confirmed.retain(|_, at| now.duration_since(*at) < CONFIRMED_FOR);
        confirmed.contains_key(&(job.clone(), from.clone()))
    }

    /// The job's owner, once the catalog holds its record; refused if it has finished.
    async fn owner_of(&self, job: &JobId) -> Result<NodeId, String> {
        let deadline = tokio::time::Instant::now() + RECORD_WAIT;
        loop {
            match self.catalog.get(CatalogKey::job(job)).await {
                Ok(Some(Entry::Job(e))) if e.record.status.is_terminal() => {
                    return Err(format!("job {job} has finished"));
                }
                Ok(Some(Entry::Job(e))) => return Ok(e.record.owner),
                Ok(_) => {}
                Err(e) => return Err(format!("the catalog cannot say who owns {job}: {e}")),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("job {job} is not in this node's catalog"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn detail(&self, owner: &NodeId, job: &JobId) -> Result<JobDetail, String> {
        if *owner == self.me {
            return self
                .jobs
                .detail(job.clone())
                .await
                .map_err(|e| e.to_string());
        }
        let body = RequestBody::Detail { job: job.clone() };
        match self.mesh.jobs(owner, body, ASK_OWNER).await {
            Ok(ResponseBody::Detail(d)) => Ok(d),
            Ok(other) => Err(format!("{owner} answered {other:?} to a job detail")),
            Err(e) => Err(format!("{owner}, the owner of {job}, did not say: {e}")),
        }
    }
}

#[async_trait::async_trait]
impl Writers for RunCoordinators {
    async fn may_write(&self, from: &NodeId, job: &JobId) -> Result<(), String> {
        if self.recently_confirmed(job, from) {
            return Ok(());
        }
        let owner = self.owner_of(job).await?;
        let detail = self.detail(&owner, job).await?;
        let coordinates = detail.tasks.iter().any(|t| {
            t.node.as_ref() == Some(from) && matches!(t.state.as_str(), "starting" | "running")
        });
        if !coordinates {
            return Err(format!(
                "{from} does not coordinate job {job}: its owner {owner} runs the job's task elsewhere"
            ));
        }
        self.confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((job.clone(), from.clone()), Instant::now());
        Ok(())
    }
}
