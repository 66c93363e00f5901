//! The serving service on the network: `/flotilla/serving/1` requests from routers to the
//! replicas of other nodes, answered by a worker so the bridge never waits on a model.
//!
//! Inbound requests cross a bounded inbox to the worker, which answers each in its own task (at
//! most [`MAX_IN_FLIGHT`] at once, long polls included) with the node's
//! [`ReplicaService`]. A full inbox is answered `Overloaded` at once, which the router turns
//! into a retry elsewhere or a 429. [`MeshTransport`] is the routers' side.

use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::serving::remote::ServingTransport;
use flotilla_actors::serving::replica::{Backend, ReplicaService};
use flotilla_actors::serving::router::ReplicaId;
use flotilla_protocol::services::control::RemoteError;
use flotilla_protocol::services::serving::{
    self, ErrorKind, Request, Response, ResponseBody, ServingError,
};
use flotilla_protocol::NodeId;
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use tokio::sync::{mpsc, Semaphore};

use super::bridge::{Bridge, Command};
use super::codec::Frame;
use super::mesh::NetMesh;
use super::rpc::{Envelope, Inbound, Reply};

/// Capacity of the inbox of requests waiting for the worker.
pub const INBOX_CAPACITY: usize = 1024;
/// Requests answered concurrently at most (long polls hold a slot while they wait).
pub const MAX_IN_FLIGHT: usize = 512;
/// Hint sent with a refusal for a full inbox.
const BUSY_RETRY_MS: u32 = 1000;

/// What the bridge hands back for an outbound serving request: the replica's own answer.
pub type ServingAnswer = Result<ResponseBody, ServingError>;

/// The serving envelope carries the replica's error itself (not a [`RemoteError`]), so the
/// router sees overload, wrong versions and bad requests as the replica meant them.
impl Envelope for Response {
    type Body = ServingAnswer;
    fn id(&self) -> flotilla_protocol::RequestId {
        self.id
    }
    fn into_body(self) -> Result<Self::Body, RemoteError> {
        Ok(self.body)
    }
}

/// A request for the worker.
#[derive(Debug)]
pub struct ServingInbound {
    pub peer: PeerId,
    pub request: Request,
    pub channel: ResponseChannel<Frame<Response>>,
}

impl Bridge {
    /// Sends a serving request as the router built it (its id is echoed and checked).
    pub(super) fn serving_request(
        &mut self,
        peer: PeerId,
        request: Request,
        reply: Reply<ServingAnswer>,
    ) {
        if let Err(e) = serving::check_request_size(&request) {
            let _ = reply.send(Err(e.to_string()));
            return;
        }
        let id = request.id;
        let out = self
            .swarm
            .behaviour_mut()
            .serving
            .send_request(&peer, Frame::Valid(request));
        self.serving.insert(out, id, reply);
    }

    /// Sends the worker's answer to an inbound request.
    pub(super) fn serving_respond(
        &mut self,
        channel: ResponseChannel<Frame<Response>>,
        response: Response,
    ) {
        // The router may have given up; nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .serving
            .send_response(channel, Frame::Valid(response));
    }

    /// Events of the serving service.
    pub(super) fn on_serving(
        &mut self,
        ev: libp2p::request_response::Event<Frame<Request>, Frame<Response>>,
    ) {
        match self.serving.on_event(serving::SERVICE, ev) {
            None => {}
            Some(Inbound::Malformed { peer, reason }) => {
                self.reject_peer(peer, serving::SERVICE, &reason)
            }
            Some(Inbound::Request {
                peer,
                request,
                channel,
            }) => {
                let id = request.id;
                let work = ServingInbound {
                    peer,
                    request,
                    channel,
                };
                if let Err(mpsc::error::TrySendError::Full(work)) =
                    self.wiring.serving_inbox.try_send(work)
                {
                    let body = Err(ServingError::new(
                        ErrorKind::Overloaded {
                            retry_after_ms: BUSY_RETRY_MS,
                        },
                        "serving inbox full",
                    ));
                    self.serving_respond(work.channel, Response { id, body });
                }
            }
        }
    }
}

/// The worker: answers inbound serving requests until the bridge drops the inbox.
pub async fn serve<B: Backend + Clone>(
    mut inbox: mpsc::Receiver<ServingInbound>,
    service: ReplicaService<B>,
    commands: mpsc::Sender<Command>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(work) = inbox.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (service, commands) = (service.clone(), commands.clone());
        flotilla_actors::task::spawn(async move {
            let response = service.handle(work.request).await;
            let _ = commands
                .send(Command::ServingRespond {
                    channel: work.channel,
                    response,
                })
                .await;
            drop(permit);
        });
    }
}

/// The routers' transport: a request to the node named in the replica id, over the mesh.
#[derive(Debug, Clone)]
pub struct MeshTransport {
    pub mesh: NetMesh,
}

#[async_trait::async_trait]
impl ServingTransport for MeshTransport {
    async fn call(
        &self,
        replica: &ReplicaId,
        request: Request,
        deadline: Duration,
    ) -> Result<Response, ServingError> {
        let node = NodeId(replica.node().to_string());
        let id = request.id;
        let answer = self
            .mesh
            .ask(&node, deadline, |peer, reply| Command::Serving {
                peer,
                request,
                reply,
            })
            .await;
        match answer {
            Ok(body) => Ok(Response { id, body }),
            Err(flotilla_actors::Error::Timeout { .. }) => Err(ServingError::new(
                ErrorKind::DeadlineExceeded,
                format!("{replica} did not answer within {deadline:?}"),
            )),
            Err(e) => Err(ServingError::new(
                ErrorKind::Unavailable,
                format!("{replica}: {e}"),
            )),
        }
    }
}
