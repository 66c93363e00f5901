//! What every request-response service on the bridge shares: the table of outbound requests
//! awaiting answers, and the sorting of a service's events into answers (delivered here),
//! inbound requests and malformed frames (returned to the bridge).

use std::collections::HashMap;
use std::sync::Arc;

use flotilla_protocol::codec as wire;
use flotilla_protocol::services::control::RemoteError;
use flotilla_protocol::services::{actors, catalog, control, data, jobs};
use flotilla_protocol::RequestId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::PeerId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::debug;

use super::codec::{Frame, FrameCodec};

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

/// A request envelope: the id its response must echo.
pub trait RequestEnvelope {
    fn request_id(&self) -> RequestId;
}

macro_rules! request_envelope {
    ($($service:ident),*) => {$(
        impl RequestEnvelope for $service::Request {
            fn request_id(&self) -> RequestId {
                self.id
            }
        }
    )*};
}
request_envelope!(jobs, actors, data);

/// An inbound request waiting for a service's worker.
#[derive(Debug)]
pub struct Work<Req, Resp> {
    pub peer: PeerId,
    pub request: Req,
    pub channel: ResponseChannel<Frame<Resp>>,
}

/// Sends `request` to `peer` on `behaviour`, refusing one over the service's cap here rather
/// than on the wire (sent, it would fail in the codec and look like a hostile frame).
#[allow(clippy::too_many_arguments)]
pub fn send_checked<Req, Resp, B, const CAP: usize>(
    behaviour: &mut request_response::Behaviour<FrameCodec<Req, Resp, CAP>>,
    pending: &mut Pending<B>,
    service: &'static str,
    peer: PeerId,
    id: RequestId,
    request: Req,
    reply: Reply<B>,
) where
    Req: Serialize + DeserializeOwned + Send + Sync + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let fits = wire::encoded_len(service, &request)
        .and_then(|len| wire::check_frame_len(service, len as u64, CAP));
    if let Err(e) = fits {
        let _ = reply.send(Err(e.to_string()));
        return;
    }
    let out = behaviour.send_request(&peer, Frame::Valid(request));
    pending.insert(out, id, reply);
}

/// What the bridge must still do after [`route`].
pub enum Routed<Resp> {
    Done,
    /// Count the malformed frame and close the peer's connections.
    Malformed {
        peer: PeerId,
        reason: String,
    },
    /// The worker's inbox is full: send this answer at once.
    Busy {
        channel: ResponseChannel<Frame<Resp>>,
        response: Resp,
    },
}

/// Delivers answers, hands inbound requests to the service's worker through `inbox`, and says
/// what is left: a malformed frame to punish, or a `busy` answer when the inbox is full.
pub fn route<Req, Resp, B>(
    pending: &mut Pending<B>,
    service: &str,
    ev: request_response::Event<Frame<Req>, Frame<Resp>>,
    inbox: &mpsc::Sender<Work<Req, Resp>>,
    busy: impl FnOnce(RequestId) -> Resp,
) -> Routed<Resp>
where
    Req: RequestEnvelope,
    Resp: Envelope<Body = B>,
{
    match pending.on_event(service, ev) {
        None => Routed::Done,
        Some(Inbound::Malformed { peer, reason }) => Routed::Malformed { peer, reason },
        Some(Inbound::Request {
            peer,
            request,
            channel,
        }) => {
            let id = request.request_id();
            match inbox.try_send(Work {
                peer,
                request,
                channel,
            }) {
                Err(mpsc::error::TrySendError::Full(work)) => Routed::Busy {
                    channel: work.channel,
                    response: busy(id),
                },
                // A closed inbox means the node is stopping: the request goes unanswered.
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Routed::Done,
            }
        }
    }
}

/// A service's worker: answers each request from `inbox` in its own task, at most
/// `max_in_flight` at once, and hands the response to the bridge as `respond(channel, response)`.
pub async fn serve_inbox<Req, Resp, F, Fut>(
    mut inbox: mpsc::Receiver<Work<Req, Resp>>,
    max_in_flight: usize,
    commands: mpsc::Sender<super::bridge::Command>,
    respond: fn(ResponseChannel<Frame<Resp>>, Resp) -> super::bridge::Command,
    answer: F,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(PeerId, Req) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_in_flight));
    while let Some(work) = inbox.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (answer, commands) = (answer.clone(), commands.clone());
        flotilla_actors::task::spawn(async move {
            let response = answer(work.peer, work.request).await;
            let _ = commands.send(respond(work.channel, response)).await;
            drop(permit);
        });
    }
}
