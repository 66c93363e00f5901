//! [`Mesh`] over the bridge: actors reach peers through commands to the swarm task.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flotilla_actors::remote;

use flotilla_actors::mesh::Mesh;
use flotilla_actors::{Error, Result};
use flotilla_protocol::services::{actors, control, jobs};
use flotilla_protocol::NodeId;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::bridge::Command;

/// A cloneable handle for sending requests to peers.
#[derive(Clone)]
pub struct NetMesh {
    local: NodeId,
    commands: mpsc::Sender<Command>,
    /// This node's remote-actor host: an actors request to this node itself is answered here
    /// (a swarm does not dial itself). Set once the host runs.
    local_actors: Arc<OnceLock<remote::Host>>,
}

impl std::fmt::Debug for NetMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetMesh")
            .field("local", &self.local)
            .finish()
    }
}

impl NetMesh {
    /// A mesh that sends through `commands`.
    pub fn new(local: PeerId, commands: mpsc::Sender<Command>) -> Self {
        Self {
            local: NodeId(local.to_string()),
            commands,
            local_actors: Arc::new(OnceLock::new()),
        }
    }

    /// Answers actors requests to this node itself with `host`.
    pub fn set_local_actors(&self, host: remote::Host) {
        let _ = self.local_actors.set(host);
    }

    /// Sends a command carrying a reply channel and waits at most `deadline` for the answer.
    pub(crate) async fn ask<B>(
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

    /// Removes `peer` for good: blocked (not undone by [`NetMesh::unblock`]), forgotten by the
    /// DHT, and its gossip ignored.
    pub async fn evict(&self, peer: &NodeId) -> Result<()> {
        let target = parse_peer(peer)?;
        self.send(Command::Evict(target)).await
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

    async fn actors(
        &self,
        peer: &NodeId,
        body: actors::RequestBody,
        deadline: Duration,
    ) -> Result<actors::ResponseBody> {
        if *peer == self.local {
            let host = self.local_actors.get().ok_or(Error::ActorGone {
                actor: "remote-actor host",
            })?;
            return match tokio::time::timeout(deadline, host.serve(&self.local, body)).await {
                Err(_) => Err(Error::Timeout {
                    actor: "local actor",
                    deadline,
                }),
                Ok(r) => r.map_err(|e| Error::Peer {
                    peer: peer.to_string(),
                    reason: e.to_string(),
                }),
            };
        }
        self.ask(peer, deadline, |peer, reply| Command::Actors {
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
