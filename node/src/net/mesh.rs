//! [`Mesh`] over the bridge: actors reach peers through commands to the swarm task.

use std::time::Duration;

use flotilla_actors::mesh::Mesh;
use flotilla_actors::{Error, Result};
use flotilla_protocol::services::{control, jobs};
use flotilla_protocol::NodeId;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::bridge::Command;

/// A cloneable handle for sending requests to peers.
#[derive(Debug, Clone)]
pub struct NetMesh {
    local: NodeId,
    commands: mpsc::Sender<Command>,
}

impl NetMesh {
    /// A mesh that sends through `commands`.
    pub fn new(local: PeerId, commands: mpsc::Sender<Command>) -> Self {
        Self {
            local: NodeId(local.to_string()),
            commands,
        }
    }

    /// Sends a command carrying a reply channel and waits at most `deadline` for the answer.
    pub(super) async fn ask<B>(
        &self,
        peer: &NodeId,
        deadline: Duration,
        cmd: impl FnOnce(PeerId, super::rpc::Reply<B>) -> Command,
    ) -> Result<B> {
        let target = parse_peer(peer)?;
        let (reply, answer) = oneshot::channel();
        self.send(cmd(target, reply)).await?;
        match tokio::time::timeout(deadline, answer).await {
            Err(_) => Err(Error::Timeout {
                actor: "peer",
                deadline,
            }),
            Ok(Err(_)) => Err(Error::ActorGone {
                actor: "network bridge",
            }),
            Ok(Ok(r)) => r.map_err(|reason| Error::Peer {
                peer: peer.to_string(),
                reason,
            }),
        }
    }

    /// Closes and refuses every connection with `peer` until [`NetMesh::unblock`].
    pub async fn block(&self, peer: &NodeId) -> Result<()> {
        let target = parse_peer(peer)?;
        self.send(Command::Block(target)).await
    }

    /// Accepts a blocked peer again.
    pub async fn unblock(&self, peer: &NodeId) -> Result<()> {
        let target = parse_peer(peer)?;
        self.send(Command::Unblock(target)).await
    }

    async fn send(&self, cmd: Command) -> Result<()> {
        self.commands.send(cmd).await.map_err(|_| Error::ActorGone {
            actor: "network bridge",
        })
    }
}

fn parse_peer(peer: &NodeId) -> Result<PeerId> {
    peer.as_str().parse().map_err(|e| Error::Peer {
        peer: peer.to_string(),
        reason: format!("not a node id: {e}"),
    })
}

#[async_trait::async_trait]
impl Mesh for NetMesh {
    fn local_id(&self) -> NodeId {
        self.local.clone()
    }

    async fn control(
        &self,
        peer: &NodeId,
        body: control::RequestBody,
        deadline: Duration,
    ) -> Result<control::ResponseBody> {
        self.ask(peer, deadline, |peer, reply| Command::Control {
            peer,
            body,
            reply,
        })
        .await
    }

    async fn jobs(
        &self,
        peer: &NodeId,
        body: jobs::RequestBody,
        deadline: Duration,
    ) -> Result<jobs::ResponseBody> {
        self.ask(peer, deadline, |peer, reply| Command::Jobs {
            peer,
            body,
            reply,
        })
        .await
    }

    async fn connected_peers(&self) -> Result<Vec<NodeId>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::ConnectedPeers(reply)).await?;
        let peers = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .map_err(|_| Error::Timeout {
                actor: "network bridge",
                deadline: Duration::from_secs(5),
            })?
            .map_err(|_| Error::ActorGone {
                actor: "network bridge",
            })?;
        Ok(peers.into_iter().map(|p| NodeId(p.to_string())).collect())
    }
}
