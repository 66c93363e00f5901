//! Protocol names, per-service size caps and messages.
//!
//! Each request-response service is named `/flotilla/<service>/<major>`; gossip topics are named
//! `flotilla/<topic>/<major>`. Every service has its own cap, checked by [`crate::codec`].

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Result;
use crate::ids::{NodeId, RequestId};
use crate::node_info::NodeInfo;

/// The membership gossip topic.
pub mod membership {
    use super::*;

    /// Gossipsub topic for heartbeats and leave notices.
    pub const TOPIC: &str = "flotilla/membership/1";
    /// Name used in errors and metrics.
    pub const SERVICE: &str = "membership";
    /// Largest membership message: a heartbeat is well under 4 KiB even with many addresses.
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

    /// A message on the membership topic.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Message {
        /// A node's periodic heartbeat.
        Heartbeat(NodeInfo),
        /// A node is shutting down gracefully: peers mark it `left`, not `dead`.
        Leaving { id: NodeId, incarnation: u64 },
    }

    impl Message {
        /// The node this message speaks for; gossip validation checks it equals the signer.
        pub fn sender(&self) -> &NodeId {
            match self {
                Message::Heartbeat(info) => &info.id,
                Message::Leaving { id, .. } => id,
            }
        }
    }

    /// Encodes a message for gossip.
    pub fn encode(msg: &Message) -> Result<Vec<u8>> {
        codec::encode::<_, MAX_MESSAGE_BYTES>(SERVICE, msg)
    }

    /// Decodes a gossip payload.
    pub fn decode(bytes: &[u8]) -> Result<Message> {
        codec::decode::<_, MAX_MESSAGE_BYTES>(SERVICE, bytes)
    }
}

/// The control service: node-to-node requests of the daemon itself.
pub mod control {
    use super::*;

    /// Stream protocol name.
    pub const PROTOCOL: &str = "/flotilla/control/1";
    /// Name used in errors and metrics.
    pub const SERVICE: &str = "control";
    /// Largest request or response: room for a 4 MiB echo payload and its framing.
    pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

    /// A control request.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Request {
        pub id: RequestId,
        pub body: RequestBody,
    }

    /// What a control request asks.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum RequestBody {
        /// Liveness check; answered with [`ResponseBody::Pong`].
        Ping,
        /// Returns the payload unchanged (used to measure the RPC path).
        Echo(#[serde(with = "serde_bytes")] Vec<u8>),
        /// Asks for the peer's current heartbeat.
        GetNodeInfo,
        /// The sender is leaving gracefully; sent directly so peers learn it even if gossip
        /// does not flush before the sender closes its connections.
        Leaving { id: NodeId, incarnation: u64 },
    }

    /// A control response; `id` echoes the request's.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Response {
        pub id: RequestId,
        pub body: std::result::Result<ResponseBody, RemoteError>,
    }

    /// The answer to a [`RequestBody`].
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum ResponseBody {
        Pong,
        Echo(#[serde(with = "serde_bytes")] Vec<u8>),
        NodeInfo(Box<NodeInfo>),
        LeaveAck,
    }

    /// An error the remote side reports.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
    #[error("{kind:?}: {message}")]
    pub struct RemoteError {
        pub kind: RemoteErrorKind,
        pub message: String,
    }

    /// Classes of remote errors.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum RemoteErrorKind {
        BadRequest,
        NotFound,
        Unavailable,
        Internal,
    }

    /// Checks a request fits the service's cap, without encoding it.
    pub fn check_request_size(r: &Request) -> Result<()> {
        let len = codec::encoded_len(SERVICE, r)?;
        codec::check_frame_len(SERVICE, len as u64, MAX_FRAME_BYTES).map(|_| ())
    }

    /// Encodes a request body (no length prefix).
    pub fn encode_request(r: &Request) -> Result<Vec<u8>> {
        codec::encode::<_, MAX_FRAME_BYTES>(SERVICE, r)
    }
    /// Decodes a request body.
    pub fn decode_request(b: &[u8]) -> Result<Request> {
        codec::decode::<_, MAX_FRAME_BYTES>(SERVICE, b)
    }
    /// Encodes a response body.
    pub fn encode_response(r: &Response) -> Result<Vec<u8>> {
        codec::encode::<_, MAX_FRAME_BYTES>(SERVICE, r)
    }
    /// Decodes a response body.
    pub fn decode_response(b: &[u8]) -> Result<Response> {
        codec::decode::<_, MAX_FRAME_BYTES>(SERVICE, b)
    }
}
