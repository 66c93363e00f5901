//! The caller's side of remote actors.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::services::actors::{RequestBody, ResponseBody};
use flotilla_protocol::NodeId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, encode};
use crate::mesh::Mesh;
use crate::{Error, Result};

/// A named actor on a peer that takes messages `M` and replies `R`.
pub struct RemoteActor<M, R> {
    mesh: Arc<dyn Mesh>,
    peer: NodeId,
    name: String,
    deadline: Duration,
    _types: PhantomData<fn(M) -> R>,
}

impl<M, R> std::fmt::Debug for RemoteActor<M, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteActor")
            .field("peer", &self.peer)
            .field("name", &self.name)
            .finish()
    }
}

impl<M, R> Clone for RemoteActor<M, R> {
    fn clone(&self) -> Self {
        Self {
            mesh: self.mesh.clone(),
            peer: self.peer.clone(),
            name: self.name.clone(),
            deadline: self.deadline,
            _types: PhantomData,
        }
    }
}

fn bad(peer: &NodeId, reason: String) -> Error {
    Error::Peer {
        peer: peer.to_string(),
        reason,
    }
}

impl<M: Serialize, R: DeserializeOwned> RemoteActor<M, R> {
    /// The actor named `name` on `peer`; each call waits at most `deadline`.
    pub fn new(mesh: Arc<dyn Mesh>, peer: NodeId, name: &str, deadline: Duration) -> Self {
        Self {
            mesh,
            peer,
            name: name.to_string(),
            deadline,
            _types: PhantomData,
        }
    }

    /// The same actor with another deadline per call.
    pub fn new_like(other: &Self, deadline: Duration) -> Self {
        Self {
            deadline,
            ..other.clone()
        }
    }

    /// Where the actor runs.
    pub fn peer(&self) -> &NodeId {
        &self.peer
    }

    /// The actor's name on its node.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `msg` and waits for the reply.
    pub async fn call(&self, msg: &M) -> Result<R> {
        let payload = encode(msg).map_err(|e| bad(&self.peer, e))?;
        let body = RequestBody::Call {
            actor: self.name.clone(),
            payload,
        };
        match self.mesh.actors(&self.peer, body, self.deadline).await? {
            ResponseBody::Reply(bytes) => decode(&bytes).map_err(|e| bad(&self.peer, e)),
            other => Err(bad(&self.peer, format!("unexpected answer: {other:?}"))),
        }
    }

    /// Stops the actor.
    pub async fn stop(&self) -> Result<()> {
        let body = RequestBody::Stop {
            actor: self.name.clone(),
        };
        self.mesh.actors(&self.peer, body, self.deadline).await?;
        Ok(())
    }
}

/// Asks `peer` to spawn an actor of `role` named `name` from `args` under its supervisor, and
/// returns a handle to it.
pub async fn spawn_remote<A: Serialize, M: Serialize, R: DeserializeOwned>(
    mesh: Arc<dyn Mesh>,
    peer: NodeId,
    role: &str,
    name: &str,
    args: &A,
    deadline: Duration,
) -> Result<RemoteActor<M, R>> {
    let body = RequestBody::Spawn {
        role: role.to_string(),
        name: name.to_string(),
        args: encode(args).map_err(|e| bad(&peer, e))?,
    };
    match mesh.actors(&peer, body, deadline).await? {
        ResponseBody::Spawned => Ok(RemoteActor::new(mesh, peer, name, deadline)),
        other => Err(bad(&peer, format!("unexpected answer: {other:?}"))),
    }
}
