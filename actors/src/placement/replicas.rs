//! Where serving replicas go: a pure, deterministic function of the membership view and the
//! deployments, so every node computes the same answer without a coordinator.
//!
//! Rules:
//! 1. Only `alive` members are candidates, each with the cores, RAM and GPUs it advertises.
//! 2. Deployments are placed in the order they were written (oldest first, so a new deployment
//!    never displaces running ones; ties by name); each replica reserves the deployment's
//!    `resources` on its node, and the next replica (of any deployment) only goes where its own
//!    reservation still fits. A node runs at most one replica of a deployment.
//! 3. Among the nodes that fit, rendezvous order for the deployment name, so a node joining or
//!    leaving moves only the replicas that must move.
//! 4. Tasks of jobs are not counted: replicas run in the inference class, the highest, so a
//!    node placed a replica preempts lower-class tasks there to make room (the node does that,
//!    this function only decides). Only other replicas can make a node too full.
//!
//! A deployment that does not fit everywhere it asked for gets fewer replicas and a reason.

use std::collections::BTreeMap;

use flotilla_protocol::hlc::Hlc;
use flotilla_protocol::jobs::Resources;
use flotilla_protocol::{MemberState, MemberView, NodeId, NodeInfo};

use super::core::{add, capacity, fits, sub};
use crate::rendezvous;

/// One deployment's demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDemand {
    pub deployment: String,
    pub replicas: u32,
    /// Reserved by each replica.
    pub resources: Resources,
    /// When the deployment was last written: earlier ones are placed first.
    pub written: Hlc,
}

/// Where one deployment's replicas go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaPlan {
    /// The chosen nodes, in rendezvous order.
    pub nodes: Vec<NodeId>,
    /// Why fewer replicas than asked were placed, if so.
    pub short: Option<String>,
}

/// Places every deployment's replicas; see the module docs for the rules.
pub fn place_replicas(
    view: &[MemberView],
    demands: &[ReplicaDemand],
) -> BTreeMap<String, ReplicaPlan> {
    // Alive members by id; a duplicated row keeps the newest heartbeat, whatever the row order.
    let mut alive: BTreeMap<&NodeId, &NodeInfo> = BTreeMap::new();
    for m in view.iter().filter(|m| m.state == MemberState::Alive) {
        let slot = alive.entry(&m.info.id).or_insert(&m.info);
        if (m.info.incarnation, m.info.seq) > (slot.incarnation, slot.seq) {
            *slot = &m.info;
        }
    }
    let ids: Vec<NodeId> = alive.keys().map(|id| (*id).clone()).collect();
    let mut used: BTreeMap<NodeId, Resources> = BTreeMap::new();

    let mut sorted: Vec<&ReplicaDemand> = demands.iter().collect();
    sorted.sort_by(|a, b| (&a.written, &a.deployment).cmp(&(&b.written, &b.deployment)));
    let mut out = BTreeMap::new();
    for d in sorted {
        let mut plan = ReplicaPlan::default();
        for id in rendezvous::rank(d.deployment.as_bytes(), &ids) {
            if plan.nodes.len() >= d.replicas as usize {
                break;
            }
            let Some(info) = alive.get(&id) else { continue };
            let u = used.get(&id).copied().unwrap_or_default();
            if fits(d.resources, sub(capacity(info), u)) {
                used.insert(id.clone(), add(u, d.resources));
                plan.nodes.push(id);
            }
        }
        if plan.nodes.len() < d.replicas as usize {
            plan.short = Some(shortage(d, plan.nodes.len(), &alive, &used));
        }
        out.insert(d.deployment.clone(), plan);
    }
    out
}

/// "placed 1 of 3: …" with the largest free space, so the operator knows what to change.
fn shortage(
    d: &ReplicaDemand,
    placed: usize,
    alive: &BTreeMap<&NodeId, &NodeInfo>,
    used: &BTreeMap<NodeId, Resources>,
) -> String {
    if alive.is_empty() {
        return format!("placed 0 of {}: no alive nodes", d.replicas);
    }
    let largest = alive
        .iter()
        .map(|(id, info)| {
            let free = sub(capacity(info), used.get(*id).copied().unwrap_or_default());
            (free.cores, free.ram_bytes, free.gpus)
        })
        .max()
        .unwrap_or_default();
    format!(
        "placed {placed} of {}: each replica needs {} cores, {} MiB, {} GPUs and the other {} alive nodes lack room (most free on one node: {} cores, {} MiB, {} GPUs)",
        d.replicas,
        d.resources.cores,
        d.resources.ram_bytes >> 20,
        d.resources.gpus,
        alive.len().saturating_sub(placed),
        largest.0,
        largest.1 >> 20,
        largest.2,
    )
}

#[cfg(test)]
#[path = "replicas_tests.rs"]
mod tests;
