//! Remote actors: typed messages to a named actor on a given peer, spawning role actors on a
//! peer under its supervisor, and monitoring them — all over the [`Mesh`](crate::mesh::Mesh),
//! with a deadline on every call.
//!
//! - [`host`]: the node-local side. A [`Host`] keeps the *roles* this node can spawn (factories
//!   registered by the node: parameter servers, trainers, replicas) and the named actors it
//!   runs, every one linked to the host's supervisor actor. When one stops, the supervisor
//!   removes it and sends a `Down` notice to every node that monitors it.
//! - [`client`]: the caller's side. [`RemoteActor`] sends a typed message and decodes the typed
//!   reply; [`spawn_remote`] asks a peer to spawn a role actor; [`Host::monitor`] returns a
//!   channel that receives one [`Down`] when the actor stops *or* its node is declared dead.
//!
//! Payloads are bincode with the actors service's cap; the service routes them by name and
//! never reads them, so roles added later need no protocol change.

pub mod client;
pub mod host;

use std::sync::Arc;

use flotilla_protocol::codec;
use flotilla_protocol::services::actors::{MAX_FRAME_BYTES, SERVICE};
use flotilla_protocol::NodeId;
use ractor::ActorCell;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use client::{spawn_remote, RemoteActor};
pub use host::{Host, MAX_SPAWNS_PER_PEER};

/// Delivers an encoded message to one named actor and returns its encoded reply.
#[async_trait::async_trait]
pub trait Endpoint: Send + Sync + 'static {
    /// Handles one message from `from` (the authenticated peer, or this node for a local
    /// call), so an endpoint can refuse what that caller may not ask; the error is a reason
    /// the caller sees.
    async fn call(&self, from: &NodeId, payload: Vec<u8>) -> Result<Vec<u8>, String>;
}

/// A kind of actor a node can spawn on request.
#[async_trait::async_trait]
pub trait Role: Send + Sync + 'static {
    /// Spawns an actor named `name` from the encoded `args`, linked to `supervisor` (use
    /// `Actor::spawn_linked`), and returns its cell and the endpoint that reaches it.
    async fn spawn(
        &self,
        name: &str,
        args: &[u8],
        supervisor: ActorCell,
    ) -> Result<(ActorCell, Arc<dyn Endpoint>), String>;
}

/// A monitored actor stopped, or its node was declared dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    pub node: NodeId,
    pub actor: String,
    pub reason: String,
}

/// Encodes a message or reply for the actors service.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    codec::encode::<_, MAX_FRAME_BYTES>(SERVICE, value).map_err(|e| e.to_string())
}

/// Decodes a message or reply of the actors service.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    codec::decode::<_, MAX_FRAME_BYTES>(SERVICE, bytes).map_err(|e| e.to_string())
}
