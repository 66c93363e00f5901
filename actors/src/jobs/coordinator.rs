//! The job coordinator's core: the owner-side state machine of one job, `(now, input) ->
//! effects`, with no I/O.
//!
//! The shell (an actor on the owning node) performs the effects: sending start and cancel
//! requests to executing nodes, asking the placement core for nodes when tasks must be (re)placed,
//! surveying nodes' ledgers after a takeover, and recording status and events in the catalog.
//!
//! Life of a job: `pending → placing` when the coordinator first asks for a placement;
//! `→ running` on the first acknowledged start; `→ succeeded` when every task succeeded,
//! `→ failed` when a task fails `max_attempts` times, `→ cancelled` on request. A task whose node
//! dies (or whose start is not acknowledged within `start_timeout_ms`) is re-placed with the next
//! attempt number, avoiding that node. After a takeover the new owner first surveys the alive
//! nodes' ledgers: running tasks are re-attached (a start with the new epoch, which also fences
//! the old owner there), finished ones are taken as they are, missing ones are re-placed.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_protocol::jobs::{JobId, JobStatus};
use flotilla_protocol::services::jobs::TaskView;
use flotilla_protocol::NodeId;

use super::ledger::{Entry, StartAnswer, TaskOutcome};

/// Limits of a coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// A start not acknowledged within this is treated as lost.
    pub start_timeout_ms: u64,
    /// Executions of one task at most (first attempt included).
    pub max_attempts: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            start_timeout_ms: 30_000,
            max_attempts: 3,
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Ask the placement core for nodes for these tasks, avoiding these nodes.
    Place { tasks: Vec<u32>, avoid: Vec<NodeId> },
    /// Ask `node` to run `task`.
    Start {
        node: NodeId,
        task: u32,
        epoch: u64,
        attempt: u32,
    },
    /// Ask `node` to stop `task`.
    Cancel { node: NodeId, task: u32 },
    /// Ask every alive node which tasks of this job its ledger holds.
    Survey,
    /// Record this status in the catalog.
    Status(JobStatus),
    /// Append to the job's event log.
    Event(String),
    /// Another owner holds a newer epoch: stop driving this job.
    Abdicate { newer_epoch: u64 },
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting for a placement.
    Unplaced,
    /// Start sent at this time, not acknowledged yet.
    Starting {
        since_ms: u64,
    },
    Running,
    Done(TaskOutcome),
}

#[derive(Debug, Clone, PartialEq)]
struct Task {
    node: Option<NodeId>,
    attempt: u32,
    phase: Phase,
}

/// The coordinator of one job.
#[derive(Debug, Clone)]
pub struct Coordinator {
    job: JobId,
    epoch: u64,
    status: JobStatus,
    config: Config,
    tasks: BTreeMap<u32, Task>,
    /// A takeover waits for the survey before re-placing anything.
    surveying: bool,
}

impl Coordinator {
    /// A coordinator for a freshly submitted job of `tasks` tasks; returns the first effects.
    pub fn submit(job: JobId, epoch: u64, tasks: u32, config: Config) -> (Self, Vec<Effect>) {
        let mut c = Coordinator {
            job,
            epoch,
            status: JobStatus::Pending,
            config,
            tasks: (0..tasks)
                .map(|t| {
                    (
                        t,
                        Task {
                            node: None,
                            attempt: 0,
                            phase: Phase::Unplaced,
                        },
                    )
                })
                .collect(),
            surveying: false,
        };
        let mut fx = vec![Effect::Event(format!("submitted with {tasks} tasks"))];
        c.set_status(JobStatus::Placing, &mut fx);
        fx.push(Effect::Place {
            tasks: (0..tasks).collect(),
            avoid: vec![],
        });
        (c, fx)
    }

    /// A coordinator for a job this node takes over at `epoch`; it starts with a survey.
    pub fn take_over(
        job: JobId,
        epoch: u64,
        status: JobStatus,
        tasks: u32,
        config: Config,
    ) -> (Self, Vec<Effect>) {
        let c = Coordinator {
            job,
            epoch,
            status,
            config,
            tasks: (0..tasks)
                .map(|t| {
                    (
                        t,
                        Task {
                            node: None,
                            attempt: 0,
                            phase: Phase::Unplaced,
                        },
                    )
                })
                .collect(),
            surveying: true,
        };
        (
            c,
            vec![
                Effect::Event(format!("taken over at epoch {epoch}")),
                Effect::Survey,
            ],
        )
    }

    /// The job's id.
    pub fn job(&self) -> &JobId {
        &self.job
    }

    /// The status the coordinator believes in.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// Results of succeeded tasks, by task.
    pub fn results(&self) -> BTreeMap<u32, String> {
        self.tasks
            .iter()
            .filter_map(|(t, s)| match &s.phase {
                Phase::Done(TaskOutcome::Succeeded(r)) => Some((*t, r.clone())),
                _ => None,
            })
            .collect()
    }

    /// Where each task runs or ran.
    pub fn assignments(&self) -> BTreeMap<u32, NodeId> {
        self.tasks
            .iter()
            .filter_map(|(t, s)| s.node.clone().map(|n| (*t, n)))
            .collect()
    }

    /// The epoch this coordinator drives the job in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Every task's node, attempt, state and result, in task order.
    pub fn tasks_view(&self) -> Vec<TaskView> {
        self.tasks
            .iter()
            .map(|(task, t)| {
                let (state, result) = match &t.phase {
                    Phase::Unplaced => ("unplaced", None),
                    Phase::Starting { .. } => ("starting", None),
                    Phase::Running => ("running", None),
                    Phase::Done(TaskOutcome::Succeeded(r)) => ("succeeded", Some(r.clone())),
                    Phase::Done(TaskOutcome::Failed(r)) => ("failed", Some(r.clone())),
                    Phase::Done(TaskOutcome::Cancelled) => ("cancelled", None),
                };
                TaskView {
                    task: *task,
                    node: t.node.clone(),
                    attempt: t.attempt,
                    state: state.to_string(),
                    result,
                }
            })
            .collect()
    }

    /// Nodes that hold a live (starting or running) task of this job, with how many.
    pub fn live_tasks_per_node(&self) -> BTreeMap<NodeId, u32> {
        let mut per_node = BTreeMap::new();
        for t in self.tasks.values() {
            if let (Some(node), Phase::Running | Phase::Starting { .. }) = (&t.node, &t.phase) {
                *per_node.entry(node.clone()).or_insert(0) += 1;
            }
        }
        per_node
    }

    fn set_status(&mut self, next: JobStatus, fx: &mut Vec<Effect>) {
        if self.status != next && self.status.can_become(next) {
            self.status = next;
            fx.push(Effect::Status(next));
        }
    }

    /// The placement core answered: `(task, node)` pairs for tasks waiting to be placed.
    pub fn on_placed(&mut self, now_ms: u64, assignments: &[(u32, NodeId)]) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.status.is_terminal() {
            return fx;
        }
        for (task, node) in assignments {
            let Some(t) = self.tasks.get_mut(task) else {
                continue;
            };
            if t.phase != Phase::Unplaced {
                continue;
            }
            t.node = Some(node.clone());
            t.phase = Phase::Starting { since_ms: now_ms };
            fx.push(Effect::Start {
                node: node.clone(),
                task: *task,
                epoch: self.epoch,
                attempt: t.attempt,
            });
        }
        fx
    }

    /// The placement core could not place tasks: the job fails with its reason.
    pub fn on_placement_failed(&mut self, reason: &str) -> Vec<Effect> {
        let mut fx = vec![Effect::Event(format!("placement failed: {reason}"))];
        self.set_status(JobStatus::Failed, &mut fx);
        fx
    }

    /// A node answered a start request.
    pub fn on_start_answer(
        &mut self,
        task: u32,
        node: &NodeId,
        attempt: u32,
        answer: StartAnswer,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(t) = self.tasks.get_mut(&task) else {
            return fx;
        };
        if t.node.as_ref() != Some(node)
            || t.attempt != attempt
            || matches!(t.phase, Phase::Done(_))
        {
            return fx; // an answer to a superseded attempt
        }
        match answer {
            StartAnswer::Started | StartAnswer::AlreadyRunning => t.phase = Phase::Running,
            StartAnswer::AlreadyFinished(outcome) => {
                return self.on_task_finished(task, node, attempt, outcome)
            }
            StartAnswer::Fenced { current } => {
                return vec![Effect::Abdicate {
                    newer_epoch: current,
                }]
            }
        }
        self.set_status(JobStatus::Running, &mut fx);
        fx
    }

    /// A task ended on `node`.
    pub fn on_task_finished(
        &mut self,
        task: u32,
        node: &NodeId,
        attempt: u32,
        outcome: TaskOutcome,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let max_attempts = self.config.max_attempts;
        let Some(t) = self.tasks.get_mut(&task) else {
            return fx;
        };
        if t.node.as_ref() != Some(node)
            || t.attempt != attempt
            || matches!(t.phase, Phase::Done(_))
        {
            return fx;
        }
        match &outcome {
            TaskOutcome::Failed(reason) if t.attempt + 1 < max_attempts => {
                fx.push(Effect::Event(format!(
                    "task {task} failed on {node} (attempt {attempt}): {reason}; retrying"
                )));
                t.attempt += 1;
                t.phase = Phase::Unplaced;
                fx.push(Effect::Place {
                    tasks: vec![task],
                    avoid: vec![node.clone()],
                });
                return fx;
            }
            TaskOutcome::Failed(reason) => {
                fx.push(Effect::Event(format!(
                    "task {task} failed on {node} after {max_attempts} attempts: {reason}"
                )));
            }
            TaskOutcome::Succeeded(_) => {
                fx.push(Effect::Event(format!("task {task} succeeded on {node}")))
            }
            TaskOutcome::Cancelled => {}
        }
        t.phase = Phase::Done(outcome);
        self.conclude(&mut fx);
        fx
    }

    fn conclude(&mut self, fx: &mut Vec<Effect>) {
        let done: Vec<&TaskOutcome> = self
            .tasks
            .values()
            .filter_map(|t| match &t.phase {
                Phase::Done(o) => Some(o),
                _ => None,
            })
            .collect();
        if done.iter().any(|o| matches!(o, TaskOutcome::Failed(_))) {
            // One task is out of attempts: stop the others, the job has failed.
            for (task, t) in &self.tasks {
                if let (Some(node), Phase::Running | Phase::Starting { .. }) = (&t.node, &t.phase) {
                    fx.push(Effect::Cancel {
                        node: node.clone(),
                        task: *task,
                    });
                }
            }
            self.set_status(JobStatus::Failed, fx);
        } else if done.len() == self.tasks.len() {
            self.set_status(JobStatus::Succeeded, fx);
        }
    }

    /// `node` was declared dead (or left): its unfinished tasks are re-placed elsewhere.
    pub fn on_node_gone(&mut self, node: &NodeId) -> Vec<Effect> {
        let lost: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.node.as_ref() == Some(node)
                    && matches!(t.phase, Phase::Running | Phase::Starting { .. })
            })
            .map(|(task, _)| *task)
            .collect();
        self.replace(lost, node, "its node is gone")
    }

    fn replace(&mut self, lost: Vec<u32>, node: &NodeId, why: &str) -> Vec<Effect> {
        let mut fx = Vec::new();
        if lost.is_empty() || self.status.is_terminal() {
            return fx;
        }
        let mut retry = Vec::new();
        for task in lost {
            let Some(t) = self.tasks.get_mut(&task) else {
                continue;
            };
            if t.attempt + 1 >= self.config.max_attempts {
                t.phase = Phase::Done(TaskOutcome::Failed(format!(
                    "{why} ({node}), no attempts left"
                )));
            } else {
                t.attempt += 1;
                t.phase = Phase::Unplaced;
                retry.push(task);
            }
        }
        if !retry.is_empty() {
            fx.push(Effect::Event(format!(
                "re-placing tasks {retry:?}: {why} ({node})"
            )));
            fx.push(Effect::Place {
                tasks: retry,
                avoid: vec![node.clone()],
            });
        }
        self.conclude(&mut fx);
        fx
    }

    /// Starts not acknowledged in time are treated as lost on their node.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let timeout = self.config.start_timeout_ms;
        let late: BTreeMap<NodeId, Vec<u32>> =
            self.tasks
                .iter()
                .fold(BTreeMap::new(), |mut acc, (task, t)| {
                    if let (Some(node), Phase::Starting { since_ms }) = (&t.node, &t.phase) {
                        if now_ms.saturating_sub(*since_ms) >= timeout {
                            acc.entry(node.clone()).or_insert_with(Vec::new).push(*task);
                        }
                    }
                    acc
                });
        let mut fx = Vec::new();
        for (node, tasks) in late {
            fx.extend(self.replace(tasks, &node, "start not acknowledged"));
        }
        fx
    }

    /// The user cancelled the job. Returns `None` when it had already finished (a no-op).
    pub fn on_cancel(&mut self) -> Option<Vec<Effect>> {
        if self.status.is_terminal() {
            return None;
        }
        let mut fx = vec![Effect::Event("cancelled by request".to_string())];
        for (task, t) in self.tasks.iter_mut() {
            if let (Some(node), Phase::Running | Phase::Starting { .. }) = (&t.node, &t.phase) {
                fx.push(Effect::Cancel {
                    node: node.clone(),
                    task: *task,
                });
            }
            if !matches!(t.phase, Phase::Done(_)) {
                t.phase = Phase::Done(TaskOutcome::Cancelled);
            }
        }
        self.set_status(JobStatus::Cancelled, &mut fx);
        Some(fx)
    }

    /// After a takeover: what the alive nodes' ledgers hold for this job. Running tasks are
    /// re-attached with this coordinator's epoch, finished ones are taken, the rest re-placed.
    pub fn on_survey(
        &mut self,
        now_ms: u64,
        found: &BTreeMap<NodeId, Vec<(u32, Entry)>>,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        if !self.surveying {
            return fx;
        }
        self.surveying = false;
        let mut seen: BTreeSet<u32> = BTreeSet::new();
        // Per task, the highest attempt found anywhere is the current one.
        let mut best: BTreeMap<u32, (NodeId, Entry)> = BTreeMap::new();
        for (node, entries) in found {
            for (task, entry) in entries {
                let newer = best
                    .get(task)
                    .is_none_or(|(_, e)| entry.attempt > e.attempt);
                if newer {
                    best.insert(*task, (node.clone(), entry.clone()));
                }
            }
        }
        for (task, (node, entry)) in best {
            let Some(t) = self.tasks.get_mut(&task) else {
                continue;
            };
            seen.insert(task);
            t.node = Some(node.clone());
            t.attempt = entry.attempt;
            match entry.outcome {
                Some(outcome) => t.phase = Phase::Done(outcome),
                None => {
                    t.phase = Phase::Starting { since_ms: now_ms };
                    fx.push(Effect::Start {
                        node,
                        task,
                        epoch: self.epoch,
                        attempt: entry.attempt,
                    });
                }
            }
        }
        let missing: Vec<u32> = self
            .tasks
            .keys()
            .filter(|t| !seen.contains(t))
            .copied()
            .collect();
        if !missing.is_empty() {
            for task in &missing {
                if let Some(t) = self.tasks.get_mut(task) {
                    // A task nobody holds may have started on the lost owner's view of a node
                    // that is gone too; run it as a new attempt so no ledger treats it as a repeat.
                    t.attempt += 1;
                }
            }
            fx.push(Effect::Event(format!(
                "tasks {missing:?} not found on any node; placing them"
            )));
            fx.push(Effect::Place {
                tasks: missing,
                avoid: vec![],
            });
        }
        self.conclude(&mut fx);
        fx
    }
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
