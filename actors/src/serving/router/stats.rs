//! The router's counters: plain atomics the node copies into Prometheus gauges at scrape time.
//!
//! One set for the whole node, one per deployment and one per replica of a deployment. The
//! per-deployment and per-replica sets live in a [`StatsBook`] that only changes when the
//! replica pools do ([`super::Router::set_replicas`]): a request looks its deployment up under a
//! read lock once, and a replica's counters travel with the replica's place in the pool, so the
//! request path never writes to a shared map.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use super::ReplicaId;

/// Live counters.
#[derive(Debug, Default)]
pub struct RouterStats {
    pub(crate) requests: AtomicU64,
    pub(crate) streams: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) deadline_exceeded: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouterStatsSnapshot {
    /// Requests routed, streams included.
    pub requests: u64,
    /// Of which streams.
    pub streams: u64,
    pub cache_hits: u64,
    /// Cacheable requests not found in the cache.
    pub cache_misses: u64,
    /// Requests answered by joining an identical request already in flight.
    pub coalesced: u64,
    /// Second attempts on another replica.
    pub retries: u64,
    /// Requests refused for overload (429).
    pub rejected: u64,
    /// Requests that ended in an error other than overload or deadline.
    pub failed: u64,
    pub deadline_exceeded: u64,
}

impl RouterStatsSnapshot {
    /// (name, value) of every counter, in a fixed order (the names are the metric's `outcome`).
    pub fn outcomes(&self) -> [(&'static str, u64); 9] {
        [
            ("requests", self.requests),
            ("streams", self.streams),
            ("cache_hits", self.cache_hits),
            ("cache_misses", self.cache_misses),
            ("coalesced", self.coalesced),
            ("retries", self.retries),
            ("rejected", self.rejected),
            ("failed", self.failed),
            ("deadline_exceeded", self.deadline_exceeded),
        ]
    }
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl RouterStats {
    /// The counters now.
    pub fn snapshot(&self) -> RouterStatsSnapshot {
        RouterStatsSnapshot {
            requests: load(&self.requests),
            streams: load(&self.streams),
            cache_hits: load(&self.cache_hits),
            cache_misses: load(&self.cache_misses),
            coalesced: load(&self.coalesced),
            retries: load(&self.retries),
            rejected: load(&self.rejected),
            failed: load(&self.failed),
            deadline_exceeded: load(&self.deadline_exceeded),
        }
    }
}

/// One replica's counters, as this router saw it.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    pub(crate) attempts: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) retried_away: AtomicU64,
}

/// A copy of one replica's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplicaStatsSnapshot {
    /// Requests (streams included) this router sent to the replica, retries included.
    pub attempts: u64,
    /// Of which the replica answered with an error (of any kind, overload included; a
    /// deadline that passed while waiting for it is not counted here).
    pub failures: u64,
    /// Of which failures were retried on another replica.
    pub retried_away: u64,
}

impl ReplicaStatsSnapshot {
    /// (name, value) of every counter, in a fixed order (the names are the metric's `outcome`).
    pub fn outcomes(&self) -> [(&'static str, u64); 3] {
        [
            ("attempts", self.attempts),
            ("failures", self.failures),
            ("retried_away", self.retried_away),
        ]
    }
}

impl ReplicaStats {
    /// The counters now.
    pub fn snapshot(&self) -> ReplicaStatsSnapshot {
        ReplicaStatsSnapshot {
            attempts: load(&self.attempts),
            failures: load(&self.failures),
            retried_away: load(&self.retried_away),
        }
    }
}

/// One deployment's counters and those of its replicas.
#[derive(Debug, Default)]
pub(crate) struct DeploymentStats {
    pub(crate) router: RouterStats,
    /// Written only by `set_replicas`; shared by the deployment's pools (one per model
    /// version), so a replica keeps its counters across a version change.
    replicas: RwLock<BTreeMap<ReplicaId, Arc<ReplicaStats>>>,
}

/// A poisoned lock only means a panic elsewhere while the maps were consistent (every update
/// is a single insert or retain), so the data is used as it is.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl DeploymentStats {
    /// The counters of `replica`, created at zero.
    pub(crate) fn replica(&self, replica: &ReplicaId) -> Arc<ReplicaStats> {
        if let Some(s) = read(&self.replicas).get(replica) {
            return s.clone();
        }
        write(&self.replicas)
            .entry(replica.clone())
            .or_default()
            .clone()
    }

    pub(crate) fn replicas(&self) -> Vec<(ReplicaId, ReplicaStatsSnapshot)> {
        read(&self.replicas)
            .iter()
            .map(|(id, s)| (id.clone(), s.snapshot()))
            .collect()
    }
}

/// The node's counters and those of every deployment and replica the router has a pool for.
///
/// Bounded: a deployment's entry is created when its first pool is set and dropped with its
/// last pool; a replica's entry is dropped when no pool of its deployment names it any more.
/// Request names never create entries (a request for a deployment without a pool is counted in
/// the node's totals only), so a client cannot grow the map, and its size follows the
/// catalog's deployments and their placement. A deployment or replica that comes back starts
/// from zero, which Prometheus reads as a counter reset.
#[derive(Debug, Default)]
pub(crate) struct StatsBook {
    pub(crate) node: Arc<RouterStats>,
    deployments: RwLock<HashMap<String, Arc<DeploymentStats>>>,
}

impl StatsBook {
    /// The counters a request for `deployment` adds to.
    pub(crate) fn tally(&self, deployment: &str) -> Tally {
        Tally {
            node: self.node.clone(),
            deployment: read(&self.deployments).get(deployment).cloned(),
        }
    }

    /// The entry of a deployment that has (or is about to have) a pool.
    pub(crate) fn deployment(&self, deployment: &str) -> Arc<DeploymentStats> {
        if let Some(d) = read(&self.deployments).get(deployment) {
            return d.clone();
        }
        write(&self.deployments)
            .entry(deployment.to_string())
            .or_default()
            .clone()
    }

    /// Keeps the counters of `deployment`'s replicas in `named` only, and the deployment's
    /// own only while `named` is not empty.
    pub(crate) fn retain(&self, deployment: &str, named: &BTreeSet<&ReplicaId>) {
        if named.is_empty() {
            write(&self.deployments).remove(deployment);
            return;
        }
        if let Some(d) = read(&self.deployments).get(deployment) {
            write(&d.replicas).retain(|id, _| named.contains(id));
        }
    }

    pub(crate) fn snapshot(&self, deployment: &str) -> Option<RouterStatsSnapshot> {
        read(&self.deployments)
            .get(deployment)
            .map(|d| d.router.snapshot())
    }

    pub(crate) fn replicas(&self, deployment: &str) -> Vec<(ReplicaId, ReplicaStatsSnapshot)> {
        read(&self.deployments)
            .get(deployment)
            .map(|d| d.replicas())
            .unwrap_or_default()
    }

    /// Every deployment's entry, by name.
    pub(crate) fn all(&self) -> BTreeMap<String, Arc<DeploymentStats>> {
        read(&self.deployments)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Where one request's counts go: the node's totals and, when its deployment has a pool, the
/// deployment's.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    node: Arc<RouterStats>,
    deployment: Option<Arc<DeploymentStats>>,
}

impl Tally {
    pub(crate) fn bump(&self, which: fn(&RouterStats) -> &AtomicU64) {
        bump(which(&self.node));
        if let Some(d) = &self.deployment {
            bump(which(&d.router));
        }
    }
}
