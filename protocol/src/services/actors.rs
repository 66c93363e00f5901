//! The actors service: typed messages to named actors on other nodes, spawning role actors
//! under a peer's supervisor, and monitoring them (a `Down` notice when one stops).
//!
//! Payloads are bincode bytes of the caller's and the actor's message types: this layer
//! routes them by actor name and never interprets them, so any role can be reached without
//! the protocol knowing its messages.

use serde::{Deserialize, Serialize};

use crate::ids::RequestId;
use crate::services::control::RemoteError;

/// Stream protocol name.
pub const PROTOCOL: &str = "/flotilla/actors/1";
/// Name used in errors and metrics.
pub const SERVICE: &str = "actors";
/// Largest request or response: remote actors carry the training messages (a parameter
/// server's range of parameters or gradients, a checkpoint blob), so the cap is the training
/// service's: 64 MiB of values and a little framing. The length is checked before anything
/// is allocated, so a larger cap costs nothing until a peer sends that much.
pub const MAX_FRAME_BYTES: usize = crate::services::training::MAX_FRAME_BYTES;
/// Longest actor or role name.
pub const MAX_NAME_BYTES: usize = 256;

/// An actors request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub body: RequestBody,
}

/// What an actors request asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Deliver `payload` to the actor named `actor` and return its reply.
    Call {
        actor: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Spawn an actor of `role` named `name` from `args`, under the receiver's supervisor.
    Spawn {
        role: String,
        name: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
    /// Stop the actor named `actor`.
    Stop { actor: String },
    /// Send the requester a [`RequestBody::Down`] when the actor named `actor` stops.
    Monitor { actor: String },
    /// The actor named `actor`, monitored by the receiver, stopped on the sender.
    Down { actor: String, reason: String },
}

/// An actors response; `id` echoes the request's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: RequestId,
    pub body: std::result::Result<ResponseBody, RemoteError>,
}

/// The answer to a [`RequestBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// The actor's reply to a `Call`.
    Reply(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The actor runs.
    Spawned,
    /// The actor was running and is stopping.
    Stopped,
    /// The requester will get a `Down` notice.
    Monitoring,
    /// A `Down` notice was delivered.
    Ack,
}

request_response_codec!();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let req = Request {
            id: RequestId(9),
            body: RequestBody::Spawn {
                role: "counter".into(),
                name: "c-1".into(),
                args: vec![1, 2, 3],
            },
        };
        assert_eq!(decode_request(&encode_request(&req).unwrap()).unwrap(), req);
        let resp = Response {
            id: RequestId(9),
            body: Ok(ResponseBody::Reply(vec![7; 100])),
        };
        assert_eq!(
            decode_response(&encode_response(&resp).unwrap()).unwrap(),
            resp
        );
        assert!(decode_request(&[0xff; 32]).is_err());
    }
}
