//! The router: every node's entry point for serving requests.
//!
//! For a request to a deployment's model version it: answers deterministic requests from the
//! [`cache`]; joins an identical request already in flight instead of running it twice
//! (coalescing); otherwise picks the least-loaded replica weighted by capacity ([`balance`]),
//! retries a failed non-streaming request once on another replica, refuses with
//! [`ServeError::Overloaded`] (429) when every replica is at its in-flight limit or the router's
//! own bound is reached, and gives up at the request's deadline.
//!
//! - [`service`]: the async [`Router`], generic over a [`ReplicaClient`].
//! - [`cache`], [`balance`]: its pure parts. [`stats`]: its counters, for the node, per
//!   deployment and per replica.
//!
//! Traffic splitting between model versions (canaries) happens before the router: the caller
//! picks the version with [`split::pick`] and passes its hash; the router keeps one replica
//! pool per (deployment, model version).

pub mod balance;
pub mod cache;
pub mod service;
pub mod split;
pub mod stats;

use std::time::Duration;

use flotilla_protocol::openai::CacheKey;
use flotilla_protocol::services::serving::{Endpoint, ServingError, StreamEnd};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use cache::{Body, ResponseCache};
pub use service::{RoutedStream, Router};
pub use stats::{ReplicaStats, ReplicaStatsSnapshot, RouterStats, RouterStatsSnapshot};

use crate::serving::error::ServeError;
use crate::{Error, Result};

/// Names one replica of one deployment: `<node id>/<deployment>` (a node runs at most one
/// replica of a deployment).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId(pub String);

impl ReplicaId {
    /// The replica of `deployment` on `node`.
    pub fn on(node: &str, deployment: &str) -> Self {
        Self(format!("{node}/{deployment}"))
    }

    /// The node that hosts it.
    pub fn node(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A replica the router may send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSpec {
    pub id: ReplicaId,
    /// Relative throughput (e.g. batch size × compute score); at least 1.
    pub capacity: u32,
    /// Most requests outstanding at this replica; more are sent elsewhere or refused.
    pub max_inflight: u32,
}

/// A request as the router sees it: the client's validated JSON and what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRequest {
    pub deployment: String,
    /// The model version chosen for this request (after any traffic split).
    pub model_hash: String,
    pub endpoint: Endpoint,
    /// The client's JSON body.
    pub body: Body,
    /// The canonical key, set only for requests that may be cached and coalesced: the
    /// deployment caches and the request is deterministic.
    pub cache_key: Option<CacheKey>,
    /// How long the client waits for the whole answer.
    pub deadline: Duration,
}

/// One item of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// The next piece of generated text.
    Piece(String),
    /// The stream ended; nothing follows.
    End(StreamEnd),
}

/// The receiving end of a replica's stream; the sender side is bounded by the client
/// implementation. Dropping it tells the replica the client went away.
pub type PieceStream = mpsc::Receiver<std::result::Result<StreamItem, ServingError>>;

/// How the router reaches replicas: in process for replicas on this node, over
/// `/flotilla/serving/1` for the others. Implemented by the node.
#[async_trait::async_trait]
pub trait ReplicaClient: Send + Sync + 'static {
    /// Answers a non-streaming request within `deadline`.
    async fn infer(
        &self,
        replica: &ReplicaId,
        request: &RouteRequest,
        deadline: Duration,
    ) -> std::result::Result<Body, ServingError>;

    /// Starts a streamed answer.
    async fn stream(
        &self,
        replica: &ReplicaId,
        request: &RouteRequest,
    ) -> std::result::Result<PieceStream, ServingError>;
}

/// Router settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Most responses cached.
    pub cache_max_entries: usize,
    /// Most bytes of cached responses.
    pub cache_max_bytes: usize,
    /// Most requests in flight through this router (all deployments); beyond, 429.
    pub max_outstanding: usize,
    /// The `Retry-After` hint of a refusal.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_max_entries: 4096,
            cache_max_bytes: 64 * 1024 * 1024,
            max_outstanding: 4096,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.max_outstanding == 0 {
            return Err(Error::InvalidConfig(
                "max_outstanding must be at least 1".into(),
            ));
        }
        if self.retry_after.is_zero() || self.retry_after > Duration::from_secs(3600) {
            return Err(Error::InvalidConfig(
                "retry_after must be between 1ms and 1h".into(),
            ));
        }
        Ok(())
    }
}

impl ServeError {
    /// Maps a replica's wire error: overload stays overload (429), the rest name the replica.
    pub fn from_replica(replica: &ReplicaId, error: ServingError) -> Self {
        use flotilla_protocol::services::serving::ErrorKind;
        match error.kind {
            ErrorKind::Overloaded { retry_after_ms } => ServeError::Overloaded {
                retry_after: Duration::from_millis(u64::from(retry_after_ms)),
            },
            _ => ServeError::Replica {
                replica: replica.0.clone(),
                error,
            },
        }
    }
}
