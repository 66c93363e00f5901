//! The daemon: composes identity, store, actors, swarm and HTTP API into a running node, and
//! takes it down again — gracefully (announce the leave, drain, flush) or abruptly (tests).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use flotilla_actors::jobs::{executor, manager};
use flotilla_actors::mesh::Mesh;
use flotilla_actors::store::{Column, Durability, Store};
use flotilla_actors::{catalog, membership, remote};
use flotilla_protocol::services::{control, membership as gossip};
use flotilla_protocol::NodeId;
use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::data::DataNode;
use crate::jobs::KernelRunner;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::net::bridge::{Bridge, Command, Wiring};
use crate::net::catalog_sync::{self, AntiEntropy, CatalogWiring};
use crate::net::data_net::{self, NetData};
use crate::net::mesh::NetMesh;
use crate::net::{actors_net, jobs_net, serving_net};
use crate::sampler::Sampler;
use crate::store::RocksStore;
use crate::{http, identity, net};
use flotilla_actors::serving::relay::Relay;
use flotilla_actors::serving::replica::ReplicaService;

mod training;

/// Capacity of the bridge's command queue; senders wait when it is full (back-pressure).
const COMMAND_QUEUE: usize = 1024;
/// Capacity of the executor's queue of finished-task reports.
const REPORT_QUEUE: usize = 256;
/// How often expired remote streams are swept.
const RELAY_SWEEP: Duration = Duration::from_secs(1);
/// How often the serving reconciler compares placement with the running replicas.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// How often a node checks that it holds the model files it is a holder of.
const MODEL_REPLICATION_EVERY: Duration = Duration::from_secs(2);
/// How long shutdown waits for peers to acknowledge the leave, and for the swarm to close.
pub const LEAVE_WAIT: Duration = Duration::from_secs(5);
/// How often the pause detector looks at the clock.
const PAUSE_TICK: Duration = Duration::from_millis(100);
/// How long start-up waits for the swarm to report its listen addresses.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

/// A running node.
pub struct RunningNode {
    pub peer_id: PeerId,
    pub api_addr: SocketAddr,
    pub membership: membership::Handle,
    pub catalog: catalog::Handle,
    pub mesh: NetMesh,
    pub jobs: manager::Handle,
    pub executor: executor::Handle,
    /// Named actors other nodes can reach, spawn and monitor; the node adds roles to it.
    pub host: remote::Host,
    pub serving: crate::serving::Serving,
    /// The data stage: shard actor, data peers, catalog and membership.
    pub data: DataNode,
    /// The cluster key's source, and the key and admin token if this start created them.
    pub admission: crate::admission::Admission,
    config: NodeConfig,
    store: RocksStore,
    lifecycle: Arc<Lifecycle>,
    incarnation: u64,
    ready: Arc<AtomicBool>,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
    commands: mpsc::Sender<Command>,
    http_stop: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    http_task: Option<JoinHandle<()>>,
    membership_task: Option<JoinHandle<()>>,
    catalog_task: Option<JoinHandle<()>>,
    actor_tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("peer_id", &self.peer_id)
            .field("api_addr", &self.api_addr)
            .finish()
    }
}

impl RunningNode {
    /// Starts a node: validates the config, then brings every part up in order. Everything the
    /// node runs (its tasks, actors and HTTP requests) runs inside a `node{node=<peer id>}` span.
    pub async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
        let span = tracing::info_span!("node", node = tracing::field::Empty);
        Self::start_in_span(config).instrument(span).await
    }

    async fn start_in_span(config: NodeConfig) -> anyhow::Result<RunningNode> {
        config.validate()?;
        crate::install_crypto_provider();
        // A bad certificate or key stops the start before anything is bound.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(http::tls::server_config(cert, key)?),
            _ => None,
        };
        let key = identity::load_or_create(&config.data_dir)?;
        let spool_dir = http::prepare_spool(&config.data_dir)?;
        let peer_id = key.public().to_peer_id();
        tracing::Span::current().record("node", tracing::field::display(&peer_id));
        let store = RocksStore::open(&config.data_dir.join("db"))?;
        check_data_dir_owner(&store, &peer_id)?;
        let lifecycle = Lifecycle::new(store.clone());
        // The cluster key and the API token; new ones are written once the addresses are bound.
        let mut admission = crate::admission::prepare(&config)?;
        let token: Option<Arc<str>> = admission.api_token.clone().map(Arc::from);

        let mut registry = Registry::default();
        let mut swarm = net::build_swarm(&key, &config, admission.psk, &mut registry)?;
        let metrics = Arc::new(Metrics::register(&mut registry));
        let train_metrics = training::register_metrics(&mut registry);
        let serving_metrics = Arc::new(crate::serving::metrics::ServingMetrics::register(
            &mut registry,
        ));
        let registry = Arc::new(registry);

        for addr in config.listen_addrs() {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        }
        let listener = http::bind(config.api_listen).await?;
        let api_addr = listener.local_addr()?;
        admission.commit()?;

        // Measure the machine once; the probe is CPU-bound, keep it off the async workers.
        let id = NodeId(peer_id.to_string());
        let budget = config.probe_budget;
        let mut sampler = tokio::task::spawn_blocking(move || Sampler::measure(id, budget)).await?;
        let first = sampler.next(vec![], Some(api_addr.to_string()));
        let incarnation = first.incarnation;
        // What peers may ask this node to run: its measured capacity.
        let limits = crate::jobs::limits::NodeLimits {
            cores: first.cores,
            ram_bytes: first.ram_bytes,
            gpus: u32::try_from(first.gpus.count()).unwrap_or(u32::MAX),
        };
        let (membership, membership_task) =
            membership::Handle::spawn(config.membership.clone(), first.clone()).await?;

        let (outbox_tx, outbox_rx) = mpsc::channel(catalog_sync::OUTBOX_CAPACITY);
        let (catalog, catalog_task) = catalog::Handle::spawn(
            config.catalog.clone(),
            identity::catalog_keys(&key)?,
            Arc::new(store.clone()),
            outbox_tx,
        )
        .await?;

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (inbox_tx, inbox_rx) = mpsc::channel(catalog_sync::INBOX_CAPACITY);
        let (jobs_inbox_tx, jobs_inbox_rx) = mpsc::channel(jobs_net::INBOX_CAPACITY);
        let (actors_inbox_tx, actors_inbox_rx) = mpsc::channel(actors_net::INBOX_CAPACITY);
        let mesh = NetMesh::new(peer_id, cmd_tx.clone());
        let (serving_inbox_tx, serving_inbox_rx) = mpsc::channel(serving_net::INBOX_CAPACITY);
        let mut serving = crate::serving::Serving::new(
            peer_id.to_string(),
            serving_net::MeshTransport { mesh: mesh.clone() },
            Default::default(),
            serving_metrics,
            Arc::new(crate::models::blobs::BlobStore::open(
                &config.data_dir.join("artifacts"),
            )?),
            catalog.clone(),
        )?;
        serving.files.replication = config.model_replication;
        let shared_store: Arc<dyn Store> = Arc::new(store.clone());
        let (data_inbox_tx, data_inbox_rx) = mpsc::channel(data_net::INBOX_CAPACITY);
        let (shards, shards_task) = flotilla_actors::data::shard::Handle::spawn(
            shared_store.clone(),
            flotilla_actors::data::shard::Config::default(),
        )
        .await?;
        let data = DataNode {
            me: NodeId(peer_id.to_string()),
            peers: Arc::new(NetData {
                local: NodeId(peer_id.to_string()),
                shards,
                mesh: mesh.clone(),
            }),
            catalog: catalog.clone(),
            membership: membership.clone(),
            settings: config.data.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let host = remote::Host::start(Arc::new(mesh.clone()), config.request_timeout).await?;
        mesh.set_local_actors(host.clone());
        host.set_membership(membership.clone());
        training::add_roles(&host, shared_store.clone(), &mesh, config.train_slowdown);
        let (executor, reports, executor_task) = executor::Handle::spawn(
            shared_store.clone(),
            Arc::new(
                KernelRunner::new(NodeId(peer_id.to_string()))
                    .with_data(data.clone())
                    .with_training(training::context(training::ContextParts {
                        mesh: &mesh,
                        host: &host,
                        data: &data,
                        data_dir: &config.data_dir,
                        store: shared_store.clone(),
                        metrics: train_metrics.clone(),
                        files: serving.files.clone(),
                        lifecycle: lifecycle.clone(),
                    })),
            ),
            REPORT_QUEUE,
        )
        .await?;
        // Starts, from the local job manager and from peers, are refused while the node drains
        // or its store fails.
        let executor = executor.with_gate({
            let lifecycle = lifecycle.clone();
            Arc::new(move || lifecycle.refusal())
        });
        let jobs_config = jobs_config(&config);
        let (jobs, jobs_task) = manager::Handle::spawn(
            jobs_config.clone(),
            manager::handle::Parts {
                mesh: Arc::new(mesh.clone()),
                catalog: catalog.clone(),
                membership: membership.clone(),
                executor: executor.clone(),
                store: shared_store.clone(),
            },
        )
        .await?;
        training::register_checkpoint_store(
            &host,
            shared_store.clone(),
            NodeId(peer_id.to_string()),
            &catalog,
            &jobs,
            &mesh,
        )?;
        let (info_tx, info_rx) = watch::channel(first);
        let (addrs_tx, addrs_rx) = watch::channel(Vec::new());
        let bridge = Bridge::new(
            swarm,
            Wiring {
                commands: cmd_rx,
                membership: membership.clone(),
                metrics: metrics.clone(),
                own_info: info_rx,
                listen_addrs: addrs_tx,
                join: config.join_addrs(),
                target_peers: config.target_peers,
                catalog: CatalogWiring {
                    outbox: outbox_rx,
                    inbox: inbox_tx,
                },
                jobs_inbox: jobs_inbox_tx,
                actors_inbox: actors_inbox_tx,
                serving_inbox: serving_inbox_tx,
                data_inbox: data_inbox_tx,
            },
        )?;
        let mut tasks = vec![
            flotilla_actors::task::spawn(bridge.run()),
            flotilla_actors::task::spawn(catalog_sync::serve(
                inbox_rx,
                catalog.clone(),
                cmd_tx.clone(),
                metrics.clone(),
            )),
            flotilla_actors::task::spawn(
                AntiEntropy {
                    me: NodeId(peer_id.to_string()),
                    every: config.catalog_sync_interval,
                    deadline: config.request_timeout,
                    membership: membership.clone(),
                    catalog: catalog.clone(),
                    commands: cmd_tx.clone(),
                    metrics: metrics.clone(),
                }
                .run(),
            ),
            flotilla_actors::task::spawn(jobs_net::serve(
                jobs_inbox_rx,
                executor.clone(),
                jobs.clone(),
                catalog.clone(),
                Arc::new(limits),
                cmd_tx.clone(),
            )),
            flotilla_actors::task::spawn(actors_net::serve(
                actors_inbox_rx,
                host.clone(),
                cmd_tx.clone(),
            )),
            flotilla_actors::task::spawn(data_net::serve(
                data_inbox_rx,
                data.peers.clone(),
                catalog.clone(),
                cmd_tx.clone(),
                data.settings.call_deadline,
            )),
            flotilla_actors::task::spawn(crate::data::replicate::run(data.clone())),
            flotilla_actors::task::spawn(manager::forward::run(
                reports,
                Arc::new(mesh.clone()),
                jobs.clone(),
                jobs_config.report_attempts,
                jobs_config.rpc_deadline,
            )),
        ];
        let replica_service = ReplicaService::new(
            serving.local.clone(),
            Relay::new(flotilla_actors::serving::relay::Limits::default()),
        );
        tasks.push(replica_service.relay().spawn_sweeper(RELAY_SWEEP));
        tasks.push(flotilla_actors::task::spawn(serving_net::serve(
            serving_inbox_rx,
            replica_service,
            cmd_tx.clone(),
        )));
        tasks.push(flotilla_actors::task::spawn(crate::evict::enforce(
            catalog.clone(),
            membership.clone(),
            mesh.clone(),
            crate::evict::ENFORCE_EVERY,
        )));
        tasks.push(flotilla_actors::task::spawn(
            crate::serving::reconcile::Reconciler {
                serving: serving.clone(),
                catalog: catalog.clone(),
                membership: membership.clone(),
                executor: executor.clone(),
                every: RECONCILE_EVERY,
                starting: Default::default(),
            }
            .run(),
        ));
        tasks.push(flotilla_actors::task::spawn(
            crate::models::replicate::ModelReplicator {
                files: serving.files.clone(),
                catalog: catalog.clone(),
                membership: membership.clone(),
                factor: config.model_replication,
                every: MODEL_REPLICATION_EVERY,
            }
            .run(),
        ));
        catalog_sync::refresh_entries(&catalog, &metrics).await;

        let mut listen_addrs = addrs_rx.clone();
        tokio::time::timeout(LISTEN_DEADLINE, listen_addrs.wait_for(|a| !a.is_empty()))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the swarm reported no listen address within {LISTEN_DEADLINE:?}")
            })??;

        tasks.push(flotilla_actors::task::spawn(heartbeat_loop(
            sampler,
            config.membership.heartbeat_interval,
            addrs_rx.clone(),
            api_addr,
            serving.local.clone(),
            membership.clone(),
            info_tx,
            cmd_tx.clone(),
            lifecycle.clone(),
        )));
        tasks.push(flotilla_actors::task::spawn(fence_after_pause(
            executor.clone(),
            config.membership.dead_after,
        )));
        // The task ledger keeps finished jobs as long as the catalog does.
        tasks.push(flotilla_actors::task::spawn(
            flotilla_actors::jobs::compaction::compact_forever(
                executor.clone(),
                catalog.clone(),
                config.catalog.retention,
            ),
        ));

        tasks.push(flotilla_actors::task::spawn(count_transitions(
            membership.subscribe(),
            metrics.clone(),
        )));

        let ready = Arc::new(AtomicBool::new(false));
        let state = http::AppState {
            membership: membership.clone(),
            catalog: catalog.clone(),
            jobs: jobs.clone(),
            executor: executor.clone(),
            mesh: mesh.clone(),
            serving: serving.clone(),
            data: data.clone(),
            request_timeout: config.request_timeout,
            registry,
            metrics,
            ready: ready.clone(),
            lifecycle: lifecycle.clone(),
            token,
            loopback_api: api_addr.ip().is_loopback(),
            limiter: Arc::new(http::limits::Limiter::new(config.api.clone())),
            spool_dir,
            redact: http::redact::needles(&config.data_dir).into(),
        };
        let (http_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Client addresses reach the handlers (the rate limits key on them).
        let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let http_task = match tls {
            None => flotilla_actors::task::spawn(async move {
                let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                });
                if let Err(e) = served.await {
                    warn!(error = %e, "HTTP server stopped with an error");
                }
            }),
            Some(tls) => {
                let handle = axum_server::Handle::new();
                let server = axum_server::tls_rustls::from_tcp_rustls(
                    listener.into_std()?,
                    axum_server::tls_rustls::RustlsConfig::from_config(tls),
                )?
                .handle(handle.clone());
                let grace = config.shutdown.grace;
                flotilla_actors::task::spawn(async move {
                    flotilla_actors::task::spawn(async move {
                        let _ = stop_rx.await;
                        handle.graceful_shutdown(Some(grace));
                    });
                    if let Err(e) = server.serve(app).await {
                        warn!(error = %e, "HTTPS server stopped with an error");
                    }
                })
            }
        };
        ready.store(true, Ordering::Release);
        info!(node = %peer_id, api = %api_addr, "node started");

        Ok(RunningNode {
            peer_id,
            api_addr,
            mesh,
            membership,
            catalog,
            jobs,
            executor,
            host,
            serving,
            data,
            admission,
            config,
            store,
            lifecycle,
            incarnation,
            ready,
            listen_addrs: addrs_rx,
            commands: cmd_tx,
            http_stop: Some(http_stop),
            tasks,
            http_task: Some(http_task),
            membership_task: Some(membership_task),
            catalog_task: Some(catalog_task),
            actor_tasks: vec![jobs_task, executor_task, shards_task],
        })
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.peer_id.to_string())
    }

    /// Peers with an open connection to this node.
    pub async fn connected_peers(&self) -> Vec<NodeId> {
        self.mesh.connected_peers().await.unwrap_or_default()
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The node's store.
    pub fn store(&self) -> &RocksStore {
        &self.store
    }

    /// Whether the node takes new work, and why not.
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    /// Listen addresses, each ending in `/p2p/<id>` so they can be given to `--join`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .borrow()
            .iter()
            .map(|a| a.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a))
            .collect()
    }

    /// The HTTP base URL.
    pub fn api_url(&self) -> String {
        let scheme = if self.config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.api_addr)
    }

    /// Closes and refuses every connection with `peer` until [`RunningNode::unblock_peer`].
    pub async fn block_peer(&self, peer: &NodeId) -> anyhow::Result<()> {
        Ok(self.mesh.block(peer).await?)
    }

    /// Accepts a blocked peer again.
    pub async fn unblock_peer(&self, peer: &NodeId) -> anyhow::Result<()> {
        Ok(self.mesh.unblock(peer).await?)
    }

    /// Evicts `peer` from the cluster (see [`crate::evict`]).
    pub async fn evict(
        &self,
        peer: &NodeId,
    ) -> Result<crate::evict::Evicted, crate::evict::EvictError> {
        crate::evict::evict(&self.catalog, &self.membership, &self.mesh, peer.as_str()).await
    }

    /// Graceful stop, as on SIGTERM. The node takes no new work (task starts are refused,
    /// HTTP requests other than the health probes and `/metrics` are answered `503`); training
    /// runs coordinated here write a last checkpoint and return, and in-flight HTTP requests
    /// finish, within `shutdown.grace` together (a run that has not finished its checkpoint by
    /// then stays at its last complete one: a checkpoint's manifest is written after its
    /// blobs). Then the leave is announced (gossip, and directly to every connected peer,
    /// waiting at most [`LEAVE_WAIT`] for acknowledgements), the swarm closes, the actors stop
    /// and the store is flushed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let grace = self.config.shutdown.grace;
        let deadline = tokio::time::Instant::now() + grace;
        self.ready.store(false, Ordering::Release);
        self.lifecycle.start_draining();
        let runs = self.lifecycle.running();
        if runs > 0 {
            info!(
                runs,
                ?grace,
                "waiting for training runs to write a last checkpoint"
            );
            if !self.lifecycle.runs_finished(grace).await {
                warn!(
                    runs = self.lifecycle.running(),
                    "training runs did not return within the shutdown grace period; they stay \
                     at their last complete checkpoint"
                );
            }
        }
        if let Some(stop) = self.http_stop.take() {
            let _ = stop.send(());
        }
        if let Some(http) = self.http_task.take() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, http).await.is_err() {
                warn!("in-flight HTTP requests did not finish within the shutdown grace period");
            }
        }

        let wait = grace.min(LEAVE_WAIT);
        let leaving = gossip::Message::Leaving {
            id: self.node_id(),
            incarnation: self.incarnation,
        };
        let _ = self.commands.send(Command::Publish(leaving)).await;
        let peers = self.mesh.connected_peers().await.unwrap_or_default();
        let acks = futures::future::join_all(peers.iter().map(|p| {
            self.mesh.control(
                p,
                control::RequestBody::Leaving {
                    id: self.node_id(),
                    incarnation: self.incarnation,
                },
                wait,
            )
        }))
        .await;
        let acked = acks.iter().filter(|a| a.is_ok()).count();
        info!(node = %self.peer_id, acked, peers = peers.len(), "leave announced");

        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Shutdown(done_tx)).await.is_ok() {
            let _ = tokio::time::timeout(wait, done_rx).await;
        }
        self.stop_tasks().await;
        self.store.flush()?;
        info!(node = %self.peer_id, "node stopped");
        Ok(())
    }

    /// Abrupt stop, as if the process were killed: no leave notice, no flush.
    pub async fn kill(mut self) {
        self.ready.store(false, Ordering::Release);
        if let Some(h) = self.http_task.take() {
            h.abort();
            let _ = h.await;
        }
        self.stop_tasks().await;
    }

    async fn stop_tasks(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.host.shutdown();
        // Jobs first: the manager calls the executor, and both hold the store.
        self.jobs.stop();
        self.executor.stop();
        self.data.peers.shards.stop();
        for t in self.actor_tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.membership.stop();
        if let Some(t) = self.membership_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // The catalog actor holds the store; it must be gone before the data dir is reopened.
        self.catalog.stop();
        if let Some(t) = self.catalog_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// The job manager's settings, derived from the node's: no takeover before the failure
/// detector could have declared a silent owner dead, peers get the node's request deadline.
pub fn jobs_config(config: &NodeConfig) -> manager::Config {
    manager::Config {
        tick: Duration::from_millis(250),
        settle: config.membership.dead_after,
        rpc_deadline: config.request_timeout,
        coordinator: flotilla_actors::jobs::coordinator::Config {
            start_timeout_ms: u64::try_from(config.request_timeout.as_millis() * 2)
                .unwrap_or(u64::MAX),
            max_attempts: 3,
        },
        report_attempts: 8,
    }
}

/// A data dir belongs to one node id: refuse to run with a store written by another identity.
fn check_data_dir_owner(store: &RocksStore, peer_id: &PeerId) -> anyhow::Result<()> {
    let me = peer_id.to_string();
    match store.get(Column::Meta, b"node_id")? {
        Some(owner) if owner != me.as_bytes() => anyhow::bail!(
            "the store belongs to node {} but the identity key is {me}; was identity.key replaced?",
            String::from_utf8_lossy(&owner)
        ),
        Some(_) => Ok(()),
        None => Ok(store.put(Column::Meta, b"node_id", me.as_bytes(), Durability::Sync)?),
    }
}

/// Counts membership transitions by target state, for `flotilla_membership_transitions_total`.
async fn count_transitions(
    mut transitions: tokio::sync::broadcast::Receiver<membership::Transition>,
    metrics: Arc<Metrics>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match transitions.recv().await {
            Ok(t) => {
                let state = crate::metrics::StateLabel {
                    state: t.to.to_string(),
                };
                metrics.transitions.get_or_create(&state).inc();
            }
            // Transitions this task was too slow to see are lost from the count, not fatal.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => break,
        }
    }
}

// Each argument is one independent input of the loop; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn heartbeat_loop(
    mut sampler: Sampler,
    every: Duration,
    addrs: watch::Receiver<Vec<Multiaddr>>,
    api_addr: SocketAddr,
    replicas: crate::serving::LocalBackend,
    membership: membership::Handle,
    info_tx: watch::Sender<flotilla_protocol::NodeInfo>,
    commands: mpsc::Sender<Command>,
    lifecycle: Arc<Lifecycle>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let listen: Vec<String> = addrs.borrow().iter().map(|a| a.to_string()).collect();
        let mut info = sampler.next(listen, Some(api_addr.to_string()));
        info.ready_replicas = replicas.ready_keys();
        info.unhealthy = lifecycle.unhealthy();
        let _ = membership.update_self(info.clone());
        let _ = info_tx.send(info.clone());
        if commands
            .send(Command::Publish(gossip::Message::Heartbeat(info)))
            .await
            .is_err()
        {
            break;
        }
    }
}

/// Fences this node's tasks after it was frozen (SIGSTOP, a VM pause, a stalled machine) for
/// longer than `dead_after`: by then its peers have declared it dead and the owners of its
/// tasks have placed them elsewhere, so every task still running here ends as failed, before
/// it can write results, checkpoints or models for work that has moved. A task that had not
/// moved is re-placed by its owner as its next attempt.
async fn fence_after_pause(executor: executor::Handle, dead_after: Duration) {
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(PAUSE_TICK).await;
        let now = tokio::time::Instant::now();
        let gap = now.duration_since(last);
        last = now;
        if gap <= dead_after {
            continue;
        }
        let running = executor.usage().await.unwrap_or_default();
        let reason = format!(
            "this node was unresponsive for {:.1} s, longer than membership.dead_after ({:?}); \
             its tasks may have moved",
            gap.as_secs_f64(),
            dead_after
        );
        warn!(tasks = running.len(), %reason, "fencing the tasks running here");
        for t in running {
            // Reservations (serving replicas) are not tasks: the executor answers `false`.
            if let Err(e) = executor
                .preempt(t.job.clone(), t.task, reason.clone())
                .await
            {
                warn!(job = %t.job, task = t.task, error = %e, "task not fenced");
            }
        }
        last = tokio::time::Instant::now();
    }
}
