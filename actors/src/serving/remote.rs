//! The router's side of `/flotilla/serving/1`: a [`ReplicaClient`] for replicas on other nodes,
//! over a [`ServingTransport`] the node implements with its mesh. Streams are pulled with
//! [`relay::pull`](fn@super::relay::pull), so a remote stream reaches the router as the same
//! [`PieceStream`] a local replica gives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::services::serving::{
    ErrorKind, Request, RequestBody, Response, ResponseBody, ServingError, StreamId,
};
use flotilla_protocol::RequestId;

use super::relay::{pull, PullConfig, StreamRpc};
use super::router::{Body, PieceStream, ReplicaClient, ReplicaId, RouteRequest};

/// Sends one serving request to the node that hosts `replica` and waits at most `deadline`
/// for its response. Transport failures (no connection, timeout) are `Unavailable` or
/// `DeadlineExceeded`, which the router treats as retryable.
#[async_trait::async_trait]
pub trait ServingTransport: Send + Sync + 'static {
    async fn call(
        &self,
        replica: &ReplicaId,
        request: Request,
        deadline: Duration,
    ) -> Result<Response, ServingError>;
}

/// How long a control call (start, cancel) may take, and the margin a long poll gets beyond
/// the time the replica may hold it.
const CALL_DEADLINE: Duration = Duration::from_secs(10);
const POLL_MARGIN: Duration = Duration::from_secs(5);

struct Caller<T> {
    transport: T,
    next_id: AtomicU64,
}

impl<T: ServingTransport> Caller<T> {
    async fn call(
        &self,
        replica: &ReplicaId,
        body: RequestBody,
        deadline: Duration,
    ) -> Result<ResponseBody, ServingError> {
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let response = self
            .transport
            .call(replica, Request { id, body }, deadline)
            .await?;
        if response.id != id {
            return Err(ServingError::new(
                ErrorKind::Internal,
                format!(
                    "{replica} answered request {} to request {}",
                    response.id.0, id.0
                ),
            ));
        }
        response.body
    }
}

fn unexpected(what: &str, got: &ResponseBody) -> ServingError {
    ServingError::new(
        ErrorKind::Internal,
        format!("unexpected answer to {what}: {got:?}"),
    )
}

/// A [`ReplicaClient`] for replicas reached through a [`ServingTransport`].
pub struct RemoteClient<T> {
    caller: Arc<Caller<T>>,
    pull: PullConfig,
}

impl<T> std::fmt::Debug for RemoteClient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient")
            .field("pull", &self.pull)
            .finish()
    }
}

impl<T: ServingTransport> RemoteClient<T> {
    /// A client over `transport`, pulling streams with `pull`.
    pub fn new(transport: T, pull: PullConfig) -> Self {
        Self {
            caller: Arc::new(Caller {
                transport,
                next_id: AtomicU64::new(1),
            }),
            pull,
        }
    }
}

/// One remote stream, as [`pull`] sees it.
struct PeerStream<T> {
    caller: Arc<Caller<T>>,
    replica: ReplicaId,
}

#[async_trait::async_trait]
impl<T: ServingTransport> StreamRpc for PeerStream<T> {
    async fn next_pieces(
        &self,
        stream: StreamId,
        from: u32,
        wait_ms: u32,
    ) -> Result<ResponseBody, ServingError> {
        let deadline = Duration::from_millis(u64::from(wait_ms)) + POLL_MARGIN;
        let body = RequestBody::NextPieces {
            stream,
            from,
            wait_ms,
        };
        self.caller.call(&self.replica, body, deadline).await
    }

    async fn cancel(&self, stream: StreamId) {
        let body = RequestBody::CancelStream { stream };
        // Best effort: if it is lost, the replica's lease expires the stream.
        let _ = self.caller.call(&self.replica, body, CALL_DEADLINE).await;
    }
}

#[async_trait::async_trait]
impl<T: ServingTransport> ReplicaClient for RemoteClient<T> {
    async fn infer(
        &self,
        replica: &ReplicaId,
        request: &RouteRequest,
        deadline: Duration,
    ) -> Result<Body, ServingError> {
        let body = RequestBody::Infer {
            deployment: request.deployment.clone(),
            model_hash: request.model_hash.clone(),
            endpoint: request.endpoint,
            deadline_ms: deadline.as_millis().min(u128::from(u32::MAX)) as u32,
            body: request.body.to_vec(),
        };
        match self.caller.call(replica, body, deadline).await? {
            ResponseBody::Completed { body } => Ok(body.into()),
            other => Err(unexpected("Infer", &other)),
        }
    }

    async fn stream(
        &self,
        replica: &ReplicaId,
        request: &RouteRequest,
    ) -> Result<PieceStream, ServingError> {
        let body = RequestBody::StartStream {
            deployment: request.deployment.clone(),
            model_hash: request.model_hash.clone(),
            endpoint: request.endpoint,
            body: request.body.to_vec(),
        };
        match self.caller.call(replica, body, CALL_DEADLINE).await? {
            ResponseBody::StreamStarted { stream, .. } => {
                let rpc = Arc::new(PeerStream {
                    caller: self.caller.clone(),
                    replica: replica.clone(),
                });
                Ok(pull(rpc, stream, self.pull))
            }
            other => Err(unexpected("StartStream", &other)),
        }
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
