//! The `JobManager` actor shell: coordinator effects become catalog writes, store rows and
//! requests to peers; their answers come back as messages. Requests to peers run in spawned
//! tasks so that a slow peer never holds up the other jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use crate::clock::wall_ms;

use flotilla_protocol::catalog::{Entry, JobRecord, RecordKind};
use flotilla_protocol::jobs::{JobId, JobSpec, JobStatus};
use flotilla_protocol::services::jobs::{JobDetail, JobEvent, RequestBody, ResponseBody};
use flotilla_protocol::{MemberState, MemberView, NodeId};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, warn};

use super::msg::Msg;
use super::{events, CancelOutcome, Config, PreemptionHook, SubmitError, Submitted};
use crate::catalog;
use crate::jobs::coordinator::{Coordinator, Effect};
use crate::jobs::executor;
use crate::jobs::ownership::{self, Decision};
use crate::membership;
use crate::mesh::Mesh;
use crate::placement::{self, Preemption, Usage};
use crate::store::Store;
use crate::{Error, Result};

/// The actor type.
#[derive(Debug)]
pub struct JobManager {
    /// The span its messages are handled in ([`crate::task::actor_span`]).
    pub(crate) span: tracing::Span,
}

/// What the manager starts from.
pub struct Args {
    pub config: Config,
    pub mesh: Arc<dyn Mesh>,
    pub catalog: catalog::Handle,
    pub membership: membership::Handle,
    pub executor: executor::Handle,
    pub store: Arc<dyn Store>,
    pub hook: Arc<dyn PreemptionHook>,
}

/// A job this node drives.
struct Driven {
    coord: Coordinator,
    record: JobRecord,
}

/// The manager's state.
pub struct State {
    config: Config,
    me: NodeId,
    mesh: Arc<dyn Mesh>,
    catalog: catalog::Handle,
    membership: membership::Handle,
    executor: executor::Handle,
    store: Arc<dyn Store>,
    hook: Arc<dyn PreemptionHook>,
    driven: BTreeMap<JobId, Driven>,
    started: Instant,
}

/// The default preemption hook: asks the victim's node to stop the task now.
pub struct StopHook {
    pub mesh: Arc<dyn Mesh>,
    pub executor: executor::Handle,
    pub deadline: std::time::Duration,
}

#[async_trait::async_trait]
impl PreemptionHook for StopHook {
    async fn preempt(&self, victim: &Preemption, by: &JobId) -> Result<()> {
        let reason = format!(
            "preempted by job {by} of a higher priority class (this task: {:?})",
            victim.priority
        );
        if victim.node == self.mesh.local_id() {
            self.executor
                .preempt(victim.job.clone(), victim.task, reason)
                .await?;
        } else {
            let body = RequestBody::PreemptTask {
                job: victim.job.clone(),
                task: victim.task,
                by: by.clone(),
                reason,
            };
            self.mesh.jobs(&victim.node, body, self.deadline).await?;
        }
        Ok(())
    }
}

/// A fresh job id for a submission without an idempotency key.
fn random_job_id() -> JobId {
    let bytes: [u8; 16] = rand::random();
    JobId(format!(
        "job-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Whether `view` shows a strict majority of the known (not `left`) members alive.
pub fn has_quorum(view: &[MemberView]) -> bool {
    let known = view.iter().filter(|m| m.state != MemberState::Left).count();
    let alive = view
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .count();
    alive * 2 > known
}

impl State {
    fn log(&self, job: &JobId, text: String) {
        debug!(job = %job, "{text}");
        let event = JobEvent {
            at_ms: wall_ms(),
            node: self.me.clone(),
            text,
        };
        if let Err(e) = events::append(self.store.as_ref(), job, &event) {
            warn!(job = %job, error = %e, "cannot log job event");
        }
    }

    async fn record(&self, job: &JobId) -> Result<Option<JobRecord>> {
        Ok(
            match self
                .catalog
                .get(flotilla_protocol::catalog::CatalogKey::job(job))
                .await?
            {
                Some(Entry::Job(e)) => Some(e.record),
                _ => None,
            },
        )
    }

    async fn write(&self, record: JobRecord) -> Result<()> {
        self.catalog
            .put_job(record)
            .await
            .map_err(|e| Error::Store(e.to_string()))
    }

    /// Performs a coordinator's effects for `job`.
    async fn apply(&mut self, myself: &ActorRef<Msg>, job: &JobId, fx: Vec<Effect>) {
        for effect in fx {
            let Some(d) = self.driven.get(job) else {
                return;
            };
            let epoch = d.coord.epoch();
            match effect {
                Effect::Event(text) => self.log(job, text),
                Effect::Status(status) => self.set_status(job, status).await,
                Effect::Abdicate { newer_epoch } => {
                    self.log(
                        job,
                        format!("stopped driving: a newer owner holds epoch {newer_epoch}"),
                    );
                    self.driven.remove(job);
                    return;
                }
                Effect::Place { tasks, avoid } => self.place(myself, job, tasks, avoid),
                Effect::Start {
                    node,
                    task,
                    epoch,
                    attempt,
                } => self.start(myself, job, node, task, epoch, attempt),
                Effect::Cancel { node, task } => {
                    let body = RequestBody::CancelTask {
                        job: job.clone(),
                        task,
                        epoch,
                    };
                    let (mesh, executor, me, deadline) = self.io();
                    let job = job.clone();
                    crate::task::spawn(async move {
                        let r = if node == me {
                            executor.cancel(job.clone(), task, epoch).await.map(|_| ())
                        } else {
                            mesh.jobs(&node, body, deadline).await.map(|_| ())
                        };
                        if let Err(e) = r {
                            warn!(job = %job, task, %node, error = %e, "cancel not delivered");
                        }
                    });
                }
                Effect::Survey => self.survey(myself, job, epoch),
            }
        }
    }

    fn io(&self) -> (Arc<dyn Mesh>, executor::Handle, NodeId, std::time::Duration) {
        (
            self.mesh.clone(),
            self.executor.clone(),
            self.me.clone(),
            self.config.rpc_deadline,
        )
    }

    async fn set_status(&mut self, job: &JobId, status: JobStatus) {
        let Some(d) = self.driven.get_mut(job) else {
            return;
        };
        d.record.status = d.record.status.join(status);
        d.record.updated_at_ms = d.record.updated_at_ms.max(wall_ms());
        let record = d.record.clone();
        let tasks = d.coord.tasks_view();
        if status.is_terminal() {
            if let Err(e) = events::save_result(self.store.as_ref(), job, &tasks) {
                warn!(job = %job, error = %e, "cannot save job result");
            }
        }
        if let Err(e) = self.write(record).await {
            warn!(job = %job, error = %e, "cannot record job status");
        }
        info!(job = %job, %status, "job status");
    }

    fn start(
        &self,
        myself: &ActorRef<Msg>,
        job: &JobId,
        node: NodeId,
        task: u32,
        epoch: u64,
        attempt: u32,
    ) {
        let Some(d) = self.driven.get(job) else {
            return;
        };
        let spec = &d.record.spec;
        let start = executor::handle::Start {
            job: job.clone(),
            task,
            owner: self.me.clone(),
            epoch,
            attempt,
            kind: spec.kind.clone(),
            priority: spec.priority,
            resources: spec.resources,
        };
        let (mesh, executor, me, deadline) = self.io();
        let myself = myself.clone();
        crate::task::spawn(async move {
            let job = start.job.clone();
            let answer = if node == me {
                executor.start(start).await.map_err(|e| e.to_string())
            } else {
                let body = RequestBody::StartTask {
                    job: start.job,
                    task,
                    owner: start.owner,
                    epoch,
                    attempt,
                    kind: start.kind,
                    priority: start.priority,
                    resources: start.resources,
                };
                match mesh.jobs(&node, body, deadline).await {
                    Ok(ResponseBody::Start(a)) => Ok(a),
                    Ok(other) => Err(format!("unexpected answer to a start: {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            };
            let _ = myself.cast(Msg::StartAnswered {
                job,
                epoch,
                task,
                node,
                attempt,
                answer,
            });
        });
    }

    /// Places `tasks` on the alive nodes outside `avoid`, counting what every node reports it
    /// runs; nodes that already hold as many live tasks of this job as its anti-affinity allows
    /// are avoided too. Preemptions the placement needs go through the hook first.
    fn place(&self, myself: &ActorRef<Msg>, job: &JobId, tasks: Vec<u32>, avoid: Vec<NodeId>) {
        let Some(d) = self.driven.get(job) else {
            return;
        };
        let mut avoid: BTreeSet<NodeId> = avoid.into_iter().collect();
        if let Some(max) = d.record.spec.anti_affinity.max_per_node() {
            for (node, n) in d.coord.live_tasks_per_node() {
                if n >= max {
                    avoid.insert(node);
                }
            }
        }
        let spec = JobSpec {
            tasks: u32::try_from(tasks.len()).unwrap_or(u32::MAX),
            ..d.record.spec.clone()
        };
        let epoch = d.coord.epoch();
        let (mesh, executor, me, deadline) = self.io();
        let membership = self.membership.clone();
        let hook = self.hook.clone();
        let myself = myself.clone();
        let job = job.clone();
        crate::task::spawn(async move {
            let result = async {
                let view: Vec<MemberView> = membership
                    .view()
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    // A node that reports itself unhealthy takes no new work.
                    .filter(|m| !avoid.contains(&m.info.id) && m.info.unhealthy.is_none())
                    .collect();
                let load = gather_usage(&view, &mesh, &executor, &me, deadline).await;
                let placed =
                    placement::place(&view, &load, &spec, &job).map_err(|e| e.to_string())?;
                for victim in &placed.preempt {
                    hook.preempt(victim, &job).await.map_err(|e| {
                        format!("preempting {} task {}: {e}", victim.job, victim.task)
                    })?;
                }
                Ok(placed.assignments.into_iter().map(|a| a.node).collect())
            }
            .await;
            let _ = myself.cast(Msg::Placed {
                job,
                epoch,
                tasks,
                result,
            });
        });
    }

    fn survey(&self, myself: &ActorRef<Msg>, job: &JobId, epoch: u64) {
        let (mesh, executor, me, deadline) = self.io();
        let membership = self.membership.clone();
        let myself = myself.clone();
        let job = job.clone();
        crate::task::spawn(async move {
            let view = membership.view().await.unwrap_or_default();
            let asks = view
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .map(|m| {
                    let node = m.info.id.clone();
                    let (mesh, executor, me, job) =
                        (mesh.clone(), executor.clone(), me.clone(), job.clone());
                    async move {
                        let found = if node == me {
                            executor.survey(job).await.map_err(|e| e.to_string())
                        } else {
                            match mesh
                                .jobs(&node, RequestBody::Survey { job }, deadline)
                                .await
                            {
                                Ok(ResponseBody::Survey(entries)) => Ok(entries),
                                Ok(other) => Err(format!("unexpected answer: {other:?}")),
                                Err(e) => Err(e.to_string()),
                            }
                        };
                        (node, found)
                    }
                });
            let mut found = BTreeMap::new();
            for (node, answer) in futures_join_all(asks).await {
                match answer {
                    Ok(entries) => {
                        found.insert(node, entries);
                    }
                    Err(e) => warn!(%node, error = %e, "survey unanswered"),
                }
            }
            let _ = myself.cast(Msg::Surveyed { job, epoch, found });
        });
    }

    async fn submit(
        &mut self,
        myself: &ActorRef<Msg>,
        spec: JobSpec,
    ) -> std::result::Result<Submitted, SubmitError> {
        spec.validate().map_err(SubmitError::Invalid)?;
        let id = match &spec.idempotency_key {
            Some(key) => JobId::for_idempotency_key(key),
            None => random_job_id(),
        };
        if let Some(existing) = self
            .record(&id)
            .await
            .map_err(|e| SubmitError::Internal(e.to_string()))?
        {
            return Ok(Submitted {
                record: existing,
                created: false,
            });
        }
        let now = wall_ms();
        let record = JobRecord {
            id: id.clone(),
            spec: spec.clone(),
            owner: self.me.clone(),
            epoch: 1,
            status: JobStatus::Pending,
            submitted_at_ms: now,
            updated_at_ms: now,
        };
        self.write(record.clone())
            .await
            .map_err(|e| SubmitError::Internal(e.to_string()))?;
        let (coord, fx) = Coordinator::submit(id.clone(), 1, spec.tasks, self.config.coordinator);
        self.driven.insert(
            id.clone(),
            Driven {
                coord,
                record: record.clone(),
            },
        );
        self.apply(myself, &id, fx).await;
        Ok(Submitted {
            record,
            created: true,
        })
    }

    async fn cancel(&mut self, myself: &ActorRef<Msg>, job: JobId) -> Result<CancelOutcome> {
        let Some(mut record) = self.record(&job).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if record.status.is_terminal() {
            return Ok(CancelOutcome::AlreadyFinished(record.status));
        }
        // Recorded in the catalog, the cancel reaches the owner wherever it is (and a future
        // owner after a takeover); the status lattice makes it final.
        record.status = JobStatus::Cancelled;
        record.updated_at_ms = record.updated_at_ms.max(wall_ms());
        self.write(record).await?;
        if let Some(d) = self.driven.get_mut(&job) {
            if let Some(fx) = d.coord.on_cancel() {
                self.apply(myself, &job, fx).await;
            }
        }
        Ok(CancelOutcome::Cancelled)
    }

    fn detail(&self, job: &JobId) -> Result<JobDetail> {
        let tasks = match self.driven.get(job) {
            Some(d) => d.coord.tasks_view(),
            None => events::load_result(self.store.as_ref(), job)?.unwrap_or_default(),
        };
        Ok(JobDetail {
            tasks,
            events: events::read(self.store.as_ref(), job)?,
        })
    }

    /// Ownership decisions for every unfinished job, then each driven job's timers, lost nodes
    /// and recorded cancels.
    async fn tick(&mut self, myself: &ActorRef<Msg>) -> Result<()> {
        let view = self.membership.view().await?;
        let quorum = has_quorum(&view);
        let settled = self.started.elapsed() >= self.config.settle;
        let jobs = self.catalog.list(Some(RecordKind::Job)).await?;
        let now = wall_ms();
        for (_, entry) in jobs {
            let Entry::Job(entry) = entry else { continue };
            let record = entry.record;
            let id = record.id.clone();
            match ownership::decide(&record, &view, &self.me, now) {
                Decision::Drive => {
                    if !self.driven.contains_key(&id) && settled && quorum {
                        // This node owns a job it does not drive: it restarted. Resume with a
                        // raised epoch (fencing its own earlier starts) and a survey.
                        let mut next = record.clone();
                        next.epoch = record.epoch.saturating_add(1);
                        next.updated_at_ms = next.updated_at_ms.max(now);
                        self.resume(myself, next, "resumed after a restart").await;
                    } else if let Some(d) = self.driven.get_mut(&id) {
                        d.record.status = d.record.status.join(record.status);
                        if record.status == JobStatus::Cancelled {
                            if let Some(fx) = d.coord.on_cancel() {
                                self.apply(myself, &id, fx).await;
                            }
                        }
                    }
                }
                Decision::TakeOver(next) if settled && quorum => {
                    let old = record.owner.clone();
                    self.resume(myself, *next, &format!("owner {old} is gone"))
                        .await;
                }
                Decision::Follow { owner } => {
                    if self.driven.remove(&id).is_some() {
                        self.log(&id, format!("fenced: {owner} now drives the job"));
                    }
                }
                Decision::Finished => {
                    self.driven.remove(&id);
                }
                Decision::TakeOver(_) | Decision::Wait { .. } | Decision::Orphaned => {}
            }
        }
        if !quorum {
            // Cut off from most of the cluster: leave lost nodes and late starts alone rather
            // than start second copies the majority side may already run.
            return Ok(());
        }
        let gone: Vec<NodeId> = view
            .iter()
            .filter(|m| matches!(m.state, MemberState::Dead | MemberState::Left))
            .map(|m| m.info.id.clone())
            .collect();
        let ids: Vec<JobId> = self.driven.keys().cloned().collect();
        for id in ids {
            let mut fx = Vec::new();
            if let Some(d) = self.driven.get_mut(&id) {
                for node in &gone {
                    fx.extend(d.coord.on_node_gone(node));
                }
                fx.extend(d.coord.on_tick(now));
            }
            self.apply(myself, &id, fx).await;
        }
        Ok(())
    }

    async fn resume(&mut self, myself: &ActorRef<Msg>, next: JobRecord, why: &str) {
        let id = next.id.clone();
        if let Err(e) = self.write(next.clone()).await {
            warn!(job = %id, error = %e, "cannot record the takeover");
            return;
        }
        info!(job = %id, epoch = next.epoch, "driving job: {why}");
        let (coord, fx) = Coordinator::take_over(
            id.clone(),
            next.epoch,
            next.status,
            next.spec.tasks,
            self.config.coordinator,
        );
        self.log(&id, format!("{why}; driving at epoch {}", next.epoch));
        self.driven.insert(
            id.clone(),
            Driven {
                coord,
                record: next,
            },
        );
        self.apply(myself, &id, fx).await;
    }
}

/// What every alive node in `view` runs, as placement counts it. A node that does not answer
/// counts as empty: its heartbeat's load still discounts its score.
async fn gather_usage(
    view: &[MemberView],
    mesh: &Arc<dyn Mesh>,
    executor: &executor::Handle,
    me: &NodeId,
    deadline: std::time::Duration,
) -> BTreeMap<NodeId, Usage> {
    let asks = view
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .map(|m| {
            let node = m.info.id.clone();
            let (mesh, executor, me) = (mesh.clone(), executor.clone(), me.clone());
            async move {
                let tasks = if node == me {
                    executor.usage().await.ok()
                } else {
                    match mesh.jobs(&node, RequestBody::Usage, deadline).await {
                        Ok(ResponseBody::Usage(t)) => Some(t),
                        _ => None,
                    }
                };
                (node, tasks)
            }
        });
    futures_join_all(asks)
        .await
        .into_iter()
        .filter_map(|(node, tasks)| tasks.map(|tasks| (node, Usage { tasks })))
        .collect()
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

impl Actor for JobManager {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Args,
    ) -> std::result::Result<State, ActorProcessingErr> {
        myself.send_interval(args.config.tick, || Msg::Tick);
        Ok(State {
            me: args.mesh.local_id(),
            config: args.config,
            mesh: args.mesh,
            catalog: args.catalog,
            membership: args.membership,
            executor: args.executor,
            store: args.store,
            hook: args.hook,
            driven: BTreeMap::new(),
            started: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let span = self.span.clone();
        self.handle_message(myself, msg, state)
            .instrument(span)
            .await
    }
}

impl JobManager {
    /// What [`Actor::handle`] does, inside the actor's span.
    async fn handle_message(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            Msg::Submit { spec, reply } => {
                let _ = reply.send(state.submit(&myself, spec).await);
            }
            Msg::Cancel { job, reply } => {
                let _ = reply.send(state.cancel(&myself, job).await);
            }
            Msg::Detail { job, reply } => {
                let _ = reply.send(state.detail(&job));
            }
            Msg::TaskFinished {
                job,
                task,
                node,
                attempt,
                outcome,
            } => {
                if let Some(d) = state.driven.get_mut(&job) {
                    let fx = d.coord.on_task_finished(task, &node, attempt, outcome);
                    state.apply(&myself, &job, fx).await;
                }
            }
            Msg::StartAnswered {
                job,
                epoch,
                task,
                node,
                attempt,
                answer,
            } => {
                let Some(d) = state.driven.get_mut(&job) else {
                    return Ok(());
                };
                if d.coord.epoch() != epoch {
                    return Ok(());
                }
                match answer {
                    Ok(a) => {
                        let fx = d.coord.on_start_answer(task, &node, attempt, a);
                        state.apply(&myself, &job, fx).await;
                    }
                    // Unanswered: the start timeout or the node's death re-places it.
                    Err(e) => state.log(&job, format!("start of task {task} on {node}: {e}")),
                }
            }
            Msg::Placed {
                job,
                epoch,
                tasks,
                result,
            } => {
                let Some(d) = state.driven.get_mut(&job) else {
                    return Ok(());
                };
                if d.coord.epoch() != epoch {
                    return Ok(());
                }
                let fx = match result {
                    Ok(nodes) => {
                        let pairs: Vec<(u32, NodeId)> = tasks.into_iter().zip(nodes).collect();
                        d.coord.on_placed(wall_ms(), &pairs)
                    }
                    Err(reason) => d.coord.on_placement_failed(&reason),
                };
                state.apply(&myself, &job, fx).await;
            }
            Msg::Surveyed { job, epoch, found } => {
                let Some(d) = state.driven.get_mut(&job) else {
                    return Ok(());
                };
                if d.coord.epoch() != epoch {
                    return Ok(());
                }
                let fx = d.coord.on_survey(wall_ms(), &found);
                state.apply(&myself, &job, fx).await;
            }
            Msg::Tick => {
                if let Err(e) = state.tick(&myself).await {
                    warn!(error = %e, "job manager tick failed");
                }
            }
        }
        Ok(())
    }
}
