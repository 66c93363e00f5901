//! Serving metrics in the node's registry, per deployment and per replica.
//!
//! Request counts, latency and time to first token are recorded as requests pass through the
//! HTTP layer (per deployment, on the node that took the request). Queue depth, batch sizes,
//! decoding steps and model executions live in the replicas' own atomics and are copied into
//! gauges at scrape time ([`ServingMetrics::refresh`]), so the request path takes no lock for
//! them. Cache hits, coalesced requests, retries and refusals are the router's: per deployment
//! (`router`), per replica the router sends to (`router_replica`: attempts, failures, retries
//! away from it) and for the whole node (`router_node`), copied at scrape time as well.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use flotilla_actors::serving::router::{ReplicaClient, ReplicaId, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::Serving;

/// A deployment.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabel {
    pub deployment: String,
}

/// A request's deployment, endpoint and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub deployment: String,
    pub endpoint: String,
    pub status: u16,
}

/// A replica of a deployment (`replica` is `<node>/<deployment>`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabel {
    pub deployment: String,
    pub replica: String,
}

/// One bucket of a replica's batch-size histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabel {
    pub deployment: String,
    pub replica: String,
    pub size: u32,
}

/// A node-wide router counter's name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// A deployment's router counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouterLabel {
    pub deployment: String,
    pub outcome: String,
}

/// A router counter of one replica of a deployment.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouterReplicaLabel {
    pub deployment: String,
    pub replica: String,
    pub outcome: String,
}

/// The router series set at the last scrape, so that those of deployments and replicas the
/// router dropped are removed instead of being exported forever at their last value.
#[derive(Debug, Default)]
struct RouterSeries {
    deployments: HashSet<RouterLabel>,
    replicas: HashSet<RouterReplicaLabel>,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The serving metrics.
#[derive(Debug, Clone)]
pub struct ServingMetrics {
    pub requests: Family<RequestLabel, Counter>,
    pub latency: Family<DeploymentLabel, Histogram, fn() -> Histogram>,
    pub first_token: Family<DeploymentLabel, Histogram, fn() -> Histogram>,
    pub batches: Family<BatchLabel, Gauge>,
    pub queue_depth: Family<ReplicaLabel, Gauge>,
    pub executions: Family<ReplicaLabel, Gauge>,
    pub decode_steps: Family<ReplicaLabel, Gauge>,
    pub generated_tokens: Family<ReplicaLabel, Gauge>,
    pub router: Family<RouterLabel, Gauge>,
    pub router_node: Family<OutcomeLabel, Gauge>,
    pub router_replica: Family<RouterReplicaLabel, Gauge>,
    /// Time each replica took to answer a routed non-streaming request (every attempt).
    pub replica_latency: Family<ReplicaLabel, Histogram, fn() -> Histogram>,
    /// Time from asking a replica for a stream to its first piece.
    pub replica_first_piece: Family<ReplicaLabel, Histogram, fn() -> Histogram>,
    /// `(deployment, replica)` pairs with histogram series, so dropped replicas lose theirs.
    replica_histograms: Arc<Mutex<std::collections::BTreeSet<(String, String)>>>,
    router_series: Arc<Mutex<RouterSeries>>,
}

impl ServingMetrics {
    /// Registers every serving metric under `flotilla_serving_`.
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("flotilla_serving");
        let m = ServingMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency),
            first_token: Family::new_with_constructor(latency),
            batches: Family::default(),
            queue_depth: Family::default(),
            executions: Family::default(),
            decode_steps: Family::default(),
            generated_tokens: Family::default(),
            router: Family::default(),
            router_node: Family::default(),
            router_replica: Family::default(),
            replica_latency: Family::new_with_constructor(latency),
            replica_first_piece: Family::new_with_constructor(latency),
            replica_histograms: Arc::default(),
            router_series: Arc::default(),
        };
        r.register(
            "replica_request_duration_seconds",
            "Time a replica took to answer a routed non-streaming request, each attempt, by deployment and replica",
            m.replica_latency.clone(),
        );
        r.register(
            "replica_time_to_first_piece_seconds",
            "Time from asking a replica for a stream to its first piece, by deployment and replica",
            m.replica_first_piece.clone(),
        );
        r.register(
            "requests",
            "OpenAI-compatible requests taken by this node, by deployment, endpoint and status",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the whole answer, by deployment",
            m.latency.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "Time to the first streamed piece, by deployment",
            m.first_token.clone(),
        );
        r.register(
            "batches",
            "Batches run by a replica, by batch size (the batch-size histogram)",
            m.batches.clone(),
        );
        r.register(
            "queue_depth",
            "Requests accepted by a replica and not yet answered",
            m.queue_depth.clone(),
        );
        r.register(
            "executions",
            "Requests that reached a replica's model (after cache and coalescing)",
            m.executions.clone(),
        );
        r.register(
            "decode_steps",
            "Decoding steps run by a generation replica",
            m.decode_steps.clone(),
        );
        r.register(
            "generated_tokens",
            "Tokens generated by a generation replica",
            m.generated_tokens.clone(),
        );
        r.register(
            "router",
            "This node's router counters per deployment: requests, streams, cache hits and misses, \
             coalesced, retries, rejected, failed, deadline_exceeded (deployments with replicas \
             only; router_node has the node's totals)",
            m.router.clone(),
        );
        r.register(
            "router_node",
            "This node's router counters over all deployments (the same outcomes as router, \
             requests naming no deployment with replicas included)",
            m.router_node.clone(),
        );
        r.register(
            "router_replica",
            "This node's router counters per replica: attempts (requests sent to it, retries \
             included), failures (errors it answered), retried_away (its failures retried on \
             another replica)",
            m.router_replica.clone(),
        );
        m
    }

    /// Copies the replicas' and the router's counters into the gauges.
    pub fn refresh(&self, serving: &Serving) {
        for r in serving.local.all() {
            let label = ReplicaLabel {
                deployment: r.deployment.clone(),
                replica: ReplicaId::on(&serving.me, &r.deployment).0,
            };
            let waiting = r.engine_stats().map_or(0, |e| e.3);
            self.queue_depth
                .get_or_create(&label)
                .set(i64::from(r.outstanding()) + waiting as i64);
            self.executions
                .get_or_create(&label)
                .set(r.executions.load(Ordering::Relaxed) as i64);
            if let Some(b) = r.batch_stats() {
                for (size, n) in b.batch_sizes.iter().enumerate().skip(1) {
                    self.batches
                        .get_or_create(&BatchLabel {
                            deployment: label.deployment.clone(),
                            replica: label.replica.clone(),
                            size: size as u32,
                        })
                        .set(*n as i64);
                }
            }
            if let Some((steps, tokens, _, _)) = r.engine_stats() {
                self.decode_steps.get_or_create(&label).set(steps as i64);
                self.generated_tokens
                    .get_or_create(&label)
                    .set(tokens as i64);
            }
        }
        self.refresh_router(&serving.router);
    }

    fn refresh_router<C: ReplicaClient>(&self, router: &Router<C>) {
        // Held throughout, so that concurrent scrapes do not remove each other's series.
        let mut series = self.router_series.lock().unwrap_or_else(|e| e.into_inner());
        for (outcome, v) in router.stats().outcomes() {
            self.router_node
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.to_string(),
                })
                .set(v as i64);
        }
        let mut now = RouterSeries::default();
        for (deployment, s) in router.deployment_stats() {
            for (outcome, v) in s.outcomes() {
                let label = RouterLabel {
                    deployment: deployment.clone(),
                    outcome: outcome.to_string(),
                };
                self.router.get_or_create(&label).set(v as i64);
                now.deployments.insert(label);
            }
            for (replica, s) in router.replica_stats(&deployment) {
                for (outcome, v) in s.outcomes() {
                    let label = RouterReplicaLabel {
                        deployment: deployment.clone(),
                        replica: replica.0.clone(),
                        outcome: outcome.to_string(),
                    };
                    self.router_replica.get_or_create(&label).set(v as i64);
                    now.replicas.insert(label);
                }
            }
        }
        for gone in series.deployments.difference(&now.deployments) {
            self.router.remove(gone);
        }
        for gone in series.replicas.difference(&now.replicas) {
            self.router_replica.remove(gone);
        }
        let live: std::collections::BTreeSet<(String, String)> = now
            .replicas
            .iter()
            .map(|l| (l.deployment.clone(), l.replica.clone()))
            .collect();
        let mut histograms = self
            .replica_histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        histograms.retain(|(deployment, replica)| {
            let keep = live.contains(&(deployment.clone(), replica.clone()));
            if !keep {
                let label = ReplicaLabel {
                    deployment: deployment.clone(),
                    replica: replica.clone(),
                };
                self.replica_latency.remove(&label);
                self.replica_first_piece.remove(&label);
            }
            keep
        });
        *series = now;
    }

    fn replica_label(&self, deployment: &str, replica: &str) -> ReplicaLabel {
        self.replica_histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((deployment.to_string(), replica.to_string()));
        ReplicaLabel {
            deployment: deployment.to_string(),
            replica: replica.to_string(),
        }
    }

    /// Records how long `replica` took to answer one routed request.
    pub fn replica_answered(&self, deployment: &str, replica: &str, seconds: f64) {
        let label = self.replica_label(deployment, replica);
        self.replica_latency.get_or_create(&label).observe(seconds);
    }

    /// Records how long `replica` took to send a stream's first piece.
    pub fn replica_first_piece(&self, deployment: &str, replica: &str, seconds: f64) {
        let label = self.replica_label(deployment, replica);
        self.replica_first_piece
            .get_or_create(&label)
            .observe(seconds);
    }

    /// Records one answered request.
    pub fn request(&self, deployment: &str, endpoint: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabel {
                deployment: deployment.to_string(),
                endpoint: endpoint.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&DeploymentLabel {
                deployment: deployment.to_string(),
            })
            .observe(seconds);
    }

    /// Records a stream's first piece.
    pub fn first_token(&self, deployment: &str, seconds: f64) {
        self.first_token
            .get_or_create(&DeploymentLabel {
                deployment: deployment.to_string(),
            })
            .observe(seconds);
    }
}
