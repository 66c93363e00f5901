//! Where shard replicas live, and how to restore the replication factor after a holder dies.
//!
//! Placement is rendezvous hashing of the shard's key over the alive members: the first
//! `factor` nodes in the key's order hold it (fewer when fewer nodes are alive), and every
//! node computes the same holders without talking. When a holder dies, [`plan`] picks new
//! targets in the same order (the next live nodes of the key's ranking), so the repaired
//! placement is the one a fresh placement over the survivors would choose as far as the
//! surviving holders allow, and each copy reads from a holder that is alive.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_protocol::services::data::ShardId;
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::rendezvous;

/// Replicas of each shard unless the upload says otherwise.
pub const DEFAULT_REPLICATION: usize = 2;

/// The holders of `shard` among `alive`: the first `factor` (at least 1, at most the number
/// alive) in rendezvous order of its key.
pub fn replicas(shard: &ShardId, alive: &[NodeId], factor: usize) -> Vec<NodeId> {
    rendezvous::top(&shard.placement_key(), alive, factor.max(1))
}

/// One copy to make: `target` fetches `shard` from `source`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CopyAction {
    pub shard: ShardId,
    pub source: NodeId,
    pub target: NodeId,
}

/// What the planner decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Copies, sorted by shard then target.
    pub copies: Vec<CopyAction>,
    /// Shards with no live holder: nothing can restore them (every replica died).
    pub lost: Vec<ShardId>,
}

/// The copies that bring every shard back to `min(factor, alive)` live holders.
///
/// Pure and deterministic: the same map and view give the same plan in any input order.
/// Idempotent: once the copies are made (the targets added to `holders`), planning again gives
/// no copies. A source is always a live holder of the shard; a target is never a current
/// holder. Extra replicas (a holder that came back) are left alone.
pub fn plan(holders: &BTreeMap<ShardId, Vec<NodeId>>, alive: &[NodeId], factor: usize) -> Plan {
    let alive_set: BTreeSet<&NodeId> = alive.iter().collect();
    let alive_sorted: Vec<NodeId> = alive_set.iter().map(|n| (*n).clone()).collect();
    let want = factor.max(1).min(alive_sorted.len());
    let mut out = Plan::default();
    for (shard, hs) in holders {
        let held: BTreeSet<&NodeId> = hs.iter().collect();
        let live: Vec<NodeId> = held
            .iter()
            .filter(|n| alive_set.contains(*n))
            .map(|n| (*n).clone())
            .collect();
        if live.is_empty() {
            if !alive_sorted.is_empty() {
                out.lost.push(shard.clone());
            }
            continue;
        }
        if live.len() >= want {
            continue;
        }
        let key = shard.placement_key();
        let sources = rendezvous::rank(&key, &live);
        let targets = rendezvous::rank(&key, &alive_sorted)
            .into_iter()
            .filter(|n| !held.contains(n))
            .take(want - live.len());
        for (j, target) in targets.enumerate() {
            out.copies.push(CopyAction {
                shard: shard.clone(),
                // Spread the reads over the surviving holders.
                source: sources[j % sources.len()].clone(),
                target,
            });
        }
    }
    out.copies.sort();
    out
}

/// The holders map after `copies` are made: each target added to its shard's holders.
pub fn apply(holders: &mut BTreeMap<ShardId, Vec<NodeId>>, copies: &[CopyAction]) {
    for c in copies {
        let hs = holders.entry(c.shard.clone()).or_default();
        if !hs.contains(&c.target) {
            hs.push(c.target.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId(format!("12D3KooWNode{i:03}")))
            .collect()
    }

    fn placed(shards: u32, alive: &[NodeId], factor: usize) -> BTreeMap<ShardId, Vec<NodeId>> {
        (0..shards)
            .map(|i| {
                let id = ShardId::new("bank", 1, i);
                let r = replicas(&id, alive, factor);
                (id, r)
            })
            .collect()
    }

    #[test]
    fn replicas_are_capped_by_live_nodes_and_distinct() {
        let ns = nodes(5);
        let id = ShardId::new("d", 1, 0);
        assert_eq!(replicas(&id, &ns, 2).len(), 2);
        assert_eq!(replicas(&id, &ns[..1], 2), vec![ns[0].clone()]);
        assert_eq!(replicas(&id, &ns, 0).len(), 1);
        assert_eq!(replicas(&id, &ns, 9).len(), 5);
        assert!(replicas(&id, &[], 2).is_empty());
        let mut rev = ns.clone();
        rev.reverse();
        assert_eq!(replicas(&id, &ns, 3), replicas(&id, &rev, 3));
    }

    #[test]
    fn killing_a_holder_restores_the_factor_from_live_sources() {
        let ns = nodes(6);
        let mut holders = placed(200, &ns, 2);
        assert!(plan(&holders, &ns, 2).copies.is_empty());
        let dead = ns[2].clone();
        let alive: Vec<NodeId> = ns.iter().filter(|n| **n != dead).cloned().collect();
        let p = plan(&holders, &alive, 2);
        let affected = holders.values().filter(|h| h.contains(&dead)).count();
        assert!(affected > 20, "{affected}");
        assert_eq!(p.copies.len(), affected);
        assert!(p.lost.is_empty());
        for c in &p.copies {
            assert_ne!(c.source, dead);
            assert_ne!(c.target, dead);
            assert!(holders[&c.shard].contains(&c.source));
            assert!(!holders[&c.shard].contains(&c.target));
            // The target is the one a fresh placement over the survivors picks next.
            assert!(replicas(&c.shard, &alive, 2).contains(&c.target));
        }
        // Same inputs in another order: same plan. Applied: nothing left to do.
        let mut rev = alive.clone();
        rev.reverse();
        assert_eq!(plan(&holders, &rev, 2), p);
        apply(&mut holders, &p.copies);
        assert_eq!(plan(&holders, &alive, 2), Plan::default());
        for (id, hs) in &holders {
            let live = hs.iter().filter(|n| alive.contains(n)).count();
            assert_eq!(live, 2, "{id}");
        }
    }

    #[test]
    fn losing_every_holder_is_reported_and_one_node_needs_no_copy() {
        let ns = nodes(4);
        let mut holders = placed(50, &ns, 2);
        let id = ShardId::new("bank", 1, 7);
        let gone = holders[&id].clone();
        let alive: Vec<NodeId> = ns.iter().filter(|n| !gone.contains(n)).cloned().collect();
        let p = plan(&holders, &alive, 2);
        assert!(p.lost.contains(&id));
        assert!(p
            .copies
            .iter()
            .all(|c| c.shard != id && alive.contains(&c.source)));
        // Two dead out of four: the survivors hold everything not lost, twice.
        apply(&mut holders, &p.copies);
        assert!(plan(&holders, &alive, 2).copies.is_empty());
        // A single survivor holding a shard: the factor caps at 1, no copy.
        let one = vec![holders[&ShardId::new("bank", 1, 0)][0].clone()];
        assert!(plan(&holders, &one, 2)
            .copies
            .iter()
            .all(|c| c.target != one[0]));
    }

    #[test]
    fn factor_three_with_two_dead_sources_from_the_survivor() {
        let ns = nodes(7);
        let holders = placed(100, &ns, 3);
        let dead: Vec<NodeId> = ns[..2].to_vec();
        let alive: Vec<NodeId> = ns[2..].to_vec();
        let p = plan(&holders, &alive, 3);
        for c in &p.copies {
            assert!(!dead.contains(&c.source) && !dead.contains(&c.target));
        }
        let mut h = holders.clone();
        apply(&mut h, &p.copies);
        for hs in h.values() {
            assert!(hs.iter().filter(|n| alive.contains(n)).count() >= 3);
        }
    }
}
