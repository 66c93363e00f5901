//! The replica's side of `/flotilla/serving/1`: answers decoded requests with a [`Backend`]
//! (the node's model code) and a [`Relay`] for streams. The node's network bridge decodes a
//! frame, calls [`ReplicaService::handle`] and encodes what it returns.

use std::time::Duration;

use flotilla_protocol::services::serving::{
    Endpoint, ErrorKind, ReplicaLoad, Request, RequestBody, Response, ResponseBody, ServingError,
};

use super::relay::Relay;
use super::router::PieceStream;

/// What a replica runs: the node implements it over its batcher and generation engine.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Answers one non-streaming request with the client's JSON response body.
    async fn infer(
        &self,
        deployment: &str,
        model_hash: &str,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Vec<u8>, ServingError>;

    /// Starts a streamed answer; returns its pieces and the prompt's token count.
    async fn stream(
        &self,
        deployment: &str,
        model_hash: &str,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<(PieceStream, u32), ServingError>;

    /// The replica's load now.
    fn load(&self) -> ReplicaLoad;

    /// A piece of the content-addressed blob `blob` this node holds: `(blob length, bytes)`.
    /// A node that holds none answers `NotFound` (the default).
    async fn fetch_blob(
        &self,
        blob: &str,
        offset: u64,
        len: u32,
    ) -> Result<(u64, Vec<u8>), ServingError> {
        let _ = (offset, len);
        Err(ServingError::new(
            ErrorKind::NotFound,
            format!("blob {blob} is not held here"),
        ))
    }

    /// Which of `blobs` this node holds and may serve (none by default).
    async fn held_blobs(&self, blobs: &[String]) -> Vec<String> {
        let _ = blobs;
        Vec::new()
    }
}

/// Answers serving requests on a replica.
#[derive(Debug, Clone)]
pub struct ReplicaService<B> {
    backend: B,
    relay: Relay,
}

impl<B: Backend> ReplicaService<B> {
    /// A service over `backend`, holding remote streams in `relay`.
    pub fn new(backend: B, relay: Relay) -> Self {
        Self { backend, relay }
    }

    /// The relay (for its sweeper and metrics).
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Answers one request; the response echoes its id.
    pub async fn handle(&self, request: Request) -> Response {
        Response {
            id: request.id,
            body: self.answer(request.body).await,
        }
    }

    async fn answer(&self, body: RequestBody) -> Result<ResponseBody, ServingError> {
        match body {
            RequestBody::Infer {
                deployment,
                model_hash,
                endpoint,
                deadline_ms,
                body,
            } => {
                let deadline = Duration::from_millis(u64::from(deadline_ms));
                let work = self
                    .backend
                    .infer(&deployment, &model_hash, endpoint, &body);
                match tokio::time::timeout(deadline, work).await {
                    Ok(Ok(body)) => Ok(ResponseBody::Completed { body }),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(ServingError::new(
                        ErrorKind::DeadlineExceeded,
                        format!("no answer within {deadline_ms} ms"),
                    )),
                }
            }
            RequestBody::StartStream {
                deployment,
                model_hash,
                endpoint,
                body,
            } => {
                let (source, prompt_tokens) = self
                    .backend
                    .stream(&deployment, &model_hash, endpoint, &body)
                    .await?;
                let stream = self.relay.start(source)?;
                Ok(ResponseBody::StreamStarted {
                    stream,
                    prompt_tokens,
                })
            }
            RequestBody::NextPieces {
                stream,
                from,
                wait_ms,
            } => self.relay.next_pieces(stream, from, wait_ms).await,
            RequestBody::CancelStream { stream } => Ok(self.relay.cancel(stream)),
            RequestBody::Load => Ok(ResponseBody::Load(self.backend.load())),
            RequestBody::FetchBlob { blob, offset, len } => {
                let len = len.min(flotilla_protocol::services::serving::MAX_ARTIFACT_CHUNK);
                let (total, bytes) = self.backend.fetch_blob(&blob, offset, len).await?;
                Ok(ResponseBody::Artifact { total, bytes })
            }
            RequestBody::HeldBlobs { blobs } => {
                use flotilla_protocol::services::serving::MAX_BLOBS_PER_QUERY;
                if blobs.len() > MAX_BLOBS_PER_QUERY {
                    return Err(ServingError::new(
                        ErrorKind::BadRequest,
                        format!(
                            "{} blobs asked about; at most {MAX_BLOBS_PER_QUERY}",
                            blobs.len()
                        ),
                    ));
                }
                Ok(ResponseBody::HeldBlobs(
                    self.backend.held_blobs(&blobs).await,
                ))
            }
        }
    }
}
