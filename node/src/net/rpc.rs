//! What every request-response service on the bridge shares: the table of outbound requests
//! awaiting answers, and the sorting of a service's events into answers (delivered here),
//! inbound requests and malformed frames (returned to the bridge).

use std::collections::HashMap;

use flotilla_protocol::services::control::RemoteError;
use flotilla_protocol::services::{actors, catalog, control, jobs};
use flotilla_protocol::RequestId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::PeerId;
use tokio::sync::oneshot;
use tracing::debug;

use super::codec::Frame;

/// A response envelope: the echoed request id and the body or the peer's error.
pub trait Envelope {
    type Body;
    fn id(&self) -> RequestId;
    fn into_body(self) -> Result<Self::Body, RemoteError>;
}

macro_rules! envelope {
    ($($service:ident),*) => {$(
        impl Envelope for $service::Response {
            type Body = $service::ResponseBody;
            fn id(&self) -> RequestId {
                self.id
            }
            fn into_body(self) -> Result<Self::Body, RemoteError> {
                self.body
            }
        }
    )*};
}
envelope!(control, catalog, jobs, actors);

/// Reply channel of an outbound request: the body, or why there is none.
pub type Reply<B> = oneshot::Sender<Result<B, String>>;

/// What the bridge must handle itself after [`Pending::on_event`].
pub enum Inbound<Req, Resp> {
    /// A valid request to answer through `channel`.
    Request {
        peer: PeerId,
        request: Req,
        channel: ResponseChannel<Frame<Resp>>,
    },
    /// The peer sent a frame the codec refused: count it and close its connections.
    Malformed { peer: PeerId, reason: String },
}

/// Outbound requests of one service awaiting answers.
pub struct Pending<B> {
    waiting: HashMap<OutboundRequestId, (RequestId, Reply<B>)>,
}

impl<B> Default for Pending<B> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
        }
    }
}

impl<B> Pending<B> {
    /// Remembers a sent request.
    pub fn insert(&mut self, out: OutboundRequestId, id: RequestId, reply: Reply<B>) {
        self.waiting.insert(out, (id, reply));
    }

    /// Fails every request still waiting (the bridge is stopping).
    pub fn fail_all(&mut self, reason: &str) {
        for (_, (_, reply)) in self.waiting.drain() {
            let _ = reply.send(Err(reason.to_string()));
        }
    }

    /// Delivers answers and failures of outbound requests; returns what the bridge must handle.
    pub fn on_event<Req, Resp: Envelope<Body = B>>(
        &mut self,
        service: &str,
        ev: request_response::Event<Frame<Req>, Frame<Resp>>,
    ) -> Option<Inbound<Req, Resp>> {
        use request_response::{Event, Message};
        match ev {
            Event::Message { peer, message, .. } => match message {
                Message::Request {
                    request: Frame::Valid(request),
                    channel,
                    ..
                } => Some(Inbound::Request {
                    peer,
                    request,
                    channel,
                }),
                // Dropping the channel closes the stream unanswered.
                Message::Request {
                    request: Frame::Rejected(reason),
                    ..
                } => Some(Inbound::Malformed { peer, reason }),
                Message::Response {
                    request_id,
                    response: Frame::Rejected(reason),
                } => {
                    if let Some((_, reply)) = self.waiting.remove(&request_id) {
                        let _ =
                            reply.send(Err(format!("malformed response from {peer}: {reason}")));
                    }
                    Some(Inbound::Malformed { peer, reason })
                }
                Message::Response {
                    request_id,
                    response: Frame::Valid(response),
                } => {
                    if let Some((id, reply)) = self.waiting.remove(&request_id) {
                        let answer = if response.id() != id {
                            Err(format!(
                                "response id {:?} does not echo request id {:?}",
                                response.id(),
                                id
                            ))
                        } else {
                            response.into_body().map_err(|e| e.to_string())
                        };
                        let _ = reply.send(answer);
                    }
                    None
                }
            },
            Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some((_, reply)) = self.waiting.remove(&request_id) {
                    let _ = reply.send(Err(format!("request to {peer} failed: {error}")));
                }
                None
            }
            Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, %service, "inbound request failed");
                None
            }
            Event::ResponseSent { .. } => None,
        }
    }
}
