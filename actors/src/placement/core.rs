//! The placement function: a pure, deterministic map from (membership view, resources in use,
//! job spec, job id) to the node of every task.
//!
//! Rules, in order:
//! 1. Only `alive` members are candidates (suspect, dead and left ones never are).
//! 2. A task goes only where its cores, RAM and GPUs fit in what the node has minus what is
//!    already reserved there, and where the job's anti-affinity allows one more of its tasks.
//! 3. Among the nodes that fit: the job's preferred (data-local) nodes first; then the higher
//!    *band* of compute score discounted by load; then rendezvous order for the job id. Scores
//!    are banded (about 12% wide) because probe scores of identical machines differ by noise of
//!    a few percent: without bands every job would pile onto whichever twin measured fastest,
//!    while with them equal machines split jobs evenly by rendezvous hashing.
//! 4. Tasks are placed one at a time and each reservation counts for the next, so a job spreads
//!    once its first node fills up or drops a band.
//! 5. A task that fits nowhere may displace running tasks of strictly lower priority classes.
//!    The node that needs the fewest evictions is chosen (ties by rule 3), and there the lowest
//!    classes go first. The result lists those tasks; nothing is executed here.
//!
//! Everything is ordered (ids, `BTreeMap`s, integer bands; no float transcendental functions),
//! so any node given the same inputs, in any order, computes the same placement.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_protocol::jobs::{JobId, JobSpec, Priority, Resources};
use flotilla_protocol::validation::FieldErrors;
use flotilla_protocol::{MemberState, MemberView, NodeId, NodeInfo};
use serde::{Deserialize, Serialize};

use crate::rendezvous;

pub use flotilla_protocol::jobs::RunningTask;

/// What is already reserved on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub tasks: Vec<RunningTask>,
}

impl Usage {
    /// The sum of the tasks' resources.
    pub fn used(&self) -> Resources {
        self.tasks.iter().fold(
            Resources {
                cores: 0,
                ram_bytes: 0,
                gpus: 0,
            },
            |a, t| add(a, t.resources),
        )
    }
}

/// One task's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: u32,
    pub node: NodeId,
}

/// A running task that must be preempted for the placement to hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Preemption {
    pub node: NodeId,
    pub job: JobId,
    pub task: u32,
    pub priority: Priority,
}

/// Where a job's tasks go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub job: JobId,
    /// One per task, in task order.
    pub assignments: Vec<Assignment>,
    /// Tasks of lower priority classes to stop first, by node; empty when capacity sufficed.
    pub preempt: Vec<Preemption>,
}

/// Why a job cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The spec has invalid fields.
    #[error("job {job}: {errors}")]
    InvalidSpec { job: JobId, errors: FieldErrors },
    /// The view holds no alive member.
    #[error("job {job}: no alive nodes")]
    NoAliveNodes { job: JobId },
    /// No alive node is big enough for one task, even empty.
    #[error(
        "job {job}: no alive node can hold one task of {} cores, {} MiB RAM, {} GPUs (largest: {largest})",
        needs.cores, needs.ram_bytes >> 20, needs.gpus
    )]
    TaskTooLarge {
        job: JobId,
        needs: Resources,
        largest: String,
    },
    /// Anti-affinity allows fewer tasks than asked on the nodes big enough for one.
    #[error("job {job}: {tasks} tasks at most {max_per_node} per node need more than the {nodes} nodes that fit a task")]
    AntiAffinity {
        job: JobId,
        tasks: u32,
        max_per_node: u32,
        nodes: usize,
    },
    /// Capacity is short even after preempting every lower-priority task.
    #[error("job {job}: only {placed} of {tasks} tasks fit on {nodes} alive nodes, counting preemption of lower priorities")]
    Insufficient {
        job: JobId,
        tasks: u32,
        placed: u32,
        nodes: usize,
    },
}

/// A candidate node while placing.
struct Node<'a> {
    info: &'a NodeInfo,
    capacity: Resources,
    used: Resources,
    /// Tasks that lower classes hold here, in eviction order; evicted ones are removed.
    evictable: Vec<&'a RunningTask>,
    placed: u32,
    preferred: bool,
    rendezvous: usize,
}

impl Node<'_> {
    fn free(&self) -> Resources {
        sub(self.capacity, self.used)
    }

    /// Lower is better: preferred first, then higher score band, then rendezvous order.
    fn order(&self) -> (bool, std::cmp::Reverse<u32>, usize) {
        (
            !self.preferred,
            std::cmp::Reverse(score_band(self.info, self.capacity, self.used)),
            self.rendezvous,
        )
    }
}

/// Places every task of `spec` for job `job` on the alive members of `view`, given what is
/// already reserved (`running_load`). See the module docs for the rules.
pub fn place(
    view: &[MemberView],
    running_load: &BTreeMap<NodeId, Usage>,
    spec: &JobSpec,
    job: &JobId,
) -> Result<Placement, PlacementError> {
    spec.validate()
        .map_err(|errors| PlacementError::InvalidSpec {
            job: job.clone(),
            errors,
        })?;
    let need = spec.resources;

    // Alive members by id; a duplicated row keeps the newest heartbeat, whatever the row order.
    let mut alive: BTreeMap<&NodeId, &NodeInfo> = BTreeMap::new();
    for m in view.iter().filter(|m| m.state == MemberState::Alive) {
        let slot = alive.entry(&m.info.id).or_insert(&m.info);
        if (m.info.incarnation, m.info.seq) > (slot.incarnation, slot.seq) {
            *slot = &m.info;
        }
    }
    if alive.is_empty() {
        return Err(PlacementError::NoAliveNodes { job: job.clone() });
    }
    let ids: Vec<NodeId> = alive.keys().map(|id| (*id).clone()).collect();
    let order: BTreeMap<NodeId, usize> = rendezvous::rank(job.as_str().as_bytes(), &ids)
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let preferred: BTreeSet<&NodeId> = spec.preferred_nodes.iter().collect();
    let empty = Usage::default();

    let mut nodes: Vec<Node> = alive
        .values()
        .map(|info| {
            let usage = running_load.get(&info.id).unwrap_or(&empty);
            let mut evictable: Vec<&RunningTask> = usage
                .tasks
                .iter()
                .filter(|t| t.priority < spec.priority)
                .collect();
            evictable
                .sort_by(|a, b| (a.priority, &a.job, a.task).cmp(&(b.priority, &b.job, b.task)));
            Node {
                info,
                capacity: capacity(info),
                used: usage.used(),
                evictable,
                placed: 0,
                preferred: preferred.contains(&info.id),
                rendezvous: order.get(&info.id).copied().unwrap_or(usize::MAX),
            }
        })
        .collect();

    let big_enough = nodes.iter().filter(|n| fits(need, n.capacity)).count();
    if big_enough == 0 {
        let largest = nodes
            .iter()
            .max_by_key(|n| {
                (
                    n.capacity.gpus,
                    n.capacity.cores,
                    n.capacity.ram_bytes,
                    std::cmp::Reverse(&n.info.id),
                )
            })
            .map(|n| {
                let c = n.capacity;
                format!(
                    "{} with {} cores, {} MiB, {} GPUs",
                    n.info.id,
                    c.cores,
                    c.ram_bytes >> 20,
                    c.gpus
                )
            })
            .unwrap_or_default();
        return Err(PlacementError::TaskTooLarge {
            job: job.clone(),
            needs: need,
            largest,
        });
    }
    let max_per_node = spec.anti_affinity.max_per_node();
    if let Some(max) = max_per_node {
        if u64::from(spec.tasks) > big_enough as u64 * u64::from(max) {
            return Err(PlacementError::AntiAffinity {
                job: job.clone(),
                tasks: spec.tasks,
                max_per_node: max,
                nodes: big_enough,
            });
        }
    }
    let allowed = |n: &Node| max_per_node.is_none_or(|m| n.placed < m);

    let mut assignments = Vec::with_capacity(spec.tasks as usize);
    let mut preempt = Vec::new();
    for task in 0..spec.tasks {
        // Without preemption: the best node with room.
        let free_pick = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| allowed(n) && fits(need, n.free()))
            .min_by_key(|(_, n)| n.order())
            .map(|(i, _)| i);
        let pick = match free_pick {
            Some(i) => i,
            None => {
                // With preemption: the node needing the fewest evictions.
                let best = nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| allowed(n) && fits(need, n.capacity))
                    .filter_map(|(i, n)| evictions_needed(n, need).map(|k| (k, n.order(), i)))
                    .min();
                let Some((k, _, i)) = best else {
                    return Err(PlacementError::Insufficient {
                        job: job.clone(),
                        tasks: spec.tasks,
                        placed: task,
                        nodes: nodes.len(),
                    });
                };
                let n = &mut nodes[i];
                for victim in n.evictable.drain(..k) {
                    n.used = sub(n.used, victim.resources);
                    preempt.push(Preemption {
                        node: n.info.id.clone(),
                        job: victim.job.clone(),
                        task: victim.task,
                        priority: victim.priority,
                    });
                }
                i
            }
        };
        let n = &mut nodes[pick];
        n.used = add(n.used, need);
        n.placed += 1;
        assignments.push(Assignment {
            task,
            node: n.info.id.clone(),
        });
    }
    preempt.sort();
    Ok(Placement {
        job: job.clone(),
        assignments,
        preempt,
    })
}

/// How many of `n`'s evictable tasks, taken in eviction order, must go for `need` to fit;
/// `None` if evicting them all is not enough.
fn evictions_needed(n: &Node, need: Resources) -> Option<usize> {
    if fits(need, n.free()) {
        return Some(0);
    }
    // Subtract from what is used, not add to what is free: a node booked beyond its capacity
    // (reservations from a stale view) has less room than the evicted tasks' sum.
    let mut used = n.used;
    for (k, t) in n.evictable.iter().enumerate() {
        used = sub(used, t.resources);
        if fits(need, sub(n.capacity, used)) {
            return Some(k + 1);
        }
    }
    None
}

/// What a node offers in total.
pub(crate) fn capacity(info: &NodeInfo) -> Resources {
    Resources {
        cores: info.cores,
        ram_bytes: info.ram_bytes,
        gpus: u32::try_from(info.gpus.count()).unwrap_or(u32::MAX),
    }
}

pub(crate) fn fits(need: Resources, free: Resources) -> bool {
    need.cores <= free.cores && need.ram_bytes <= free.ram_bytes && need.gpus <= free.gpus
}

pub(crate) fn add(a: Resources, b: Resources) -> Resources {
    Resources {
        cores: a.cores.saturating_add(b.cores),
        ram_bytes: a.ram_bytes.saturating_add(b.ram_bytes),
        gpus: a.gpus.saturating_add(b.gpus),
    }
}

pub(crate) fn sub(a: Resources, b: Resources) -> Resources {
    Resources {
        cores: a.cores.saturating_sub(b.cores),
        ram_bytes: a.ram_bytes.saturating_sub(b.ram_bytes),
        gpus: a.gpus.saturating_sub(b.gpus),
    }
}

/// The node's compute score discounted by its load, on a logarithmic integer scale with
/// eight bands per doubling (each about 9–12% wide). Load is the larger of the reported load
/// average and the share of cores reserved, so neither a busy machine nor a fully booked one
/// looks idle. A peer's non-finite or negative score counts as zero.
fn score_band(info: &NodeInfo, capacity: Resources, used: Resources) -> u32 {
    let score = if info.compute_score.is_finite() && info.compute_score > 0.0 {
        info.compute_score
    } else {
        0.0
    };
    let reported = if info.load.is_finite() {
        info.load.clamp(0.0, 1e6)
    } else {
        1e6
    };
    let booked = if capacity.cores == 0 {
        1.0
    } else {
        f64::from(used.cores) / f64::from(capacity.cores)
    };
    // Basic IEEE arithmetic is exactly rounded on every platform, so all nodes agree on this.
    let effective = score / (1.0 + reported.max(booked));
    let milli = (effective * 1000.0).min(u64::MAX as f64) as u64;
    if milli == 0 {
        return 0;
    }
    let exponent = 63 - milli.leading_zeros();
    let mantissa = if exponent >= 3 {
        (milli >> (exponent - 3)) & 7
    } else {
        (milli << (3 - exponent)) & 7
    };
    exponent * 8 + mantissa as u32 + 1
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
