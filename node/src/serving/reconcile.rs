//! Placement and reconciliation of replicas.
//!
//! Every node runs the same loop over the same inputs — the catalog's deployment and model
//! records and the membership view — so every node computes the same placement without a
//! coordinator ([`place_replicas`]): a deployment's replicas go to alive nodes whose advertised
//! cores, RAM and GPUs still hold the deployment's reservation next to the replicas already
//! placed there, in rendezvous order. A node starts the replicas placed on it, stops the ones no
//! longer placed there, and points its router at the placed nodes. When a node dies, the
//! survivors' next pass places its replicas elsewhere and stops routing to it.
//!
//! Replicas run in the inference priority class: before a replica starts, its reservation is
//! registered with the node's executor, which preempts tasks of lower classes until everything
//! fits (their owners re-place them), and job placement counts the reservation from then on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actors::jobs::executor;
use flotilla_actors::placement::{place_replicas, ReplicaDemand};
use flotilla_actors::serving::router::{ReplicaId, ReplicaSpec};
use flotilla_actors::{catalog, membership};
use flotilla_protocol::catalog::{CatalogKey, DeploymentRecord, Entry, Record, RecordKind};
use flotilla_protocol::jobs::Resources;
use flotilla_protocol::MemberView;
use tracing::{info, warn};

use super::backend::{LocalReplica, ReplicaSettings};
use super::Serving;
use crate::models::artifacts::ServedModel;

/// A deployment as this node serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentView {
    pub record: DeploymentRecord,
    /// The version taking traffic (the split's largest share; canary splits are not served
    /// side by side yet).
    pub model: ServedModel,
    /// Nodes placed to run a replica, in placement order.
    pub replicas: Vec<String>,
    /// The placed nodes whose replica is loaded and ready (by their heartbeats, or this
    /// node's own replicas): the only ones the router sends requests to.
    pub ready: Vec<String>,
    /// Why fewer replicas than asked are placed, if so.
    pub short: Option<String>,
}

impl DeploymentView {
    /// Requests one replica takes at once before the router sends elsewhere or refuses.
    pub fn max_inflight(&self) -> u32 {
        self.record.max_inflight.max(1)
    }
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
    /// Holds the replicas' reservations and preempts lower classes for them.
    pub executor: executor::Handle,
    pub every: Duration,
    /// Replica starts in flight: (deployment, model hash).
    pub starting: Arc<Mutex<BTreeSet<(String, String)>>>,
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

    /// What this node advertises: the capacity its reservations must fit in.
    fn my_capacity(&self, view: &[MemberView]) -> Option<Resources> {
        view.iter()
            .find(|m| m.info.id.0 == self.serving.me)
            .map(|m| Resources {
                cores: m.info.cores,
                ram_bytes: m.info.ram_bytes,
                gpus: u32::try_from(m.info.gpus.count()).unwrap_or(u32::MAX),
            })
    }

    async fn views(&self, view: &[MemberView]) -> anyhow::Result<Vec<DeploymentView>> {
        let mut found = Vec::new();
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
            found.push((d, model, r.hlc));
        }
        let demands: Vec<ReplicaDemand> = found
            .iter()
            .map(|(d, _, hlc)| ReplicaDemand {
                deployment: d.name.clone(),
                replicas: d.max_replicas,
                resources: d.resources,
                written: hlc.clone(),
            })
            .collect();
        let mut plans = place_replicas(view, &demands);
        Ok(found
            .into_iter()
            .map(|(record, model, _)| {
                let plan = plans.remove(&record.name).unwrap_or_default();
                DeploymentView {
                    record,
                    model,
                    replicas: plan.nodes.into_iter().map(|n| n.0).collect(),
                    ready: Vec::new(),
                    short: plan.short,
                }
            })
            .collect())
    }

    /// Registers (or with `None` releases) this node's reservation for `deployment`'s replica;
    /// lower-class tasks are preempted to make room.
    async fn reserve(&self, deployment: &str, resources: Option<Resources>, capacity: Resources) {
        match self
            .executor
            .reserve(deployment.to_string(), resources, capacity)
            .await
        {
            Ok(preempted) => {
                for t in preempted {
                    info!(deployment = %deployment, job = %t.job.as_str(), task = t.task, "preempted for a replica");
                }
            }
            Err(e) => warn!(deployment = %deployment, error = %e, "replica reservation failed"),
        }
    }

    /// Fetches (if needed), verifies and starts this node's replica of `v` in a task of its
    /// own, so a slow holder or a long load never holds up the loop (and with it routing);
    /// failures are logged and retried on a later pass, while routing goes on to the other
    /// replicas. At most one start per deployment runs at a time.
    fn start(&self, name: &str, v: &DeploymentView, settings: ReplicaSettings, peers: Vec<String>) {
        let key = (name.to_string(), v.model.hash.clone());
        {
            let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
            if starting.iter().any(|(n, _)| n == name) {
                return;
            }
            starting.insert(key.clone());
        }
        let (serving, starting) = (self.serving.clone(), self.starting.clone());
        let (name, model) = (name.to_string(), v.model.clone());
        flotilla_actors::task::spawn(async move {
            let fetched = crate::models::fetch::ensure_local(
                &model,
                &serving.files.blobs,
                &*serving.files.transport,
                &peers,
            )
            .await;
            match fetched {
                Ok(local) => match LocalReplica::start(&name, local, settings).await {
                    Ok(r) => {
                        info!(deployment = %name, model = %model.hash, "replica started");
                        serving.local.insert(r);
                        // Route to it at once rather than at the next pass.
                        if let Some(mut v) = serving.deployment(&name) {
                            if v.model.hash == model.hash && !v.ready.contains(&serving.me) {
                                v.ready.push(serving.me.clone());
                                route_ready(&serving, &v);
                            }
                        }
                    }
                    Err(e) => warn!(deployment = %name, error = %e, "replica failed to start"),
                },
                Err(e) => warn!(deployment = %name, error = %e, "model artifacts unavailable"),
            }
            starting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }

    async fn once(&self, pools: &mut BTreeSet<(String, String)>) -> anyhow::Result<()> {
        let members = self.membership.view().await?;
        let views = self.views(&members).await?;
        let capacity = self.my_capacity(&members);
        let me = &self.serving.me;
        // Nodes that may hold model files: every live member but this one.
        let peers: Vec<String> = members
            .iter()
            .filter(|m| m.state == flotilla_protocol::MemberState::Alive && m.info.id.0 != *me)
            .map(|m| m.info.id.0.clone())
            .collect();
        let mut current = BTreeSet::new();
        let mut views = views;
        for v in &mut views {
            let key = flotilla_protocol::NodeInfo::ready_key(&v.record.name, &v.model.hash);
            v.ready = v
                .replicas
                .iter()
                .filter(|n| {
                    if *n == me {
                        self.serving
                            .local
                            .get(&v.record.name)
                            .is_some_and(|r| r.model.hash == v.model.hash)
                    } else {
                        members
                            .iter()
                            .any(|m| m.info.id.0 == **n && m.info.ready_replicas.contains(&key))
                    }
                })
                .cloned()
                .collect();
        }
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
            if mine && !up_to_date {
                if let Some(capacity) = capacity {
                    self.reserve(name, Some(v.record.resources), capacity).await;
                }
                self.start(name, v, settings, peers.clone());
            } else if !mine && running.is_some() {
                info!(deployment = %name, "replica stopped: placed elsewhere");
                self.serving.local.remove(name);
                if let Some(capacity) = capacity {
                    self.reserve(name, None, capacity).await;
                }
            }
            route_ready(&self.serving, v);
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
                if let Some(capacity) = capacity {
                    self.reserve(&r.deployment, None, capacity).await;
                }
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

/// Points this node's router for `v` at its ready replicas.
fn route_ready(serving: &Serving, v: &DeploymentView) {
    let specs = v
        .ready
        .iter()
        .map(|n| ReplicaSpec {
            id: ReplicaId::on(n, &v.record.name),
            capacity: v.record.max_batch_size.max(1),
            max_inflight: v.max_inflight(),
        })
        .collect();
    serving
        .router
        .set_replicas(&v.record.name, &v.model.hash, specs);
}

impl DeploymentView {
    /// When the served version was registered, in seconds since the Unix epoch.
    pub fn model_created_s(&self) -> u64 {
        self.model.created_at_ms / 1000
    }
}
