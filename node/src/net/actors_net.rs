//! The actors service on the network: `/flotilla/actors/1` messages to named actors, remote
//! spawns and monitors, answered by the node's [`remote::Host`] through a worker so the bridge
//! never waits on an actor.
//!
//! Inbound requests cross a bounded inbox to the worker, which answers each in its own task
//! (at most [`MAX_IN_FLIGHT`] at once) and hands the response back to the bridge. A full inbox
//! is answered `Unavailable` at once.

use flotilla_actors::remote;
use flotilla_protocol::services::actors;
use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::{NodeId, RequestId};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::bridge::{Bridge, Command};
use super::codec::Frame;
use super::rpc::{self, Reply, Routed, Work};

/// Capacity of the inbox of requests waiting for the worker.
pub const INBOX_CAPACITY: usize = 256;
/// Requests answered concurrently at most.
pub const MAX_IN_FLIGHT: usize = 64;

/// A request for the worker.
pub type ActorsInbound = Work<actors::Request, actors::Response>;

impl Bridge {
    /// Sends a actors request (size-checked against the service's cap).
    pub(super) fn actors_request(
        &mut self,
        peer: PeerId,
        body: actors::RequestBody,
        reply: Reply<actors::ResponseBody>,
    ) {
        self.next_request_id += 1;
        let id = RequestId(self.next_request_id);
        let request = actors::Request { id, body };
        rpc::send_checked(
            &mut self.swarm.behaviour_mut().actors,
            &mut self.actors,
            actors::SERVICE,
            peer,
            id,
            request,
            reply,
        );
    }

    /// Sends the worker's answer to an inbound request.
    pub(super) fn actors_respond(
        &mut self,
        channel: ResponseChannel<Frame<actors::Response>>,
        response: actors::Response,
    ) {
        // The requester may have gone away; nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .actors
            .send_response(channel, Frame::Valid(response));
    }

    /// Events of the actors service.
    pub(super) fn on_actors(
        &mut self,
        ev: libp2p::request_response::Event<Frame<actors::Request>, Frame<actors::Response>>,
    ) {
        let busy = |id| actors::Response {
            id,
            body: Err(RemoteError {
                kind: RemoteErrorKind::Unavailable,
                message: "actors service busy; retry later".into(),
            }),
        };
        match rpc::route(
            &mut self.actors,
            actors::SERVICE,
            ev,
            &self.wiring.actors_inbox,
            busy,
        ) {
            Routed::Done => {}
            Routed::Malformed { peer, reason } => self.reject_peer(peer, actors::SERVICE, &reason),
            Routed::Busy { channel, response } => self.actors_respond(channel, response),
        }
    }
}

/// The worker: answers inbound actors requests until the bridge drops the inbox.
pub async fn serve(
    inbox: mpsc::Receiver<ActorsInbound>,
    host: remote::Host,
    commands: mpsc::Sender<Command>,
) {
    let answer = move |peer: PeerId, request: actors::Request| {
        let host = host.clone();
        async move {
            let from = NodeId(peer.to_string());
            let body = host.serve(&from, request.body).await;
            actors::Response {
                id: request.id,
                body,
            }
        }
    };
    let respond = |channel, response| Command::ActorsRespond { channel, response };
    rpc::serve_inbox(inbox, MAX_IN_FLIGHT, commands, respond, answer).await;
}
