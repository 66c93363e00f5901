//! The network boundary: how actors reach other nodes, without naming the transport.
//!
//! `flotilla-node` implements [`Mesh`] over libp2p request-response; tests may implement it in
//! memory. Every call carries a deadline.

use std::time::Duration;

use flotilla_protocol::services::{actors, control, jobs};
use flotilla_protocol::NodeId;

/// Sends requests to peers.
#[async_trait::async_trait]
pub trait Mesh: Send + Sync + 'static {
    /// This node's id.
    fn local_id(&self) -> NodeId;
    /// Sends a control request to `peer` and waits at most `deadline` for its answer.
    async fn control(
        &self,
        peer: &NodeId,
        body: control::RequestBody,
        deadline: Duration,
    ) -> crate::Result<control::ResponseBody>;
    /// Sends a jobs request to `peer` and waits at most `deadline` for its answer; an error the
    /// peer answered with comes back as [`crate::Error::Peer`].
    async fn jobs(
        &self,
        peer: &NodeId,
        body: jobs::RequestBody,
        deadline: Duration,
    ) -> crate::Result<jobs::ResponseBody>;
    /// Sends an actors request (a message to a named actor, a spawn, a monitor) to `peer`.
    async fn actors(
        &self,
        peer: &NodeId,
        body: actors::RequestBody,
        deadline: Duration,
    ) -> crate::Result<actors::ResponseBody>;
    /// Peers with an open connection right now.
    async fn connected_peers(&self) -> crate::Result<Vec<NodeId>>;
}
