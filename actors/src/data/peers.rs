//! How data code reaches other nodes' shard holders, without naming the transport.
//!
//! `flotilla-node` implements [`DataPeers`] over the `/flotilla/data/1` request-response
//! protocol (and short-circuits calls to itself to the local [`crate::data::shard::Handle`]);
//! tests implement it in memory by routing each call to the target's
//! [`crate::data::service::serve`]. Every call has a deadline.

use std::time::Duration;

use flotilla_protocol::services::data::{RequestBody, ResponseBody};
use flotilla_protocol::NodeId;

use super::error::{Error, Result};

/// Sends data requests to peers (including this node).
#[async_trait::async_trait]
pub trait DataPeers: Send + Sync {
    /// Sends `body` to `peer` and waits at most `deadline`. A transport failure is
    /// [`Error::Peer`]; an error the peer answered is [`Error::Remote`].
    async fn call(
        &self,
        peer: &NodeId,
        body: RequestBody,
        deadline: Duration,
    ) -> Result<ResponseBody>;
}

/// The error for an answer of the wrong kind.
pub fn unexpected(peer: &NodeId, asked: &str, got: &ResponseBody) -> Error {
    let got = format!("{got:?}");
    Error::Peer {
        peer: peer.to_string(),
        reason: format!("answered {asked} with {}", got.get(..80).unwrap_or(&got)),
    }
}
