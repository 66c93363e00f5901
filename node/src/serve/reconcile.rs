//! Placement and reconciliation of replicas.
//!
//! Every node runs the same loop over the same inputs — the catalog's deployment and model
//! records and the membership view — so every node computes the same placement without a
//! coordinator: a deployment's replicas go to the `replicas` alive nodes with the highest
//! rendezvous score `blake3(deployment, node)`. A node starts the replicas placed on it, stops
//! the ones no longer placed there, and points its router at the placed nodes. When a node
//! dies, the survivors' next pass places its replicas elsewhere and stops routing to it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_actors::serving::router::ReplicaSpec;
use flotilla_actors::{catalog, membership};
use flotilla_protocol::catalog::{CatalogKey, DeploymentRecord, Entry, Record, RecordKind};
use flotilla_protocol::MemberState;
use tracing::{info, warn};

use super::artifacts::ServedModel;
use super::backend::{LocalReplica, ReplicaSettings};
use super::{replica_id, Serving};

/// A deployment as this node serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentView {
    pub record: DeploymentRecord,
    /// The version taking traffic (the split's largest share; canary splits are not served
    /// side by side yet).
    pub model: ServedModel,
    /// Nodes placed to run a replica, in placement order.
    pub replicas: Vec<String>,
}

impl DeploymentView {
    /// Requests one replica takes at once before the router sends elsewhere or refuses.
    pub fn max_inflight(&self) -> u32 {
        self.record.max_inflight.max(1)
    }
}

/// The `n` nodes of `alive` with the highest rendezvous score for `deployment`.
pub fn place(deployment: &str, alive: &[String], n: usize) -> Vec<String> {
    let mut scored: Vec<([u8; 32], &String)> = alive
        .iter()
        .map(|node| {
            let mut h = blake3::Hasher::new();
            h.update(deployment.as_bytes());
            h.update(&[0]);
            h.update(node.as_bytes());
            (*h.finalize().as_bytes(), node)
        })
        .collect();
    scored.sort();
    scored.reverse();
    scored.into_iter().take(n).map(|(_, n)| n.clone()).collect()
}

/// The version of `d` that takes traffic.
fn main_version(d: &DeploymentRecord) -> Option<u64> {
    d.traffic
        .iter()
        .max_by_key(|t| (t.percent, t.version))
        .map(|t| t.version)
}

/// The reconciliation loop of one node.
pub struct Reconciler {
    pub serving: Serving,
    pub catalog: catalog::Handle,
    pub membership: membership::Handle,
    pub every: Duration,
}

impl Reconciler {
    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut pools: BTreeSet<(String, String)> = BTreeSet::new();
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.once(&mut pools).await {
                warn!(error = %e, "serving reconciliation failed");
            }
        }
    }

    async fn alive(&self) -> anyhow::Result<Vec<String>> {
        let mut alive: Vec<String> = self
            .membership
            .view()
            .await?
            .into_iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.info.id.0)
            .collect();
        alive.sort();
        Ok(alive)
    }

    async fn views(&self, alive: &[String]) -> anyhow::Result<Vec<DeploymentView>> {
        let mut out = Vec::new();
        for (_, entry) in self.catalog.list(Some(RecordKind::Deployment)).await? {
            let Entry::Register(r) = entry else { continue };
            let Some(Record::Deployment(d)) = r.value else {
                continue;
            };
            let Some(version) = main_version(&d) else {
                continue;
            };
            let model = match self
                .catalog
                .get(CatalogKey::model(&d.model, version))
                .await?
            {
                Some(Entry::Register(r)) => match r.value {
                    Some(Record::Model(m)) => ServedModel::from_record(&m),
                    _ => None,
                },
                _ => None,
            };
            let Some(model) = model else {
                continue;
            };
            let replicas = place(&d.name, alive, d.max_replicas as usize);
            out.push(DeploymentView {
                record: d,
                model,
                replicas,
            });
        }
        Ok(out)
    }

    /// Fetches (if needed), verifies and starts this node's replica of `v`; failures are
    /// logged and retried on the next pass, while routing goes on to the other replicas.
    async fn start(&self, name: &str, v: &DeploymentView, settings: ReplicaSettings) {
        let me = &self.serving.me;
        let local = super::fetch::ensure_local(
            &v.model,
            me,
            &self.serving.cache_root,
            &self.serving.transport,
            &v.replicas,
        )
        .await;
        let local = match local {
            Ok(m) => m,
            Err(e) => {
                warn!(deployment = %name, error = %e, "model artifacts unavailable");
                return;
            }
        };
        self.serving.local.hold(local.clone());
        match LocalReplica::start(name, local, settings).await {
            Ok(r) => {
                info!(deployment = %name, model = %v.model.hash, "replica started");
                self.serving.local.insert(r);
            }
            Err(e) => warn!(deployment = %name, error = %e, "replica failed to start"),
        }
    }

    async fn once(&self, pools: &mut BTreeSet<(String, String)>) -> anyhow::Result<()> {
        let alive = self.alive().await?;
        let views = self.views(&alive).await?;
        let me = &self.serving.me;
        let mut current = BTreeSet::new();
        for v in &views {
            let name = &v.record.name;
            let mine = v.replicas.iter().any(|n| n == me);
            let running = self.serving.local.get(name);
            let settings = ReplicaSettings {
                max_batch: v.record.max_batch_size as usize,
                max_wait: Duration::from_millis(u64::from(v.record.max_batch_wait_ms)),
                max_inflight: v.max_inflight(),
            };
            let up_to_date = running
                .as_ref()
                .is_some_and(|r| r.model.hash == v.model.hash && r.settings == settings);
            if v.model.origin == *me {
                self.serving.local.hold(v.model.clone());
            }
            if mine && !up_to_date {
                self.start(name, v, settings).await;
            } else if !mine && running.is_some() {
                info!(deployment = %name, "replica stopped: placed elsewhere");
                self.serving.local.remove(name);
            }
            let specs = v
                .replicas
                .iter()
                .map(|n| ReplicaSpec {
                    id: replica_id(n, name),
                    capacity: v.record.max_batch_size.max(1),
                    max_inflight: v.max_inflight(),
                })
                .collect();
            self.serving.router.set_replicas(name, &v.model.hash, specs);
            current.insert((name.clone(), v.model.hash.clone()));
        }
        for (name, hash) in pools.difference(&current) {
            self.serving.router.set_replicas(name, hash, Vec::new());
        }
        let names: BTreeSet<&String> = views.iter().map(|v| &v.record.name).collect();
        for r in self.serving.local.all() {
            if !names.contains(&r.deployment) {
                info!(deployment = %r.deployment, "replica stopped: undeployed");
                self.serving.local.remove(&r.deployment);
            }
        }
        *pools = current;
        let map: BTreeMap<String, DeploymentView> = views
            .into_iter()
            .map(|v| (v.record.name.clone(), v))
            .collect();
        *self
            .serving
            .deployments
            .write()
            .unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }
}

impl DeploymentView {
    /// When the served version was registered, in seconds since the Unix epoch.
    pub fn model_created_s(&self) -> u64 {
        self.model.created_at_ms / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn placement_is_deterministic_distinct_and_bounded() {
        let alive = nodes(5);
        let a = place("chat", &alive, 3);
        assert_eq!(a.len(), 3);
        let mut reversed = alive.clone();
        reversed.reverse();
        assert_eq!(
            place("chat", &reversed, 3),
            a,
            "input order does not matter"
        );
        let mut distinct = a.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        assert_eq!(
            place("chat", &alive, 9).len(),
            5,
            "at most one replica per node"
        );
    }

    #[test]
    fn a_dead_node_moves_only_its_own_replica() {
        let alive = nodes(6);
        let before = place("embed", &alive, 3);
        let survivors: Vec<String> = alive.iter().filter(|n| **n != before[0]).cloned().collect();
        let after = place("embed", &survivors, 3);
        assert!(before[1..].iter().all(|n| after.contains(n)));
        assert!(!after.contains(&before[0]));
    }
}
