//! Serving on this node: the replicas behind the OpenAI-compatible API, on the models of
//! [`crate::models`].
//!
//! - [`backend`]: this node's replicas and the [`Backend`](flotilla_actors::serving::replica::Backend)
//!   that answers them, locally or for other nodes' routers.
//! - [`metrics`]: serving metrics per deployment and replica.
//! - [`reconcile`]: places every deployment's replicas on nodes from the catalog and the
//!   membership view, starts and stops the ones assigned here, and keeps the router's pools.
//!
//! [`Serving`] ties them together: one [`Router`] per node over a [`NodeClient`] that calls
//! local replicas in process and remote ones over `/flotilla/serving/1`.

pub mod backend;
pub mod metrics;
pub mod reconcile;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_actors::serving::relay::PullConfig;
use flotilla_actors::serving::remote::RemoteClient;
use flotilla_actors::serving::replica::Backend;
use flotilla_actors::serving::router::{
    Body, PieceStream, ReplicaClient, ReplicaId, RouteRequest, Router,
};
use flotilla_protocol::services::serving::{ErrorKind, ServingError};

pub use crate::models::artifacts::ServedModel;
use crate::models::blob_server::BlobServer;
use crate::models::blobs::BlobStore;
use crate::models::files::ModelFiles;
use crate::net::serving_net::MeshTransport;
pub use backend::LocalBackend;
pub use reconcile::DeploymentView;

/// The router's way to replicas: in process for this node's, over the mesh for the others.
pub struct NodeClient {
    me: String,
    local: LocalBackend,
    remote: RemoteClient<MeshTransport>,
    /// Per-replica latency and time to first piece.
    metrics: Arc<metrics::ServingMetrics>,
}

/// Pieces buffered between a replica's stream and the router.
const TIMED_BUFFER: usize = 64;

/// Forwards `rx`, recording the time from `started` to its first piece against the replica.
/// The forwarder ends as soon as its consumer goes away, dropping `rx`, which stops the
/// replica's sequence at once as before.
fn timed(
    mut rx: PieceStream,
    started: std::time::Instant,
    metrics: Arc<metrics::ServingMetrics>,
    deployment: String,
    replica: String,
) -> PieceStream {
    let (tx, out) = tokio::sync::mpsc::channel(TIMED_BUFFER);
    flotilla_actors::task::spawn(async move {
        let mut first = true;
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                item = rx.recv() => {
                    let Some(item) = item else { break };
                    if first {
                        first = false;
                        metrics.replica_first_piece(&deployment, &replica, started.elapsed().as_secs_f64());
                    }
                    if tx.send(item).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    out
}

#[async_trait::async_trait]
impl ReplicaClient for NodeClient {
    async fn infer(
        &self,
        replica: &ReplicaId,
        request: &RouteRequest,
        deadline: Duration,
    ) -> Result<Body, ServingError> {
        let started = std::time::Instant::now();
        let answer = self.infer_untimed(replica, request, deadline).await;
        self.metrics.replica_answered(
            &request.deployment,
            &replica.0,
            started.elapsed().as_secs_f64(),
        );
        answer
    }

    async fn stream(
        &self,
        replica: &ReplicaId,
        request: &RouteRequest,
    ) -> Result<PieceStream, ServingError> {
        let started = std::time::Instant::now();
        let rx = self.stream_untimed(replica, request).await?;
        Ok(timed(
            rx,
            started,
            self.metrics.clone(),
            request.deployment.clone(),
            replica.0.clone(),
        ))
    }
}

impl NodeClient {
    async fn infer_untimed(
        &self,
        replica: &ReplicaId,
        request: &RouteRequest,
        deadline: Duration,
    ) -> Result<Body, ServingError> {
        if replica.node() != self.me {
            return self.remote.infer(replica, request, deadline).await;
        }
        let work = self.local.infer(
            &request.deployment,
            &request.model_hash,
            request.endpoint,
            &request.body,
        );
        match tokio::time::timeout(deadline, work).await {
            Ok(r) => r.map(Body::from),
            Err(_) => Err(ServingError::new(
                ErrorKind::DeadlineExceeded,
                format!("no answer within {deadline:?}"),
            )),
        }
    }

    async fn stream_untimed(
        &self,
        replica: &ReplicaId,
        request: &RouteRequest,
    ) -> Result<PieceStream, ServingError> {
        if replica.node() != self.me {
            return self.remote.stream(replica, request).await;
        }
        self.local
            .stream(
                &request.deployment,
                &request.model_hash,
                request.endpoint,
                &request.body,
            )
            .await
            .map(|(rx, _)| rx)
    }
}

/// What the HTTP handlers and the reconciler share.
#[derive(Clone)]
pub struct Serving {
    pub me: String,
    pub router: Router<NodeClient>,
    pub local: LocalBackend,
    pub metrics: Arc<metrics::ServingMetrics>,
    /// This node's model files and the peers' (fetched by hash).
    pub files: ModelFiles,
    /// Deployments as the reconciler last saw them, by name.
    pub deployments: Arc<RwLock<BTreeMap<String, DeploymentView>>>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").field("me", &self.me).finish()
    }
}

impl Serving {
    /// Serving for node `me`, reaching peers through `transport`; model files live in
    /// `blobs`, and peers may fetch those that `catalog` lists.
    pub fn new(
        me: String,
        transport: MeshTransport,
        config: flotilla_actors::serving::router::Config,
        metrics: Arc<metrics::ServingMetrics>,
        blobs: Arc<BlobStore>,
        catalog: flotilla_actors::catalog::Handle,
    ) -> anyhow::Result<Self> {
        let local = LocalBackend::with_blobs(Arc::new(BlobServer {
            store: blobs.clone(),
            catalog,
        }));
        let client = NodeClient {
            me: me.clone(),
            local: local.clone(),
            remote: RemoteClient::new(transport.clone(), PullConfig::default()),
            metrics: metrics.clone(),
        };
        Ok(Self {
            me: me.clone(),
            router: Router::new(client, config)?,
            local,
            metrics,
            files: ModelFiles {
                me: me.clone(),
                blobs,
                transport: Arc::new(transport),
                replication: crate::models::replicate::DEFAULT_FACTOR,
            },
            deployments: Arc::new(RwLock::new(BTreeMap::new())),
        })
    }

    /// The deployment named `name`, if any.
    pub fn deployment(&self, name: &str) -> Option<DeploymentView> {
        self.deployments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every deployment.
    pub fn all_deployments(&self) -> Vec<DeploymentView> {
        self.deployments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
