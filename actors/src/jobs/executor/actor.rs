//! The `Executor` actor shell: ledger decisions from the pure core, persistence through the
//! `Store`, work on blocking threads, and reports of finished tasks on a bounded channel.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::Instrument;

use crate::clock::wall_ms;

use flotilla_protocol::codec;
use flotilla_protocol::jobs::{JobId, Priority, Resources, RunningTask};
use flotilla_protocol::services::jobs::{LedgerEntry, StartAnswer, TaskOutcome};
use flotilla_protocol::NodeId;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::msg::{Msg, RemoteCaller};
use super::{Execution, Finished, TaskRunner};
use crate::jobs::ledger::{Ledger, TaskKey};
use crate::store::{Column, Durability, Store};
use crate::{Error, Result};

/// Prefix of ledger rows in the `Jobs` column.
const PREFIX: &[u8] = b"ledger/";
/// Prefix of run-log rows in the `Jobs` column.
const RUN_PREFIX: &[u8] = b"run/";
/// Largest persisted ledger row.
const MAX_ROW_BYTES: usize = 64 * 1024;
/// Rows read back at start at most.
const MAX_ROWS: usize = 1_000_000;

/// The actor type.
#[derive(Debug)]
pub struct Executor {
    /// The span its messages are handled in ([`crate::task::actor_span`]).
    pub(crate) span: tracing::Span,
}

/// What the executor starts from.
pub struct Args {
    pub store: Arc<dyn Store>,
    pub runner: Arc<dyn TaskRunner>,
    /// Finished tasks to report to their owners; when full, the executor waits (back-pressure).
    pub finished: mpsc::Sender<Finished>,
}

/// Who asked for a task and what it holds while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Holder {
    owner: NodeId,
    priority: Priority,
    resources: Resources,
}

/// The executor's state.
pub struct State {
    ledger: Ledger,
    owners: BTreeMap<TaskKey, Holder>,
    cancel_flags: BTreeMap<TaskKey, Arc<AtomicBool>>,
    /// Capacity held by work that is not a task (serving replicas), by holder. Not persisted:
    /// holders reserve again when they start after a restart.
    reservations: BTreeMap<String, RunningTask>,
    store: Arc<dyn Store>,
    runner: Arc<dyn TaskRunner>,
    finished: mpsc::Sender<Finished>,
}

fn row_key(key: &TaskKey) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(key.job.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(&key.task.to_be_bytes());
    k
}

/// Run-log rows of one job share a prefix (a job id never contains `/`).
fn run_prefix(job: Option<&JobId>) -> Vec<u8> {
    let mut k = RUN_PREFIX.to_vec();
    if let Some(job) = job {
        k.extend_from_slice(job.as_str().as_bytes());
        k.push(b'/');
    }
    k
}

fn run_key(key: &TaskKey, attempt: u32) -> Vec<u8> {
    let mut k = run_prefix(Some(&key.job));
    k.extend_from_slice(&key.task.to_be_bytes());
    k.extend_from_slice(&attempt.to_be_bytes());
    k
}

/// Largest task result or failure reason kept. A result travels to the owner in one jobs frame
/// (1 MiB) and again in surveys; a larger one would never arrive and leave its job running.
pub const MAX_RESULT_BYTES: usize = 256 * 1024;

/// The outcome as it can travel: an oversized result becomes a failure that says why, an
/// oversized reason is cut.
fn bounded(outcome: TaskOutcome) -> TaskOutcome {
    match outcome {
        TaskOutcome::Succeeded(r) if r.len() > MAX_RESULT_BYTES => TaskOutcome::Failed(format!(
            "the task's result is {} bytes; at most {MAX_RESULT_BYTES} can be reported",
            r.len()
        )),
        TaskOutcome::Failed(r) if r.len() > MAX_RESULT_BYTES => {
            let mut cut = MAX_RESULT_BYTES;
            while !r.is_char_boundary(cut) {
                cut -= 1;
            }
            TaskOutcome::Failed(format!("{}…", &r[..cut]))
        }
        other => other,
    }
}

/// A persisted row: the task, who holds it, its ledger entry and when it ended (if it did).
type Row = (TaskKey, Holder, LedgerEntry, Option<u64>);
/// A row as written before the end time was recorded; still read.
type RowWithoutEnd = (TaskKey, Holder, LedgerEntry);

fn decode_row(bytes: &[u8]) -> flotilla_protocol::Result<Row> {
    codec::decode::<Row, MAX_ROW_BYTES>("ledger", bytes).or_else(|e| {
        codec::decode::<RowWithoutEnd, MAX_ROW_BYTES>("ledger", bytes)
            .map(|(key, holder, entry)| (key, holder, entry, None))
            .map_err(|_| e)
    })
}

impl State {
    fn persist(&self, key: &TaskKey) -> Result<()> {
        let (Some(entry), Some(holder)) = (self.ledger.entry(key), self.owners.get(key)) else {
            return Ok(());
        };
        let row: Row = (
            key.clone(),
            holder.clone(),
            entry.clone(),
            self.ledger.ended_at(key),
        );
        let bytes = codec::encode::<_, MAX_ROW_BYTES>("ledger", &row)
            .map_err(|e| Error::Store(e.to_string()))?;
        self.store
            .put(Column::Jobs, &row_key(key), &bytes, Durability::Sync)
    }

    /// Appends to the run log, durably, before the work starts.
    fn log_run(&self, key: &TaskKey, epoch: u64, attempt: u32, owner: &NodeId) -> Result<()> {
        let run = Execution {
            job: key.job.clone(),
            task: key.task,
            attempt,
            epoch,
            owner: owner.clone(),
            started_at_ms: wall_ms(),
        };
        let bytes = codec::encode::<_, MAX_ROW_BYTES>("run log", &run)
            .map_err(|e| Error::Store(e.to_string()))?;
        self.store.put(
            Column::Jobs,
            &run_key(key, attempt),
            &bytes,
            Durability::Sync,
        )
    }

    fn runs(&self, job: Option<&JobId>) -> Result<Vec<Execution>> {
        let rows = self
            .store
            .scan_prefix(Column::Jobs, &run_prefix(job), MAX_ROWS)?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| codec::decode::<Execution, MAX_ROW_BYTES>("run log", &v).ok())
            .collect())
    }

    /// Running tasks, then reservations.
    fn usage(&self) -> Vec<RunningTask> {
        let mut out: Vec<RunningTask> = self
            .owners
            .iter()
            .filter(|(k, _)| self.ledger.entry(k).is_some_and(|e| e.outcome.is_none()))
            .map(|(k, h)| RunningTask {
                job: k.job.clone(),
                task: k.task,
                priority: h.priority,
                resources: h.resources,
            })
            .collect();
        out.extend(self.reservations.values().cloned());
        out
    }

    /// Sets (or with `None` clears) `holder`'s reservation in the inference class, then
    /// preempts running tasks of lower classes, lowest class first, until what is reserved
    /// fits in `capacity`. Returns the preempted tasks. Tasks of the inference class itself are
    /// never preempted; if they alone overfill the node, the node stays overbooked.
    async fn reserve(
        &mut self,
        holder: String,
        resources: Option<Resources>,
        capacity: Resources,
    ) -> Result<Vec<RunningTask>> {
        let Some(resources) = resources else {
            self.reservations.remove(&holder);
            return Ok(Vec::new());
        };
        self.reservations.insert(
            holder.clone(),
            RunningTask {
                job: JobId::from(format!("replica-{holder}").as_str()),
                task: 0,
                priority: Priority::Inference,
                resources,
            },
        );
        let fits = |used: &[RunningTask]| {
            let (c, r, g) = used.iter().fold((0u64, 0u64, 0u64), |a, t| {
                (
                    a.0 + u64::from(t.resources.cores),
                    a.1.saturating_add(t.resources.ram_bytes),
                    a.2 + u64::from(t.resources.gpus),
                )
            });
            c <= u64::from(capacity.cores)
                && r <= capacity.ram_bytes
                && g <= u64::from(capacity.gpus)
        };
        let mut victims: Vec<RunningTask> = self
            .usage()
            .into_iter()
            .filter(|t| t.priority < Priority::Inference)
            .collect();
        victims.sort_by(|a, b| (a.priority, &a.job, a.task).cmp(&(b.priority, &b.job, b.task)));
        let mut preempted = Vec::new();
        for victim in victims {
            if fits(&self.usage()) {
                break;
            }
            let key = TaskKey {
                job: victim.job.clone(),
                task: victim.task,
            };
            let reason = format!("preempted by a replica of deployment {holder}");
            info!(job = %key.job.as_str(), task = key.task, %reason, "task preempted");
            if self.stop(&key, TaskOutcome::Failed(reason)).await? {
                preempted.push(victim);
            }
        }
        Ok(preempted)
    }

    /// Why a peer may not cancel `key` at `epoch`, or `None` when it may: the task's owner
    /// may, and so may the job's current owner by the catalog (a new owner after a takeover).
    /// A task this node does not run has nothing to stop.
    fn cancel_refusal(&self, key: &TaskKey, epoch: u64, caller: &RemoteCaller) -> Option<String> {
        let holder = self.owners.get(key)?;
        if holder.owner == caller.from {
            return None;
        }
        match &caller.head {
            Some(h) if h.owner == caller.from && h.epoch == epoch => None,
            _ => Some(format!(
                "{} does not own task {} of {} (its owner is {})",
                caller.from,
                key.task,
                key.job.as_str(),
                holder.owner
            )),
        }
    }

    /// Why a peer may not preempt `key`, or `None` when it may: only the owner of an
    /// unfinished job of a higher class than the task's makes room for it.
    fn preempt_refusal(&self, key: &TaskKey, caller: &RemoteCaller) -> Option<String> {
        let holder = self.owners.get(key)?;
        if self.ledger.entry(key).is_some_and(|e| e.outcome.is_some()) {
            return None; // finished already: nothing to stop
        }
        match &caller.head {
            Some(h) if h.owner == caller.from && h.unfinished && h.priority > holder.priority => {
                None
            }
            Some(h) if h.owner != caller.from => Some(format!(
                "{} does not own the preempting job (its owner is {})",
                caller.from, h.owner
            )),
            Some(h) if !h.unfinished => Some("the preempting job has finished".to_string()),
            Some(h) => Some(format!(
                "the preempting job's class {:?} is not above the task's {:?}",
                h.priority, holder.priority
            )),
            None => Some("the preempting job is not in this node's catalog".to_string()),
        }
    }

    /// Ends a running task with `outcome` after raising its cancel flag; whether it ran.
    async fn stop(&mut self, key: &TaskKey, outcome: TaskOutcome) -> Result<bool> {
        let running = self.ledger.entry(key).is_some_and(|e| e.outcome.is_none());
        if let Some(flag) = self.cancel_flags.get(key) {
            flag.store(true, Ordering::Release);
        }
        if running {
            let attempt = self.ledger.entry(key).map(|e| e.attempt).unwrap_or(0);
            self.finish(key, attempt, outcome).await?;
        }
        Ok(running)
    }

    /// Deletes every ledger and run-log row of `jobs` that still qualify as ended before
    /// `cutoff_ms` (a job that ran again since it was listed is kept). Ledger rows go first, so
    /// a crash in between leaves run-log rows that the next compaction removes; returns how
    /// many jobs were forgotten.
    fn forget(&mut self, jobs: Vec<JobId>, cutoff_ms: u64) -> Result<usize> {
        let ended: std::collections::BTreeSet<JobId> = self
            .ledger
            .jobs_ended_before(cutoff_ms)
            .into_iter()
            .collect();
        let mut forgotten = 0;
        for job in jobs.into_iter().filter(|j| ended.contains(j)) {
            for key in self.ledger.tasks_of(&job) {
                self.store
                    .delete(Column::Jobs, &row_key(&key), Durability::Sync)?;
                self.owners.remove(&key);
                self.cancel_flags.remove(&key);
            }
            self.ledger.forget_job(&job);
            for (k, _) in self
                .store
                .scan_prefix(Column::Jobs, &run_prefix(Some(&job)), MAX_ROWS)?
            {
                self.store.delete(Column::Jobs, &k, Durability::Sync)?;
            }
            forgotten += 1;
        }
        if forgotten > 0 {
            info!(jobs = forgotten, "task ledger compacted");
        }
        Ok(forgotten)
    }

    async fn finish(&mut self, key: &TaskKey, attempt: u32, outcome: TaskOutcome) -> Result<()> {
        let outcome = bounded(outcome);
        let current = self.ledger.entry(key).map(|e| e.attempt);
        if current != Some(attempt) || !self.ledger.on_finish(key, outcome.clone(), wall_ms()) {
            return Ok(()); // a superseded attempt, or already ended (cancelled)
        }
        self.cancel_flags.remove(key);
        self.persist(key)?;
        if let Some(holder) = self.owners.get(key) {
            let report = Finished {
                owner: holder.owner.clone(),
                job: key.job.clone(),
                task: key.task,
                attempt,
                outcome,
            };
            // The receiver is gone only when the node is shutting down.
            let _ = self.finished.send(report).await;
        }
        Ok(())
    }
}

impl Actor for Executor {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        _myself: ActorRef<Msg>,
        args: Args,
    ) -> std::result::Result<State, ActorProcessingErr> {
        let rows = args.store.scan_prefix(Column::Jobs, PREFIX, MAX_ROWS)?;
        let mut entries = Vec::new();
        let mut owners = BTreeMap::new();
        for (k, v) in rows {
            match decode_row(&v) {
                Ok((key, holder, entry, ended_at)) => {
                    owners.insert(key.clone(), holder);
                    entries.push((key, entry, ended_at));
                }
                Err(e) => {
                    warn!(row = %String::from_utf8_lossy(&k), error = %e, "skipping unreadable ledger row")
                }
            }
        }
        let mut state = State {
            ledger: Ledger::from_entries(entries, wall_ms()),
            owners,
            cancel_flags: BTreeMap::new(),
            reservations: BTreeMap::new(),
            store: args.store,
            runner: args.runner,
            finished: args.finished,
        };
        // Work that was running when this node stopped is lost: it ends as failed (so its owner
        // re-places it as a new attempt) rather than being silently redone here.
        let interrupted: Vec<(TaskKey, u32)> = state
            .owners
            .keys()
            .filter_map(|k| {
                state
                    .ledger
                    .entry(k)
                    .filter(|e| e.outcome.is_none())
                    .map(|e| (k.clone(), e.attempt))
            })
            .collect();
        for (key, attempt) in interrupted {
            state
                .finish(
                    &key,
                    attempt,
                    TaskOutcome::Failed("the executing node restarted while the task ran".into()),
                )
                .await?;
        }
        Ok(state)
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

impl Executor {
    /// What [`Actor::handle`] does, inside the actor's span.
    async fn handle_message(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            Msg::Start {
                key,
                owner,
                epoch,
                attempt,
                kind,
                priority,
                resources,
                reply,
            } => {
                let answer = state.ledger.on_start(&key, epoch, attempt);
                if matches!(answer, StartAnswer::Started | StartAnswer::AlreadyRunning) {
                    let logged = if answer == StartAnswer::Started {
                        state.log_run(&key, epoch, attempt, &owner)
                    } else {
                        Ok(())
                    };
                    state.owners.insert(
                        key.clone(),
                        Holder {
                            owner,
                            priority,
                            resources,
                        },
                    );
                    if let Err(e) = logged.and_then(|()| state.persist(&key)) {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                }
                if answer == StartAnswer::Started {
                    info!(job = %key.job.as_str(), task = key.task, attempt, "task started");
                    let cancelled = Arc::new(AtomicBool::new(false));
                    state.cancel_flags.insert(key.clone(), cancelled.clone());
                    let runner = state.runner.clone();
                    let me = myself.clone();
                    crate::task::spawn(async move {
                        let task = key.task;
                        let job = key.job.clone();
                        let work = move || {
                            if cancelled.load(Ordering::Acquire) {
                                return Err("cancelled before it started".to_string());
                            }
                            runner.run(&job, &kind, task, &cancelled)
                        };
                        let outcome = match tokio::task::spawn_blocking(work).await {
                            Ok(Ok(result)) => TaskOutcome::Succeeded(result),
                            Ok(Err(reason)) => TaskOutcome::Failed(reason),
                            Err(e) => {
                                TaskOutcome::Failed(format!("task panicked or was aborted: {e}"))
                            }
                        };
                        let _ = me.cast(Msg::WorkDone {
                            key,
                            attempt,
                            outcome,
                        });
                    });
                }
                let _ = reply.send(Ok(answer));
            }
            Msg::Cancel {
                key,
                epoch,
                remote,
                reply,
            } => {
                if let Some(refusal) = remote.and_then(|r| state.cancel_refusal(&key, epoch, &r)) {
                    warn!(job = %key.job.as_str(), task = key.task, %refusal, "cancel refused");
                    let _ = reply.send(Err(Error::Forbidden(refusal)));
                    return Ok(());
                }
                let current = state.ledger.entry(&key).map(|e| e.epoch);
                if current.is_some_and(|c| epoch < c) {
                    let _ = reply.send(Err(Error::Peer {
                        peer: key.job.as_str().to_string(),
                        reason: format!(
                            "cancel from epoch {epoch} refused: epoch {} owns the task",
                            current.unwrap_or(0)
                        ),
                    }));
                    return Ok(());
                }
                let _ = reply.send(state.stop(&key, TaskOutcome::Cancelled).await);
            }
            Msg::Preempt {
                key,
                reason,
                remote,
                reply,
            } => {
                if let Some(refusal) = remote.and_then(|r| state.preempt_refusal(&key, &r)) {
                    warn!(job = %key.job.as_str(), task = key.task, %refusal, "preemption refused");
                    let _ = reply.send(Err(Error::Forbidden(refusal)));
                    return Ok(());
                }
                info!(job = %key.job.as_str(), task = key.task, %reason, "task preempted");
                let _ = reply.send(state.stop(&key, TaskOutcome::Failed(reason)).await);
            }
            Msg::Usage { reply } => {
                let _ = reply.send(state.usage());
            }
            Msg::Reserve {
                holder,
                resources,
                capacity,
                reply,
            } => {
                let _ = reply.send(state.reserve(holder, resources, capacity).await);
            }
            Msg::Runs { job, reply } => {
                let _ = reply.send(state.runs(job.as_ref()));
            }
            Msg::Survey { job, reply } => {
                let entries = state
                    .owners
                    .keys()
                    .filter(|k| k.job == job)
                    .filter_map(|k| state.ledger.entry(k).map(|e| (k.task, e.clone())))
                    .collect();
                let _ = reply.send(entries);
            }
            Msg::WorkDone {
                key,
                attempt,
                outcome,
            } => state.finish(&key, attempt, outcome).await?,
            Msg::EndedBefore { cutoff_ms, reply } => {
                let _ = reply.send(state.ledger.jobs_ended_before(cutoff_ms));
            }
            Msg::Forget {
                jobs,
                cutoff_ms,
                reply,
            } => {
                let _ = reply.send(state.forget(jobs, cutoff_ms));
            }
        }
        Ok(())
    }
}
