//! The router's side of pulled streams: a task that long-polls a remote replica's stream and
//! hands its pieces on through a bounded local channel, as a
//! [`PieceStream`].
//!
//! Back-pressure crosses the mesh: the task polls again only after the local consumer took
//! the previous pieces. A lost answer (timeout, broken connection) is recovered by polling
//! again with the same `from`; when the local consumer goes away, the remote stream is
//! cancelled.

use std::sync::Arc;

use flotilla_protocol::services::serving::{ErrorKind, ResponseBody, ServingError, StreamId};
use tokio::sync::mpsc;

use crate::serving::router::{PieceStream, StreamItem};

/// The two calls pulling needs; the node implements them over `/flotilla/serving/1`.
#[async_trait::async_trait]
pub trait StreamRpc: Send + Sync + 'static {
    /// Sends `NextPieces { stream, from, wait_ms }`; the answer should be `Pieces`.
    async fn next_pieces(
        &self,
        stream: StreamId,
        from: u32,
        wait_ms: u32,
    ) -> Result<ResponseBody, ServingError>;
    /// Sends `CancelStream { stream }`, best effort.
    async fn cancel(&self, stream: StreamId);
}

/// Pulling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullConfig {
    /// How long each poll may be held open by the replica.
    pub wait_ms: u32,
    /// Items buffered for the local consumer.
    pub capacity: usize,
    /// Consecutive lost polls tolerated before the stream is reported broken.
    pub max_lost_polls: u32,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            wait_ms: 5_000,
            capacity: 64,
            max_lost_polls: 3,
        }
    }
}

/// Whether an error means the answer may simply have been lost on the way.
fn is_lost(e: &ServingError) -> bool {
    matches!(e.kind, ErrorKind::Unavailable | ErrorKind::DeadlineExceeded)
}

/// Starts pulling `stream` through `rpc`; its pieces arrive on the returned channel.
pub fn pull<R: StreamRpc>(rpc: Arc<R>, stream: StreamId, config: PullConfig) -> PieceStream {
    let (tx, rx) = mpsc::channel(config.capacity.max(1));
    crate::task::spawn(async move {
        let mut from = 0u32;
        let mut lost = 0u32;
        loop {
            let answer = tokio::select! {
                a = rpc.next_pieces(stream, from, config.wait_ms) => a,
                _ = tx.closed() => {
                    rpc.cancel(stream).await;
                    return;
                }
            };
            match answer {
                Ok(ResponseBody::Pieces {
                    from: at,
                    pieces,
                    end,
                }) if at == from => {
                    lost = 0;
                    for p in pieces {
                        if tx.send(Ok(StreamItem::Piece(p))).await.is_err() {
                            rpc.cancel(stream).await;
                            return;
                        }
                        from += 1;
                    }
                    if let Some(end) = end {
                        let _ = tx.send(Ok(StreamItem::End(end))).await;
                        return;
                    }
                }
                Ok(other) => {
                    let e = ServingError::new(
                        ErrorKind::Internal,
                        format!("unexpected answer to a poll at {from}: {other:?}"),
                    );
                    let _ = tx.send(Err(e)).await;
                    rpc.cancel(stream).await;
                    return;
                }
                Err(e) if is_lost(&e) && lost < config.max_lost_polls => lost += 1,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    rpc.cancel(stream).await;
                    return;
                }
            }
        }
    });
    rx
}
