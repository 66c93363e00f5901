//! The async [`Router`], usable from HTTP handlers: cache, coalescing, replica choice, one
//! retry, overload refusal and deadlines around a [`ReplicaClient`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use flotilla_protocol::openai::CacheKey;
use flotilla_protocol::services::serving::ServingError;
use tokio::sync::oneshot;
use tracing::warn;

use super::balance::{choose, Candidate, Choice};
use super::cache::{Body, ResponseCache};
use super::stats::{
    bump, ReplicaStats, ReplicaStatsSnapshot, RouterStatsSnapshot, StatsBook, Tally,
};
use super::{Config, PieceStream, ReplicaClient, ReplicaId, ReplicaSpec, RouteRequest, StreamItem};
use crate::serving::error::ServeError;
use crate::Result;

const TASK: &str = "router";

/// A poisoned lock only means another request panicked mid-update of plain counters and maps
/// that stay consistent at every step, so the data is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Replica {
    spec: ReplicaSpec,
    outstanding: u32,
    /// Shared with the deployment's entry in the [`StatsBook`].
    stats: Arc<ReplicaStats>,
}

/// (deployment, model hash) → its replicas.
type Pools = BTreeMap<(String, String), Vec<Replica>>;

type Waiters = Vec<oneshot::Sender<std::result::Result<Body, ServeError>>>;

/// A request's place at a replica; dropping it frees the place.
struct Slot {
    pools: Arc<Mutex<Pools>>,
    pool: (String, String),
    replica: ReplicaId,
    stats: Arc<ReplicaStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut pools = lock(&self.pools);
        if let Some(r) = pools
            .get_mut(&self.pool)
            .and_then(|p| p.iter_mut().find(|r| r.spec.id == self.replica))
        {
            r.outstanding = r.outstanding.saturating_sub(1);
        }
    }
}

/// A request's place in the router's global bound.
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Inner<C> {
    client: C,
    config: Config,
    pools: Arc<Mutex<Pools>>,
    cache: Mutex<ResponseCache>,
    inflight: Mutex<HashMap<CacheKey, Waiters>>,
    outstanding: Arc<AtomicUsize>,
    stats: StatsBook,
}

/// The router. Cheap to clone; every clone shares the cache, pools and counters.
pub struct Router<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for Router<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C> std::fmt::Debug for Router<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A streamed answer in progress. It holds its replica place until dropped; dropping it also
/// drops the replica's stream, which tells the replica the client went away.
pub struct RoutedStream {
    rx: PieceStream,
    replica: ReplicaId,
    _slot: Slot,
    _admission: Admission,
}

impl std::fmt::Debug for RoutedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedStream")
            .field("replica", &self.replica)
            .finish()
    }
}

impl RoutedStream {
    /// The next item; `None` when the replica's side closed.
    pub async fn next(&mut self) -> Option<std::result::Result<StreamItem, ServingError>> {
        self.rx.recv().await
    }

    /// The replica answering.
    pub fn replica(&self) -> &ReplicaId {
        &self.replica
    }
}

impl<C: ReplicaClient> Router<C> {
    /// A router over `client` with no replicas yet.
    pub fn new(client: C, config: Config) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                cache: Mutex::new(ResponseCache::new(
                    config.cache_max_entries,
                    config.cache_max_bytes,
                )),
                config,
                pools: Arc::new(Mutex::new(BTreeMap::new())),
                inflight: Mutex::new(HashMap::new()),
                outstanding: Arc::new(AtomicUsize::new(0)),
                stats: StatsBook::default(),
            }),
        })
    }

    /// Sets the replicas of one deployment's model version (an empty list removes the pool).
    /// Replicas that stay keep their outstanding counts. The deployment's and its replicas'
    /// counters follow the pools: they are dropped once no pool names them (see
    /// [`StatsBook`] for why that bounds them).
    pub fn set_replicas(&self, deployment: &str, model_hash: &str, replicas: Vec<ReplicaSpec>) {
        let key = (deployment.to_string(), model_hash.to_string());
        let mut pools = lock(&self.inner.pools);
        let old = pools.remove(&key).unwrap_or_default();
        if !replicas.is_empty() {
            let book = self.inner.stats.deployment(deployment);
            let pool = replicas
                .into_iter()
                .map(|spec| {
                    let outstanding = old
                        .iter()
                        .find(|r| r.spec.id == spec.id)
                        .map_or(0, |r| r.outstanding);
                    let stats = book.replica(&spec.id);
                    Replica {
                        spec,
                        outstanding,
                        stats,
                    }
                })
                .collect();
            pools.insert(key, pool);
        }
        let named: BTreeSet<&ReplicaId> = pools
            .iter()
            .filter(|((d, _), _)| d == deployment)
            .flat_map(|(_, pool)| pool.iter().map(|r| &r.spec.id))
            .collect();
        self.inner.stats.retain(deployment, &named);
    }

    /// Outstanding requests per replica of a pool, for load reports and metrics.
    pub fn outstanding(&self, deployment: &str, model_hash: &str) -> Vec<(ReplicaId, u32)> {
        let pools = lock(&self.inner.pools);
        pools
            .get(&(deployment.to_string(), model_hash.to_string()))
            .map(|p| {
                p.iter()
                    .map(|r| (r.spec.id.clone(), r.outstanding))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The node's counters: every request, whatever its deployment.
    pub fn stats(&self) -> RouterStatsSnapshot {
        self.inner.stats.node.snapshot()
    }

    /// The counters of one deployment (zero for a deployment without a pool here).
    pub fn stats_for(&self, deployment: &str) -> RouterStatsSnapshot {
        self.inner.stats.snapshot(deployment).unwrap_or_default()
    }

    /// The counters of every deployment with a pool here, by name.
    pub fn deployment_stats(&self) -> BTreeMap<String, RouterStatsSnapshot> {
        self.inner
            .stats
            .all()
            .into_iter()
            .map(|(name, d)| (name, d.router.snapshot()))
            .collect()
    }

    /// The counters of each replica of a deployment this router may send requests to, by
    /// replica (empty for a deployment without a pool here).
    pub fn replica_stats(&self, deployment: &str) -> BTreeMap<ReplicaId, ReplicaStatsSnapshot> {
        self.inner.stats.replicas(deployment).into_iter().collect()
    }

    /// Responses cached now: (entries, bytes).
    pub fn cache_size(&self) -> (usize, usize) {
        let c = lock(&self.inner.cache);
        (c.len(), c.bytes())
    }

    /// Answers a non-streaming request.
    pub async fn infer(&self, req: RouteRequest) -> std::result::Result<Body, ServeError> {
        let tally = self.inner.stats.tally(&req.deployment);
        tally.bump(|s| &s.requests);
        let deadline = req.deadline;
        let result = match req.cache_key {
            Some(key) => self.shared(key, req, &tally).await,
            None => tokio::time::timeout(deadline, self.inner.clone().execute(req, tally.clone()))
                .await
                .unwrap_or(Err(ServeError::DeadlineExceeded { deadline })),
        };
        count(&tally, &result);
        result
    }

    /// A cacheable request: from the cache, or joined to an identical one in flight, or run by
    /// a task of its own whose answer every joiner receives.
    async fn shared(
        &self,
        key: CacheKey,
        req: RouteRequest,
        tally: &Tally,
    ) -> std::result::Result<Body, ServeError> {
        let inner = &self.inner;
        if let Some(body) = lock(&inner.cache).get(&key) {
            tally.bump(|s| &s.cache_hits);
            return Ok(body);
        }
        tally.bump(|s| &s.cache_misses);
        let deadline = req.deadline;
        let (tx, rx) = oneshot::channel();
        let leader = {
            let mut inflight = lock(&inner.inflight);
            match inflight.get_mut(&key) {
                Some(waiters) => {
                    waiters.push(tx);
                    false
                }
                None => {
                    inflight.insert(key, vec![tx]);
                    true
                }
            }
        };
        if leader {
            // The work runs apart from the caller, so a leader that gives up (client gone)
            // does not take the answer away from those who joined it.
            let inner = inner.clone();
            let tally = tally.clone();
            crate::task::spawn(async move {
                let result = tokio::time::timeout(deadline, inner.clone().execute(req, tally))
                    .await
                    .unwrap_or(Err(ServeError::DeadlineExceeded { deadline }));
                if let Ok(body) = &result {
                    lock(&inner.cache).insert(key, body.clone());
                }
                let waiters = lock(&inner.inflight).remove(&key).unwrap_or_default();
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            });
        } else {
            tally.bump(|s| &s.coalesced);
        }
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ServeError::Stopped(TASK)),
            Err(_) => Err(ServeError::DeadlineExceeded { deadline }),
        }
    }

    /// Starts a streamed answer on the least-loaded replica. Streams are never retried: part
    /// of the answer may already have reached the client.
    pub async fn stream(&self, req: RouteRequest) -> std::result::Result<RoutedStream, ServeError> {
        let tally = self.inner.stats.tally(&req.deployment);
        tally.bump(|s| &s.requests);
        tally.bump(|s| &s.streams);
        let result = self.start_stream(req).await;
        if let Err(e) = &result {
            count::<()>(&tally, &Err(e.clone()));
        }
        result
    }

    async fn start_stream(
        &self,
        req: RouteRequest,
    ) -> std::result::Result<RoutedStream, ServeError> {
        let admission = self.inner.admit()?;
        let slot = self.inner.acquire(&req, None)?;
        bump(&slot.stats.attempts);
        match tokio::time::timeout(req.deadline, self.inner.client.stream(&slot.replica, &req))
            .await
        {
            Ok(Ok(rx)) => Ok(RoutedStream {
                rx,
                replica: slot.replica.clone(),
                _slot: slot,
                _admission: admission,
            }),
            Ok(Err(e)) => {
                bump(&slot.stats.failures);
                Err(ServeError::from_replica(&slot.replica, e))
            }
            Err(_) => Err(ServeError::DeadlineExceeded {
                deadline: req.deadline,
            }),
        }
    }
}

impl<C: ReplicaClient> Inner<C> {
    fn overloaded(&self) -> ServeError {
        ServeError::Overloaded {
            retry_after: self.config.retry_after,
        }
    }

    fn admit(&self) -> std::result::Result<Admission, ServeError> {
        let before = self.outstanding.fetch_add(1, Ordering::AcqRel);
        let admission = Admission(self.outstanding.clone());
        if before >= self.config.max_outstanding {
            return Err(self.overloaded());
        }
        Ok(admission)
    }

    fn acquire(
        &self,
        req: &RouteRequest,
        exclude: Option<&ReplicaId>,
    ) -> std::result::Result<Slot, ServeError> {
        let pool_key = (req.deployment.clone(), req.model_hash.clone());
        let mut pools = lock(&self.pools);
        let no_replica = || ServeError::NoReplica {
            deployment: req.deployment.clone(),
            model_hash: req.model_hash.clone(),
        };
        let Some(pool) = pools.get_mut(&pool_key) else {
            return Err(no_replica());
        };
        let choice = {
            let candidates: Vec<Candidate<'_>> = pool
                .iter()
                .map(|r| Candidate {
                    id: &r.spec.id.0,
                    outstanding: r.outstanding,
                    capacity: r.spec.capacity,
                    max_inflight: r.spec.max_inflight,
                })
                .collect();
            choose(&candidates, exclude.map(|r| r.0.as_str()))
        };
        match choice {
            Choice::Chosen(i) => {
                let Some(r) = pool.get_mut(i) else {
                    return Err(no_replica());
                };
                r.outstanding += 1;
                Ok(Slot {
                    pools: self.pools.clone(),
                    pool: pool_key,
                    replica: r.spec.id.clone(),
                    stats: r.stats.clone(),
                })
            }
            Choice::AllBusy => Err(self.overloaded()),
            Choice::NoReplica => Err(no_replica()),
        }
    }

    /// Runs a request on a replica, and once more on another if the first fails in a way
    /// another replica may not (the caller bounds the whole by the deadline).
    async fn execute(
        self: Arc<Self>,
        req: RouteRequest,
        tally: Tally,
    ) -> std::result::Result<Body, ServeError> {
        let _admission = self.admit()?;
        let start = Instant::now();
        let mut failed: Option<(ReplicaId, ServeError)> = None;
        let mut retried_from: Option<Arc<ReplicaStats>> = None;
        for attempt in 0..2 {
            let slot = match self.acquire(&req, failed.as_ref().map(|(r, _)| r)) {
                Ok(slot) => slot,
                // No other replica to retry on: the first failure is the answer.
                Err(e) => return Err(failed.map_or(e, |(_, first)| first)),
            };
            let remaining = req.deadline.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                return Err(ServeError::DeadlineExceeded {
                    deadline: req.deadline,
                });
            }
            if let Some(first) = retried_from.take() {
                tally.bump(|s| &s.retries);
                bump(&first.retried_away);
            }
            bump(&slot.stats.attempts);
            match self.client.infer(&slot.replica, &req, remaining).await {
                Ok(body) => return Ok(body),
                Err(e) => {
                    bump(&slot.stats.failures);
                    let retry = attempt == 0 && e.is_retryable();
                    warn!(replica = %slot.replica, error = %e, retry, "replica failed a request");
                    let err = ServeError::from_replica(&slot.replica, e);
                    if !retry {
                        return Err(err);
                    }
                    failed = Some((slot.replica.clone(), err));
                    // Counted against this replica when the retry is sent.
                    retried_from = Some(slot.stats.clone());
                }
            }
        }
        Err(failed.map_or(ServeError::Stopped(TASK), |(_, e)| e))
    }
}

/// Counts how a request ended.
fn count<T>(tally: &Tally, result: &std::result::Result<T, ServeError>) {
    match result {
        Ok(_) => {}
        Err(ServeError::Overloaded { .. }) => tally.bump(|s| &s.rejected),
        Err(ServeError::DeadlineExceeded { .. }) => tally.bump(|s| &s.deadline_exceeded),
        Err(_) => tally.bump(|s| &s.failed),
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
